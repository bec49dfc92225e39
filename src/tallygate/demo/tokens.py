"""The demo tokenizer: the "true" token count the demo upstream reports.

There is no real tokenizer offline (tiktoken downloads its vocabulary files), so the demo defines a
deterministic, BPE-like approximation. It is the ground truth for the demo upstream and for tests:
whatever this module says is what the upstream bills in ``usage``.

Pieces
    Text is cut into pieces by the regex ``\\s?\\w+|\\s?[^\\w\\s]|\\s+`` (one leading whitespace
    character belongs to the piece after it, as in GPT tokenizers). The pieces cover the text
    exactly: every character is a word character, a whitespace character or neither.

Tokens per piece
    * a word piece (``\\s?\\w+``) with ``n`` word characters (the leading space not counted) is
      ``ceil(n / 4)`` tokens: 1–4 characters are one token, 5–8 are two, and so on. :func:`split`
      cuts it into 4-character chunks, the leading space staying on the first chunk;
    * a punctuation piece (``\\s?[^\\w\\s]``) is one token;
    * a whitespace run that no word or punctuation follows directly (``\\s+``) is one token.

    ``count(text) == len(split(text))`` and ``"".join(split(text)) == text`` always hold, and a
    prefix of the pieces re-tokenizes to itself: ``count("".join(split(t)[:k])) == k``. That is what
    lets the upstream cut a reply at exactly ``max_tokens`` and stream one token per chunk.

Chat prompts (``/v1/chat/completions``), after OpenAI's per-message overhead::

    prompt_tokens = 3 + sum(3 + count(role) + content_tokens(content)
                            + count(name) if the message has a name
                            + count(fn.name) + count(fn.arguments) per tool call)

    content_tokens(str)  = count(str)
    content_tokens(list) = sum over parts: count(part.text) for a text part
                           (type text / input_text / output_text), image_tokens(part) for an
                           image part (image_url / input_image / image), 85 for any other part
                           (input_audio, file ...)
    content_tokens(None) = 0

Images are counted as OpenAI counts them, by the very function the gateway estimates them with
(:func:`tallygate.billing.tokens.image_tokens`: 85 at ``detail: "low"``, otherwise 85 + 170 per
512-px tile of the image scaled to fit 2048 × 2048 and then to a shortest side of at most 768; an
image whose size cannot be read from its ``data:`` URI counts the most tiles any image can cost),
so the demo reports exactly what the gateway would estimate. That is what the demo upstream passes
as ``image_tokens``; without it (``image_tokens=None``) every image is a flat 85, the base formula
that openai-like test upstreams build their own image accounting on.

Tools, ``response_format`` and other request fields are not counted.

Legacy completions and embeddings count the prompt with no overhead: a string is ``count(s)``, a
list of strings the sum of their counts, a list of integers (token ids) its length, a list of such
lists the sum of their lengths.

Responses API (``/v1/responses``): ``instructions`` becomes a system message and ``input`` (a string:
one user message; a list: its items) the following messages, counted with the chat formula; a
``function_call_output`` item counts ``3 + count(output)``, a ``function_call`` item
``3 + count(name) + count(arguments)``. With ``previous_response_id`` the stored context of the
earlier response (its input plus output tokens) is added, as the real API bills the conversation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tallygate.billing import tokens as estimator

PIECE_PATTERN = r"\s?\w+|\s?[^\w\s]|\s+"
"""The documented piece regex. :data:`_PIECE` is the same regex with groups to tell pieces apart."""

_PIECE = re.compile(r"(\s?)(\w+)|\s?[^\w\s]|\s+")

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3
NON_TEXT_PART_TOKENS = 85
"""Tokens charged for an image (or any other non-text) content part."""

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})

ImageCounter = Callable[[Mapping[str, Any]], int]


def image_tokens(part: Mapping[str, Any]) -> int:
    """One image part as OpenAI counts it: the gateway's own estimator, reused (not copied)."""
    return estimator.image_tokens(dict(part))


