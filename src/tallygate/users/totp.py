"""Time-based one-time passwords (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps.

A code is accepted for the current step and one step either side (clock drift), and each step
is used at most once per operator: the step of the last accepted code is stored, and a code of
that step or an earlier one is refused (a conditional UPDATE, so two processes checking the
same code at once cannot both accept it). Secrets are 160 random bits in base32, stored
encrypted with the server's secret key (``tallygate.kit.crypto``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1
ISSUER = "Tallygate"


def new_secret() -> str:
    """A fresh base32 secret (160 bits, as RFC 4226 recommends), without padding."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def _key(secret: str) -> bytes:
    cleaned = secret.replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def step_at(now_us: int) -> int:
    return now_us // 1_000_000 // STEP_SECONDS


def code_for_step(secret: str, step: int) -> str:
    """RFC 4226 HOTP of counter ``step`` (dynamic truncation), ``DIGITS`` digits."""
    digest = hmac.new(_key(secret), struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def code_at(secret: str, now_us: int) -> str:
    return code_for_step(secret, step_at(now_us))


def matching_step(secret: str, code: str, now_us: int) -> int | None:
    """The step (within ±``DRIFT_STEPS`` of now) whose code is ``code``; None when none is."""
    given = code.strip().replace(" ", "")
    if len(given) != DIGITS or not given.isdigit():
        return None
    now = step_at(now_us)
    found = None
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        # compare every candidate, so the time taken does not reveal which one matched
        if hmac.compare_digest(code_for_step(secret, step), given):
            found = step
    return found


def provisioning_uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://`` URI an authenticator app reads (usually from a QR code)."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        }
    )
    return f"otpauth://totp/{label}?{query}"
