"""Process state and the request boundary.

The lifespan builds one ``AppState`` (settings, database, ledger, clock) and stores it on
``app.state``; endpoints reach it only through the typed dependencies below — nothing lives in
module globals. ``WriteConn`` and ``ReadConn`` are the transaction boundary of a request: the
transaction commits when the endpoint returns and rolls back when it raises, before the
response is sent (``scope="function"``), so a client never sees a success that did not commit.
Services receive the connection and never commit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy import Connection

from tallygate.config import Settings
from tallygate.db.engine import Database
from tallygate.kit.clock import Clock, to_epoch_us
from tallygate.ledger import Ledger


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    db: Database
    ledger: Ledger
    clock: Clock

    def now_us(self) -> int:
        return to_epoch_us(self.clock.now())


def get_state(request: Request) -> AppState:
    return cast(AppState, request.app.state.tallygate)


State = Annotated[AppState, Depends(get_state)]


def _write_conn(state: State) -> Iterator[Connection]:
    with state.db.begin() as conn:
        yield conn


def _read_conn(state: State) -> Iterator[Connection]:
    with state.db.read() as conn:
        yield conn


WriteConn = Annotated[Connection, Depends(_write_conn, scope="function")]
"""A write transaction for this request (SQLite: ``BEGIN IMMEDIATE``)."""

ReadConn = Annotated[Connection, Depends(_read_conn, scope="function")]
"""A read-only transaction for this request; readers never queue behind writers."""
