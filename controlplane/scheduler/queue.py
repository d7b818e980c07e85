"""The scheduling queue: pods waiting for a node, oldest first; failures back off.

What must hold:
- a pod is in at most one of: active (ready to try, a heap by priority then creation time),
  backoff (waiting out its backoff, a heap by expiry), unschedulable (waiting for the cluster
  to change), in flight (being scheduled now);
- failed attempts back off exponentially per pod (1 s, 2 s, ... up to 10 s);
- a cluster change that may help (a node added or changed, a pod deleted) moves unschedulable
  pods back (to backoff if their backoff has not expired); a change that arrives while a pod
  is in flight is not lost: if that pod then fails, it goes to backoff, not to unschedulable;
- unschedulable pods are retried at the latest after `max_unschedulable` seconds anyway;
- updates to a queued pod replace the stored object; deleting or binding it removes it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

from controlplane.common import podutil
from skiff.clock import Clock, RealClock
from skiff.retry import Backoff
from skiffpb.api.v1 import types_pb2 as t


@dataclass(slots=True)
class QueuedPod:
    pod: t.Pod
    key: str
    created: float
    attempts: int = 0
    added: float = 0.0  # when it last entered unschedulable/backoff
    cycle: int = 0  # the scheduling cycle that popped it last
    where: str = ""  # "active", "backoff", "unschedulable", "flight"
    seq: int = 0
    gone: bool = False


@dataclass
class SchedulingQueue:
    clock: Clock = field(default_factory=RealClock)
    initial_backoff: float = 1.0
    max_backoff: float = 10.0
    max_unschedulable: float = 60.0

    def __post_init__(self) -> None:
        self._schedule = Backoff(initial=self.initial_backoff, max=self.max_backoff)
        self._pods: dict[str, QueuedPod] = {}
        self._active: list[tuple[int, float, int, str]] = []
        self._backoff: list[tuple[float, int, str]] = []
        self._unschedulable: dict[str, QueuedPod] = {}
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self.cycle = 0
        self._move_request_cycle = -1
        self._closed = False
        self._last_sweep = 0.0

    # ------------------------------------------------------------------ informer side

    def add(self, pod: t.Pod) -> None:
        key = podutil.pod_key(pod)
        qp = self._pods.get(key)
        if qp is not None:
            if qp.pod.metadata.uid != pod.metadata.uid:
                self.delete(key)
            else:
                changed = qp.pod.spec != pod.spec or qp.pod.metadata.labels != pod.metadata.labels
                qp.pod = pod
                if qp.where == "unschedulable" and changed:
                    del self._unschedulable[key]
                    self._to_active(qp)
                return
        qp = QueuedPod(pod, key, podutil.created(pod))
        self._pods[key] = qp
        self._to_active(qp)

    update = add

    def delete(self, key: str) -> None:
        qp = self._pods.pop(key, None)
        if qp is None:
            return
        qp.gone = True  # lazily dropped from the heaps
        self._unschedulable.pop(key, None)

    def move_all_to_active(self) -> None:
        """The cluster changed in a way that may let unschedulable pods fit: retry them."""
        self._move_request_cycle = self.cycle
        now = self.clock.now()
        for qp in list(self._unschedulable.values()):
            del self._unschedulable[qp.key]
            if self._backoff_expiry(qp) > now:
                self._to_backoff(qp)
            else:
                self._to_active(qp)

    # ------------------------------------------------------------------ scheduler side

    async def pop(self) -> QueuedPod | None:
        while True:
            self.flush()
            while self._active:
                _, _, seq, key = heapq.heappop(self._active)
                qp = self._pods.get(key)
                if qp is None or qp.gone or qp.seq != seq or qp.where != "active":
                    continue
                self.cycle += 1
                qp.cycle = self.cycle
                qp.attempts += 1
                qp.where = "flight"
                return qp
            if self._closed:
                return None
            self._wakeup.clear()
            timeout = self._next_timer()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def done(self, key: str) -> None:
        """The pod was scheduled (or dropped): it leaves the queue."""
        qp = self._pods.get(key)
        if qp is not None and qp.where == "flight":
            del self._pods[key]

    def unschedulable(self, qp: QueuedPod) -> None:
        """The attempt failed: wait for a cluster change (or backoff, if one came meanwhile)."""
        if qp.gone or self._pods.get(qp.key) is not qp:
            return
        qp.added = self.clock.now()
        if self._move_request_cycle >= qp.cycle:
            self._to_backoff(qp)
        else:
            qp.where = "unschedulable"
            self._unschedulable[qp.key] = qp

    def retry_after_error(self, qp: QueuedPod) -> None:
        """An error (e.g. the bind failed): try again after the pod's backoff."""
        if qp.gone or self._pods.get(qp.key) is not qp:
            return
        qp.added = self.clock.now()
        self._to_backoff(qp)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    # ------------------------------------------------------------------ internals

    def backoff_duration(self, attempts: int) -> float:
        return self._schedule.delay(attempts)

    def _backoff_expiry(self, qp: QueuedPod) -> float:
        return qp.added + self.backoff_duration(qp.attempts)

    def _to_active(self, qp: QueuedPod) -> None:
        qp.where = "active"
        qp.seq = next(self._seq)
        priority = 0  # no PriorityClass in Skiff: creation order decides
        heapq.heappush(self._active, (priority, qp.created, qp.seq, qp.key))
        self._wakeup.set()

    def _to_backoff(self, qp: QueuedPod) -> None:
        qp.where = "backoff"
        qp.seq = next(self._seq)
        heapq.heappush(self._backoff, (self._backoff_expiry(qp), qp.seq, qp.key))
        self._wakeup.set()

    def flush(self) -> None:
        """Move pods whose backoff expired to active, and long-unschedulable ones back."""
        now = self.clock.now()
        while self._backoff and self._backoff[0][0] <= now:
            _, seq, key = heapq.heappop(self._backoff)
            qp = self._pods.get(key)
            if qp is not None and not qp.gone and qp.seq == seq and qp.where == "backoff":
                self._to_active(qp)
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        for qp in list(self._unschedulable.values()):
            if now - qp.added >= self.max_unschedulable:
                del self._unschedulable[qp.key]
                self._to_active(qp)

    def _next_timer(self) -> float:
        """Seconds until something may become ready without an event (at most 1 s)."""
        soonest = 1.0
        if self._backoff:
            soonest = min(soonest, max(self._backoff[0][0] - self.clock.now(), 0.0))
        return max(soonest, 0.001)

    # ------------------------------------------------------------------ introspection

    def __len__(self) -> int:
        return len(self._pods)

    def counts(self) -> dict[str, int]:
        out = {"active": 0, "backoff": 0, "unschedulable": 0, "flight": 0}
        for qp in self._pods.values():
            out[qp.where] = out.get(qp.where, 0) + 1
        return out

    def where(self, key: str) -> str | None:
        qp = self._pods.get(key)
        return qp.where if qp is not None else None
