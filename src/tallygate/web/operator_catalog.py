"""Console pages: models, price versions and catalog sync with a diff to confirm.

Everything goes through ``tallygate.catalog`` (the admin API's services): prices are typed as
exact decimal strings and stored as new immutable price versions; a sync is previewed as a diff
and applied only when the operator confirms that very diff (``diff_id``), audited. After a
change the gateway reloads its snapshot at once."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Form, Path, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from tallygate.catalog import service as catalog
from tallygate.catalog import sync
from tallygate.catalog.dependencies import MAX_DOCUMENT_BYTES
from tallygate.catalog.schemas import ModelCreate, ModelUpdate, OfferPut, SyncDiff
from tallygate.catalog.service import Actor
from tallygate.errors import TallygateError
from tallygate.web.auth import Viewer
from tallygate.web.operator import Operator, OperatorForm
from tallygate.web.operator_channels import refresh_gateway
from tallygate.web.render import page

router = APIRouter(prefix="/operator", include_in_schema=False)

ModelName = Annotated[str, Path(max_length=200)]
Short = Annotated[str, Form(max_length=200)]
Price = Annotated[str, Form(max_length=40)]
Document = Annotated[str, Form(max_length=MAX_DOCUMENT_BYTES)]
ROUTE_TYPES = ("official", "routed")
BUCKET_OF_ROUTE = {"official": "credit", "routed": "routed"}


def _whole(value: str, field: str) -> int:
    try:
        return int(value.strip().replace("_", ""))
    except ValueError:
        raise catalog.InvalidModel(f"{field} must be a whole number of tokens") from None


# ---- list and create ---------------------------------------------------------------------------

NEW_MODEL = {"name": "", "description": "", "context_length": "128000", "output_cap": "4096"}


def _models_page(
    request: Request,
    v: Viewer,
    *,
    status_code: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    with v.state.db.read() as conn:
        listing = catalog.list_models(conn, v.state.ledger.currencies)
    return page(
        request,
        v,
        "operator_models.html",
        status_code=status_code,
        title="Models & prices",
        nav="operator",
        subnav="models",
        models=listing,
        error=error,
        form=form or NEW_MODEL,
    )


@router.get("/models")
def models_page(request: Request, v: Operator) -> Response:
    return _models_page(request, v)


@router.post("/models")
def create_model(
    request: Request,
    v: OperatorForm,
    name: Short = "",
    description: Annotated[str, Form(max_length=4000)] = "",
    context_length: Short = "",
    output_cap: Short = "",
) -> Response:
    assert v.user is not None
    form = {
        "name": name,
        "description": description,
        "context_length": context_length,
        "output_cap": output_cap,
    }
    try:
        body = ModelCreate(
            name=name,
            description=description,
            context_length=_whole(context_length, "context length"),
            output_cap=_whole(output_cap, "output cap"),
        )
        with v.state.db.begin() as conn:
            made = catalog.create_model(
                conn,
                body,
                actor=Actor(v.user.email),
                now_us=v.state.now_us(),
                currencies=v.state.ledger.currencies,
            )
    except ValidationError:
        return _models_page(request, v, status_code=400, form=form, error="check the fields")
    except TallygateError as exc:
        return _models_page(request, v, status_code=exc.status, form=form, error=exc.message)
    refresh_gateway(request)
    return RedirectResponse(f"/operator/models/{made.name}?saved=created", status_code=303)


# ---- catalog sync ------------------------------------------------------------------------------


def _sync_page(
    request: Request,
    v: Viewer,
    *,
    status_code: int = 200,
    error: str | None = None,
    text: str = "",
) -> Response:
    return page(
        request,
        v,
        "operator_sync.html",
        status_code=status_code,
        title="Catalog sync",
        nav="operator",
        subnav="models",
        error=error,
        text=text,
    )


@router.get("/catalog-sync")
def sync_page(request: Request, v: Operator) -> Response:
    return _sync_page(request, v)


async def _document_text(text: str, file: UploadFile | None) -> str:
    if file is not None and file.filename:
        raw = await file.read(MAX_DOCUMENT_BYTES + 1)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise sync.InvalidPriceList("the price list is larger than 5 MB")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise sync.InvalidPriceList("the uploaded file is not UTF-8 text") from None
    if not text.strip():
        raise sync.InvalidPriceList("paste a price list (JSON or YAML) or choose a file")
    return text


@router.post("/catalog-sync/preview")
async def sync_preview(
    request: Request,
    v: OperatorForm,
    text: Document = "",
    file: UploadFile | None = None,
) -> Response:
    """Compare the price list with the catalog: a diff to confirm; nothing is written."""
    try:
        document = await _document_text(text, file)

        def diff() -> SyncDiff:
            with v.state.db.read() as conn:
                return sync.preview(conn, sync.load_text(document), v.state.ledger.currencies)

        found = await anyio.to_thread.run_sync(diff)
    except TallygateError as exc:
        status, message = exc.status, exc.message
        return await anyio.to_thread.run_sync(
            lambda: _sync_page(request, v, status_code=status, error=message, text=text)
        )
    return await anyio.to_thread.run_sync(
        lambda: page(
            request,
            v,
            "operator_sync_preview.html",
            title="Catalog sync: confirm",
            nav="operator",
            subnav="models",
            diff=found,
            text=document,
            currencies=v.state.ledger.currencies,
            bucket_of=BUCKET_OF_ROUTE,
        )
    )


@router.post("/catalog-sync/apply")
def sync_apply(
    request: Request,
    v: OperatorForm,
    text: Document = "",
    diff_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Apply exactly the previewed diff (refused when the catalog or list changed since)."""
    assert v.user is not None
    try:
        with v.state.db.begin() as conn:
            result = sync.apply(
                conn,
                sync.load_text(text),
                diff_id,
                operator=v.user.email,
                now_us=v.state.now_us(),
                currencies=v.state.ledger.currencies,
            )
    except TallygateError as exc:
        return _sync_page(request, v, status_code=exc.status, error=exc.message, text=text)
    refresh_gateway(request)
    return page(
        request,
        v,
        "operator_sync_done.html",
        title="Catalog sync applied",
        nav="operator",
        subnav="models",
        result=result,
    )


