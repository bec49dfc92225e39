"""Channel order: the highest priority group first, weighted random inside a group, every
channel exactly once (so retries never repeat a channel)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from tallygate.routing.select import order


@dataclass(frozen=True)
class Ch:
    id: int
    priority: int
    weight: int


def test_every_channel_once_and_higher_priority_groups_always_first() -> None:
    channels = [Ch(1, 0, 5), Ch(2, 10, 1), Ch(3, 5, 1), Ch(4, 10, 3), Ch(5, 0, 1)]
    rng = random.Random(7)
    for _ in range(200):
        ids = [c.id for c in order(channels, rng)]
        assert sorted(ids) == [1, 2, 3, 4, 5]
        assert set(ids[:2]) == {2, 4} and ids[2] == 3 and set(ids[3:]) == {1, 5}


def test_inside_a_group_traffic_follows_the_weights() -> None:
    channels = [Ch(1, 0, 1), Ch(2, 0, 3)]
    rng = random.Random(11)
    first = Counter(order(channels, rng)[0].id for _ in range(8000))
    assert abs(first[2] / 8000 - 0.75) < 0.03  # weight 3 of 4


def test_a_lower_group_is_reached_only_after_the_higher_one() -> None:
    channels = [Ch(1, 1, 100), Ch(2, 0, 100)]
    assert [c.id for c in order(channels, random.Random(0))] == [1, 2]
