"""WeChat Pay notifications: apply a verified, decrypted notice to its order."""

from __future__ import annotations

from typing import Any

from tallygate.payments.providers.wechat import WeChatProvider
from tallygate.state import AppState


def process(state: AppState, wechat: WeChatProvider, inbox_id: int, notice: dict[str, Any]) -> None:
    raise NotImplementedError
