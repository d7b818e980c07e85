"""Lease expiry deadlines: the clock-reading half of leases, kept out of the state machine.

The replicated state knows which leases exist, their TTL and their keys; it never knows time.
Every member keeps a deadline per lease here, refreshed (now + TTL, on its own monotonic clock)
whenever it applies a grant or keep-alive, so a member that becomes leader already has recent
deadlines. Only the leader acts on them: it proposes a `lease_expire` command for the leases
past their deadline, and applying that command is what deletes the keys. What must hold:

- A lease is never expired by a member that is not the leader.
- On becoming leader every deadline is pushed to at least now + `grace` (etcd does the same on
  promotion) so that keep-alives lost during the election do not expire live leases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable


class Lessor:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, grace: float = 3.0) -> None:
        self._clock = clock
        self._grace = grace
        self._deadline: dict[int, float] = {}
        self._ttl: dict[int, int] = {}

    def reset(self, leases: Iterable[tuple[int, int]]) -> None:
        """Start over from the state's leases (startup, snapshot install): full TTL each."""
        now = self._clock()
        items = list(leases)
        self._deadline = {i: now + ttl for i, ttl in items}
        self._ttl = dict(items)

    def refreshed(self, lease_id: int, ttl: int) -> None:
        self._deadline[lease_id] = self._clock() + ttl
        self._ttl[lease_id] = ttl

    def revoked(self, lease_id: int) -> None:
        self._deadline.pop(lease_id, None)
        self._ttl.pop(lease_id, None)

    def promote(self) -> None:
        floor = self._clock() + self._grace
        for i, d in self._deadline.items():
            if d < floor:
                self._deadline[i] = floor

    def expired(self, *, limit: int = 1000) -> list[int]:
        now = self._clock()
        out = [i for i, d in self._deadline.items() if d <= now]
        out.sort(key=lambda i: self._deadline[i])
        return out[:limit]

    def remaining(self, lease_id: int) -> int:
        """Seconds left, rounded up; -1 if unknown."""
        d = self._deadline.get(lease_id)
        if d is None:
            return -1
        return max(0, math.ceil(d - self._clock()))
