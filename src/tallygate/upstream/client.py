"""The one shared aiohttp session for upstream calls (185 µs per call here against 823 µs for
httpx — DESIGN.md §4), created in the app's lifespan."""

from __future__ import annotations

import aiohttp


def make_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        skip_auto_headers=("User-Agent",),
        read_bufsize=2**16,
    )
