from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock
from tallygate.ledger import Ledger
from tests.fixtures.factories import Factory
from tests.fixtures.payments import WEBHOOK_SECRET, FakeStripe, fake_stripe_server
from tests.fixtures.server import AppFactory, LiveServer, make_app, serving

__all__ = ["make_app"]


@pytest.fixture
def stripe_fake() -> Iterator[FakeStripe]:
    with fake_stripe_server() as fake:
        yield fake


def payment_settings(fake: FakeStripe, **overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "payments_sandbox": True,
        "stripe_secret_key": "sk_test_fake",
        "stripe_api_base": fake.url,
        "stripe_webhook_secrets": [WEBHOOK_SECRET],
        "bank_instructions": "IBAN XX00 TEST 0000, reference: your order id",
        "topup_rates": {
            "credit": {"USD": "1", "JPY": "0.0067", "KWD": "3.25"},
            "routed": {"CNY": "1", "USD": "7.2"},
        },
        "topup_max": "100000",
    }
    values.update(overrides)
    return values


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def start(
    make_app: AppFactory, db: Database, ledger: Ledger, clock: FrozenClock, stripe_fake: FakeStripe
) -> Iterator[ServerFactory]:
    """Start a server with payment settings (keyword arguments override them)."""
    with ExitStack() as stack:

        def build(**overrides: object) -> LiveServer:
            app = make_app(**payment_settings(stripe_fake, **overrides))
            base_url = stack.enter_context(serving(app))
            return LiveServer(app, base_url, db, ledger, clock, Factory(db, ledger))

        yield build


@pytest.fixture
def live(start: ServerFactory) -> LiveServer:
    return start()
