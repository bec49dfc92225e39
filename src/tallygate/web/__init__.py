"""The user console: server-rendered pages (Jinja2) over the same services as the JSON APIs.

``install(app)`` mounts the vendored static files, the page routers and the page-only error
handling (redirects to the sign-in and second-factor pages); nothing a page needs is loaded from outside the server."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from tallygate.web import (
    account,
    keys,
    market,
    operator,
    operator_audit,
    operator_catalog,
    operator_channels,
    operator_codes,
    operator_payments,
    operator_reports,
    playground,
    receipts,
    redeem,
    research,
    topup,
    wallet,
)
from tallygate.web.auth import (
    LoginRequired,
    SecondFactorRequired,
    login_redirect,
    second_factor_redirect,
)
from tallygate.web.security import LoginLimiter

STATIC = Path(__file__).parent / "static"


def favicon() -> FileResponse:
    """Browsers ask for /favicon.ico on every page, the plain error pages included."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


def install(app: FastAPI) -> None:
    app.state.login_limiter = LoginLimiter()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(LoginRequired, login_redirect)
    app.add_exception_handler(SecondFactorRequired, second_factor_redirect)
    app.add_api_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    for module in (
        account,
        wallet,
        topup,
        redeem,
        keys,
        receipts,
        market,
        playground,
        research,
        operator,
        operator_payments,
        operator_audit,
        operator_channels,
        operator_catalog,
        operator_codes,
        operator_reports,
    ):
        app.include_router(module.router)
