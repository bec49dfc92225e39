"""The price list of a sync request: given in the body, or fetched from the operator's URL.

Fetching happens here, before the endpoint opens its write transaction, so a slow price-list
server never holds the database's write lock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
from fastapi import Depends

from tallygate.catalog.schemas import SyncApply, SyncSource
from tallygate.catalog.sync import InvalidPriceList, load_text

FETCH_TIMEOUT_SECONDS = 15
MAX_DOCUMENT_BYTES = 5_000_000


async def fetch_text(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidPriceList("url must be an http:// or https:// address", param="url")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise InvalidPriceList(
                    f"fetching the price list failed: the server answered HTTP {response.status}",
                    param="url",
                )
            body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
    except TimeoutError:
        raise InvalidPriceList(
            f"fetching the price list timed out after {FETCH_TIMEOUT_SECONDS} s", param="url"
        ) from None
    except aiohttp.ClientError as exc:
        raise InvalidPriceList(
            f"fetching the price list failed: {type(exc).__name__}: {exc}", param="url"
        ) from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise InvalidPriceList("the price list is larger than 5 MB", param="url")
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise InvalidPriceList("the price list is not UTF-8 text", param="url") from None


async def load(source: SyncSource) -> Any:
    given = [n for n in ("document", "text", "url") if getattr(source, n) is not None]
    if len(given) != 1:
        raise InvalidPriceList("give exactly one of: document, text, url")
    if source.document is not None:
        return source.document
    if source.text is not None:
        return load_text(source.text)
    assert source.url is not None
    return load_text(await fetch_text(source.url))


async def preview_document(body: SyncSource) -> Any:
    return await load(body)


@dataclass(frozen=True, slots=True)
class Approved:
    document: Any
    diff_id: str


async def approved_document(body: SyncApply) -> Approved:
    return Approved(await load(body), body.diff_id)


PreviewDocument = Annotated[Any, Depends(preview_document)]
ApprovedDocument = Annotated[Approved, Depends(approved_document)]
