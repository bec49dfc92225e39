"""The demo upstream counts an image as OpenAI does — with the gateway's own estimator, so an
image request through the demo is reported exactly as the gateway estimated it (no flat 85
for a 2048-pixel picture)."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Any

import pytest

from tallygate.billing import tokens as estimator
from tallygate.demo import tokens
from tests.fixtures.upstream_server import UpstreamServer

TEXT = "What is in this picture?"


def png_header(width: int, height: int) -> str:
    """A ``data:`` URI whose PNG header names the size (all a token count reads)."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return "data:image/png;base64," + base64.b64encode(head).decode()


def openai_rule(width: int, height: int, detail: str) -> int:
    """OpenAI's published rule, computed here independently: 85 at low detail; otherwise fit
    2048 × 2048, then the shortest side to 768, and 85 + 170 per 512-px tile."""
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def prompt_tokens(upstream: UpstreamServer, content: Any) -> int:
    with upstream.client() as client:
        usage = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": content}], max_tokens=1
        ).usage
    assert usage is not None
    return usage.prompt_tokens


@pytest.mark.parametrize(
    ("width", "height", "detail"),
    [(64, 64, "low"), (300, 200, "high"), (1024, 1024, "high"), (3000, 1000, "auto")],
)
def test_an_image_costs_its_tiles_as_openai_and_the_gateway_count_them(
    upstream: UpstreamServer, width: int, height: int, detail: str
) -> None:
    part = {"type": "image_url", "image_url": {"url": png_header(width, height), "detail": detail}}
    with_image = prompt_tokens(upstream, [{"type": "text", "text": TEXT}, part])
    image = with_image - prompt_tokens(upstream, [{"type": "text", "text": TEXT}])
    assert image == openai_rule(width, height, detail)
    assert image == estimator.image_tokens(part)  # what the gateway's hold estimated


def test_an_image_of_unreadable_size_counts_the_most_tiles_the_estimate_holds(
    upstream: UpstreamServer,
) -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    image = prompt_tokens(upstream, [part]) - prompt_tokens(upstream, [])
    assert image == 85 + 170 * 8 == estimator.image_tokens(part)


def test_other_non_text_parts_stay_a_flat_85(upstream: UpstreamServer) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    assert prompt_tokens(upstream, [audio]) - prompt_tokens(upstream, []) == 85


def test_a_responses_input_image_is_counted_the_same_way(upstream: UpstreamServer) -> None:
    image = {"type": "input_image", "image_url": png_header(1024, 1024), "detail": "high"}
    text = {"type": "input_text", "text": TEXT}

    def input_tokens(content: list[Any]) -> int:
        with upstream.client() as client:
            usage = client.responses.create(
                model="m", input=[{"role": "user", "content": content}], max_output_tokens=16
            ).usage
        assert usage is not None
        return usage.input_tokens

    assert input_tokens([text, image]) - input_tokens([text]) == openai_rule(1024, 1024, "high")


def test_without_an_image_counter_the_base_formula_keeps_a_flat_85() -> None:
    part = {"type": "image_url", "image_url": {"url": png_header(1024, 1024)}}
    assert tokens.content_tokens([part]) == tokens.NON_TEXT_PART_TOKENS
    assert tokens.content_tokens([part], tokens.image_tokens) == openai_rule(1024, 1024, "auto")
