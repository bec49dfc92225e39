"""Webhook intake: verify at the edge, store the raw event in the inbox, process, stamp.

The answer is 2xx once the event is stored, whether or not processing succeeded at once (a
failed attempt stays unhandled and the sweeper retries it); a bad signature is a 400 and
writes nothing."""

from __future__ import annotations

import logging
import time

import orjson

from tallygate.inbox import service as inbox
from tallygate.payments import stripe_events, wechat_events
from tallygate.payments.providers.base import ProviderDisabled
from tallygate.payments.registry import Payments
from tallygate.payments.webhooks import verify_stripe
from tallygate.state import AppState

logger = logging.getLogger(__name__)


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
    with state.db.begin() as conn:
        stored = inbox.store(
            conn,
            source="stripe",
            external_id=str(event["id"]),
            event_type=str(event["type"]),
            payload=payload.decode(),
            now_us=state.now_us(),
        )
    if stored.handled:
        return {"received": True, "duplicate": True}
    stripe_events.process(state, payments.stripe, stored.id, event, source="webhook")
    return {"received": True, "duplicate": not stored.new}


def receive_wechat(
    state: AppState, payments: Payments, payload: bytes, headers: dict[str, str]
) -> dict[str, str]:
    if payments.wechat is None:
        raise ProviderDisabled("WeChat Pay is not enabled on this server")
    notice = payments.wechat.verify_notification(payload, headers, now=state.now_us() // 1_000_000)
    with state.db.begin() as conn:
        stored = inbox.store(
            conn,
            source="wechat",
            external_id=str(notice["id"]),
            event_type=str(notice["event_type"]),
            payload=payload.decode(),
            now_us=state.now_us(),
        )
    if not stored.handled:
        wechat_events.process(state, payments.wechat, stored.id, notice)
    return {"code": "SUCCESS", "message": "OK"}


def retry_unhandled(state: AppState, payments: Payments, *, older_than_s: float = 10) -> int:
    """The sweeper's second chance for events whose processing failed (oldest first)."""
    cutoff = state.now_us() - int(older_than_s * 1_000_000)
    with state.db.read() as conn:
        due = inbox.unhandled(conn, received_before=cutoff, max_attempts=20, limit=50)
    for event_id, source, payload in due:
        if source == "stripe" and payments.stripe is not None:
            stripe_events.process(
                state, payments.stripe, event_id, orjson.loads(payload), source="webhook"
            )
        elif source == "wechat" and payments.wechat is not None:
            wechat_events.process(
                state, payments.wechat, event_id, payments.wechat.decode_stored(payload)
            )
        time.sleep(0)
    return len(due)


def sweep(state: AppState, payments: Payments) -> tuple[int, int]:
    """Expire due orders, then retry unhandled inbox events; returns (orders, events)."""
    from tallygate.app import retry_conflicts
    from tallygate.payments import orders

    def expire() -> int:
        with state.db.begin() as conn:
            return orders.expire_due(conn, state.now_us())

    expired = retry_conflicts(expire)
    retried = retry_unhandled(state, payments)
    return expired, retried
