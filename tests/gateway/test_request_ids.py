"""Request ids: ``req_`` + 24 hex digits, unique, and in time order (decision 0021)."""

from __future__ import annotations

import re
import time

from tallygate.gateway.handler import request_id


def test_a_request_id_is_req_and_24_hex_digits() -> None:
    assert re.fullmatch(r"req_[0-9a-f]{24}", request_id())


def test_request_ids_taken_a_millisecond_apart_sort_in_the_order_they_were_taken() -> None:
    ids = []
    for _ in range(20):
        ids.append(request_id())
        time.sleep(0.0011)
    assert ids == sorted(ids)


def test_request_ids_within_one_millisecond_are_still_unique() -> None:
    ids = [request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_the_id_starts_with_the_time_it_was_taken_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    rid = request_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(rid[4:16], 16) <= after
