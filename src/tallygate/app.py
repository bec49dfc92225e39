"""``create_app()``: the FastAPI application, built from ``Settings`` with nothing at import time.

The lifespan opens the database, bootstraps the ledger's platform accounts, stores the typed
``AppState`` on ``app.state`` and runs the sweeper (expired holds and lots) until shutdown.
Migrations are not run here: ``tallygate serve`` runs them first (unless ``--no-migrate``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import anyio
import psycopg
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from tallygate import __version__, error_handlers, web
from tallygate.adjustments import endpoints as adjustments
from tallygate.admin import admin_api
from tallygate.catalog import endpoints as catalog
from tallygate.config import Settings, get_settings
from tallygate.credits import endpoints as credits
from tallygate.db.engine import Database
from tallygate.exports import endpoints as exports
from tallygate.gateway.middleware import GatewayMiddleware
from tallygate.keys import endpoints as keys
from tallygate.kit.clock import Clock, SystemClock
from tallygate.ledger import Ledger
from tallygate.ledger.faults import hook
from tallygate.observability import health
from tallygate.observability.logging import configure_logging
from tallygate.payments import endpoints as payments
from tallygate.payments import pages as payment_pages
from tallygate.payments.registry import Payments
from tallygate.receipts import endpoints as receipts
from tallygate.research import endpoints as research_api
from tallygate.state import AppState
from tallygate.users import endpoints as users
from tallygate.wallet import endpoints as wallet

logger = logging.getLogger(__name__)
T = TypeVar("T")


def open_state(settings: Settings, clock: Clock) -> AppState:
    """Open the database and bootstrap the ledger (blocking: run it off the event loop)."""
    db = Database(settings.database_url)
    ledger = Ledger(
        {"credit": settings.credit_currency, "routed": settings.routed_currency},
        clock=clock,
        hold_ttl_seconds=settings.hold_ttl_seconds,
        hold_grace_seconds=settings.hold_grace_seconds,
        fault=hook(settings.fault),
    )
    try:
        with db.begin() as conn:
            ledger.bootstrap(ledger.tx(conn))
    except BaseException:
        db.dispose()
        raise
    return AppState(settings=settings, db=db, ledger=ledger, clock=clock)


def sweep_once(state: AppState) -> tuple[int, int]:
    """Expire overdue holds, then overdue lots, each in its own write transaction (their lock
    orders must not be combined in one); returns (holds, lots)."""

    def holds() -> int:
        with state.db.begin() as conn:
            return state.ledger.expire_holds(state.ledger.tx(conn))

    def lots() -> int:
        with state.db.begin() as conn:
            return state.ledger.expire_lots(state.ledger.tx(conn))

    return retry_conflicts(holds), retry_conflicts(lots)


def retry_conflicts(fn: Callable[[], T], attempts: int = 5) -> T:
    """Run a whole transaction again after a PostgreSQL deadlock or serialization failure
    (DESIGN.md §5); the ledger's operations are idempotent, so a re-run is safe."""
    for attempt in range(attempts):
        try:
            return fn()
        except DBAPIError as exc:
            retryable = isinstance(
                exc.orig, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
            )
            if not retryable or attempt == attempts - 1:
                raise
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            if attempt == attempts - 1:
                raise
        time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


async def run_sweeper(state: AppState, interval: float, payments: Payments | None = None) -> None:
    """Sweep every ``interval`` seconds until cancelled. A failed sweep is logged and retried at
    the next tick; cancellation waits for a sweep in progress to commit or roll back."""
    while True:
        await asyncio.sleep(interval)
        if payments is not None:
            await _sweep_payments(state, payments)
        try:
            holds, lots = await anyio.to_thread.run_sync(sweep_once, state)
        except Exception:
            logger.exception("sweeper: sweep failed; retrying at the next tick")
            continue
        if holds or lots:
            logger.info("sweeper: expired %d hold(s) and %d lot(s)", holds, lots)


async def _sweep_payments(state: AppState, payments: Payments) -> None:
    """Expire overdue top-up orders and give back webhook jobs a crashed worker held, in their
    own transactions; a failure here never stops the hold and lot sweep."""
    from tallygate.payments.webhook_service import sweep

    try:
        orders, events = await anyio.to_thread.run_sync(sweep, state, payments)
    except Exception:
        logger.exception("sweeper: payments sweep failed; retrying at the next tick")
        return
    if orders or events:
        logger.info("sweeper: expired %d order(s), reclaimed %d job(s)", orders, events)


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or get_settings()
    clock = clock or SystemClock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        state = await anyio.to_thread.run_sync(open_state, settings, clock)
        app.state.tallygate = state
        from tallygate.gateway.runtime import Runtime

        app.state.gateway = await Runtime.start(state)
        app.state.payments = Payments.from_settings(settings)
        sweeper = None
        if settings.sweeper_interval_seconds > 0:
            sweeper = asyncio.create_task(
                run_sweeper(state, settings.sweeper_interval_seconds, app.state.payments),
                name="tallygate-sweeper",
            )
        from tallygate.payments.jobs import JobWorker

        interval = settings.sweeper_interval_seconds
        app.state.payment_jobs = JobWorker(
            state, app.state.payments, interval=min(interval, 1.0) if interval > 0 else 1.0
        )
        jobs = asyncio.create_task(app.state.payment_jobs.run_forever(), name="tallygate-jobs")
        try:
            yield
        finally:
            jobs.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jobs
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await app.state.gateway.close()
            state.db.dispose()

    app = FastAPI(
        title="Tallygate",
        version=__version__,
        summary="OpenAI-compatible AI gateway with an exact double-entry wallet.",
        lifespan=lifespan,
        # The interactive docs pages load their scripts from a CDN; Tallygate's pages load
        # nothing from outside the server (DESIGN.md §7). The OpenAPI document stays.
        docs_url=None,
        redoc_url=None,
    )
    error_handlers.install(app)
    app.add_middleware(GatewayMiddleware)
    if settings.demo_upstream:
        from tallygate.demo.seed import UPSTREAM_PATH, UPSTREAM_SECRET
        from tallygate.demo.upstream import UpstreamConfig, create_upstream_app

        app.mount(UPSTREAM_PATH, create_upstream_app(UpstreamConfig(api_key=UPSTREAM_SECRET)))
    app.include_router(health.router)
    app.include_router(users.router)
    app.include_router(wallet.router)
    app.include_router(receipts.router)
    app.include_router(exports.router)
    app.include_router(keys.router)
    app.include_router(credits.router)
    app.include_router(adjustments.router)
    app.include_router(catalog.router)
    app.include_router(payments.router)
    app.include_router(payment_pages.router)
    app.include_router(research_api.router)
    app.include_router(admin_api())
    web.install(app)
    return app
