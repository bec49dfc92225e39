"""Route health per channel × model: rolling success rate, latency percentiles, consecutive
failures and a circuit breaker.

The circuit opens only after ``min_failures`` failures inside the rolling ``window`` that are
also at least ``failure_ratio`` of the attempts there — never on a single error. An open circuit
takes the channel out of rotation and out of retries; after ``cool_down`` seconds one request
is let through (half-open): success closes the circuit, failure re-opens it for another
cool-down; a probe that never reports back (its request went elsewhere or was abandoned) is
given up after another cool-down, so a half-open route cannot stay stuck. Time comes from the
injectable clock, so tests move time instead of sleeping.

This board is one process's state; ``gateway.shared.Health`` keeps the same state in Redis,
shared by every process, when configured (DESIGN.md §6), with this board as its fallback."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from tallygate.kit.clock import Clock

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

CHANNEL_FAULT_STATUS = frozenset({401, 403})
"""Upstream client errors that blame the channel, not the request: its secret is wrong or its
account may not use the model (docs/decisions/0019)."""


def blames_channel(status: int) -> bool:
    """Does an upstream HTTP error count against the channel's route health (and move the
    request on to the next channel)? Yes for 401/403 (a bad channel secret or account), 408, 429
    and 5xx; no for any other 4xx — the request itself is wrong, every channel would refuse it,
    and one client's bad requests must never open a circuit for everyone."""
    return status in CHANNEL_FAULT_STATUS or status in (408, 429) or status >= 500


@dataclass
class _Route:
    samples: deque[tuple[float, bool, float]] = field(default_factory=deque)
    consecutive_failures: int = 0
    state: str = CLOSED
    opened_at: float = 0.0
    probing: bool = False
    probe_at: float = 0.0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class RouteHealth:
    channel_id: int
    model: str
    requests: int
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    consecutive_failures: int
    circuit: str
    last_error: str


class HealthBoard:
    def __init__(
        self,
        clock: Clock,
        *,
        window: float = 60.0,
        min_failures: int = 5,
        failure_ratio: float = 0.5,
        cool_down: float = 30.0,
    ) -> None:
        self.clock = clock
        self.window = window
        self.min_failures = min_failures
        self.failure_ratio = failure_ratio
        self.cool_down = cool_down
        self.probe_timeout = cool_down
        self._routes: dict[tuple[int, str], _Route] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _route(self, channel_id: int, model: str) -> _Route:
        key = (channel_id, model)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = _Route()
        return route

    def _trim(self, route: _Route, now: float) -> None:
        while route.samples and route.samples[0][0] < now - self.window:
            route.samples.popleft()

    def available(self, channel_id: int, model: str) -> bool:
        """May a request (first try or retry) go to this route now?"""
        with self._lock:
            route = self._routes.get((channel_id, model))
            if route is None or route.state == CLOSED:
                return True
            now = self._now()
            if route.state == OPEN and now - route.opened_at >= self.cool_down:
                route.state = HALF_OPEN
                route.probing = False
            if route.state == HALF_OPEN and (
                not route.probing or now - route.probe_at >= self.probe_timeout
            ):
                route.probing = True  # exactly one probe until it reports back
                route.probe_at = now
                return True
            return False

    def record(
        self, channel_id: int, model: str, ok: bool, latency_ms: float, error: str = ""
    ) -> None:
        with self._lock:
            now = self._now()
            route = self._route(channel_id, model)
            route.samples.append((now, ok, latency_ms))
            self._trim(route, now)
            if ok:
                route.consecutive_failures = 0
                route.state = CLOSED
                route.probing = False
                return
            route.consecutive_failures += 1
            route.last_error = error[:300]
            if route.state == HALF_OPEN:
                route.state, route.opened_at, route.probing = OPEN, now, False
                return
            failures = sum(1 for _, good, _ in route.samples if not good)
            if failures >= self.min_failures and failures >= self.failure_ratio * len(
                route.samples
            ):
                route.state, route.opened_at = OPEN, now

    def snapshot(self) -> list[RouteHealth]:
        with self._lock:
            now = self._now()
            out = []
            for (channel_id, model), route in sorted(self._routes.items()):
                self._trim(route, now)
                out.append(
                    summarize(
                        channel_id,
                        model,
                        [(ok, latency) for _, ok, latency in route.samples],
                        route.consecutive_failures,
                        route.state,
                        route.last_error,
                    )
                )
            return out


def summarize(
    channel_id: int,
    model: str,
    samples: list[tuple[bool, float]],
    consecutive_failures: int,
    state: str,
    last_error: str,
) -> RouteHealth:
    """One route's health from the (ok, latency ms) samples inside its window."""
    n = len(samples)
    latencies = sorted(s[1] for s in samples)
    return RouteHealth(
        channel_id,
        model,
        n,
        (sum(1 for s in samples if s[0]) / n) if n else None,
        latencies[n // 2] if n else None,
        latencies[min(n - 1, int(n * 0.95))] if n else None,
        consecutive_failures,
        state,
        last_error,
    )
