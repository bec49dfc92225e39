"""Every form the console serves is CSRF-checked: each POST route of the page routers,
enumerated from the app, is refused (a readable 403 page) without a valid token, for an
operator's session as for a user's and for someone signed out. Both databases, real server."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute

from tests.fixtures.gateway import World
from tests.web.helpers import session_client

SAMPLES = {
    "order_id": "ord_00000000",
    "refund_id": "rf_00000000",
    "name:path": "tg-chat",
    "route_type": "official",
    "run_id": "run_00000000",
}
"""A plausible value for each path parameter that is not a number."""


def _routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)


def form_posts(world: World) -> list[str]:
    """Every POST of the page routers (``tallygate.web.*``), with sample path values."""
    paths = sorted(
        {
            r.path
            for r in _routes(world.app.routes)
            if "POST" in r.methods and r.endpoint.__module__.startswith("tallygate.web.")
        }
    )
    return [re.sub(r"\{([^}]+)\}", lambda m: SAMPLES.get(m.group(1), "1"), path) for path in paths]


class TestEveryFormIsCsrfChecked:
    def test_no_form_post_passes_without_a_valid_token(self, world: World) -> None:
        posts = form_posts(world)
        assert {"/login", "/keys", "/redeem", "/operator/users/1/adjust"} <= set(posts)
        assert "/operator/payment-jobs/1/requeue" in posts
        sessions = {
            "operator": world.make.session_token(world.operator),
            "user": world.make.session_token(world.user),
        }
        for who, token in sessions.items():
            with session_client(world.base_url, token) as client:
                for path in posts:
                    for data in ({}, {"csrf_token": "forged"}):
                        response = client.post(path, data=data)
                        assert response.status_code == 403, (who, path, response.status_code)
                        assert "reload the page" in response.text, (who, path)
                        assert "Traceback" not in response.text
        with session_client(world.base_url, "") as nobody:
            for path in posts:
                response = nobody.post(path, data={"csrf_token": "forged"})
                assert response.status_code == 403, ("signed out", path, response.status_code)
