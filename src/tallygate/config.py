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

    # ---- redeem codes (tallygate.credits) -----------------------------------------------------
    trusted_proxies: list[str] = []
    """Addresses or CIDR networks of reverse proxies whose ``X-Forwarded-For`` is believed when
    working out a client's address (claim rate limit, starter-credit address cap); from any
    other peer the header is ignored."""
    redeem_max_failures: int = 10
    """Failed code claims allowed per account, and per client address, within the window; once
    reached, every claim (a valid code too) is refused with 429 until the oldest ages out."""
    redeem_failure_window_seconds: int = 600

    gateway_max_attempts: int = 3
    """Channels tried per request (the first plus fallbacks) before answering 502/503."""
    circuit_window_seconds: float = 60.0
    circuit_min_failures: int = 5
    """A circuit opens after this many failures in the window (never on a single error)…"""
    circuit_failure_ratio: float = 0.5
    """…that are also at least this share of the window's attempts."""
    circuit_cool_down_seconds: float = 30.0
    config_refresh_seconds: float = 1.0
    redis_url: str = ""
    """``redis://host:port/db``: share per-key rate limits and route health (circuit breakers)
    between gateway processes. Unset: each process keeps its own (the embedded default)."""
    redis_prefix: str = "tallygate:"
    """Prefix of every Redis key this deployment uses (several deployments, or tests, can
    share one Redis)."""
    redis_retry_seconds: float = 5.0
    """After Redis failed, use local state this long before trying Redis again."""
    """How often a gateway process checks for configuration changes (keys, prices, channels)."""

    demo_upstream: bool = False
    """Serve the built-in demo upstream under /demo-upstream (``tallygate demo`` turns it on)."""
    demo_key: str = ""
    """``tallygate demo``: use this API key for the demo user instead of a new one."""

    # ---- payments (docs/payments.md) ----------------------------------------------------------
    payments_sandbox: bool = False
    """Enable the built-in test-mode checkout (``tallygate demo`` turns it on; ``serve`` refuses
    it unless ``--allow-sandbox`` is given, and then shows a test-mode banner)."""
    order_ttl_seconds: int = 1800
    """How long a pending top-up order waits for payment before the sweeper expires it."""
    bank_review_days: int = 7
    """How long a manual bank transfer order may wait for review before it expires."""
    topup_rates: dict[str, dict[str, str]] = {}
    """Per bucket: payment currency → exact decimal rate (bucket units per payment unit).
    A bucket without an entry accepts its own currency at rate 1."""
    topup_bonus_tiers: dict[str, list[tuple[str, str]]] = {}
    """Per bucket: [(minimum credited amount in bucket units, bonus fraction)], e.g.
    ``{"credit": [["100", "0.05"]]}`` adds 5% from 100 up. Snapshotted on each order."""
    topup_min: str = "1"
    """Smallest top-up, in units of the payment currency."""
    topup_max: str = "10000"
    topup_presets: list[str] = ["5", "10", "20", "50", "100"]
    refund_shortfall_policy: str = "debt"
    """When a refund exceeds what the bucket holds: ``debt`` books the shortfall as debt (the
    bucket is blocked until repaid); ``review`` takes what is there and leaves the rest
    awaiting an operator's decision (book as debt, or write off)."""
    public_url: str = ""
    """Base URL users reach this server at (provider return URLs); default: the request's."""

    stripe_secret_key: str = ""
    stripe_webhook_secrets: list[str] = []
    """Endpoint signing secrets (``whsec_…``); several during a rotation."""
    stripe_api_base: str = "https://api.stripe.com"
    stripe_webhook_tolerance_seconds: int = 300

    wechat_mchid: str = ""
    wechat_appid: str = ""
    wechat_api_v3_key: str = ""
    """The 32-byte APIv3 key that decrypts notification resources."""
    wechat_platform_public_key: str = ""
    """PEM of the WeChat Pay platform public key (public-key mode: nothing is fetched)."""
    wechat_platform_serial: str = ""
    wechat_merchant_private_key: str = ""
    """PEM of the merchant's API private key (signs requests to WeChat Pay)."""
    wechat_merchant_serial: str = ""
    wechat_api_base: str = "https://api.mch.weixin.qq.com"
    wechat_webhook_tolerance_seconds: int = 300

    bank_instructions: str = ""
    """Shown to users choosing a manual bank transfer (account, beneficiary …)."""
    bank_second_review_above: str = ""
    """Four eyes: a bank transfer crediting more than this (bucket units, e.g. ``"1000"``)
    needs a second approval by a different operator; empty: one approval suffices."""

    fault: str = ""
    """Test-only fault hook, e.g. ``after_postings_before_commit`` (see ledger.faults)."""


@lru_cache
def get_settings() -> Settings:
    return Settings()
