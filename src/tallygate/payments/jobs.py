"""The durable queue behind webhooks (docs/decisions/0008-payment-jobs.md).

A webhook is verified, stored in the inbox and given a job in one transaction, and answered
2xx at once; a worker loop in the app's lifespan runs the job. A failed attempt (the provider's
API is down, a conflict …) is queued again after an exponential backoff measured on the app's
clock, so the event is never lost and never applied twice (its handlers are idempotent under
deterministic ledger keys).

Several processes may run workers against one database. A worker claims due jobs with one
statement that also takes them: on PostgreSQL ``UPDATE … WHERE id IN (SELECT … FOR UPDATE
SKIP LOCKED)``, on SQLite (writers serialised) the same ``UPDATE`` guarded by
``claimed_by IS NULL``; either way one job has one runner. A runner that dies leaves its claim,
which another worker takes over once the lease has passed."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass

import anyio
import orjson
from sqlalchemy import Connection, RowMapping, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tallygate.audit import service as audit
from tallygate.errors import Conflict
from tallygate.inbox import service as inbox
from tallygate.ledger import Ledger
from tallygate.models.payments import inbox_events, payment_jobs
from tallygate.payments.providers.base import ProviderDisabled
from tallygate.payments.registry import Payments
from tallygate.state import AppState

logger = logging.getLogger(__name__)

J = payment_jobs.c


class JobNotDead(Conflict):
    code = "job_not_dead"


LEASE_US = 300 * 1_000_000
"""A claim older than this is presumed dead (its worker crashed) and is taken over."""
BACKOFF_BASE_US = 2 * 1_000_000
BACKOFF_CAP_US = 3600 * 1_000_000
MAX_ATTEMPTS = 30
"""After this many failed attempts a job is ``dead``: kept, with its last error, for an
operator (``requeue``); at the cap of one hour apart that is more than a day of retries."""


def backoff_us(attempts: int) -> int:
    """The wait after the ``attempts``-th failure: 2 s, 4 s, 8 s … capped at one hour."""
    return int(min(BACKOFF_BASE_US * 2 ** max(attempts - 1, 0), BACKOFF_CAP_US))


def enqueue(conn: Connection, *, inbox_id: int, source: str, now_us: int) -> None:
    """A job for a stored event (none if it already has one: one job per inbox row)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(payment_jobs)
        .values(
            inbox_id=inbox_id,
            source=source,
            status="queued",
            run_after=now_us,
            created_at=now_us,
            updated_at=now_us,
        )
        .on_conflict_do_nothing(index_elements=["inbox_id"])
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    inbox_id: int
    source: str
    attempts: int


