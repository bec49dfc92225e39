"""Browser journeys run once, on PostgreSQL, against the gateway world (tests/fixtures/gateway.py)."""

from __future__ import annotations

import pytest

from tests.fixtures.browser import chromium
from tests.fixtures.gateway import World, WorldFactory, gateway_upstreams, make_world

__all__ = ["chromium", "gateway_upstreams", "make_world", "world"]


@pytest.fixture
def world(make_world: WorldFactory) -> World:
    """The gateway world with the sandbox payment provider (test-mode checkout) on."""
    return make_world(payments_sandbox=True)


@pytest.fixture
def backend() -> str:
    return "postgresql"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.fixtures.browser import SCREENSHOTS

    if SCREENSHOTS.exists():
        terminalreporter.write_line(f"browser screenshots: {SCREENSHOTS}")
