"""Route health: which upstream answers count against a channel, and the circuit breaker's life
(closed → open → half-open probe → closed), time moved by the test clock, never slept.

The board holds no database state, so these tests need neither SQLite nor PostgreSQL; the
gateway's own tests (tests/gateway/test_routing.py) drive the same board through real requests
on both."""

from __future__ import annotations

import pytest

from tallygate.kit.clock import FrozenClock
from tallygate.routing.health import CLOSED, HALF_OPEN, OPEN, HealthBoard, blames_channel

CHANNEL, MODEL = 7, "tg-chat"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def board(clock: FrozenClock) -> HealthBoard:
    return HealthBoard(clock, window=60.0, min_failures=5, failure_ratio=0.5, cool_down=30.0)


def fail(board: HealthBoard, times: int, status: int = 500) -> None:
    for _ in range(times):
        board.record(CHANNEL, MODEL, False, 12.0, f"upstream answered HTTP {status}")


def circuit(board: HealthBoard) -> str:
    (route,) = board.snapshot()
    return route.circuit


class TestWhichUpstreamErrorsBlameTheChannel:
    @pytest.mark.parametrize("status", [401, 403])
    def test_a_rejected_channel_secret_or_account_blames_the_channel(self, status: int) -> None:
        assert blames_channel(status)

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_timeouts_rate_limits_and_server_errors_blame_the_channel(self, status: int) -> None:
        assert blames_channel(status)

    @pytest.mark.parametrize("status", [400, 404, 409, 413, 415, 422])
    def test_other_client_errors_are_the_requests_own_fault(self, status: int) -> None:
        assert not blames_channel(status)


class TestCircuitBreaker:
    def test_a_single_error_never_opens_the_circuit(self, board: HealthBoard) -> None:
        fail(board, 1)
        assert circuit(board) == CLOSED
        assert board.available(CHANNEL, MODEL)

    def test_n_failures_in_the_window_open_it_and_keep_the_channel_out(
        self, board: HealthBoard
    ) -> None:
        fail(board, 4)
        assert circuit(board) == CLOSED
        fail(board, 1)
        assert circuit(board) == OPEN
        assert not board.available(CHANNEL, MODEL)  # neither a first try nor a retry

    def test_failures_spread_beyond_the_window_do_not_add_up(
        self, board: HealthBoard, clock: FrozenClock
    ) -> None:
        for _ in range(6):
            fail(board, 1)
            clock.advance(20)  # at most four failures are ever inside the 60 s window
        assert circuit(board) == CLOSED

    def test_failures_among_mostly_successes_do_not_open_it(self, board: HealthBoard) -> None:
        for _ in range(6):
            board.record(CHANNEL, MODEL, True, 10.0)
            board.record(CHANNEL, MODEL, True, 10.0)
            fail(board, 1)
        assert circuit(board) == CLOSED  # 6 failures, but only a third of the attempts

    def test_after_the_cool_down_exactly_one_probe_goes_and_its_success_closes_it(
        self, board: HealthBoard, clock: FrozenClock
    ) -> None:
        fail(board, 5)
        clock.advance(29.9)
        assert not board.available(CHANNEL, MODEL)
        clock.advance(0.1)
        assert board.available(CHANNEL, MODEL)  # the probe
        assert circuit(board) == HALF_OPEN
        assert not board.available(CHANNEL, MODEL)  # only one until it reports back
        board.record(CHANNEL, MODEL, True, 10.0)
        assert circuit(board) == CLOSED
        assert board.available(CHANNEL, MODEL)
        assert board.snapshot()[0].consecutive_failures == 0

    def test_a_failed_probe_opens_it_for_another_cool_down(
        self, board: HealthBoard, clock: FrozenClock
    ) -> None:
        fail(board, 5)
        clock.advance(30)
        assert board.available(CHANNEL, MODEL)
        fail(board, 1)
        assert circuit(board) == OPEN
        clock.advance(29)
        assert not board.available(CHANNEL, MODEL)
        clock.advance(1)
        assert board.available(CHANNEL, MODEL)

    def test_a_probe_that_never_reports_back_is_given_up_after_another_cool_down(
        self, board: HealthBoard, clock: FrozenClock
    ) -> None:
        fail(board, 5)
        clock.advance(30)
        assert board.available(CHANNEL, MODEL)  # the probe goes and is never heard of again
        clock.advance(29)
        assert not board.available(CHANNEL, MODEL)
        clock.advance(1)
        assert board.available(CHANNEL, MODEL)  # a new probe: half-open cannot stay stuck

    def test_routes_are_per_channel_and_model(self, board: HealthBoard) -> None:
        fail(board, 5)
        assert not board.available(CHANNEL, MODEL)
        assert board.available(CHANNEL, "tg-embed")
        assert board.available(CHANNEL + 1, MODEL)


def test_the_summary_reports_success_rate_latency_and_the_last_error(
    board: HealthBoard,
) -> None:
    for latency in (10.0, 20.0, 30.0):
        board.record(CHANNEL, MODEL, True, latency)
    board.record(CHANNEL, MODEL, False, 40.0, "upstream answered HTTP 401")
    (route,) = board.snapshot()
    assert route.requests == 4
    assert route.success_rate == 0.75
    assert route.p50_ms == 30.0
    assert route.p95_ms == 40.0
    assert route.consecutive_failures == 1
    assert route.last_error == "upstream answered HTTP 401"
