"""Jinja2 rendering: one environment, the money filters and the common page context."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import SYMBOLS, parse_amount, to_decimal_string
from tallygate.web import security
from tallygate.web.auth import Viewer

LABELS = {"credit": "Credit", "routed": "Routed balance"}
"""Bucket names shown to people: never interchangeable."""


def money(nanos: int | None, currency: str) -> str:
    """Exact amount with its currency symbol: ``$1,234.50``, ``¥0.000000123``, ``12.50 SGD``.

    Never rounded: at least two decimals, and as many more as the amount has (a charge of 123
    nano-units shows as such, not as $0.00)."""
    if nanos is None:
        return "—"
    text = to_decimal_string(nanos)
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    digits = f"{int(whole):,}.{frac}"
    symbol = SYMBOLS.get(currency.upper())
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{digits} {currency.upper()}"


def signed_money(nanos: int, currency: str) -> str:
    return ("+" if nanos > 0 else "") + money(nanos, currency)


def decimal_money(text: str | None, currency: str) -> str:
    """An exact decimal string (as the APIs give prices) shown like ``money``."""
    if text in (None, ""):
        return "—"
    return money(parse_amount(str(text)), currency)


def when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        value = from_epoch_us(value)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def short_when(value: Any) -> str:
    """``2026-01-01 00:00`` (UTC), for narrow tables."""
    return when(value)[:16]


templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
REFUND_STATES = {
    "none": "not refunded",
    "pending": "refund in progress",
    "partial": "partly refunded",
    "full": "fully refunded",
}
"""An order's ``refund_state`` in words (``pending``: the provider is still processing a refund)."""


def refund_state(state: str) -> str:
    return REFUND_STATES.get(state, state.replace("_", " "))


templates.env.filters["money"] = money
templates.env.filters["refund_state"] = refund_state
templates.env.filters["signed_money"] = signed_money
templates.env.filters["when"] = when
templates.env.filters["short_when"] = short_when
templates.env.filters["decimal_money"] = decimal_money
templates.env.globals["LABELS"] = LABELS


SECURITY_HEADERS = {
    # Everything a page uses is served from here: the browser refuses anything else.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def page(
    request: Request,
    viewer: Viewer,
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with the viewer, its CSRF token and the nav; a signed-out visitor
    without a CSRF cookie gets one, so the sign-in and sign-up forms can be checked."""
    anon = viewer.anon_cookie
    fresh = None
    if viewer.session_token is None and anon is None:
        fresh = anon = security.new_csrf_cookie()
    csrf = security.csrf_token(
        viewer.state.settings.secret_key, session_token=viewer.session_token, anon_cookie=anon
    )
    response = templates.TemplateResponse(
        request,
        template,
        {"viewer": viewer, "user": viewer.user, "csrf": csrf, **context},
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(SECURITY_HEADERS)
    if fresh is not None:
        response.set_cookie(
            security.CSRF_COOKIE,
            fresh,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
    return response
