"""The work queue the controllers and the event recorder process keys from (client-go's model).

What must hold:
- a key is handed to at most one worker at a time; adding a key that is being processed
  marks it dirty, and it is handed out again after `done(key)`;
- a key waiting in the queue is there once, however often it was added;
- failures back off per key (base * 2^n, capped) until `forget(key)`; an optional overall
  token bucket limits how fast retries come back;
- the queue reports client-go's workqueue metrics, labelled with its name: depth, adds, retries,
  time waiting in the queue and time being processed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

from skiff.retry import Backoff

log = logging.getLogger("skiff.workqueue")

# client-go's workqueue metrics (k8s.io/component-base/metrics/prometheus/workqueue), its buckets.
_BUCKETS = tuple(1e-8 * 10 ** i for i in range(10))
DEPTH = Gauge("workqueue_depth", "Current depth of workqueue", ["name"])
ADDS = Counter("workqueue_adds", "Total number of adds handled by workqueue", ["name"])
RETRIES = Counter("workqueue_retries", "Total number of retries handled by workqueue", ["name"])
QUEUE_DURATION = Histogram("workqueue_queue_duration_seconds",
                           "How long in seconds an item stays in workqueue before being requested.", ["name"],
                           buckets=_BUCKETS)
WORK_DURATION = Histogram("workqueue_work_duration_seconds",
                          "How long in seconds processing an item from workqueue takes.", ["name"], buckets=_BUCKETS)


class WorkQueue:
    def __init__(self, *, name: str = "", base_delay: float = 0.005, max_delay: float = 300.0,
                 qps: float = 0.0, burst: int = 100) -> None:
        self.name = name
        self.schedule = Backoff(initial=base_delay, max=max_delay)
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._delayed: dict[str, asyncio.TimerHandle] = {}
        self._delayed_at: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self._shutdown = False
        # Token bucket for retries: `qps` tokens per second, at most `burst`; 0 disables it.
        self._qps = qps
        self._burst = burst
        self._tokens = float(burst)
        self._last_refill: float | None = None
        self._queued_at: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._depth = DEPTH.labels(name)
        self._adds = ADDS.labels(name)
        self._retries = RETRIES.labels(name)
        self._queue_duration = QUEUE_DURATION.labels(name)
        self._work_duration = WORK_DURATION.labels(name)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutdown

    def add(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        self._adds.inc()
        if key in self._processing:
            return  # handed out again by done()
        self._enqueue(key)

    def _enqueue(self, key: str) -> None:
        self._queue.append(key)
        self._queued_at.setdefault(key, time.monotonic())
        self._depth.inc()
        self._wakeup.set()

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` after `delay` seconds; an earlier pending add for the same key wins."""
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if key in self._delayed:
            if self._delayed_at[key] <= when:
                return
            self._delayed[key].cancel()
        self._delayed_at[key] = when
        self._delayed[key] = loop.call_at(when, self._fire_delayed, key)

    def _fire_delayed(self, key: str) -> None:
        self._delayed.pop(key, None)
        self._delayed_at.pop(key, None)
        self.add(key)

    def backoff(self, key: str) -> float:
        """The delay the next add_rate_limited(key) will use."""
        return self.schedule.delay(self._failures.get(key, 0) + 1)

    def add_rate_limited(self, key: str) -> None:
        delay = self.backoff(key)
        self._failures[key] = self._failures.get(key, 0) + 1
        self._retries.inc()
        self.add_after(key, max(delay, self._bucket_delay()))

    def _bucket_delay(self) -> float:
        if self._qps <= 0:
            return 0.0
        now = asyncio.get_running_loop().time()
        if self._last_refill is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self._qps)
        self._last_refill = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._qps

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    async def get(self) -> str | None:
        """The next key to process, or None once the queue is shut down."""
        while not self._queue:
            if self._shutdown:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        now = time.monotonic()
        self._depth.dec()
        self._queue_duration.observe(now - self._queued_at.pop(key, now))
        self._started_at[key] = now
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        started = self._started_at.pop(key, None)
        if started is not None:
            self._work_duration.observe(time.monotonic() - started)
        if key in self._dirty and not self._shutdown:
            self._enqueue(key)

    def shutdown(self) -> None:
        self._shutdown = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self._delayed_at.clear()
        self._wakeup.set()


async def run_workers(queue: WorkQueue, sync: Callable[[str], Awaitable[None]], *, workers: int = 1) -> None:
    """Process keys with `workers` concurrent workers until the queue shuts down.

    Success forgets the key's backoff; an exception logs and requeues it with backoff.
    """

    async def worker() -> None:
        while True:
            key = await queue.get()
            if key is None:
                return
            try:
                await sync(key)
            except asyncio.CancelledError:
                queue.done(key)
                raise
            except Exception as exc:
                retries = queue.num_requeues(key)
                level = logging.WARNING if retries < 5 else logging.ERROR
                log.log(level, "%s: sync %s failed (retry %d): %s", queue.name or "queue", key, retries + 1, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            queue.done(key)

    await asyncio.gather(*(worker() for _ in range(workers)))
