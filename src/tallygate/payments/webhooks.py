"""Webhook signatures, verified on the raw body before anything is parsed or stored.

Stripe (``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]``): HMAC-SHA256 of ``"{t}.{body}"``
under the endpoint secret, compared in constant time against every ``v1`` (several during a
secret rotation; other schemes ignored), and ``t`` within the tolerance of now."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from tallygate.errors import BadRequest


class InvalidSignature(BadRequest):
    code = "invalid_signature"


def stripe_signature(secret: str, timestamp: int, payload: bytes) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_stripe(
    payload: bytes, header: str | None, *, secrets: list[str], now: int, tolerance: int
) -> dict[str, Any]:
    """The event, if ``header`` signs exactly ``payload``; ``InvalidSignature`` otherwise."""
    if not header:
        raise InvalidSignature("missing Stripe-Signature header")
    if not secrets:
        raise InvalidSignature("no Stripe webhook secret is configured")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidSignature("malformed Stripe-Signature timestamp") from None
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidSignature("Stripe-Signature has no timestamp or no v1 signature")
    expected = [stripe_signature(secret, timestamp, payload) for secret in secrets]
    if not any(hmac.compare_digest(e, s) for e in expected for s in signatures):
        raise InvalidSignature("no v1 signature matches the payload")
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("Stripe-Signature timestamp is outside the tolerance window")
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvalidSignature("the signed payload is not JSON") from None
    if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
        raise InvalidSignature("the signed payload is not a Stripe event")
    return event
