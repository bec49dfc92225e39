"""WeChat Pay API v3 (Native QR): placeholder until the notify verification lands."""

from __future__ import annotations

from typing import Any

from tallygate.config import Settings


class WeChatProvider:
    name = "wechat"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def verify_notification(
        self, payload: bytes, headers: dict[str, str], *, now: int
    ) -> dict[str, Any]:
        raise NotImplementedError

    def decode_stored(self, payload: str) -> dict[str, Any]:
        raise NotImplementedError
