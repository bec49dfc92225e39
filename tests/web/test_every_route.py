"""Every console route, enumerated from the app's page routers: each form POST is refused (a
readable 403 page) without a valid CSRF token, for an operator, a user and someone signed out;
each GET page answers nonsense in its path and in every query field (out of range, too large
for any integer column, markup, a NUL, not a date) with a readable 4xx, never a 500 or a stack
trace; a NUL in a form is a readable 400. Both databases, a real server on loopback."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from fastapi.routing import APIRoute

from tests.fixtures.gateway import World
from tests.web.helpers import session_client, submit

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


def page_gets(world: World) -> list[APIRoute]:
    return sorted(
        (
            r
            for r in _routes(world.app.routes)
            if "GET" in r.methods and r.endpoint.__module__.startswith("tallygate.web.")
        ),
        key=lambda r: r.path,
    )


NONSENSE = ("-1", "'\"><script>x</script>", "9" * 30, "2026-13-45", "\x00", "")
"""Out of range, markup, too large for any integer column, not a date, a NUL, empty."""


class TestBadInputNeverShowsAStackTrace:
    def test_every_page_answers_nonsense_in_each_field_readably(self, world: World) -> None:
        routes = page_gets(world)
        tokens = {
            "operator": world.make.session_token(world.operator),
            "user": world.make.session_token(world.user),
        }
        for who, token in tokens.items():
            with session_client(world.base_url, token) as client:
                for route in routes:
                    if who == "user" and route.path.startswith("/operator"):
                        continue  # refused before any field is read (test_operator*.py)
                    fields = [p.alias for p in route.dependant.query_params]
                    for value in NONSENSE:
                        path = re.sub(r"\{[^}]+\}", quote(value, safe="") or "x", route.path)
                        for params in [{}] + [{f: value} for f in fields]:
                            response = client.get(path, params=params)
                            where = (who, path, params, response.status_code)
                            assert response.status_code < 500, where
                            assert "Traceback" not in response.text, where
                            assert 'File "' not in response.text, where

    def test_a_nul_in_a_form_is_a_readable_400(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            redeem = submit(client, "/redeem", "/redeem", code="CODE\x00")
        with session_client(world.base_url, "") as nobody:
            login = submit(nobody, "/login", "/login", email="a\x00@example.com", password="x")
        for response in (redeem, login):
            assert response.status_code == 400 and "NUL character" in response.text
