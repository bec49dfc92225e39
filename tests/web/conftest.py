"""Page tests: a real server on loopback (``live``), or the gateway world (``world``) when a
page needs real requests, receipts and prices behind it."""

from __future__ import annotations

from tests.fixtures.gateway import gateway_upstreams, make_world, world
from tests.fixtures.server import live, make_app

__all__ = ["gateway_upstreams", "live", "make_app", "make_world", "world"]
