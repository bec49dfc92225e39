"""A browser-like httpx client for the console: it reads the CSRF token from the page it was
given and posts forms the way a browser does."""

from __future__ import annotations

import re

import httpx

from tests.fixtures.factories import PASSWORD
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
    client = live.client()
    response = submit(client, "/login", "/login", email=email, password=password)
    assert response.status_code == 303, response.text
    return client


def session_client(base_url: str, token: str) -> httpx.Client:
    """A client holding a session cookie, as a browser that signed in would."""
    client = httpx.Client(base_url=base_url, timeout=10)
    client.cookies.set("tallygate_session", token)
    return client
