"""Webhook intake: verify at the edge, then store the raw event in the inbox and queue its job
in one transaction, and answer 2xx — the job worker (``payments.jobs``) processes it, with
retries and backoff. A bad signature is a 400 and writes nothing."""

from __future__ import annotations

from tallygate.inbox import service as inbox
from tallygate.payments import jobs
from tallygate.payments.providers.base import ProviderDisabled
from tallygate.payments.registry import Payments
from tallygate.payments.webhooks import verify_stripe
from tallygate.state import AppState


def _store(
    state: AppState, *, source: str, external_id: str, event_type: str, payload: bytes
) -> inbox.Stored:
    now = state.now_us()
    with state.db.begin() as conn:
        stored = inbox.store(
            conn,
            source=source,
            external_id=external_id,
            event_type=event_type,
            payload=payload.decode(),
            now_us=now,
        )
        if stored.new:
            jobs.enqueue(conn, inbox_id=stored.id, source=source, now_us=now)
    return stored


def receive_stripe(
    state: AppState, payments: Payments, payload: bytes, header: str | None
) -> dict[str, object]:
    if payments.stripe is None:
        raise ProviderDisabled("Stripe is not enabled on this server")
    settings = state.settings
    event = verify_stripe(
        payload,
        header,
        secrets=settings.stripe_webhook_secrets,
        now=state.now_us() // 1_000_000,
        tolerance=settings.stripe_webhook_tolerance_seconds,
    )
    stored = _store(
        state,
        source="stripe",
        external_id=str(event["id"]),
        event_type=str(event["type"]),
        payload=payload,
    )
    return {"received": True, "duplicate": not stored.new}


def receive_wechat(
    state: AppState, payments: Payments, payload: bytes, headers: dict[str, str]
) -> dict[str, str]:
    if payments.wechat is None:
        raise ProviderDisabled("WeChat Pay is not enabled on this server")
    notice = payments.wechat.verify_notification(payload, headers, now=state.now_us() // 1_000_000)
    _store(
        state,
        source="wechat",
        external_id=str(notice["id"]),
        event_type=str(notice["event_type"]),
        payload=payload,
    )
    return {"code": "SUCCESS", "message": "OK"}


def sweep(state: AppState, payments: Payments) -> tuple[int, int]:
    """Expire due orders, then give back job claims past their lease (a crashed worker);
    returns (orders expired, jobs reclaimed)."""
    from tallygate.app import retry_conflicts
    from tallygate.payments import orders

    def expire() -> int:
        with state.db.begin() as conn:
            return orders.expire_due(conn, state.now_us())

    def reclaim() -> int:
        with state.db.begin() as conn:
            return jobs.reclaim_stale(conn, now_us=state.now_us())

    return retry_conflicts(expire), retry_conflicts(reclaim)
