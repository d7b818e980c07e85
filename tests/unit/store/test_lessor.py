"""Lease deadlines kept beside the state machine, with an injected clock."""

from __future__ import annotations

import pytest

from controlplane.store.lessor import Lessor


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("steps", "expired_at_end"),
    [
        ([("grant", 1, 10), ("advance", 9.9)], []),
        ([("grant", 1, 10), ("advance", 10)], [1]),
        ([("grant", 1, 10), ("advance", 8), ("keepalive", 1, 10), ("advance", 8)], []),
        ([("grant", 1, 10), ("grant", 2, 5), ("advance", 6)], [2]),
        ([("grant", 1, 10), ("advance", 20), ("revoke", 1)], []),
        # A new leader pushes every deadline out by the grace period (keep-alives lost in the election).
        ([("grant", 1, 2), ("advance", 1.5), ("promote",), ("advance", 2.5)], []),
        ([("grant", 1, 2), ("advance", 1.5), ("promote",), ("advance", 3.5)], [1]),
    ],
    ids=["before-ttl", "at-ttl", "kept-alive", "shortest-first", "revoked", "promote-grace", "after-grace"],
)
def test_expiry(steps: list[tuple], expired_at_end: list[int]) -> None:
    clock = Clock()
    le = Lessor(clock=clock, grace=3.0)
    for step in steps:
        if step[0] in ("grant", "keepalive"):
            le.refreshed(step[1], step[2])
        elif step[0] == "advance":
            clock.t += step[1]
        elif step[0] == "revoke":
            le.revoked(step[1])
        elif step[0] == "promote":
            le.promote()
    assert le.expired() == expired_at_end


def test_remaining_and_reset() -> None:
    clock = Clock()
    le = Lessor(clock=clock)
    le.refreshed(1, 10)
    clock.t += 3.2
    assert le.remaining(1) == 7
    assert le.remaining(99) == -1
    le.reset([(5, 30)])
    assert le.remaining(1) == -1 and le.remaining(5) == 30
