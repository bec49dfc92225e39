"""Channel selection: highest priority group first, weighted random within a group, open
circuits skipped; fallback never leaves the request's route type."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol


class Candidate(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def weight(self) -> int: ...


def order(channels: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    """All channels in try order: by priority (high first), weighted shuffle inside a group."""
    groups: dict[int, list[Candidate]] = {}
    for channel in channels:
        groups.setdefault(channel.priority, []).append(channel)
    ordered: list[Candidate] = []
    for priority in sorted(groups, reverse=True):
        pool = list(groups[priority])
        while pool:
            total = sum(c.weight for c in pool)
            pick = rng.uniform(0, total)
            acc = 0.0
            for i, c in enumerate(pool):
                acc += c.weight
                if pick <= acc:
                    ordered.append(pool.pop(i))
                    break
            else:
                ordered.append(pool.pop())
    return ordered
