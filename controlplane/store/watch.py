"""Watch fan-out: every applied event goes to the watchers whose range it falls in, in revision order.

Runs on the asyncio loop. The Raft thread applies a batch, then posts its events here with
`publish()`; `revision` is the last revision published, which can trail the state's revision
by the batches still in flight to the loop. What must hold:

- A watcher sees each event with revision >= its start revision exactly once, in order; events
  of one revision are never split across responses.
- Catching up from history reads only up to `revision`; newer events arrive through publish,
  so nothing is delivered twice or skipped.
- A watcher whose next revision was compacted away gets etcd's answer: a response with
  canceled=true and compact_revision, after which the client relists.
- A slow stream (its queue over `max_queue`) stops receiving live events; its watchers turn
  "unsynced" and catch up from history once it drains (or are told they were compacted),
  so one stuck client costs bounded memory. A watcher is synced (gets live events) only while
  its stream is not slow: one created on a slow stream, or whose own catch-up made the stream
  slow, stays unsynced until the catch-up after the drain.
- Each event is encoded once per publish (with and without prev_kv) and responses are built by
  concatenating bytes, so the cost per watcher is a filter and a join.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from controlplane.store import mvcc
from controlplane.store.errors import EtcdError
from controlplane.store.pbconv import encode_event, field_bytes, varint
from skiffpb.etcd import rpc_pb2

log = logging.getLogger("skiff.store.watch")

MAX_RESPONSE_BYTES = 1 << 20
_EVENT_TAG = 0x5A  # WatchResponse.events, field 11, length-delimited
_HEADER_TAG = 0x0A  # WatchResponse.header, field 1


class Watcher:
    __slots__ = ("end", "id", "key", "last_sent", "next_rev", "nodelete", "noput", "prev_kv", "progress", "stream",
                 "synced")

    def __init__(self, stream: WatchStream, wid: int, req: rpc_pb2.WatchCreateRequest, next_rev: int) -> None:
        self.stream = stream
        self.id = wid
        self.key = req.key
        self.end = req.range_end
        self.noput = rpc_pb2.WatchCreateRequest.NOPUT in req.filters
        self.nodelete = rpc_pb2.WatchCreateRequest.NODELETE in req.filters
        self.prev_kv = req.prev_kv
        self.progress = req.progress_notify
        self.next_rev = next_rev
        self.synced = True
        self.last_sent = time.monotonic()

    def wants(self, ev: mvcc.Event) -> bool:
        if ev.type == mvcc.PUT:
            if self.noput:
                return False
        elif self.nodelete:
            return False
        return mvcc.in_range(ev.kv.key, self.key, self.end)


class _Encoded:
    """Per-publish cache of encoded events."""

    __slots__ = ("events", "plain", "prev")

    def __init__(self, events: list[mvcc.Event]) -> None:
        self.events = events
        self.plain: dict[int, bytes] = {}
        self.prev: dict[int, bytes] = {}

    def get(self, i: int, with_prev: bool) -> bytes:
        cache = self.prev if with_prev else self.plain
        b = cache.get(i)
        if b is None:
            b = field_bytes(_EVENT_TAG, encode_event(self.events[i], with_prev=with_prev))
            cache[i] = b
        return b


class WatchStream:
    """One client Watch RPC: its watchers and the queue of encoded responses to send."""

    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub
        self.watchers: dict[int, Watcher] = {}
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.progress_pending = False
        self._next_id = 0
        self.slow = False

    def alloc_id(self) -> int:
        while self._next_id in self.watchers:
            self._next_id += 1
        wid = self._next_id
        self._next_id += 1
        return wid

    def put(self, data: bytes) -> None:
        self.queue.put_nowait(data)
        if self.queue.qsize() > self.hub.max_queue and not self.slow:
            self.slow = True
            for w in self.watchers.values():
                w.synced = False

    async def responses(self) -> AsyncIterator[bytes]:
        while True:
            if self.queue.empty() and self.slow:
                self.slow = False
                self.hub.catch_up(self)
                continue
            yield await self.queue.get()


class WatchHub:
    def __init__(self, *, history: Callable[[int, int], list[mvcc.Event]],
                 compact_revision: Callable[[], int], header: Callable[[int], rpc_pb2.ResponseHeader],
                 revision: int, max_queue: int = 1024) -> None:
        self._history = history
        self._compact_revision = compact_revision
        self._header = header
        self.revision = revision
        self.max_queue = max_queue
        self.streams: set[WatchStream] = set()

    # ------------------------------------------------------------ stream lifecycle

    def open(self) -> WatchStream:
        s = WatchStream(self)
        self.streams.add(s)
        return s

    def close(self, s: WatchStream) -> None:
        self.streams.discard(s)
        s.watchers.clear()

    def _msg(self, s: WatchStream, **fields: Any) -> None:
        s.put(rpc_pb2.WatchResponse(header=self._header(self.revision), **fields).SerializeToString())

    def create(self, s: WatchStream, req: rpc_pb2.WatchCreateRequest) -> None:
        wid = req.watch_id
        if wid and wid in s.watchers:
            self._msg(s, watch_id=wid, created=True, canceled=True,
                      cancel_reason="mvcc: duplicate watch ID provided on the WatchStream")
            return
        if not wid:
            wid = s.alloc_id()
        start = req.start_revision if req.start_revision > 0 else self.revision + 1
        w = Watcher(s, wid, req, start)
        s.watchers[wid] = w
        self._msg(s, watch_id=wid, created=True)
        if start <= self.revision or s.slow:
            # A slow stream gets no live events (`publish`): a watcher on it is synced only by
            # the catch-up that runs once the stream drained.
            w.synced = False
            self.catch_up(s)

    def cancel(self, s: WatchStream, wid: int) -> None:
        if s.watchers.pop(wid, None) is not None:
            self._msg(s, watch_id=wid, canceled=True)

    def request_progress(self, s: WatchStream) -> None:
        if all(w.synced for w in s.watchers.values()):
            self._msg(s, watch_id=-1)
        else:
            s.progress_pending = True

    # ------------------------------------------------------------ delivery

    def catch_up(self, s: WatchStream) -> None:
        """Bring the stream's unsynced watchers up to `revision` from history."""
        for w in list(s.watchers.values()):
            if w.synced:
                continue
            if w.next_rev <= self.revision:
                try:
                    events = self._history(w.next_rev, self.revision)
                except EtcdError:
                    s.watchers.pop(w.id, None)
                    self._msg(s, watch_id=w.id, canceled=True, compact_revision=self._compact_revision())
                    continue
                enc = _Encoded(events)
                self._deliver(w, enc, self._header_field(), range(len(events)))
            w.next_rev = max(w.next_rev, self.revision + 1)
            if s.slow:
                # Still behind (this delivery may have made it so): the watcher stays unsynced,
                # since `publish` skips slow streams, and resumes from next_rev once the queue
                # drained. Marking it synced here lost every event published meanwhile.
                return
            w.synced = True
        if s.progress_pending and all(w.synced for w in s.watchers.values()):
            s.progress_pending = False
            self._msg(s, watch_id=-1)

    def _header_field(self) -> bytes:
        return field_bytes(_HEADER_TAG, self._header(self.revision).SerializeToString())

    def _deliver(self, w: Watcher, enc: _Encoded, header: bytes, idxs: range) -> None:
        """Queue the wanted events (indexes into enc) for w, split at revision boundaries."""
        events = enc.events
        parts: list[bytes] = []
        size = 0
        last_rev = 0
        wid = field_bytes_varint(w.id)
        for i in idxs:
            ev = events[i]
            rev = ev.kv.mod_revision
            if rev < w.next_rev or not w.wants(ev):
                continue
            if size > MAX_RESPONSE_BYTES and rev != last_rev:
                w.stream.put(header + wid + b"".join(parts))
                parts, size = [], 0
            b = enc.get(i, w.prev_kv)
            parts.append(b)
            size += len(b)
            last_rev = rev
        if parts:
            w.stream.put(header + wid + b"".join(parts))
            w.last_sent = time.monotonic()

    def publish(self, events: list[mvcc.Event], revision: int) -> None:
        """Deliver one applied batch's events (all with revision > self.revision)."""
        if events and self.streams:
            enc = _Encoded(events)
            self.revision = revision
            header = self._header_field()
            idxs = range(len(events))
            for s in self.streams:
                if s.slow:
                    continue
                for w in s.watchers.values():
                    if w.synced:
                        self._deliver(w, enc, header, idxs)
                        w.next_rev = max(w.next_rev, revision + 1)
        else:
            self.revision = max(self.revision, revision)

    def reset(self, revision: int) -> None:
        """The state was replaced (snapshot install): every watcher catches up from history."""
        self.revision = revision
        for s in self.streams:
            for w in s.watchers.values():
                w.synced = False
            self.catch_up(s)

    def progress_tick(self, interval: float) -> None:
        """etcd's progress_notify: an empty response to idle, synced watchers that asked for it."""
        now = time.monotonic()
        for s in self.streams:
            for w in s.watchers.values():
                if w.progress and w.synced and now - w.last_sent >= interval:
                    w.last_sent = now
                    self._msg(s, watch_id=w.id)


def field_bytes_varint(watch_id: int) -> bytes:
    """WatchResponse.watch_id (field 2, varint); omitted for 0 like any proto3 default."""
    return b"\x10" + varint(watch_id) if watch_id else b""