# ---- one model ---------------------------------------------------------------------------------


def _model_page(
    request: Request,
    v: Viewer,
    name: str,
    *,
    status_code: int = 200,
    error: str | None = None,
    saved: str | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    currencies = v.state.ledger.currencies
    with v.state.db.read() as conn:
        model = catalog.get_model(conn, name, currencies)
        history = catalog.price_history(conn, name)
    return page(
        request,
        v,
        "operator_model.html",
        status_code=status_code,
        title=f"Model {model.name}",
        nav="operator",
        subnav="models",
        model=model,
        history=history,
        error=error,
        saved=saved,
        form=form or {},
        route_types=[(r, BUCKET_OF_ROUTE[r], currencies[BUCKET_OF_ROUTE[r]]) for r in ROUTE_TYPES],
    )


SAVED = {
    "created": "Model created: set a price for a route type to offer it.",
    "settings": "Model saved.",
}


@router.post("/models/{name:path}/offers/{route_type}")
def put_offer(
    request: Request,
    v: OperatorForm,
    name: ModelName,
    route_type: Annotated[str, Path(max_length=16)],
    input: Price = "",
    output: Price = "",
    cached_input: Price = "",
    enabled: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Set or replace the offer's price: a new price version (the old one stays in history)."""
    assert v.user is not None
    form = {
        "route_type": route_type,
        "input": input,
        "output": output,
        "cached_input": cached_input,
    }
    try:
        body = OfferPut(
            input=input,
            output=output,
            cached_input=cached_input.strip() or None,
            enabled=enabled == "on",
        )
        with v.state.db.begin() as conn:
            catalog.put_offer(
                conn,
                name,
                route_type,
                body,
                actor=Actor(v.user.email),
                now_us=v.state.now_us(),
                currencies=v.state.ledger.currencies,
            )
    except TallygateError as exc:
        if isinstance(exc, catalog.ModelNotFound):
            raise
        return _model_page(request, v, name, status_code=exc.status, error=exc.message, form=form)
    refresh_gateway(request)
    return RedirectResponse(
        f"/operator/models/{name}?saved=price-{route_type}#history", status_code=303
    )


@router.post("/models/{name:path}/settings")
def update_model(
    request: Request,
    v: OperatorForm,
    name: ModelName,
    description: Annotated[str, Form(max_length=4000)] = "",
    context_length: Short = "",
    output_cap: Short = "",
    enabled: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Edit the model (description, sizes) or take it off / put it back on sale."""
    assert v.user is not None
    try:
        body = ModelUpdate(
            description=description,
            context_length=_whole(context_length, "context length"),
            output_cap=_whole(output_cap, "output cap"),
            enabled=enabled == "on",
        )
        with v.state.db.begin() as conn:
            catalog.update_model(
                conn,
                name,
                body,
                actor=Actor(v.user.email),
                now_us=v.state.now_us(),
                currencies=v.state.ledger.currencies,
            )
    except TallygateError as exc:
        if isinstance(exc, catalog.ModelNotFound):
            raise
        return _model_page(request, v, name, status_code=exc.status, error=exc.message)
    refresh_gateway(request)
    return RedirectResponse(f"/operator/models/{name}?saved=settings", status_code=303)


@router.get("/models/{name:path}")
def model_page(request: Request, v: Operator, name: ModelName, saved: str = "") -> Response:
    message = SAVED.get(saved)
    if saved.startswith("price-"):
        message = f"New {saved[6:]} price saved: it applies to requests from now on."
    return _model_page(request, v, name, saved=message)
