"""What differs between the /v1 endpoints: where the prompt, the output cap, the output text
and the usage live in each request and response shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tallygate.billing import tokens


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    path: str
    max_fields: tuple[str, ...]
    """Request fields that cap the output, in precedence order; empty: no output."""
    upstream_max_field: str

    @property
    def has_output(self) -> bool:
        return bool(self.max_fields)

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        if self.name == "chat":
            extra = [body.get(k) for k in ("tools", "functions", "response_format") if body.get(k)]
            return tokens.chat_prompt(body.get("messages"), extra or None)
        if self.name == "completions":
            return tokens.text_prompt(body.get("prompt"))
        if self.name == "embeddings":
            return tokens.text_prompt(body.get("input"))
        source = body.get("input")
        total = tokens.count(str(body.get("instructions") or ""))
        if isinstance(source, list):
            return total + tokens.chat_prompt(source)
        return total + tokens.text_prompt(source) + tokens.REPLY_PRIMING

    def validate(self, body: dict[str, Any]) -> tuple[str, str] | None:
        """(message, param) for a body this endpoint cannot take, else None."""
        if self.name == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return "'messages' must be a non-empty array", "messages"
        elif self.name == "completions":
            if body.get("prompt") is None:
                return "'prompt' is required", "prompt"
        elif self.name == "embeddings":
            if body.get("input") is None:
                return "'input' is required", "input"
            if body.get("stream"):
                return "embeddings cannot be streamed", "stream"
        elif body.get("input") is None:
            return "'input' is required", "input"
        return None

    def output_text(self, data: dict[str, Any]) -> str:
        parts: list[str] = []
        if data.get("type") == "response.output_text.delta":
            return str(data.get("delta") or "")
        if self.name == "responses":
            for item in data.get("output") or []:
                for content in (item or {}).get("content") or []:
                    if isinstance(content, dict) and isinstance(content.get("text"), str):
                        parts.append(content["text"])
            return "".join(parts)
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if self.name == "completions":
                parts.append(str(choice.get("text") or ""))
                continue
            message = choice.get("message") or choice.get("delta") or {}
            parts.append(str(message.get("content") or ""))
            for call in message.get("tool_calls") or []:
                fn = (call or {}).get("function") or {}
                parts.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
        return "".join(parts)

    def usage(self, data: dict[str, Any]) -> Usage | None:
        usage = data.get("usage")
        if self.name == "responses" and usage is None and isinstance(data.get("response"), dict):
            usage = data["response"].get("usage")
        if not isinstance(usage, dict):
            return None
        if self.name == "responses":
            details = usage.get("input_tokens_details") or {}
            return Usage(
                _int(usage.get("input_tokens")),
                _int(usage.get("output_tokens")),
                _int(details.get("cached_tokens")),
            )
        details = usage.get("prompt_tokens_details") or {}
        return Usage(
            _int(usage.get("prompt_tokens")),
            _int(usage.get("completion_tokens")),
            _int(details.get("cached_tokens")),
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


ENDPOINTS = {
    e.path: e
    for e in (
        Endpoint(
            "chat", "/v1/chat/completions", ("max_completion_tokens", "max_tokens"), "max_tokens"
        ),
        Endpoint("completions", "/v1/completions", ("max_tokens",), "max_tokens"),
        Endpoint("embeddings", "/v1/embeddings", (), ""),
        Endpoint("responses", "/v1/responses", ("max_output_tokens",), "max_output_tokens"),
    )
}
