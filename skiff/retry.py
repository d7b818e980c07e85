"""Retrying: one backoff schedule, one bounded retry helper, and retry-on-conflict.

Loops that try again after a failure take their delays from here (reconnecting clients,
informers, watch caches, the supervisor, pod workers, work queues), so "how long do we wait"
is decided in one place and tested without sleeping. Not here: fixed periods that are not
backoff (leader election's retry period, the proxy's sync retry interval), the node agent's
CrashLoopBackOff, whose delay is remembered per container in the pod's plan, and the store's
reconnects to its peers, inside pysyncobj's transport thread (`controlplane/store/raft.py`).

What must hold:
- `Backoff.delay(failures, rand)` is pure: after the n-th consecutive failure (n >= 1) the
  delay is `initial * factor**(n-1)`, capped at `max`, then stretched by `jitter * rand` of
  itself (`rand` in [0, 1), drawn by the caller). Jitter only lengthens a delay (as client-go's
  `wait.Jitter`), so a capped delay may exceed `max` by at most that fraction; it spreads out
  clients that failed together so they do not come back together.
- `Delays` is the state of one long-running loop: `next()` after each failure, `reset()` after
  a success, so a loop that recovered starts again from `initial`.
- `retry()` is always bounded (by attempts, by a time budget, or both). An error that
  `retryable` refuses propagates at once; when the bound is reached the last retryable error
  propagates unchanged (the caller decides how to report it). A server's retry hint
  (`hint(error)`, e.g. the api-server's Retry-After) lengthens a delay, never shortens it.
- `retry_on_conflict()` is client-go's RetryOnConflict: the attempt re-reads, mutates and
  writes; only `ConflictError` is retried, at most `attempts` times; the last conflict
  propagates. Errors are told apart by type, never by their message text.
- `jittered(period, jitter, rand)` is pure: `period` moved by at most `jitter` of itself either
  way, so its mean is `period`; periodic loops of many agents that started together (hollow
  nodes: hundreds in one process) drift apart instead of all firing in the same instant.
- Randomness, the clock and sleeping are injected, so tests need no real sleeps — except in
  `eventually`, which tests, benchmarks and tools use to wait on the real clock for a cluster
  to reach a state; it is bounded by its timeout and names what it waited for when it gives up.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from skiff import errors

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Rand = Callable[[], float]


@dataclass(frozen=True)
class Backoff:
    """An exponential backoff schedule: `initial` seconds, times `factor` per failure, capped at `max`."""

    initial: float
    max: float
    factor: float = 2.0
    jitter: float = 0.0  # fraction of the delay added at most, times a random number in [0, 1)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.max:
            raise ValueError(f"backoff needs 0 < initial <= max (got {self.initial}, {self.max})")
        if self.factor < 1 or self.jitter < 0:
            raise ValueError(f"backoff needs factor >= 1 and jitter >= 0 (got {self.factor}, {self.jitter})")

    def delay(self, failures: int, rand: float = 0.0) -> float:
        """The delay after `failures` consecutive failures (1 for the first)."""
        if failures <= 0:
            return 0.0
        try:
            base = min(self.initial * self.factor ** (failures - 1), self.max)
        except OverflowError:  # a loop that failed for a very long time
            base = self.max
        return base * (1.0 + self.jitter * rand)


def jittered(period: float, jitter: float, rand: float) -> float:
    """`period` spread by +/- `jitter` of itself; `rand` in [0, 1) (0.5: `period` itself)."""
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter {jitter}: expected 0 <= jitter < 1")
    return period * (1.0 + jitter * (2.0 * rand - 1.0))


class Delays:
    """The consecutive failures of one loop under a `Backoff`."""

    def __init__(self, backoff: Backoff, *, rand: Rand = random.random) -> None:
        self.backoff = backoff
        self.failures = 0
        self._rand = rand

    def next(self) -> float:
        """Count a failure; the delay to wait before trying again."""
        self.failures += 1
        return self.backoff.delay(self.failures, self._rand())

    def reset(self) -> None:
        """A success: the next failure starts from `initial` again."""
        self.failures = 0


async def retry(attempt: Callable[[], Awaitable[T]], *, retryable: Callable[[BaseException], bool],
                backoff: Backoff, attempts: int | None = None, budget: float | None = None,
                on_retry: Callable[[BaseException, float], None] | None = None,
                hint: Callable[[BaseException], float | None] | None = None,
                clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep,
                rand: Rand = random.random) -> T:
    """Await `attempt()` until it returns, waiting out `backoff` between retryable failures.

    Stops (re-raising the last error) after `attempts` calls, or when waiting the next delay
    would end `budget` seconds or more after the start. `on_retry(error, delay)` runs before
    each wait (to log, or to move to another endpoint). `hint(error)`, when given, is the
    server's own wait for that error (None: none); the delay is the longer of the two.
    """
    if attempts is None and budget is None:
        raise ValueError("retry needs a bound: attempts, budget or both")
    if attempts is not None and attempts < 1:
        raise ValueError(f"retry needs at least one attempt (got {attempts})")
    deadline = None if budget is None else clock() + budget
    delays = Delays(backoff, rand=rand)
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not retryable(exc):
                raise
            delay = delays.next()
            asked = hint(exc) if hint is not None else None
            if asked is not None:
                delay = max(delay, asked)
            if attempts is not None and delays.failures >= attempts:
                raise
            if deadline is not None and clock() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            await sleep(delay)


# client-go's DefaultRetry: 5 attempts, 10 ms apart, with 10% jitter.
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF = Backoff(initial=0.01, max=0.01, factor=1.0, jitter=0.1)


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, errors.ConflictError)


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]], *, attempts: int = CONFLICT_ATTEMPTS,
                            backoff: Backoff = CONFLICT_BACKOFF, sleep: Sleep = asyncio.sleep,
                            rand: Rand = random.random) -> T:
    """Run `attempt` (re-read, mutate, write) again while it loses an optimistic-concurrency race.

    The attempt must read the object afresh each time: retrying a write of a stale copy can
    only conflict again.
    """
    return await retry(attempt, retryable=is_conflict, backoff=backoff, attempts=attempts, sleep=sleep,
                       rand=rand)


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str,
                     interval: float = 0.5) -> T:
    """The first truthy result of `check`, polled every `interval`; AssertionError naming `what`
    and the last result (or exception) once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f}s (last: {last!r})")
        await asyncio.sleep(interval)