def count(text: str) -> int:
    """The number of demo tokens in ``text``."""
    total = 0
    for m in _PIECE.finditer(text):
        word = m.group(2)
        total += 1 if word is None else (len(word) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
    return total


def split(text: str) -> list[str]:
    """The tokens of ``text`` as strings: they concatenate back to ``text``, one token each."""
    out: list[str] = []
    append = out.append
    for m in _PIECE.finditer(text):
        word = m.group(2)
        if word is None or len(word) <= CHARS_PER_TOKEN:
            append(m.group())
            continue
        append(m.group(1) + word[:CHARS_PER_TOKEN])
        for i in range(CHARS_PER_TOKEN, len(word), CHARS_PER_TOKEN):
            append(word[i : i + CHARS_PER_TOKEN])
    return out


def content_text(content: Any) -> str:
    """The text of a message content (a string or a list of parts), text parts joined by spaces."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(p.get("text") or "")
            for p in content
            if isinstance(p, Mapping) and p.get("type") in _TEXT_PART_TYPES
        ]
        return " ".join(t for t in texts if t)
    return str(content)


def content_tokens(content: Any, image_tokens: ImageCounter | None = None) -> int:
    """Tokens of one message content: text counted, each image part by ``image_tokens`` (a flat
    85 without it), any other non-text part a fixed 85."""
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += count(part)
            elif isinstance(part, Mapping) and part.get("type") in _TEXT_PART_TYPES:
                total += count(str(part.get("text") or ""))
            elif (
                image_tokens is not None
                and isinstance(part, Mapping)
                and part.get("type") in _IMAGE_PART_TYPES
            ):
                total += image_tokens(part)
            else:
                total += NON_TEXT_PART_TOKENS
        return total
    return count(str(content))


def message_tokens(message: Mapping[str, Any], image_tokens: ImageCounter | None = None) -> int:
    """One chat message's tokens, its 3-token overhead included."""
    total = MESSAGE_OVERHEAD + count(str(message.get("role") or ""))
    total += content_tokens(message.get("content"), image_tokens)
    name = message.get("name")
    if name:
        total += count(str(name))
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            fn = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(fn, Mapping):
                total += count(str(fn.get("name") or "")) + count(str(fn.get("arguments") or ""))
    return total


def chat_prompt_tokens(
    messages: Iterable[Mapping[str, Any]], image_tokens: ImageCounter | None = None
) -> int:
    """Prompt tokens of a chat request: 3 + the sum of :func:`message_tokens`."""
    return REPLY_PRIMING + sum(message_tokens(m, image_tokens) for m in messages)


def prompt_tokens(prompt: Any) -> int:
    """Tokens of a completions prompt or an embeddings input (no overhead)."""
    if isinstance(prompt, str):
        return count(prompt)
    if isinstance(prompt, list):
        total = 0
        for item in prompt:
            if isinstance(item, str):
                total += count(item)
            elif isinstance(item, int):
                total += 1
            elif isinstance(item, list):
                total += len(item)
        return total
    return 0


def responses_messages(instructions: Any, input: Any) -> list[Mapping[str, Any]]:
    """The Responses API ``instructions`` and ``input`` as chat-style messages."""
    messages: list[Mapping[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": str(instructions)})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
    elif isinstance(input, list):
        for item in input:
            if isinstance(item, Mapping):
                messages.append(item)
    return messages


def responses_input_tokens(
    instructions: Any, input: Any, image_tokens: ImageCounter | None = None
) -> int:
    """Input tokens of a Responses API request, without any previous response's context."""
    total = REPLY_PRIMING
    for item in responses_messages(instructions, input):
        kind = item.get("type")
        if kind == "function_call_output":
            total += MESSAGE_OVERHEAD + count(str(item.get("output") or ""))
        elif kind == "function_call":
            total += MESSAGE_OVERHEAD + count(str(item.get("name") or ""))
            total += count(str(item.get("arguments") or ""))
        else:
            total += message_tokens(item, image_tokens)
    return total


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message (or of the last message when no user spoke)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    return content_text(messages[-1].get("content")) if messages else ""
