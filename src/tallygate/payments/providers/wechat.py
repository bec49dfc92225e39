"""WeChat Pay API v3 (Native QR), platform-public-key mode: nothing is fetched at run time.

Notifications: SHA256withRSA over ``"{timestamp}\\n{nonce}\\n{body}\\n"`` checked with the
platform public key named by ``Wechatpay-Serial``, the timestamp within the tolerance, then the
``resource`` decrypted with AEAD_AES_256_GCM under the 32-byte APIv3 key (a failed tag is a
rejection). API calls (``POST /v3/pay/transactions/native``, ``POST /v3/refund/domestic/refunds``)
carry a ``WECHATPAY2-SHA256-RSA2048`` Authorization signed with the merchant key over
``"{METHOD}\n{URL}\n{timestamp}\n{nonce}\n{body}\n"``; every answer must carry the
platform's signature (``Wechatpay-Signature`` over ``"{timestamp}\n{nonce}\n{body}\n"``,
``Wechatpay-Serial`` the configured platform key) or it is not believed."""

from __future__ import annotations

import base64
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tallygate.config import Settings
from tallygate.payments.providers.base import Checkout, ProviderError, ProviderRefund
from tallygate.payments.webhooks import InvalidSignature


def _rsa_public(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the WeChat Pay platform key must be an RSA public key")
    return key


def decrypt_resource(api_v3_key: str, resource: Mapping[str, Any]) -> dict[str, Any]:
    if resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise InvalidSignature("unsupported WeChat Pay resource algorithm")
    try:
        plain = AESGCM(api_v3_key.encode()).decrypt(
            str(resource["nonce"]).encode(),
            base64.b64decode(str(resource["ciphertext"])),
            str(resource.get("associated_data") or "").encode(),
        )
    except (InvalidTag, KeyError, ValueError):
        raise InvalidSignature("the WeChat Pay resource failed to decrypt (GCM tag)") from None
    found = orjson.loads(plain)
    if not isinstance(found, dict):
        raise InvalidSignature("the WeChat Pay resource is not an object")
    return found


class WeChatProvider:
    name = "wechat"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.platform_key = (
            _rsa_public(settings.wechat_platform_public_key)
            if settings.wechat_platform_public_key
            else None
        )

    # ---- notifications ------------------------------------------------------------------

    def verify_notification(
        self, payload: bytes, headers: Mapping[str, str], *, now: int
    ) -> dict[str, Any]:
        s = self.settings
        stamp = headers.get("wechatpay-timestamp", "")
        nonce = headers.get("wechatpay-nonce", "")
        signature = headers.get("wechatpay-signature", "")
        serial = headers.get("wechatpay-serial", "")
        if not (stamp and nonce and signature and serial) or self.platform_key is None:
            raise InvalidSignature("missing WeChat Pay signature headers")
        if serial != s.wechat_platform_serial:
            raise InvalidSignature("unknown WeChat Pay platform key serial")
        try:
            age = abs(now - int(stamp))
        except ValueError:
            raise InvalidSignature("malformed Wechatpay-Timestamp") from None
        if age > s.wechat_webhook_tolerance_seconds:
            raise InvalidSignature("Wechatpay-Timestamp is outside the tolerance window")
        message = f"{stamp}\n{nonce}\n".encode() + payload + b"\n"
        try:
            self.platform_key.verify(
                base64.b64decode(signature), message, padding.PKCS1v15(), hashes.SHA256()
            )
        except (CryptoInvalidSignature, ValueError):
            raise InvalidSignature("the WeChat Pay signature does not match") from None
        return self.decode_stored(payload.decode())

    def decode_stored(self, payload: str) -> dict[str, Any]:
        """The notice (id, event_type) with its decrypted resource (a stored body was verified
        when it arrived)."""
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidSignature("the WeChat Pay notification is not JSON") from None
        if not isinstance(body, dict) or "id" not in body or "resource" not in body:
            raise InvalidSignature("not a WeChat Pay notification")
        return {
            "id": str(body["id"]),
            "event_type": str(body.get("event_type", "")),
            "resource": decrypt_resource(self.settings.wechat_api_v3_key, body["resource"]),
        }

    # ---- API calls ----------------------------------------------------------------------

    def _authorization(self, method: str, path: str, body: bytes) -> str:
        s = self.settings
        key = serialization.load_pem_private_key(s.wechat_merchant_private_key.encode(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        stamp, nonce = str(int(time.time())), secrets.token_hex(16)
        message = f"{method}\n{path}\n{stamp}\n{nonce}\n".encode() + body + b"\n"
        sig = base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
        return (
            f'WECHATPAY2-SHA256-RSA2048 mchid="{s.wechat_mchid}",nonce_str="{nonce}",'
            f'signature="{sig}",timestamp="{stamp}",serial_no="{s.wechat_merchant_serial}"'
        )

    def _verify(self, message_parts: tuple[str, str], body: bytes, signature: str) -> bool:
        if self.platform_key is None:
            return False
        stamp, nonce = message_parts
        try:
            self.platform_key.verify(
                base64.b64decode(signature),
                f"{stamp}\n{nonce}\n".encode() + body + b"\n",
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (CryptoInvalidSignature, ValueError):
            return False
        return True

    def _check_answer(self, headers: Mapping[str, str], body: bytes) -> None:
        """An answer is believed only if the platform key signed it."""
        lower = {k.lower(): v for k, v in headers.items()}
        stamp = lower.get("wechatpay-timestamp", "")
        nonce = lower.get("wechatpay-nonce", "")
        signature = lower.get("wechatpay-signature", "")
        if lower.get("wechatpay-serial", "") != self.settings.wechat_platform_serial:
            raise ProviderError("WeChat Pay's answer is not from the configured platform key")
        try:
            age = abs(time.time() - int(stamp))
        except ValueError:
            raise ProviderError("WeChat Pay's answer has no valid timestamp") from None
        if age > self.settings.wechat_webhook_tolerance_seconds:
            raise ProviderError("WeChat Pay's answer is outside the tolerance window")
        if not (nonce and signature and self._verify((stamp, nonce), body, signature)):
            raise ProviderError("WeChat Pay's answer does not carry a valid platform signature")

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = orjson.dumps(body)
        request = urllib.request.Request(
            self.settings.wechat_api_base.rstrip("/") + path,
            data=data,
            method="POST",
            headers={
                "Authorization": self._authorization("POST", path, data),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as answer:  # noqa: S310
                raw = answer.read()
                self._check_answer(dict(answer.headers.items()), raw)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise ProviderError(f"WeChat Pay refused the request ({exc.code}): {detail}") from exc
        except urllib.error.URLError as exc:
            raise ProviderError(f"WeChat Pay could not be reached: {exc.reason}") from exc
        try:
            found = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderError("WeChat Pay answered something that is not JSON") from exc
        return found if isinstance(found, dict) else {}

    def start(self, order: Mapping[str, Any], *, return_url: str, cancel_url: str) -> Checkout:
        public_id = str(order["public_id"])
        answer = self._post(
            "/v3/pay/transactions/native",
            {
                "appid": self.settings.wechat_appid,
                "mchid": self.settings.wechat_mchid,
                "description": f"Top-up {public_id}",
                "out_trade_no": public_id,
                "notify_url": return_url.split("/?order=")[0] + "/api/payments/webhooks/wechat",
                "amount": {"total": int(order["amount_minor"]), "currency": order["currency"]},
            },
        )
        if not answer.get("code_url"):
            raise ProviderError("WeChat Pay answered without a code_url")
        return Checkout(public_id, str(answer["code_url"]))

    def refund(
        self, order: Mapping[str, Any], *, amount_minor: int, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        answer = self._post(
            "/v3/refund/domestic/refunds",
            {
                "out_trade_no": str(order["public_id"]),
                "out_refund_no": refund_id,
                "amount": {
                    "refund": amount_minor,
                    "total": int(order["paid_minor"]),
                    "currency": order["currency"],
                },
            },
        )
        status = {
            "SUCCESS": "succeeded",
            "PROCESSING": "pending",
            "CLOSED": "canceled",
            "ABNORMAL": "failed",
        }.get(str(answer.get("status")), "pending")
        return ProviderRefund(str(answer.get("refund_id", "")), status)
