"""Recording Events (what `skiff describe` shows under "Events:") without slowing the caller.

The controllers, the scheduler and the node agent record through this one recorder, so their
Events look alike (count, firstTimestamp/lastTimestamp, source component and host).

What must hold:
- `event()` never blocks and never raises: it only notes the event; writers send it later;
- identical events (same object, type, reason, message) are aggregated into one Event whose
  `count` goes up and whose `lastTimestamp` moves, as Kubernetes' event correlator does;
- writes of one aggregated Event are never concurrent (the work queue guarantees it), so the
  count is not lost to our own races; a conflict with someone else re-reads and retries;
- similar events (same source, object, type and reason, different messages; client-go's
  EventAggregator) are combined: from the 10th distinct message about an object within 10
  minutes on, they become one Event "(combined from similar events): <latest message>" whose
  count goes up — a 300-pod ReplicaSet's "Created pod: ..." events are 9 Events and one
  combined one, written as one while repeats wait in the queue;
- the number of distinct pending events is bounded: past it, new ones are dropped (and
  counted in `dropped`), since events are advisory;
- a spam filter limits each involved object to a burst of 25 events, then one per 5 minutes
  (Kubernetes' EventSourceObjectSpamFilter), so a 1,000-pod scale-up does not write 1,000
  Events about its ReplicaSet;
- with `qps`, writes (creates and updates) go at most that fast after a burst of `burst`, as
  through client-go's rate-limited event client: events pile up in the bounded pending set
  meanwhile (merged when identical, dropped past the bound), and the caller never waits;
- `forget(uid)` drops what is kept to aggregate an object's next events (its written Events,
  similar messages, spam bucket) once the caller knows there will be none: a node agent's pod
  that is gone. Its events still pending are written first, then forgotten too. Without it the
  caches keep each object until `max_cached` newer ones push it out: a hollow process's
  hundreds of agents, one recorder each, held every churned pod's Events (docs/scale.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from skiff import errors, kinds
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock, stamp
from skiff.ratelimit import TokenBucket
from skiff.retry import retry_on_conflict
from skiff.workqueue import WorkQueue, run_workers
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.events")

NORMAL = "Normal"
WARNING = "Warning"


class Recorder(Protocol):
    """What controllers need: note an event about an object (never blocks, never raises)."""

    def event(self, obj: Any, type_: str, reason: str, message: str) -> None: ...


COMBINED_PREFIX = "(combined from similar events): "
AGGREGATE_MAX_MESSAGES = 10  # client-go's defaultAggregateMaxEvents
AGGREGATE_INTERVAL = 600.0  # seconds (defaultAggregateIntervalInSeconds)


@dataclass
class _Similar:
    messages: set[str]
    last: float


def aggregate(similar: _Similar | None, message: str, now: float, *, max_messages: int = AGGREGATE_MAX_MESSAGES,
              interval: float = AGGREGATE_INTERVAL) -> tuple[_Similar, bool]:
    """client-go's EventAggregator for one (source, object, type, reason): the record after
    `message` at `now`, and whether the event is to be combined (the record already holds
    `max_messages` distinct messages, counting this one, seen within `interval` of each other)."""
    if similar is None or now - similar.last > interval:
        similar = _Similar(set(), now)
    messages = similar.messages | {message}
    if len(messages) < max_messages:
        return _Similar(messages, now), False
    messages.discard(next(iter(messages - {message}), message))  # as client-go: the set stays at the max
    return _Similar(messages, now), True


def _key_uid(key: str) -> str:
    """The involved object's uid in an aggregation key (see event_ref)."""
    parts = key.split("\x00", 5)
    return parts[4] if len(parts) > 4 else ""


@dataclass
class _Pending:
    component: str
    ref: t.ObjectReference
    type: str
    reason: str
    message: str
    count: int
    first: float
    last: float


