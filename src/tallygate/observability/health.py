"""``/healthz``: the process is up and its database answers a trivial query."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from tallygate.db.engine import Database
from tallygate.state import State

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


def database_ok(db: Database) -> bool:
    try:
        with db.read() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        logger.warning("health check: database unreachable", exc_info=True)
        return False
    return True


@router.get("/healthz")
def healthz(state: State) -> JSONResponse:
    if database_ok(state.db):
        return JSONResponse({"status": "ok", "database": "ok"})
    return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
