"""Gateway tests run a real Tallygate server in front of two test upstreams (tests/fixtures/
gateway.py). After every test that built a world, the ledger must reconcile and no hold may be
left pending."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.gateway import gateway_upstreams, make_world, reconciled, world

__all__ = ["gateway_upstreams", "make_world", "reconciled", "world"]


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
