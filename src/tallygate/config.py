"""Settings: the only place the environment is read (prefix ``TALLYGATE_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / 'tallygate.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLYGATE_", extra="ignore")

    database_url: str = Field(default_factory=_default_database_url)
    """SQLAlchemy URL. SQLite file by default; ``postgresql+psycopg://…`` in production."""

    secret_key: str = "dev-insecure-secret-change-me"
    """Signs sessions and encrypts secrets at rest. Set it in production."""

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True

    credit_currency: str = "USD"
    """Currency of the official Credit bucket (fixed once it has postings)."""
    routed_currency: str = "CNY"
    """Currency of the routed balance bucket (fixed once it has postings)."""

    hold_ttl_seconds: int = 600
    """How long a hold may stay pending before the sweeper may expire it (plus the grace)."""
    hold_grace_seconds: int = 60

    session_ttl_seconds: int = 14 * 24 * 3600
    sweeper_interval_seconds: float = 5.0

    gateway_max_attempts: int = 3
    """Channels tried per request (the first plus fallbacks) before answering 502/503."""
    circuit_window_seconds: float = 60.0
    circuit_min_failures: int = 5
    """A circuit opens after this many failures in the window (never on a single error)…"""
    circuit_failure_ratio: float = 0.5
    """…that are also at least this share of the window's attempts."""
    circuit_cool_down_seconds: float = 30.0
    config_refresh_seconds: float = 1.0
    """How often a gateway process checks for configuration changes (keys, prices, channels)."""

    demo_upstream: bool = False
    """Serve the built-in demo upstream under /demo-upstream (``tallygate demo`` turns it on)."""
    demo_key: str = ""
    """``tallygate demo``: use this API key for the demo user instead of a new one."""

    fault: str = ""
    """Test-only fault hook, e.g. ``after_postings_before_commit`` (see ledger.faults)."""


@lru_cache
def get_settings() -> Settings:
    return Settings()