class EventRecorder:
    def __init__(self, client: ApiClient, component: str, *, host: str = "", clock: Clock | None = None,
                 max_pending: int = 4096, max_cached: int = 4096, workers: int = 4,
                 spam_burst: int = 25, spam_refill_seconds: float = 300.0, qps: float = 0.0,
                 burst: int = 100) -> None:
        self.client = client
        self.component = component
        self.host = host or socket.gethostname()
        self.clock = clock or RealClock()
        self.max_pending = max_pending
        self.max_cached = max_cached
        self.workers = workers
        self.dropped = 0
        self._queue = WorkQueue(name=f"{component}-events", base_delay=0.5, max_delay=30.0)
        self._pending: dict[str, _Pending] = {}
        # The Event last written for each aggregation key, so repeats become updates.
        self._written: OrderedDict[str, t.Event] = OrderedDict()
        self._seq = 0
        self.spam_burst = spam_burst
        self.spam_refill_seconds = spam_refill_seconds
        # Per involved object: (tokens, when last refilled).
        self._buckets: OrderedDict[tuple[str, str, str, str], tuple[float, float]] = OrderedDict()
        self._writes = TokenBucket.full(qps, self.clock.now(), burst=float(burst)) if qps > 0 else None
        # Per (source, object, type, reason): the distinct messages seen lately (aggregate()).
        self._similar: OrderedDict[str, _Similar] = OrderedDict()
        self._forgotten: set[str] = set()  # uids forgotten while some of their events were pending

    def event(self, obj: Any, type_: str, reason: str, message: str, *, component: str = "") -> None:
        """Note an event about `obj` (any API object); it is written in the background."""
        meta = obj.metadata
        kind = kinds.of_message(obj)
        ref = t.ObjectReference(kind=kind.kind, api_version=kind.api_version, namespace=meta.namespace,
                                name=meta.name, uid=meta.uid)
        self.event_ref(ref, type_, reason, message, component=component)

    def scoped(self, component: str) -> ScopedRecorder:
        """A recorder that reports as `component` (e.g. "deployment-controller"), sharing our writers."""
        return ScopedRecorder(self, component)

    def event_ref(self, ref: t.ObjectReference, type_: str, reason: str, message: str, *,
                  component: str = "") -> None:
        component = component or self.component
        now = self.clock.now()
        if not self._allow(ref, now):
            self.dropped += 1
            return
        similar_key = "\x00".join((component, ref.kind, ref.namespace, ref.name, ref.uid, type_, reason))
        similar, combined = aggregate(self._similar.get(similar_key), message, now)
        self._similar[similar_key] = similar
        self._similar.move_to_end(similar_key)
        while len(self._similar) > self.max_cached:
            self._similar.popitem(last=False)
        if combined:
            # One Event for all of them: its key leaves the message out, its message is the latest.
            key, message = similar_key, COMBINED_PREFIX + message
        else:
            key = similar_key + "\x00" + message
        pending = self._pending.get(key)
        if pending is not None:
            pending.count += 1
            pending.last = now
            pending.message = message
        elif len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        else:
            self._pending[key] = _Pending(component, ref, type_, reason, message, 1, now, now)
        self._queue.add(key)

    def _allow(self, ref: t.ObjectReference, now: float) -> bool:
        obj = (ref.kind, ref.namespace, ref.name, ref.uid)
        tokens, last = self._buckets.get(obj, (float(self.spam_burst), now))
        tokens = min(float(self.spam_burst), tokens + (now - last) / self.spam_refill_seconds)
        allowed = tokens >= 1.0
        self._buckets[obj] = (tokens - 1.0 if allowed else tokens, now)
        self._buckets.move_to_end(obj)
        while len(self._buckets) > self.max_cached:
            self._buckets.popitem(last=False)
        return allowed

    def forget(self, uid: str) -> None:
        """The object `uid` is gone for good: drop what is kept to aggregate its next events."""
        if not uid:
            return
        for key in [k for k in self._written if _key_uid(k) == uid]:
            del self._written[key]
        for key in [k for k in self._similar if _key_uid(k) == uid]:
            del self._similar[key]
        for obj in [o for o in self._buckets if o[3] == uid]:
            del self._buckets[obj]
        if any(p.ref.uid == uid for p in self._pending.values()):
            self._forgotten.add(uid)  # forgotten again once they are written (_write)
        else:
            self._forgotten.discard(uid)

    def cached(self) -> int:
        """How many entries the aggregation caches hold (written Events, similar messages, buckets)."""
        return len(self._written) + len(self._similar) + len(self._buckets)

    async def run(self) -> None:
        await run_workers(self._queue, self._write, workers=self.workers)

    def shutdown(self) -> None:
        self._queue.shutdown()

    async def flush(self) -> None:
        """Write everything pending now (tests, and shutdown)."""
        for key in list(self._pending):
            await self._write(key)

    async def _write(self, key: str) -> None:
        if key not in self._pending:
            return
        await self._write_token()
        pending = self._pending.pop(key, None)  # taken after the wait: repeats meanwhile merge into it
        if pending is None:
            return
        try:
            await self._send(key, pending)
        except errors.SkiffError:
            # Put it back (merged with anything newer) and let the queue retry with backoff.
            newer = self._pending.get(key)
            if newer is not None:
                pending.count += newer.count
                pending.last = newer.last
            self._pending[key] = pending
            raise
        if pending.ref.uid in self._forgotten:
            self.forget(pending.ref.uid)

    async def _write_token(self) -> None:
        """Wait for the write rate (`qps`) to allow one more write."""
        while self._writes is not None:
            ok, self._writes = self._writes.take(self.clock.now())
            if ok:
                return
            await asyncio.sleep(self._writes.wait())

    async def _send(self, key: str, p: _Pending) -> None:
        previous = self._written.get(key)
        if previous is not None:
            attempts = 0

            async def count_in() -> t.Event:
                # The first attempt trusts what we wrote last; after a conflict, read it afresh.
                nonlocal attempts
                attempts += 1
                base = previous if attempts == 1 else await self.client.get(
                    t.Event, previous.metadata.name, previous.metadata.namespace)
                update = t.Event()
                update.CopyFrom(base)
                update.count = base.count + p.count
                update.message = p.message  # a combined Event shows the latest of its messages
                stamp(update.last_timestamp, p.last)
                return await self.client.update(update)

            try:
                self._remember(key, await retry_on_conflict(count_in))
                return
            except errors.NotFoundError:
                pass  # expired or deleted: start a new one
            self._written.pop(key, None)
        self._seq += 1
        ev = t.Event(api_version="v1", kind="Event", reason=p.reason, message=p.message, type=p.type,
                     count=p.count, reporting_component=p.component)
        ev.involved_object.CopyFrom(p.ref)
        ev.metadata.namespace = p.ref.namespace or "default"
        # Kubernetes names events <object>.<unix nanos in hex>; the sequence keeps ours unique.
        ev.metadata.name = f"{p.ref.name}.{int(p.first * 1e9) + self._seq:x}"
        ev.source.component = p.component
        ev.source.host = self.host
        stamp(ev.first_timestamp, p.first)
        stamp(ev.last_timestamp, p.last)
        self._remember(key, await self.client.create(ev))

    def _remember(self, key: str, ev: t.Event) -> None:
        self._written[key] = ev
        self._written.move_to_end(key)
        while len(self._written) > self.max_cached:
            self._written.popitem(last=False)


@dataclass
class ScopedRecorder:
    """An EventRecorder seen under another component name (it shares the recorder's writers)."""

    parent: EventRecorder
    component: str

    def event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.parent.event(obj, type_, reason, message, component=self.component)
