"""Per-key request and token rate limits over a sliding minute (per process; DESIGN.md §6 puts
shared counters in Redis when configured)."""

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


class RateLimiter:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._requests: dict[int, deque[float]] = {}
        self._tokens: dict[int, deque[tuple[float, int]]] = {}

    def check(self, key_id: int, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        """Admit one request of ``tokens`` estimated tokens, or say when to retry."""
        if rpm is None and tpm is None:
            return Verdict(True, [])
        now = self.clock.now().timestamp()
        reqs = self._requests.setdefault(key_id, deque())
        toks = self._tokens.setdefault(key_id, deque())
        while reqs and reqs[0] <= now - WINDOW:
            reqs.popleft()
        while toks and toks[0][0] <= now - WINDOW:
            toks.popleft()
        used_tokens = sum(n for _, n in toks)
        headers: list[tuple[bytes, bytes]] = []
        if rpm is not None:
            reset = (reqs[0] + WINDOW - now) if reqs else 0.0
            headers += [
                (b"x-ratelimit-limit-requests", str(rpm).encode()),
                (b"x-ratelimit-remaining-requests", str(max(rpm - len(reqs) - 1, 0)).encode()),
                (b"x-ratelimit-reset-requests", f"{max(reset, 0):.0f}s".encode()),
            ]
            if len(reqs) >= rpm:
                wait = max(1, math.ceil(reqs[0] + WINDOW - now))
                return Verdict(
                    False,
                    headers,
                    wait,
                    f"rate limit reached: {rpm} requests per minute for this key",
                )
        if tpm is not None:
            reset = (toks[0][0] + WINDOW - now) if toks else 0.0
            headers += [
                (b"x-ratelimit-limit-tokens", str(tpm).encode()),
                (b"x-ratelimit-remaining-tokens", str(max(tpm - used_tokens - tokens, 0)).encode()),
                (b"x-ratelimit-reset-tokens", f"{max(reset, 0):.0f}s".encode()),
            ]
            if used_tokens + tokens > tpm and toks:
                wait = max(1, math.ceil(toks[0][0] + WINDOW - now))
                return Verdict(
                    False,
                    headers,
                    wait,
                    f"rate limit reached: {tpm} tokens per minute for this key",
                )
        reqs.append(now)
        toks.append((now, tokens))
        return Verdict(True, headers)
