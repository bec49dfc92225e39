"""One renderer per surface, for every error the app can raise.

- ``/v1/*`` (OpenAI-compatible): ``{"error": {"message", "type", "code", "param"}}``, the shape
  the ``openai`` SDKs parse;
- ``/api/*`` and ``/admin/*`` (JSON): ``{"error": {"code", "message", "param", "details"}}``;
- anything else (pages): a small readable HTML page.

Expected failures are ``TallygateError``s and keep their status. Request validation errors name
the offending fields and say what is wrong, without echoing pydantic internals. Anything else is
a bug: it is logged with its traceback and the client gets a generic 500."""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from tallygate.errors import TallygateError

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ("invalid_request", "invalid_request_error"),
    401: ("unauthorized", "authentication_error"),
    403: ("forbidden", "permission_error"),
    404: ("not_found", "invalid_request_error"),
    405: ("method_not_allowed", "invalid_request_error"),
    409: ("conflict", "invalid_request_error"),
    413: ("request_too_large", "invalid_request_error"),
    415: ("unsupported_media_type", "invalid_request_error"),
    429: ("rate_limited", "rate_limit_error"),
}


@dataclass(slots=True)
class Problem:
    """What every renderer needs: the surface decides which parts to show and how."""

    status: int
    code: str
    type: str
    message: str
    param: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] | None = None


def surface(path: str) -> str:
    """``openai`` for /v1, ``json`` for /api and /admin, ``html`` for everything else."""
    if path == "/v1" or path.startswith("/v1/"):
        return "openai"
    for prefix in ("/api", "/admin"):
        if path == prefix or path.startswith(prefix + "/"):
            return "json"
    return "html"


def render(request: Request, problem: Problem) -> Response:
    kind = surface(request.url.path)
    if kind == "openai":
        body: dict[str, Any] = {
            "message": problem.message,
            "type": problem.type,
            "code": problem.code,
            "param": problem.param,
        }
        return JSONResponse({"error": body}, problem.status, headers=problem.headers)
    if kind == "json":
        body = {
            "code": problem.code,
            "message": problem.message,
            "param": problem.param,
            "details": problem.details,
        }
        return JSONResponse({"error": body}, problem.status, headers=problem.headers)
    title = html.escape(f"{problem.status} · {problem.code.replace('_', ' ')}")
    page = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title>"
        "<body style='font:16px system-ui,sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>{title}</h1><p>{html.escape(problem.message)}</p>"
        "<p><a href='/'>Back to Tallygate</a></p></body></html>"
    )
    return HTMLResponse(page, problem.status, headers=problem.headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    # Drop the "body"/"query"/… prefix: clients know their fields by name.
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts) or "request"


def validation_problem(exc: RequestValidationError, *, openai: bool) -> Problem:
    fields = []
    for error in exc.errors():
        name = _field_name(tuple(error.get("loc", ())))
        fields.append({"field": name, "message": str(error.get("msg", "is invalid"))})
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
    return Problem(
        status=400 if openai else 422,
        code="invalid_request" if openai else "validation_error",
        type="invalid_request_error",
        message=message,
        param=fields[0]["field"] if fields else None,
        details={"fields": fields},
    )


async def _tallygate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TallygateError)
    return render(
        request,
        Problem(exc.status, exc.code, exc.type, exc.message, exc.param, dict(exc.details)),
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return render(request, validation_problem(exc, openai=surface(request.url.path) == "openai"))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, kind = _HTTP_CODES.get(
        exc.status_code, ("server_error" if exc.status_code >= 500 else "http_error", "api_error")
    )
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    return render(request, Problem(exc.status_code, code, kind, message, headers=exc.headers))


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render(
        request,
        Problem(500, "internal_error", "server_error", "internal server error: the request failed"),
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(TallygateError, _tallygate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
