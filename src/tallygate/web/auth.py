"""Who is looking at a page, and the CSRF check for its forms.

A page's viewer comes from the ``tallygate_session`` cookie (the JSON APIs' cookie too). A page
that needs a signed-in user raises ``LoginRequired`` without one: the browser is sent to the
sign-in page, which brings it back afterwards."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from tallygate.errors import BadRequest, TallygateError
from tallygate.state import AppState, State
from tallygate.users import service as users
from tallygate.users.dependencies import SESSION_COOKIE
from tallygate.web import security


class LoginRequired(Exception):
    pass


class SecondFactorRequired(Exception):
    """An operator's session without a second factor set up: the code page first."""


def _here(request: Request) -> str:
    """Where to come back to: this page, or the console's home after a refused form post."""
    if request.method != "GET":
        return "/operator"
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def login_redirect(request: Request, exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


async def second_factor_redirect(request: Request, exc: Exception) -> Response:
    return RedirectResponse(f"/login/totp?next={quote(_here(request), safe='')}", status_code=303)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The page's reader: a user with a live session, or nobody (``user`` None)."""

    state: AppState
    user: users.User | None
    session: users.Session | None
    session_token: str | None
    anon_cookie: str | None

    @property
    def csrf(self) -> str:
        return security.csrf_token(
            self.state.settings.secret_key,
            session_token=self.session_token,
            anon_cookie=self.anon_cookie,
        )


class NulCharacter(BadRequest):
    code = "nul_character"


def _refuse_nul(values: Iterable[str]) -> None:
    """A NUL character in a page's address or form: a readable 400 (PostgreSQL text cannot
    hold one, so it would otherwise fail deep in a query)."""
    if any("\x00" in value for value in values):
        raise NulCharacter("the address or form contains a NUL character (%00): remove it")


def viewer(request: Request, state: State) -> Viewer:
    _refuse_nul([request.url.path, *(k + v for k, v in request.query_params.multi_items())])
    token = request.cookies.get(SESSION_COOKIE) or None
    anon = request.cookies.get(security.CSRF_COOKIE) or None
    if token is None:
        return Viewer(state, None, None, None, anon)
    try:
        with state.db.read() as conn:
            session = users.resolve_session(conn, token, now_us=state.now_us())
    except TallygateError:
        return Viewer(state, None, None, None, anon)
    return Viewer(state, session.user, session, token, anon)


AnyViewer = Annotated[Viewer, Depends(viewer)]


def signed_in(v: AnyViewer) -> Viewer:
    if v.user is None:
        raise LoginRequired()
    return v


SignedIn = Annotated[Viewer, Depends(signed_in)]


async def csrf_checked(request: Request, v: AnyViewer) -> Viewer:
    """The viewer of a form POST whose ``csrf_token`` is valid (403 otherwise)."""
    form = await request.form()
    _refuse_nul(k + v for k, v in form.multi_items() if isinstance(v, str))
    given = form.get("csrf_token")
    security.check_csrf(
        v.state.settings.secret_key,
        given if isinstance(given, str) else None,
        session_token=v.session_token,
        anon_cookie=v.anon_cookie,
    )
    return v


CsrfChecked = Annotated[Viewer, Depends(csrf_checked)]


async def signed_in_form(v: CsrfChecked) -> Viewer:
    if v.user is None:
        raise LoginRequired()
    return v


SignedInForm = Annotated[Viewer, Depends(signed_in_form)]
