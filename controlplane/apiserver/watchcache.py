"""The watch cache: one store watch per resource, fanned out to every client watch.

Like the Kubernetes cacher: each resource has one `WatchCache` that lists the resource's
keys once, then follows one store watch, keeping (a) the current objects and (b) a ring of the
most recent events. Client watches register a `Watcher` with a filter;
every event is offered to the watchers that may care (pods are indexed by spec.nodeName,
so a node agent's watch costs nothing for other nodes' pods).

What must hold:
- `revision` only grows; every event with revision <= `revision` has been applied to
  `objects` and offered to every watcher registered before it; a watcher registered at
  revision R is offered exactly the events with revision > R, in order, once each.
- `window_start`: the ring holds every event with revision > window_start. A watch from an
  older revision cannot be served here: the caller serves it from a store watch of its own
  (`Registry._pump_store_watch`), paced by the client (it reads the next batch from the store
  once the watcher's queue is below the bounds) instead of closed for being slow, and ended
  with an error (never just stopped) when that store watch ends.
- Registration is synchronous (no await between reading the ring/objects and adding the
  watcher), so no event falls between the replay and the live stream.
- A watcher sees an object that starts matching its filter as ADDED and one that stops
  matching as DELETED (with its previous content and the event's resourceVersion).
- Several objects can change at one revision (one transaction: `Registry.bind_many`), and a
  client resumes from the last resourceVersion it received, so no watch ends between two
  events of one revision that the server controls: the store batches whole revisions, the
  cache applies and offers a batch without awaiting, and a watcher closed with an error first
  hands out the rest of the revision it is in the middle of (`Watcher.fail`). For a connection
  that breaks mid-revision, a watch resumed at a revision holding several events its filter
  passes replays that revision (`WatchCache.register`), so a client-go reflector resuming from
  the last resourceVersion it got misses none; skiff/informer.py also resumes one revision back
  and skips what it already holds, which covers a revision already pushed out of the ring.
- Memory is bounded: the ring by `capacity` events and by `capacity_bytes` of the stored values
  its events refer to (an Endpoints of 300 addresses is 25 times a pod); each watcher's queue by `watcher_limit` events
  and by `watcher_bytes` bytes of encoded events (beyond either the watcher is closed with
  RESOURCE_EXHAUSTED saying it was too slow, its queue dropped but for the rest of the revision
  being sent, and the other watchers never wait for it; the client watches again from the last
  resourceVersion it received; that is how a watch resumed from inside the ring catches up, its
  replay being exempt from the bounds; a store-served watch is paced instead, see above). One event
  larger than the byte bound still goes to a watcher whose queue is empty. Encoded events are
  shared by all watchers.
- Lag is bounded in time as well (`watcher_max_lag`, `Watcher.lag`): an event offered to a
  watcher whose oldest event, queued or handed to its stream and not yet written, has waited
  longer than the bound closes it the same way. A message counts as written once the stream asks
  for the next one (a stream asks only after its write completed, which is once the client's
  flow-control window has room: skiff/client.py keeps that window small, so the lag is seen).
  Events queued while a list-then-watch sends its initial objects wait from the end of that list.
- A store watch that reports compaction (we fell too far behind) relists; the watchers
  registered so far are closed with UNAVAILABLE and re-watch.
- A cache is never frozen: any other failure of its loop (a bug, an unexpected error) closes
  its watchers with UNAVAILABLE, marks it not ready (no bookmarks, lists go to the store) and
  rebuilds it from a fresh list after a backoff; if the loop itself ends, the process exits
  non-zero (`skiff.guard.fatal`) for its supervisor to restart it.
- A store event becomes a watch event in one place, `watch_event`: the cache and the
  api-server's direct store watches (older than the cache window) give the same events.
- Objects are held as the store's value bytes with their mod_revision (`ObjectMap`), not
  decoded: a decoded protobuf costs about 8x its encoding (a 1.2 kB Pod is ~9.6 kB decoded,
  docs/scale.md), and at 30,000 pods that difference is most of an api-server's memory. Every
  read decodes its own copy (callers may change it). An event in the ring shares those bytes
  with the map (no second copy) and drops its decoded objects once it has been offered to the
  live watchers, and its encodings with them (the watchers' queues hold theirs); a replay
  makes them again and forgets them once the replay is queued. Pods are indexed by spec.nodeName, so a node's
  list decodes only that node's pods.
- A batched watch (WatchBatch) gets the same events in the same order, every event queued when
  a message goes out framed into that one message (`Watcher.next_batch`, then
  skiff/watchbatch.py: the shared encodings, length-prefixed, never decoded again), at most `WATCH_BATCH_BYTES` of them
  but always at least one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from google.protobuf.message import DecodeError, Message

from controlplane.apiserver.filters import Filter
from controlplane.apiserver.storage import CompactedError, Event, Store, StoreError, StoreWatch
from skiff import errors, kinds
from skiff.guard import fatal_on_exit, guard
from skiff.retry import Backoff, Delays
from skiffpb.api.v1 import apiserver_pb2 as api

log = logging.getLogger("skiff.apiserver.watchcache")

# After the store failed a list or a watch: 0.1 s doubling to 5 s.
RELIST_BACKOFF = Backoff(initial=0.1, max=5.0, jitter=0.2)
# Encoded events queued for one watcher at most (a few times the largest object, 1.5 MiB).
DEFAULT_WATCHER_BYTES = 8 * 1024 * 1024

# The stored values the event ring of one resource refers to, at most: 4,096 events of a pod
# (1.2 kB) are 5 MB, of an Endpoints of 300 addresses (31 kB) 127 MB (docs/scale.md).
DEFAULT_RING_BYTES = 32 * 1024 * 1024

# Encoded events in one WatchBatch message at most (a larger single event goes alone).
WATCH_BATCH_BYTES = 1024 * 1024

ADDED, MODIFIED, DELETED, BOOKMARK = "ADDED", "MODIFIED", "DELETED", "BOOKMARK"


def registry_prefix(kind: kinds.Kind, namespace: str = "") -> str:
    if kind.namespaced and namespace:
        return f"/registry/{kind.resource}/{namespace}/"
    return f"/registry/{kind.resource}/"


def decode(kind: kinds.Kind, value: bytes, revision: int, key: str = "") -> Message:
    """A stored value as its message, with resourceVersion set to `revision`."""
    msg = kind.message()
    try:
        msg.ParseFromString(value)
    except DecodeError as exc:
        raise StoreError(f"stored value of {key or kind.resource} is not a valid {kind.kind}: {exc}") from exc
    msg.metadata.resource_version = str(revision)  # type: ignore[attr-defined]
    return msg


def with_revision(obj: Message, revision: int) -> Message:
    out = type(obj)()
    out.CopyFrom(obj)
    out.metadata.resource_version = str(revision)  # type: ignore[attr-defined]
    return out


def encode_event(event_type: str, obj: Message) -> bytes:
    return api.WatchEvent(type=event_type, object=kinds.wrap(obj)).SerializeToString()


def chunk_bytes(items: list[bytes], max_bytes: int) -> Iterator[list[bytes]]:
    """`items` in order, cut into runs of at most `max_bytes` (an item larger alone is a run)."""
    run: list[bytes] = []
    size = 0
    for item in items:
        if run and size + len(item) > max_bytes:
            yield run
            run, size = [], 0
        run.append(item)
        size += len(item)
    if run:
        yield run


def encode_bookmark(kind: kinds.Kind, revision: int) -> bytes:
    marker = kinds.new(kind)
    marker.metadata.resource_version = str(revision)  # type: ignore[attr-defined]
    return encode_event(BOOKMARK, marker)


class TooOldForCache(Exception):
    def __init__(self, requested: int, window_start: int) -> None:
        super().__init__(f"revision {requested} is older than the watch cache window (from {window_start})")
        self.requested = requested
        self.window_start = window_start


# A stored object: the store's value bytes and the revision they were written at.
Stored = tuple[bytes, int]


class ObjectMap:
    """key → stored object; reads decode (see the module docstring). Pods are indexed by node."""

    def __init__(self, kind: kinds.Kind) -> None:
        self.kind = kind
        self._stored: dict[str, Stored] = {}
        self._index_nodes = kind.resource == "pods"
        self._node_of: dict[str, str] = {}
        self._by_node: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._stored)

    def __contains__(self, key: object) -> bool:
        return key in self._stored

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def keys(self) -> Iterable[str]:
        return self._stored.keys()

    def raw(self, key: str) -> Stored | None:
        return self._stored.get(key)

    def get(self, key: str) -> Message | None:
        stored = self._stored.get(key)
        return None if stored is None else decode(self.kind, stored[0], stored[1], key)

    def values(self) -> Iterator[Message]:
        for key, (value, revision) in list(self._stored.items()):
            yield decode(self.kind, value, revision, key)

    def items(self) -> Iterator[tuple[str, Message]]:
        for key, (value, revision) in list(self._stored.items()):
            yield key, decode(self.kind, value, revision, key)

    def keys_on_node(self, node: str) -> Iterable[str]:
        """Keys of the pods whose spec.nodeName is `node` (pods only)."""
        return self._by_node.get(node, ())

    def put(self, key: str, stored: Stored, obj: Message) -> None:
        """Store `stored`, whose decoded form is `obj` (used only for the node index)."""
        self._stored[key] = stored
        if self._index_nodes:
            self._unindex(key)
            node = obj.spec.node_name  # type: ignore[attr-defined]
            self._node_of[key] = node
            self._by_node.setdefault(node, set()).add(key)

    def pop(self, key: str) -> None:
        self._stored.pop(key, None)
        if self._index_nodes:
            self._unindex(key)

    def _unindex(self, key: str) -> None:
        node = self._node_of.pop(key, None)
        if node is not None:
            keys = self._by_node[node]
            keys.discard(key)
            if not keys:
                del self._by_node[node]


class CachedEvent:
    """One change; its encodings are made once and shared by all watchers.

    `obj` and `prev` are decoded objects; an event built from stored bytes (`stored`,
    `prev_stored`) decodes them on first use and forgets them at `release()`, with its
    encodings, keeping only the bytes, which the watch cache's map shares: the watchers' queues
    hold the encodings they were offered, and a replay makes them again.
    """

    __slots__ = ("_encoded", "_kind", "_obj", "_prev", "_prev_stored", "_stored", "key", "revision", "type")

    def __init__(self, type_: str, key: str, obj: Message | None, prev: Message | None, revision: int, *,
                 kind: kinds.Kind | None = None, stored: Stored | None = None,
                 prev_stored: Stored | None = None) -> None:
        assert obj is not None or (kind is not None and stored is not None)
        self.type = type_
        self.key = key
        self._obj = obj  # after the change; for DELETED the last state, at the delete's revision
        self._prev = prev
        self._kind = kind
        self._stored = stored
        self._prev_stored = prev_stored
        self.revision = revision
        self._encoded: dict[str, bytes] | None = None  # by event type, made when first asked for

    @property
    def obj(self) -> Message:
        if self._obj is not None:
            return self._obj
        assert self._kind is not None and self._stored is not None
        self._obj = decode(self._kind, self._stored[0], self._stored[1], self.key)
        return self._obj

    @property
    def prev(self) -> Message | None:
        if self._prev is None and self._prev_stored is not None:
            assert self._kind is not None
            self._prev = decode(self._kind, self._prev_stored[0], self._prev_stored[1], self.key)
        return self._prev

    @property
    def has_prev(self) -> bool:
        return self._prev is not None or self._prev_stored is not None

    @property
    def held_bytes(self) -> int:
        """The length of the stored value this event refers to (what the ring's byte bound
        counts; for DELETED the last value, which the event that wrote it may hold too)."""
        if self._stored is not None:
            return len(self._stored[0])
        return 0

    def release(self) -> None:
        """Forget what can be made again from the stored bytes: the decoded objects and the
        encodings (a decoded Endpoints of 300 addresses is several times its 31 kB encoding, and a
        ring of 4,096 such events kept both: docs/scale.md)."""
        if self._stored is not None:
            self._obj = None
            self._encoded = None
        if self._prev_stored is not None:
            self._prev = None

    def encoded(self, as_type: str) -> bytes:
        if self._encoded is None:
            self._encoded = {}
        data = self._encoded.get(as_type)
        if data is None:
            if as_type == DELETED and self.type != DELETED:
                prev = self.prev
                assert prev is not None
                data = encode_event(DELETED, with_revision(prev, self.revision))  # left the filter
            else:
                data = encode_event(as_type, self.obj)
            self._encoded[as_type] = data
        return data


def watch_event(kind: kinds.Kind, ev: Event, prev: Message | None, *,
                prev_stored: Stored | None = None) -> CachedEvent | None:
    """The watch event for store event `ev`, given the object before it (None: there was none),
    decoded (`prev`) or as stored bytes (`prev_stored`).

    A PUT is ADDED, or MODIFIED when there was an object; a DELETE is DELETED carrying the
    last state at the delete's revision, or no event when there was nothing to delete.
    Raises StoreError when the stored value does not decode as a `kind`.
    """
    had = prev is not None or prev_stored is not None
    if ev.type == "PUT":
        obj = decode(kind, ev.value, ev.revision, ev.key)
        return CachedEvent(MODIFIED if had else ADDED, ev.key, obj, prev, ev.revision, kind=kind,
                           stored=(ev.value, ev.revision), prev_stored=prev_stored)
    if not had:
        return None
    if prev_stored is not None:
        return CachedEvent(DELETED, ev.key, None, prev, ev.revision, kind=kind,
                           stored=(prev_stored[0], ev.revision), prev_stored=prev_stored)
    assert prev is not None
    return CachedEvent(DELETED, ev.key, with_revision(prev, ev.revision), prev, ev.revision)


def translate(filt: Filter, ev: CachedEvent) -> str | None:
    """The event type a watcher with `filt` sees for `ev`, or None (Kubernetes' rules)."""
    now = ev.type != DELETED and filt.matches(ev.obj)
    before = ev.has_prev and filt.matches(ev.prev)  # type: ignore[arg-type]
    if now:
        return MODIFIED if before else ADDED
    return DELETED if before else None


class Watcher:
    """A client watch registered with a cache: a bounded queue of encoded events."""

    def __init__(self, kind: kinds.Kind, filt: Filter, start_revision: int, *, limit: int,
                 allow_bookmarks: bool, max_bytes: int = DEFAULT_WATCHER_BYTES, max_lag: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_remove: Callable[[Watcher], None] | None = None) -> None:
        self.kind = kind
        self.filter = filt
        self.node = filt.node_name if kind.resource == "pods" else None
        self.start_revision = start_revision
        self.limit = limit
        self.max_bytes = max_bytes
        self.allow_bookmarks = allow_bookmarks
        self.on_remove = on_remove
        self.queue: deque[bytes] = deque()
        self._revisions: deque[int] = deque()  # each queued event's revision
        self._sent_revision = start_revision  # the revision of the last event handed out
        self.queued_bytes = 0
        # The lag bound (`lag`): seconds an event may wait, queued or being written, before the
        # watcher is closed as too slow; None: no bound (a store-served watch, paced instead).
        self.max_lag = max_lag
        self.clock = clock
        self._queued_at: deque[float] = deque()  # when each queued event was queued
        # When the oldest event of the message being written was queued (None: no write pending).
        # A message is written once its stream asks for the next one (`next`, `next_batch`).
        self._writing_since: float | None = None
        # Nothing waits before this (`start_lag_clock`): the initial objects go out first.
        self._lag_from = clock()
        self.wake = asyncio.Event()
        # Set when the client takes an event, for `room` (made there: cache watchers never wait).
        self._taken: asyncio.Event | None = None
        self.error: errors.SkiffError | None = None
        self.too_slow = False  # closed by a bound (events, bytes, lag): its client could not keep up
        self.expired = False

    def offer(self, ev: CachedEvent) -> None:
        if ev.revision <= self.start_revision or self.error is not None:
            return
        as_type = translate(self.filter, ev)
        if as_type is None:
            return
        data = ev.encoded(as_type)
        lag = self.lag()
        if self.max_lag is not None and lag > self.max_lag:
            self.too_slow = True
            self.fail(errors.TooManyRequestsError(
                f"watch of {self.kind.resource} closed: the client has not taken an event queued {lag:.1f}s ago, "
                f"over the bound of {self.max_lag:g}s (too slow to read; it was last sent revision "
                f"{self._sent_revision}, the cache is at {ev.revision}); watch again from the last resourceVersion "
                "it received"))
            return
        if len(self.queue) >= self.limit or (self.queue and self.queued_bytes + len(data) > self.max_bytes):
            self.too_slow = True
            self.fail(errors.TooManyRequestsError(
                f"watch of {self.kind.resource} closed: the client fell {len(self.queue)} events "
                f"({self.queued_bytes} bytes) behind, over the bound of {self.limit} events or {self.max_bytes} "
                f"bytes (too slow to read); watch again from the last resourceVersion it received"))
            return
        self._push(data, ev.revision)

    def _push(self, data: bytes, revision: int) -> None:
        self.queue.append(data)
        self._revisions.append(revision)
        self._queued_at.append(self.clock())
        self.queued_bytes += len(data)
        self.wake.set()

    def lag(self) -> float:
        """Seconds the oldest event not yet written to the client has waited (0 when none waits).

        A write completes once the client's transport has room for it, so this sees a client
        that reads slowly only when its receive window is small (skiff/client.py turns off the
        window's growth; a window grown to megabytes would hide thousands of events from it)."""
        if self._writing_since is not None:
            oldest = self._writing_since
        elif self._queued_at:
            oldest = self._queued_at[0]
        else:
            return 0.0
        return max(0.0, self.clock() - max(oldest, self._lag_from))

    def start_lag_clock(self) -> None:
        """The initial objects are out: events queued meanwhile wait from now."""
        self._lag_from = self.clock()

    def bookmark(self, revision: int) -> None:
        if self.allow_bookmarks and not self.queue and self.error is None and revision > self.start_revision:
            self._push(encode_bookmark(self.kind, revision), revision)

    def fail(self, error: errors.SkiffError) -> None:
        """End the watch with `error` once the revision the client is in the middle of is
        complete: the events of that revision still queued are kept (a client resumes from the
        last resourceVersion it received, and several objects written in one transaction share
        it: `Registry.bind_many`), everything after is dropped."""
        self.error = error
        keep = 0
        for revision in self._revisions:
            if revision != self._sent_revision:
                break
            keep += 1
        while len(self.queue) > keep:
            self.queued_bytes -= len(self.queue.pop())
            self._revisions.pop()
            self._queued_at.pop()
        self.wake.set()
        self.close()

    def expire(self) -> None:
        """The watch's timeout passed: end it normally once the queue is drained."""
        self.expired = True
        self.wake.set()

    async def room(self, events: int, nbytes: int) -> None:
        """Return once fewer than `events` events and `nbytes` bytes are queued (or the watch
        ended): the back-pressure of a watch served from its own store watch."""
        while self.error is None and not self.expired and (len(self.queue) >= events or self.queued_bytes >= nbytes):
            if self._taken is None:
                self._taken = asyncio.Event()
            self._taken.clear()
            await self._taken.wait()

    async def next(self) -> bytes | None:
        """The next encoded event; None when expired; raises the watcher's error once closed
        (after the rest of the revision being sent, see `fail`)."""
        self._writing_since = None  # the stream asks for more: what it was handed is written
        while not self.queue:
            if self.error is not None:
                raise self.error
            if self.expired:
                return None
            self.wake.clear()
            await self.wake.wait()
        return self._pop()

    async def next_batch(self, max_bytes: int = WATCH_BATCH_BYTES) -> list[bytes] | None:
        """Every queued event up to `max_bytes` of them (at least one, waiting for it as `next`
        does); None when expired. Handed out as sent: `fail` keeps what is queued after them."""
        first = await self.next()
        if first is None:
            return None
        batch, size = [first], len(first)  # `_writing_since`: the first one's, the oldest
        while self.queue and size + len(self.queue[0]) <= max_bytes:
            data = self._pop()
            batch.append(data)
            size += len(data)
        return batch

    def _pop(self) -> bytes:
        data = self.queue.popleft()
        self._sent_revision = self._revisions.popleft()
        queued_at = self._queued_at.popleft()
        if self._writing_since is None:
            self._writing_since = queued_at
        self.queued_bytes -= len(data)
        if self._taken is not None:
            self._taken.set()
        return data

    def close(self) -> None:
        if self.on_remove is not None:
            self.on_remove(self)
            self.on_remove = None


class WatchCache:
    def __init__(self, store: Store, kind: kinds.Kind, *, capacity: int = 4096,
                 capacity_bytes: int = DEFAULT_RING_BYTES, watcher_limit: int = 4096,
                 watcher_bytes: int = DEFAULT_WATCHER_BYTES, watcher_max_lag: float | None = None,
                 bookmark_interval: float = 5.0, page_size: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.kind = kind
        self.prefix = registry_prefix(kind)
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self.watcher_limit = watcher_limit
        self.watcher_bytes = watcher_bytes
        self.watcher_max_lag = watcher_max_lag
        self.clock = clock
        self.bookmark_interval = bookmark_interval
        self.page_size = page_size
        self.objects = ObjectMap(kind)
        self.events: deque[CachedEvent] = deque()
        self.events_bytes = 0  # sum of the ring's events' held_bytes
        self.revision = 0
        self.window_start = 0
        self.ready = asyncio.Event()
        self._all: set[Watcher] = set()
        # Watchers closed as too slow (kube-apiserver's apiserver_terminated_watchers_total).
        self.terminated_watchers = 0
        self._by_node: dict[str, set[Watcher]] = {}
        self._advanced = asyncio.Event()
        self._store_watch: StoreWatch | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._tasks = [guard(self.run(), f"watchcache-{self.kind.resource}", on_exit=fatal_on_exit),
                       guard(self._bookmarks(), f"watchcache-{self.kind.resource}-bookmarks",
                             on_exit=fatal_on_exit)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._store_watch is not None:
            await self._store_watch.close()
        for w in list(self.watchers()):
            w.fail(errors.UnavailableError("api-server shutting down; watch again"))

    async def run(self) -> None:
        delays = Delays(RELIST_BACKOFF)
        while True:
            try:
                if not self.ready.is_set() or self.revision == 0:
                    await self._list()
                await self._follow()
            except CompactedError as exc:
                log.warning("%s watch cache fell behind compaction (%s); relisting", self.kind.resource, exc)
                self._reset("the watch cache was rebuilt after a store compaction; watch again")
            except StoreError as exc:
                delay = delays.next()
                log.warning("%s watch cache: %s; retrying in %.1fs", self.kind.resource, exc, delay)
                await asyncio.sleep(delay)
            except Exception as exc:
                # A bug or an unexpected failure: rebuild from a fresh list rather than go on
                # serving (and bookmarking) a cache that stopped following the store.
                delay = delays.next()
                log.exception("%s watch cache failed; rebuilding it from a fresh list in %.1fs",
                              self.kind.resource, delay)
                self._reset(f"the watch cache failed ({type(exc).__name__}: {exc}) and is being rebuilt; "
                            "watch again", ready=False)
                await asyncio.sleep(delay)

    def _reset(self, reason: str, *, ready: bool = True) -> None:
        if not ready:
            self.ready.clear()
        for w in list(self.watchers()):
            w.fail(errors.UnavailableError(f"watch of {self.kind.resource} closed: {reason}"))
        self.revision = 0

    async def _list(self) -> None:
        objects = ObjectMap(self.kind)
        revision = 0
        start = ""
        while True:
            page = await self.store.range(self.prefix, revision=revision, start=start, limit=self.page_size)
            revision = page.revision
            for kv in page.kvs:
                try:
                    objects.put(kv.key, (kv.value, kv.mod_revision),
                                decode(self.kind, kv.value, kv.mod_revision, kv.key))
                except StoreError as exc:
                    log.error("%s", exc)
            if not page.more or not page.kvs:
                break
            start = page.kvs[-1].key + "\0"
        self.objects = objects
        self.events.clear()
        self.events_bytes = 0
        self.revision = self.window_start = revision
        self.ready.set()
        self._signal()
        log.debug("%s watch cache: %d objects at revision %d", self.kind.resource, len(objects), revision)

    async def _follow(self) -> None:
        watch = self.store.watch(self.prefix, start_revision=self.revision + 1)
        self._store_watch = watch
        try:
            async for batch in watch:
                for ev in batch.events:
                    self._apply(ev)
                if batch.revision > self.revision:
                    self.revision = batch.revision
                    self._signal()
        finally:
            self._store_watch = None
            await watch.close()

    def _signal(self) -> None:
        self._advanced.set()
        self._advanced = asyncio.Event()

    def _apply(self, ev: Event) -> None:
        try:
            cached = watch_event(self.kind, ev, None, prev_stored=self.objects.raw(ev.key))
        except StoreError as exc:
            log.error("%s", exc)
            return
        if cached is None:
            return
        if cached.type == DELETED:
            self.objects.pop(ev.key)
        else:
            self.objects.put(ev.key, (ev.value, ev.revision), cached.obj)
        self._append(cached)
        for w in self._targets(cached):
            w.offer(cached)
        cached.release()

    def _append(self, ev: CachedEvent) -> None:
        """Add `ev` to the ring, first dropping the oldest events beyond `capacity` events or
        `capacity_bytes` of stored values (the newest event always stays)."""
        while self.events and (len(self.events) >= self.capacity
                               or self.events_bytes + ev.held_bytes > self.capacity_bytes):
            dropped = self.events.popleft()
            self.events_bytes -= dropped.held_bytes
            self.window_start = dropped.revision
        self.events.append(ev)
        self.events_bytes += ev.held_bytes

    def _targets(self, ev: CachedEvent) -> Iterable[Watcher]:
        if not self._by_node:
            return list(self._all)
        out = list(self._all)
        nodes = {ev.obj.spec.node_name}  # type: ignore[attr-defined]
        if ev.has_prev:
            nodes.add(ev.prev.spec.node_name)  # type: ignore[union-attr]
        for node in nodes:
            out.extend(self._by_node.get(node, ()))
        return out

    async def _bookmarks(self) -> None:
        while True:
            await asyncio.sleep(self.bookmark_interval)
            if not self.ready.is_set():
                continue
            for w in list(self.watchers()):
                w.bookmark(self.revision)

    # ------------------------------------------------------------------ queries

    def watchers(self) -> Iterable[Watcher]:
        yield from self._all
        for ws in self._by_node.values():
            yield from ws

    @property
    def watcher_count(self) -> int:
        return len(self._all) + sum(len(ws) for ws in self._by_node.values())

    def count(self, prefix: str) -> int:
        if prefix == self.prefix:
            return len(self.objects)
        return sum(1 for key in self.objects if key.startswith(prefix))

    async def consistent_revision(self, prefix: str, timeout: float) -> int | None:
        """A revision R such that the cached objects under `prefix` are exactly the store's at R
        (a consistent read), or None when the cache does not catch up within `timeout`.

        Proof obligation, without progress notifications: read once (linearizably) how many
        keys the store has under the prefix and whether one was written after the cache's
        revision c. If none was, every stored key's value was written at or before c, so the
        cache (which applied everything up to c) holds each of them with that value; equal
        counts then mean it holds nothing else.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            seen = self.revision
            status = await self.store.prefix_status(prefix, modified_after=seen)
            if self.revision >= status.revision:
                return self.revision  # caught up meanwhile: the cache is at least as fresh
            if not status.modified and self.count(prefix) == status.count:
                return status.revision
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                async with asyncio.timeout(min(remaining, 0.2)):
                    await self._advanced.wait()
            except TimeoutError:
                pass

    def snapshot(self, filt: Filter) -> list[Message]:
        """The cached objects matching `filt`, in key order (no await: one consistent state)."""
        prefix = registry_prefix(self.kind, filt.namespace)
        node = filt.node_name if self.kind.resource == "pods" else None
        keys = self.objects.keys() if node is None else self.objects.keys_on_node(node)
        out: list[Message] = []
        for key in sorted(k for k in keys if k.startswith(prefix)):
            obj = self.objects.get(key)
            if obj is not None and filt.matches(obj):
                out.append(obj)
        return out

    def register(self, filt: Filter, *, start_revision: int | None, allow_bookmarks: bool,
                 initial: bool = False) -> tuple[Watcher, list[Message]]:
        """A watcher from `start_revision` (None: now), plus the matching objects when `initial`.

        Raises TooOldForCache when the ring no longer reaches back to `start_revision`; the
        caller then serves the watch from the store.
        """
        start = self.revision if start_revision is None else start_revision
        if start_revision is not None and self._shared(filt, start_revision):
            # Several objects this client watches were written at `start` (one transaction,
            # `Registry.bind_many`), and a client resumes from the last resourceVersion it got: if
            # its connection broke between two of them it never saw the second. Replay the whole
            # revision; the ones it holds come again as an update to the same object (client-go's
            # informers take that as they take a resync).
            start -= 1
        if start < self.window_start:
            raise TooOldForCache(start, self.window_start)
        # The replay may exceed the bounds: they apply to what is queued beyond it.
        w = Watcher(self.kind, filt, start, limit=len(self.events) + 1, max_bytes=2**62,
                    max_lag=self.watcher_max_lag, clock=self.clock, allow_bookmarks=allow_bookmarks,
                    on_remove=self.remove)
        objs = self.snapshot(filt) if initial else []
        for ev in self.events:
            w.offer(ev)
            ev.release()  # the watcher's queue holds its encodings; one event decoded at a time
        w.limit = self.watcher_limit + len(w.queue)
        w.max_bytes = self.watcher_bytes + w.queued_bytes
        if w.node is not None:
            self._by_node.setdefault(w.node, set()).add(w)
        else:
            self._all.add(w)
        return w, objs

    def _shared(self, filt: Filter, revision: int) -> bool:
        """Whether more than one event `filt` passes has this revision (in the ring)."""
        at = [ev for ev in self.events if ev.revision == revision]
        shared = sum(1 for ev in at if translate(filt, ev) is not None) > 1
        for ev in at:
            ev.release()
        return shared


    def remove(self, w: Watcher) -> None:
        if w.too_slow:
            self.terminated_watchers += 1
        if w.node is not None:
            ws = self._by_node.get(w.node)
            if ws is not None:
                ws.discard(w)
                if not ws:
                    del self._by_node[w.node]
        else:
            self._all.discard(w)
