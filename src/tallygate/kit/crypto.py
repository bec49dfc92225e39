"""Secrets at rest (channel keys, webhook secrets): AES-256-GCM under a key derived from the
server's secret key. Ciphertexts are ``v1.<nonce>.<ciphertext>`` in URL-safe base64."""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_CONTEXT = b"tallygate secrets at rest v1"


def _key(secret_key: str) -> bytes:
    return hashlib.sha256(_CONTEXT + secret_key.encode()).digest()


def encrypt(secret_key: str, plaintext: str) -> str:
    if not plaintext:
        return ""
    nonce = os.urandom(12)
    sealed = AESGCM(_key(secret_key)).encrypt(nonce, plaintext.encode(), _CONTEXT)
    b64 = base64.urlsafe_b64encode
    return f"v1.{b64(nonce).decode()}.{b64(sealed).decode()}"


def decrypt(secret_key: str, token: str) -> str:
    """Raises ValueError when the token was not sealed with this server's secret key."""
    if not token:
        return ""
    version, _, rest = token.partition(".")
    nonce_b64, _, sealed_b64 = rest.partition(".")
    if version != "v1" or not sealed_b64:
        raise ValueError("not a Tallygate secret")
    try:
        plain = AESGCM(_key(secret_key)).decrypt(
            base64.urlsafe_b64decode(nonce_b64), base64.urlsafe_b64decode(sealed_b64), _CONTEXT
        )
    except (InvalidTag, ValueError) as exc:
        raise ValueError("secret cannot be decrypted with this server's secret key") from exc
    return plain.decode()
