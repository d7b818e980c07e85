"""An in-memory `Store` with etcd's MVCC semantics, for tests of the api-server and under the
in-process api-server (inprocess.py).

It keeps every version of every key until `compact`, so reads at a past revision, watches
from a past revision and CompactedError behave as they do against etcd. Leases expire by
an injected clock, checked lazily at each call (expiry is a write: one revision deleting
the lease's keys). `available = False` makes every call raise UnavailableStoreError.
With `progress_interval`, idle watches get progress batches (etcd's progress_notify).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from controlplane.apiserver.storage import (
    KV,
    CompactedError,
    Compare,
    Delete,
    Event,
    Op,
    PrefixStatus,
    Put,
    RangeResult,
    TxnResult,
    UnavailableStoreError,
    WatchBatch,
)


@dataclass(slots=True)
class _Version:
    create_revision: int
    mod_revision: int
    value: bytes | None  # None: deleted at mod_revision
    lease: int = 0


@dataclass
class _Lease:
    expires: float
    keys: set[str] = field(default_factory=set)


class _MemoryWatch:
    def __init__(self, store: MemoryStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self.queue: asyncio.Queue[WatchBatch | None] = asyncio.Queue()

    def offer(self, revision: int, events: Sequence[Event]) -> None:
        mine = tuple(e for e in events if e.key.startswith(self.prefix))
        if mine:
            self.queue.put_nowait(WatchBatch(mine, revision))

    async def __aiter__(self) -> AsyncIterator[WatchBatch]:
        interval = self.store.progress_interval
        while True:
            if interval:
                try:
                    # asyncio.timeout, not wait_for: wait_for can swallow a cancellation (3.11).
                    async with asyncio.timeout(interval):
                        batch = await self.queue.get()
                except TimeoutError:
                    # Like etcd's progress_notify: an idle watch hears the current revision.
                    yield WatchBatch((), self.store.current_revision)
                    continue
            else:
                batch = await self.queue.get()
            if batch is None:
                return
            yield batch

    async def close(self) -> None:
        if self in self.store._watches:
            self.store._watches.remove(self)
        self.queue.put_nowait(None)

    def fail(self) -> None:
        """End the iteration (as a broken stream would); used to test reconnection."""
        self.queue.put_nowait(None)


class MemoryStore:
    def __init__(self, *, clock: Callable[[], float] = time.time, progress_interval: float = 0.0) -> None:
        self.clock = clock
        self.progress_interval = progress_interval  # > 0: idle watches get progress batches
        self.current_revision = 1  # etcd starts at 1 too
        self.compact_revision = 0
        self.available = True
        self._keys: dict[str, list[_Version]] = {}
        self._sorted: list[str] = []
        self._log: list[tuple[int, tuple[Event, ...]]] = []
        self._watches: list[_MemoryWatch] = []
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x1000)

    # ------------------------------------------------------------------ helpers

    def _check(self) -> None:
        if not self.available:
            raise UnavailableStoreError("memory store: marked unavailable")
        self._expire_leases()

    def _current(self, key: str) -> KV | None:
        versions = self._keys.get(key)
        if not versions or versions[-1].value is None:
            return None
        v = versions[-1]
        assert v.value is not None
        return KV(key, v.value, v.create_revision, v.mod_revision, v.lease)

    def _at(self, key: str, revision: int) -> KV | None:
        for v in reversed(self._keys.get(key, ())):
            if v.mod_revision <= revision:
                if v.value is None:
                    return None
                return KV(key, v.value, v.create_revision, v.mod_revision, v.lease)
        return None

    def _apply(self, ops: Sequence[Op]) -> int:
        """Apply ops at one new revision; notify watches. Returns the revision."""
        revision = self.current_revision + 1
        events: list[Event] = []
        for op in ops:
            prev = self._current(op.key)
            if isinstance(op, Put):
                if op.key not in self._keys:
                    bisect.insort(self._sorted, op.key)
                    self._keys[op.key] = []
                create = prev.create_revision if prev is not None else revision
                self._keys[op.key].append(_Version(create, revision, op.value, op.lease))
                if prev is not None and prev.lease and prev.lease != op.lease and prev.lease in self._leases:
                    self._leases[prev.lease].keys.discard(op.key)
                if op.lease:
                    lease = self._leases.get(op.lease)
                    if lease is None:
                        raise UnavailableStoreError(f"memory store: lease {op.lease:x} not found")
                    lease.keys.add(op.key)
                events.append(Event("PUT", op.key, op.value, prev.value if prev else None, revision))
            elif prev is not None:
                self._keys[op.key].append(_Version(prev.create_revision, revision, None))
                events.append(Event("DELETE", op.key, b"", prev.value, revision))
        if not events:
            return self.current_revision
        self.current_revision = revision
        batch = tuple(events)
        self._log.append((revision, batch))
        for w in list(self._watches):
            w.offer(revision, batch)
        return revision

    def _expire_leases(self) -> None:
        now = self.clock()
        for lease_id in [i for i, lease in self._leases.items() if lease.expires <= now]:
            lease = self._leases.pop(lease_id)
            self._apply([Delete(k) for k in sorted(lease.keys)])

    # ------------------------------------------------------------------ Store

    async def get(self, key: str) -> KV | None:
        self._check()
        return self._current(key)

    async def range(self, prefix: str, *, revision: int = 0, start: str = "", limit: int = 0) -> RangeResult:
        self._check()
        if revision and revision < self.compact_revision:
            raise CompactedError(revision, self.compact_revision)
        at = revision or self.current_revision
        lo = bisect.bisect_left(self._sorted, max(prefix, start))
        out: list[KV] = []
        more = False
        for key in self._sorted[lo:]:
            if not key.startswith(prefix):
                break
            kv = self._at(key, at)
            if kv is None:
                continue
            if limit and len(out) == limit:
                more = True
                break
            out.append(kv)
        return RangeResult(out, at, more)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        self._check()
        current = {c.key: self._current(c.key) for c in compares}
        ok = all((current[c.key].mod_revision if current[c.key] else 0) == c.mod_revision  # type: ignore[union-attr]
                 for c in compares)
        if not ok:
            return TxnResult(False, self.current_revision, current)
        return TxnResult(True, self._apply(ops))

    async def revision(self) -> int:
        self._check()
        return self.current_revision

    async def prefix_status(self, prefix: str, *, modified_after: int) -> PrefixStatus:
        self._check()
        count, modified = 0, False
        lo = bisect.bisect_left(self._sorted, prefix)
        for key in self._sorted[lo:]:
            if not key.startswith(prefix):
                break
            kv = self._current(key)
            if kv is not None:
                count += 1
                modified = modified or kv.mod_revision > modified_after
        return PrefixStatus(self.current_revision, count, modified)

    def watch(self, prefix: str, *, start_revision: int) -> _MemoryWatch:
        self._check()
        if start_revision and start_revision < self.compact_revision:
            raise CompactedError(start_revision, self.compact_revision)
        w = _MemoryWatch(self, prefix)
        if start_revision:
            for revision, events in self._log:
                if revision >= start_revision:
                    w.offer(revision, events)
        self._watches.append(w)
        return w

    async def compact(self, revision: int) -> None:
        self._check()
        if revision <= self.compact_revision:
            raise CompactedError(revision, self.compact_revision)
        self.compact_revision = revision
        self._log = [(r, e) for r, e in self._log if r >= revision]
        for key in list(self._keys):
            versions = self._keys[key]
            # Keep the newest version at or below `revision` (the state there) and all after it.
            keep_from = 0
            for i, v in enumerate(versions):
                if v.mod_revision <= revision:
                    keep_from = i
            kept = versions[keep_from:]
            if kept and kept[0].value is None and kept[0].mod_revision <= revision:
                kept = kept[1:]
            if kept:
                self._keys[key] = kept
            else:
                del self._keys[key]
                self._sorted.remove(key)

    async def grant_lease(self, ttl: int) -> int:
        self._check()
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(self.clock() + ttl)
        return lease_id

    async def close(self) -> None:
        for w in list(self._watches):
            await w.close()

    # ------------------------------------------------------------------ in-process inspection

    def current(self, prefix: str) -> list[KV]:
        """The live keys under `prefix` now, in key order, without awaiting (for test assertions)."""
        lo = bisect.bisect_left(self._sorted, prefix)
        out: list[KV] = []
        for key in self._sorted[lo:]:
            if not key.startswith(prefix):
                break
            kv = self._current(key)
            if kv is not None:
                out.append(kv)
        return out

    def pending_batches(self) -> int:
        """Batches offered to watches and not yet taken by their readers."""
        return sum(w.queue.qsize() for w in self._watches)

    def describe(self) -> str:
        return "memory"
