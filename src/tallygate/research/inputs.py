"""A run's inputs as the API, the page and the CLI send them: the question, the model and route
type, the budget as a decimal string in the paying bucket's currency, and the market data (CSV
files, or one of the shipped samples)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile

from tallygate.errors import BadRequest
from tallygate.kit.money import parse_amount
from tallygate.research.data import (
    SAMPLES,
    MarketData,
    MarketDataError,
    load_sample,
    merge,
    parse_csv,
)
from tallygate.research.runs import RunRequest

DEFAULT_SAMPLE = "two-tickers"
MAX_FILES = 10


@dataclass(frozen=True, slots=True)
class Upload:
    name: str
    content: bytes | str


def market_data(sample: str | None, files: Sequence[Upload]) -> tuple[MarketData, str]:
    """The uploaded files merged (each error named with its file), else the sample."""
    files = [f for f in files if f.content]
    if len(files) > MAX_FILES:
        raise BadRequest(f"at most {MAX_FILES} CSV files per run", param="files")
    if files:
        parts = []
        for upload in files:
            try:
                parts.append(parse_csv(upload.content))
            except MarketDataError as exc:
                raise MarketDataError(f"{upload.name}: {exc.message}", param="files") from None
        return (parts[0] if len(parts) == 1 else merge(*parts)), ", ".join(f.name for f in files)
    name = sample or DEFAULT_SAMPLE
    if name not in SAMPLES:
        raise BadRequest(
            f"unknown sample data set {name!r} (available: {', '.join(sorted(SAMPLES))})",
            code="unknown_sample",
            param="sample",
        )
    return load_sample(name), f"sample: {name}"


def budget(text: str | None) -> int:
    if text is None or not str(text).strip():
        raise BadRequest("a budget cap is required (e.g. '0.50')", param="budget")
    nanos = parse_amount(str(text).strip(), field="budget")
    if nanos <= 0:
        raise BadRequest("the budget cap must be more than zero", param="budget")
    return nanos


def run_request(
    *,
    question: str | None,
    model: str | None,
    route_type: str | None,
    budget_text: str | None,
    sample: str | None,
    files: Sequence[Upload],
) -> RunRequest:
    if not model:
        raise BadRequest("'model' is required", param="model")
    if route_type not in (None, "", "official", "routed"):
        raise BadRequest("route_type must be 'official' or 'routed'", param="route_type")
    cap = budget(budget_text)
    data, source = market_data(sample, files)
    return RunRequest(str(question or ""), model, route_type or None, cap, data, source)


async def from_form(form: FormData) -> RunRequest:
    """A run's inputs from a form post (the console's page, or multipart to the API): fields
    ``question``, ``model``, ``route_type``, ``budget``, ``sample`` and any ``files`` (an empty
    file input sends an empty part, which does not count as a file)."""
    files = []
    for item in form.getlist("files"):
        if isinstance(item, UploadFile):
            files.append(Upload(item.filename or "upload.csv", await item.read()))
        elif isinstance(item, str) and item.strip():
            files.append(Upload("csv", item))

    def field(name: str) -> str | None:
        value = form.get(name)
        return value if isinstance(value, str) else None

    return run_request(
        question=field("question"),
        model=field("model"),
        route_type=field("route_type"),
        budget_text=field("budget"),
        sample=field("sample"),
        files=files,
    )
