"""The bounded-frequency sync runner: merge bursts of changes, resync fully now and then.

`next_step` is the pure policy; `SyncRunner` is the loop that follows it. What must hold:
- the first sync is full, and runs at once;
- a requested sync runs no sooner than `min_interval` after the previous sync started, and
  every request made before a sync starts is served by that sync (bursts merge into one);
  a request made while a sync runs gets one more sync after it;
- with `sync_period` > 0 a full sync runs at least that often, requested or not;
- after a failed sync the next one is full, after `retry_interval`.
- a cancellation ends `run` at once, whatever it is doing (waiting, syncing, or being
  requested to sync at the same moment: skiff.eventloop.wait_event).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from skiff.eventloop import wait_event

log = logging.getLogger("netproxy.sync")


@dataclass
class RunnerState:
    last_sync: float | None = None  # when the last sync started (monotonic seconds)
    last_full: float | None = None  # when the last successful full sync started
    pending: bool = False  # a change was requested after the last sync started
    failed: bool = False  # the last sync failed


def next_step(state: RunnerState, now: float, *, min_interval: float, sync_period: float,
              retry_interval: float) -> tuple[str, float]:
    """("full" | "sync", 0) to run now, or ("wait", seconds; inf = until a request)."""
    if state.last_sync is None or (state.last_full is None and not state.failed):
        return "full", 0.0
    if state.failed:
        due = state.last_sync + retry_interval
        return ("full", 0.0) if now >= due else ("wait", due - now)
    assert state.last_full is not None
    full_due = state.last_full + sync_period if sync_period > 0 else math.inf
    if now >= full_due:
        return "full", 0.0
    if state.pending:
        due = state.last_sync + min_interval
        if now >= due:
            return "sync", 0.0
        return "wait", min(due, full_due) - now
    return "wait", full_due - now


class SyncRunner:
    def __init__(self, sync: Callable[[bool], Awaitable[object]], *, min_interval: float = 1.0,
                 sync_period: float = 30.0, retry_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sync = sync
        self.min_interval = min_interval
        self.sync_period = sync_period
        self.retry_interval = retry_interval
        self.clock = clock
        self.state = RunnerState()
        self._wake = asyncio.Event()
        self.syncs = 0

    def request(self) -> None:
        """Ask for a sync (non-blocking; many requests before it starts make one sync)."""
        self.state.pending = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            kind, wait = next_step(self.state, self.clock(), min_interval=self.min_interval,
                                   sync_period=self.sync_period, retry_interval=self.retry_interval)
            if kind == "wait":
                await wait_event(self._wake, None if math.isinf(wait) else wait)
                continue
            start = self.clock()
            self.state.last_sync = start
            self.state.pending = False
            try:
                await self._sync(kind == "full")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("%s sync failed: %s; retrying in %.1fs with a full sync", kind, exc, self.retry_interval,
                          exc_info=not isinstance(exc, OSError))
                self.state.failed = True
            else:
                self.state.failed = False
                if kind == "full":
                    self.state.last_full = start
            self.syncs += 1
