"""A browser-like httpx client for the console: it reads the CSRF token from the page it was
given and posts forms the way a browser does."""

from __future__ import annotations

import re

import httpx

from tallygate.kit.clock import to_epoch_us
from tests.fixtures.factories import PASSWORD, totp_code
from tests.fixtures.server import LiveServer

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, f"no CSRF token on {page.url}"
    return match.group(1)


def submit(client: httpx.Client, page_path: str, action: str, **fields: str) -> httpx.Response:
    """GET ``page_path``, then POST its form to ``action`` with the page's CSRF token."""
    token = csrf_of(client.get(page_path))
    return client.post(action, data={"csrf_token": token, **fields})


def signed_in(live: LiveServer, email: str, password: str = PASSWORD) -> httpx.Client:
    """Sign in through the pages; an operator also enters the code their authenticator app
    shows now (the factory's ``TOTP_SECRET``)."""
    client = live.client()
    response = submit(client, "/login", "/login", email=email, password=password)
    assert response.status_code == 303, response.text
    if response.headers["location"] == "/login/totp":
        code = totp_code(to_epoch_us(live.clock.now()))
        response = submit(client, "/login/totp", "/login/totp", code=code)
        assert response.status_code == 303, response.text
    return client


def session_client(base_url: str, token: str) -> httpx.Client:
    """A client holding a session cookie, as a browser that signed in would."""
    client = httpx.Client(base_url=base_url, timeout=10)
    client.cookies.set("tallygate_session", token)
    return client
