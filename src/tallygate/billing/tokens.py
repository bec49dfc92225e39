"""Local token counting, used when an upstream reports no usage (the receipt's basis is then
``estimated``) and to meter a stream's output against its hold.

No real tokenizer is available offline (tiktoken downloads its vocabularies), so this is a
GPT-style approximation: text splits into pieces — a word with its leading space, a punctuation
mark, a run of whitespace — and a word of n characters counts ceil(n / 4) tokens. On English
prose it lands within a few percent of BPE tokenizers; tests hold it to ±10% of the demo
upstream's reported counts."""

from __future__ import annotations

import re
from typing import Any

_PIECES = re.compile(r"\s?\w+|\s?[^\w\s]|\s+")
MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3
IMAGE_TOKENS = 85


def count(text: str) -> int:
    total = 0
    for piece in _PIECES.findall(text):
        word = piece.strip()
        if not word:
            total += 1 if len(piece) > 1 else 0
        elif word[0].isalnum() or word[0] == "_":
            total += (len(word) + 3) // 4
        else:
            total += 1
    return total


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text":
                    total += count(str(part.get("text", "")))
                elif part.get("type") in ("image_url", "input_image", "image"):
                    total += IMAGE_TOKENS
        return total
    return 0


def chat_prompt(messages: Any, extra: Any = None) -> int:
    """Prompt tokens of a chat request: per message its role and content plus a small overhead
    (OpenAI's accounting shape); tools and other request parts add their JSON text."""
    total = REPLY_PRIMING
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                total += MESSAGE_OVERHEAD + count(str(message.get("role", "")))
                total += _content_tokens(message.get("content"))
                if message.get("tool_calls"):
                    total += count(str(message["tool_calls"]))
    if extra:
        total += count(str(extra))
    return total


def text_prompt(prompt: Any) -> int:
    if isinstance(prompt, str):
        return count(prompt)
    if isinstance(prompt, list):
        return sum(
            count(p) if isinstance(p, str) else len(p) if isinstance(p, list) else 0 for p in prompt
        )
    return 0