def claim(conn: Connection, *, worker: str, now_us: int, limit: int) -> list[Claimed]:
    """Take up to ``limit`` due jobs for ``worker`` (their attempt counted now)."""
    due = (
        select(J.id)
        .where(J.status == "queued", J.run_after <= now_us, J.claimed_by.is_(None))
        .order_by(J.run_after, J.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    stmt = (
        update(payment_jobs)
        .where(J.id.in_(due.scalar_subquery()), J.claimed_by.is_(None), J.status == "queued")
        .values(
            status="running",
            claimed_by=worker,
            claimed_at=now_us,
            attempts=J.attempts + 1,
            updated_at=now_us,
        )
        .returning(J.id, J.inbox_id, J.source, J.attempts)
    )
    rows = conn.execute(stmt).all()
    return sorted(
        (Claimed(int(r.id), int(r.inbox_id), str(r.source), int(r.attempts)) for r in rows),
        key=lambda c: c.id,
    )


def reclaim_stale(conn: Connection, *, now_us: int) -> int:
    """Give back jobs whose runner has held them past the lease (it crashed)."""
    result = conn.execute(
        update(payment_jobs)
        .where(J.status == "running", J.claimed_at < now_us - LEASE_US)
        .values(status="queued", claimed_by=None, claimed_at=None, updated_at=now_us)
    )
    return int(result.rowcount or 0)


def finish(conn: Connection, job: Claimed, *, worker: str, now_us: int) -> None:
    conn.execute(
        update(payment_jobs)
        .where(J.id == job.id, J.claimed_by == worker)
        .values(
            status="done",
            claimed_by=None,
            claimed_at=None,
            last_error=None,
            finished_at=now_us,
            updated_at=now_us,
        )
    )


def fail(conn: Connection, job: Claimed, *, worker: str, error: str, now_us: int) -> str:
    """Queue the job again after its backoff (or ``dead`` after MAX_ATTEMPTS); the inbox row
    records the attempt and the error too."""
    status = "dead" if job.attempts >= MAX_ATTEMPTS else "queued"
    conn.execute(
        update(payment_jobs)
        .where(J.id == job.id, J.claimed_by == worker)
        .values(
            status=status,
            claimed_by=None,
            claimed_at=None,
            run_after=now_us + backoff_us(job.attempts),
            last_error=error[:2000],
            updated_at=now_us,
        )
    )
    inbox.mark_failed(conn, job.inbox_id, error)
    return status


def requeue(conn: Connection, job_id: int, *, now_us: int) -> bool:
    """An operator gives a dead job another run (now)."""
    result = conn.execute(
        update(payment_jobs)
        .where(J.id == job_id, J.status == "dead")
        .values(status="queued", run_after=now_us, updated_at=now_us)
    )
    return bool(result.rowcount)


def list_jobs(conn: Connection, *, status: str | None, limit: int) -> list[RowMapping]:
    """Jobs with their event's identity, newest first (``dead`` ones need an operator)."""
    stmt = (
        select(
            payment_jobs,
            inbox_events.c.event_type,
            inbox_events.c.external_id,
            inbox_events.c.received_at,
        )
        .join(inbox_events, inbox_events.c.id == J.inbox_id)
        .order_by(J.id.desc())
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(J.status == status)
    return list(conn.execute(stmt).mappings())


def requeue_dead(
    conn: Connection, ledger: Ledger, job_id: int, *, reason: str, operator: str, now_us: int
) -> None:
    """An operator gives a dead job another run, with an audit event."""
    if not requeue(conn, job_id, now_us=now_us):
        raise JobNotDead(f"job {job_id} is not dead: nothing to requeue")
    audit.record(
        ledger.tx(conn),
        now_us=now_us,
        actor=operator,
        source="operator",
        action="payment_job.requeue",
        target=f"payment_job:{job_id}",
        before={"status": "dead"},
        after={"status": "queued"},
        reason=reason,
    )


def job_of(conn: Connection, inbox_id: int) -> RowMapping | None:
    return conn.execute(select(payment_jobs).where(J.inbox_id == inbox_id)).mappings().first()


# ---- running ------------------------------------------------------------------------------------


def run(state: AppState, payments: Payments, job: Claimed) -> None:
    """Process the job's event; raises when the attempt failed (the caller queues it again)."""
    from tallygate.payments import stripe_events, wechat_events

    with state.db.read() as conn:
        row = conn.execute(
            select(inbox_events.c.payload, inbox_events.c.handled_at).where(
                inbox_events.c.id == job.inbox_id
            )
        ).one()
    if row.handled_at is not None:
        return
    if job.source == "stripe":
        if payments.stripe is None:
            raise ProviderDisabled("Stripe is not enabled on this server")
        event = orjson.loads(row.payload)
        stripe_events.handle(state, payments.stripe, job.inbox_id, event, source="webhook")
    elif job.source == "wechat":
        if payments.wechat is None:
            raise ProviderDisabled("WeChat Pay is not enabled on this server")
        notice = payments.wechat.decode_stored(str(row.payload))
        wechat_events.handle(state, payments.wechat, job.inbox_id, notice)
    else:
        raise ValueError(f"no handler for {job.source!r} events")


def run_due(state: AppState, payments: Payments, *, worker: str, limit: int = 20) -> int:
    """Claim and run every due job (a batch); returns how many ran, successfully or not."""
    from tallygate.app import retry_conflicts

    def take() -> list[Claimed]:
        with state.db.begin() as conn:
            return claim(conn, worker=worker, now_us=state.now_us(), limit=limit)

    claimed = retry_conflicts(take)
    for job in claimed:
        try:
            run(state, payments, job)
        except Exception as exc:
            logger.warning(
                "payment job %d (inbox %d, %s) failed on attempt %d: %r",
                job.id,
                job.inbox_id,
                job.source,
                job.attempts,
                exc,
            )
            with state.db.begin() as conn:
                outcome = fail(conn, job, worker=worker, error=repr(exc), now_us=state.now_us())
            if outcome == "dead":
                logger.error("payment job %d is dead after %d attempts", job.id, job.attempts)
            continue
        with state.db.begin() as conn:
            finish(conn, job, worker=worker, now_us=state.now_us())
    return len(claimed)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobWorker:
    """The lifespan's loop: runs due jobs whenever woken (a webhook was stored) and at least
    every ``interval`` seconds (backoffs coming due, jobs from other processes)."""

    def __init__(self, state: AppState, payments: Payments, *, interval: float) -> None:
        self.state = state
        self.payments = payments
        self.interval = interval
        self.name = worker_name()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                ran = await anyio.to_thread.run_sync(
                    lambda: run_due(self.state, self.payments, worker=self.name)
                )
            except Exception:
                logger.exception("payment jobs: a batch failed; retrying at the next tick")
                ran = 0
            if ran:
                continue  # there may be more
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
