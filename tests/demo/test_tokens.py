"""The demo tokenizer: the rule, its invariants, and the prompt formulas."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tallygate.demo import tokens

texts = st.text(
    alphabet=st.sampled_from(list("abcdefghijXYZ0189_ \n\t.,!?'\"-é中…")) | st.characters(),
    max_size=200,
)


def test_examples() -> None:
    assert tokens.split("") == []
    assert tokens.split("Hi, you all!") == ["Hi", ",", " you", " all", "!"]
    assert tokens.split("Hello, world!") == ["Hell", "o", ",", " worl", "d", "!"]
    assert tokens.count("Hello, world!") == 6
    # a word of n letters is ceil(n / 4) tokens, cut in 4-character chunks
    assert tokens.split(" internationalization") == [" inte", "rnat", "iona", "liza", "tion"]
    assert [tokens.count("a" * n) for n in range(1, 10)] == [1, 1, 1, 1, 2, 2, 2, 2, 3]
    # the leading space belongs to the next piece and is not a letter
    assert tokens.split(" abcd efgh") == [" abcd", " efgh"]
    # a whitespace run not followed by a word or punctuation is one token
    assert tokens.split("a  b\n\n") == ["a", "  ", "b", "\n\n"]
    assert tokens.split("x = 42;") == ["x", " =", " 42", ";"]


def test_the_documented_regex_is_the_one_used() -> None:
    sample = "Hi  there,\tfriend!! 12345 …ok \n"
    assert re.findall(tokens.PIECE_PATTERN, sample) == [
        "Hi",
        "  ",
        "there",
        ",",
        "\tfriend",
        "!",
        "!",
        " 12345",
        " …",
        "ok",
        " \n",
    ]
    # "there", "\tfriend" and " 12345" are two tokens each
    assert tokens.count(sample) == 14


@given(texts)
def test_split_concatenates_back_and_matches_count(text: str) -> None:
    pieces = tokens.split(text)
    assert "".join(pieces) == text
    assert tokens.count(text) == len(pieces)
    assert all(p for p in pieces)


@given(texts, st.integers(min_value=0, max_value=60))
def test_a_prefix_of_the_tokens_retokenizes_to_itself(text: str, k: int) -> None:
    pieces = tokens.split(text)
    prefix = "".join(pieces[:k])
    assert tokens.split(prefix) == pieces[:k]


@given(texts)
def test_every_piece_is_one_token(text: str) -> None:
    assert all(tokens.count(p) == 1 for p in tokens.split(text))


def test_chat_prompt_formula() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi, you all!"},
    ]
    # 3 + (3 + count("system") + count("Be brief.")) + (3 + count("user") + count("Hi, you all!"))
    assert tokens.chat_prompt_tokens(messages) == 3 + (3 + 2 + 4) + (3 + 1 + 5)


def test_chat_prompt_counts_parts_names_and_tool_calls() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    assert tokens.content_tokens(parts) == 4 + tokens.NON_TEXT_PART_TOKENS
    message = {
        "role": "assistant",
        "name": "bob",
        "content": None,
        "tool_calls": [{"type": "function", "function": {"name": "get", "arguments": "{}"}}],
    }
    assert tokens.message_tokens(message) == 3 + tokens.count("assistant") + 1 + 1 + 2
    assert tokens.content_text(parts) == "What is this?"


def test_prompt_tokens_of_completions_and_embeddings() -> None:
    assert tokens.prompt_tokens("Hello, world!") == 6
    assert tokens.prompt_tokens(["Hi", "big world"]) == 1 + 3
    assert tokens.prompt_tokens([1, 2, 3]) == 3
    assert tokens.prompt_tokens([[1, 2], [3]]) == 3


def test_responses_input_formula() -> None:
    assert tokens.responses_input_tokens(None, "Hi") == 3 + (3 + 1 + 1)
    assert tokens.responses_input_tokens("Be brief.", "Hi") == 3 + (3 + 2 + 4) + (3 + 1 + 1)
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "function_call", "name": "get", "arguments": "{}", "call_id": "c"},
        {"type": "function_call_output", "call_id": "c", "output": "42"},
    ]
    assert tokens.responses_input_tokens(None, items) == 3 + (3 + 1 + 1) + (3 + 1 + 2) + (3 + 1)


def test_last_user_text() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
        {"role": "assistant", "content": "reply"},
    ]
    assert tokens.last_user_text(messages) == "second"
    assert tokens.last_user_text([{"role": "system", "content": "only"}]) == "only"
