"""Per-key request and token rate limits over a sliding minute, in this process. With Redis
configured, ``gateway.shared.Limiter`` keeps the same windows in Redis (exact across processes)
and falls back to this one when Redis is unreachable."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from tallygate.kit.clock import Clock

WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    headers: list[tuple[bytes, bytes]]
    retry_after: int = 0
    message: str = ""


def verdict(
    rpm: int | None,
    tpm: int | None,
    tokens: int,
    requests_in_window: int,
    tokens_in_window: int,
    oldest_request: float | None,
    oldest_tokens: float | None,
    now: float,
    window: float = WINDOW,
    *,
    allowed: bool | None = None,
) -> Verdict:
    """The answer (and ``x-ratelimit-*`` headers) for one request of ``tokens`` estimated
    tokens, given what the window held before it. ``allowed`` given: the store decided."""
    headers: list[tuple[bytes, bytes]] = []

    def until_free(oldest: float | None) -> float:
        # Clamped: another process's clock may have stamped the oldest entry a hair after ours.
        return min(max(oldest + window - now, 0.0), window) if oldest is not None else 0.0

    if rpm is not None:
        reset = until_free(oldest_request)
        headers += [
            (b"x-ratelimit-limit-requests", str(rpm).encode()),
            (
                b"x-ratelimit-remaining-requests",
                str(max(rpm - requests_in_window - 1, 0)).encode(),
            ),
            (b"x-ratelimit-reset-requests", f"{reset:.0f}s".encode()),
        ]
        if requests_in_window >= rpm:
            wait = max(1, math.ceil(reset))
            return Verdict(
                False, headers, wait, f"rate limit reached: {rpm} requests per minute for this key"
            )
    if tpm is not None:
        reset = until_free(oldest_tokens)
        headers += [
            (b"x-ratelimit-limit-tokens", str(tpm).encode()),
            (
                b"x-ratelimit-remaining-tokens",
                str(max(tpm - tokens_in_window - tokens, 0)).encode(),
            ),
            (b"x-ratelimit-reset-tokens", f"{reset:.0f}s".encode()),
        ]
        if tokens_in_window + tokens > tpm and oldest_tokens is not None:
            wait = max(1, math.ceil(reset))
            return Verdict(
                False, headers, wait, f"rate limit reached: {tpm} tokens per minute for this key"
            )
    if allowed is False:  # refused by the store on counts newer than ours: say so anyway
        return Verdict(False, headers, 1, "rate limit reached for this key")
    return Verdict(True, headers)


class RateLimiter:
    def __init__(self, clock: Clock, window: float = WINDOW) -> None:
        self.clock = clock
        self.window = window
        self._requests: dict[int, deque[float]] = {}
        self._tokens: dict[int, deque[tuple[float, int]]] = {}

    def check(self, key_id: int, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        """Admit one request of ``tokens`` estimated tokens, or say when to retry."""
        if rpm is None and tpm is None:
            return Verdict(True, [])
        now = self.clock.now().timestamp()
        reqs = self._requests.setdefault(key_id, deque())
        toks = self._tokens.setdefault(key_id, deque())
        while reqs and reqs[0] <= now - self.window:
            reqs.popleft()
        while toks and toks[0][0] <= now - self.window:
            toks.popleft()
        found = verdict(
            rpm,
            tpm,
            tokens,
            len(reqs),
            sum(n for _, n in toks),
            reqs[0] if reqs else None,
            toks[0][0] if toks else None,
            now,
            self.window,
        )
        if found.allowed:
            reqs.append(now)
            toks.append((now, tokens))
        return found
