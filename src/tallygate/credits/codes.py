"""Redeem codes as people type them: Crockford base32, grouped, normalised, stored as an HMAC.

A code is an optional operator prefix and 16 random Crockford base32 characters (80 bits) in
groups of four: ``WELCOME-7K3M-9QXR-2TZB-F4HD``. The visible prefix (operator prefix plus the
first group, 20 bits) is stored and shown; the remaining 60 bits stay secret. Input is
normalised before hashing: case, spaces and hyphens do not matter, and the letters Crockford
maps (I and L → 1, O → 0) are read as the digits they look like. Only HMAC-SHA256 of the
normalised code under the server secret is stored, so a database leak reveals no usable code."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford base32: no I, L, O or U."""
RANDOM_CHARS = 16
GROUP = 4
MAX_PREFIX = 16
MAX_INPUT = 80
PREFIX_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")
_CONTEXT = b"tallygate redeem codes v1"
_CROCKFORD_MAP = str.maketrans({"I": "1", "L": "1", "O": "0"})
_IGNORED = re.compile(r"[\s\-_]+")


def generate(prefix: str = "") -> tuple[str, str]:
    """A new code and its visible prefix, e.g. (``WELCOME-7K3M-9QXR-2TZB-F4HD``,
    ``WELCOME-7K3M``). ``prefix`` must already be validated (``PREFIX_RE``)."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_CHARS))
    groups = [body[i : i + GROUP] for i in range(0, RANDOM_CHARS, GROUP)]
    parts = ([prefix.upper()] if prefix else []) + groups
    visible = "-".join(parts[: 2 if prefix else 1])
    return "-".join(parts), visible


def normalise(text: str) -> str:
    """The canonical form hashed at generation and at claim: upper case, no separators,
    Crockford's look-alike letters read as digits."""
    return _IGNORED.sub("", text.strip()).upper().translate(_CROCKFORD_MAP)


def digest(secret_key: str, code: str) -> str:
    """HMAC-SHA256 (hex) of the normalised code under a key derived from the server secret."""
    key = hashlib.sha256(_CONTEXT + secret_key.encode()).digest()
    return hmac.new(key, normalise(code).encode(), hashlib.sha256).hexdigest()
