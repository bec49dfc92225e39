"""API keys: the list with spend so far, create (the key is shown once, in the response to the
form, never again), revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import Connection

from tallygate.catalog import marketplace
from tallygate.errors import TallygateError
from tallygate.keys import service as keys
from tallygate.keys.schemas import KeyCreate, KeyCreated
from tallygate.web.auth import SignedIn, SignedInForm, Viewer
from tallygate.web.params import MAX_ID
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)


def _page(
    request: Request,
    v: Viewer,
    *,
    created: KeyCreated | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    assert v.user is not None
    with v.state.db.read() as conn:
        listing = keys.list_keys(
            conn,
            user_id=v.user.id,
            currencies=v.state.ledger.currencies,
            now_us=v.state.now_us(),
            limit=200,
        )
        example = _example_model(v, conn, created.id) if created is not None else None
    return page(
        request,
        v,
        "keys.html",
        status_code=status,
        title="API keys",
        nav="keys",
        keys=listing.items,
        created=created,
        error=error,
        base_url=str(request.base_url).rstrip("/") + "/v1",
        example_model=example,
    )


def _example_model(v: Viewer, conn: Connection, key_id: int) -> str | None:
    """A model the new key may call now (priced, enabled), for its ready-to-run snippet."""
    assert v.user is not None
    market = marketplace.marketplace(
        conn, user_id=v.user.id, now_us=v.state.now_us(), currencies=v.state.ledger.currencies
    )
    for model in market.models:
        for offer in model.offers:
            if offer.enabled and offer.prices and any(k.id == key_id for k in offer.usable_by_keys):
                return offer.api_model_id
    return None


def _explain(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        fields = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
        return "please check: " + ", ".join(sorted(fields)).replace("_", " ")
    return "requests per minute must be a whole number"


@router.get("/keys")
def list_keys(request: Request, v: SignedIn) -> Response:
    return _page(request, v)


@router.post("/keys")
def create_key(
    request: Request,
    v: SignedInForm,
    label: Annotated[str, Form(max_length=200)] = "",
    project: Annotated[str, Form(max_length=200)] = "",
    allowed_models: Annotated[str, Form(max_length=2000)] = "",
    route_types: Annotated[list[str] | None, Form()] = None,
    default_route_type: Annotated[str, Form(max_length=16)] = "",
    expires_on: Annotated[str, Form(max_length=10)] = "",
    credit_limit: Annotated[str, Form(max_length=40)] = "",
    routed_limit: Annotated[str, Form(max_length=40)] = "",
    rpm_limit: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    assert v.user is not None
    limits = {
        bucket: {"total": text.strip()}
        for bucket, text in (("credit", credit_limit), ("routed", routed_limit))
        if text.strip()
    }
    try:
        body = KeyCreate(
            label=label.strip() or "key",
            project=project.strip(),
            allowed_models=[m.strip() for m in allowed_models.split(",") if m.strip()],
            allowed_route_types=route_types or ["official", "routed"],  # type: ignore[arg-type]
            default_route_type=default_route_type or None,  # type: ignore[arg-type]
            expires_at=f"{expires_on}T00:00:00Z" if expires_on else None,  # type: ignore[arg-type]
            spend_limits=limits,  # type: ignore[arg-type]
            rpm_limit=int(rpm_limit) if rpm_limit.strip() else None,
        )
        with v.state.db.begin() as conn:
            created = keys.create_key(
                conn,
                user_id=v.user.id,
                body=body,
                currencies=v.state.ledger.currencies,
                now_us=v.state.now_us(),
            )
    except (ValidationError, ValueError) as exc:
        return _page(request, v, error=_explain(exc), status=400)
    except TallygateError as exc:
        return _page(request, v, error=exc.message, status=exc.status)
    return _page(request, v, created=created, status=201)


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: Annotated[int, Path(ge=1, le=MAX_ID)], v: SignedInForm) -> Response:
    assert v.user is not None
    with v.state.db.begin() as conn:
        keys.revoke_key(
            conn,
            key_id,
            user_id=v.user.id,
            currencies=v.state.ledger.currencies,
            now_us=v.state.now_us(),
        )
    return RedirectResponse("/keys", status_code=303)
