"""Gateway tests run a real Tallygate server in front of two test upstreams (tests/fixtures/
gateway.py). After every test that built a world, the ledger must reconcile and no hold may be
left pending."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.gateway import WorldFactory, gateway_upstreams, make_world, world

__all__ = ["gateway_upstreams", "make_world", "world"]


@pytest.fixture(autouse=True)
def _reconciled(request: pytest.FixtureRequest) -> Iterator[None]:
    """Checked once the world's server has stopped (``make_world`` is set up inside this
    fixture, so it is torn down first): every request has settled by then."""
    factory: WorldFactory | None = None
    if "make_world" in request.fixturenames:
        factory = request.getfixturevalue("make_world")
    yield
    for built in factory.built if factory else []:
        built.assert_reconciled()


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own (parallel tests share one Redis), its keys deleted
    afterwards."""
    import secrets

    import redis

    prefix = f"tg-test:{secrets.token_hex(6)}:"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
        yield prefix
        stale = list(client.scan_iter(match=prefix + "*", count=500))
        if stale:
            client.delete(*stale)
    finally:
        client.close()
