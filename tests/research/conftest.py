"""Research tests: the workflow, API, pages and CLI run on the gateway world (a real server in
front of the test upstream, which answers research steps as the demo upstream does). After every
test that built a world, the ledger must reconcile and no hold may be left pending."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.gateway import WorldFactory, gateway_upstreams, make_world, world

__all__ = ["gateway_upstreams", "make_world", "world"]


@pytest.fixture(autouse=True)
def _reconciled(request: pytest.FixtureRequest) -> Iterator[None]:
    factory: WorldFactory | None = None
    if "make_world" in request.fixturenames:
        factory = request.getfixturevalue("make_world")
    yield
    for built in factory.built if factory else []:
        built.assert_reconciled()
