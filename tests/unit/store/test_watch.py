"""The watch hub: catch-up from history, live fan-out, filters, compaction, slow streams, progress."""

from __future__ import annotations

import pytest

from controlplane.store import mvcc
from controlplane.store.watch import WatchHub, WatchStream
from skiffpb.etcd import rpc_pb2


class Harness:
    def __init__(self, *, max_queue: int = 1024) -> None:
        self.st = mvcc.KVState()
        self.hub = WatchHub(history=lambda a, b: self.st.events_since(a, until=b),
                            compact_revision=lambda: self.st.compact_revision,
                            header=lambda rev: rpc_pb2.ResponseHeader(revision=rev), revision=1,
                            max_queue=max_queue)

    def put(self, key: str, value: str = "v", *, publish: bool = True) -> None:
        self.apply(mvcc.cmd_put(mvcc.PutReq(key.encode(), value.encode())), publish=publish)

    def delete(self, key: str) -> None:
        self.apply(mvcc.cmd_delete(mvcc.DeleteReq(key.encode())))

    def apply(self, cmd: tuple, *, publish: bool = True) -> mvcc.Applied:
        a = self.st.apply([cmd])
        if publish:
            self.hub.publish(a.events, a.revision)
        return a

    def watch(self, s: WatchStream, key: str, *, end: str = "", start: int = 0, **kw: object) -> None:
        self.hub.create(s, rpc_pb2.WatchCreateRequest(key=key.encode(), range_end=end.encode(),
                                                      start_revision=start, **kw))


def drain(s: WatchStream) -> list[rpc_pb2.WatchResponse]:
    out = []
    while not s.queue.empty():
        out.append(rpc_pb2.WatchResponse.FromString(s.queue.get_nowait()))
    return out


def events(resps: list[rpc_pb2.WatchResponse]) -> list[tuple[int, str, int]]:
    return [(r.watch_id, ("PUT" if e.type == 0 else "DEL") + " " + e.kv.key.decode(), e.kv.mod_revision)
            for r in resps for e in r.events]


def test_catch_up_then_live_without_gaps_or_duplicates() -> None:
    h = Harness()
    h.put("a")  # 2
    h.put("b")  # 3
    h.put("a", publish=False)  # 4: applied but not yet published when the watch is created
    s = h.hub.open()
    h.watch(s, "a", end="c", start=3)
    created, *rest = drain(s)
    assert created.created and created.watch_id == 0
    assert events(rest) == [(0, "PUT b", 3)]
    h.hub.publish(h.st.events_since(4), 4)
    h.delete("b")  # 5
    assert events(drain(s)) == [(0, "PUT a", 4), (0, "DEL b", 5)]


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        ({}, ["PUT k1", "DEL k1"]),
        ({"filters": [rpc_pb2.WatchCreateRequest.NOPUT]}, ["DEL k1"]),
        ({"filters": [rpc_pb2.WatchCreateRequest.NODELETE]}, ["PUT k1"]),
    ],
    ids=["all", "noput", "nodelete"],
)
def test_filters(kw: dict, want: list[str]) -> None:
    h = Harness()
    s = h.hub.open()
    h.watch(s, "k", end="l", **kw)
    drain(s)
    h.put("k1")
    h.put("other")
    h.delete("k1")
    assert [e[1] for e in events(drain(s))] == want


def test_prev_kv_only_when_asked() -> None:
    h = Harness()
    s1, s2 = h.hub.open(), h.hub.open()
    h.watch(s1, "k", prev_kv=True)
    h.watch(s2, "k")
    h.put("k", "1")
    h.put("k", "2")
    drain(s1), drain(s2)
    h.put("k", "3")
    (r1,), (r2,) = drain(s1), drain(s2)
    assert r1.events[0].prev_kv.value == b"2" and not r2.events[0].HasField("prev_kv")


def test_compacted_start_revision_cancels_with_compact_revision() -> None:
    h = Harness()
    for i in range(5):
        h.put(f"k{i}")
    h.apply(mvcc.cmd_compact(4))
    s = h.hub.open()
    h.watch(s, "k", end="l", start=2)
    created, canceled = drain(s)
    assert created.created
    assert canceled.canceled and canceled.compact_revision == 4 and not canceled.events
    assert not s.watchers


def test_slow_stream_goes_unsynced_and_catches_up_in_order() -> None:
    h = Harness(max_queue=3)
    s = h.hub.open()
    h.watch(s, "k", end="l")
    drain(s)
    for i in range(10):
        h.put(f"k{i}")  # queue overflows after 3: the watcher stops getting live events
    assert s.slow
    got = drain(s)
    s.slow = False  # what the sender (WatchStream.responses) does once the queue drained
    h.hub.catch_up(s)
    got += drain(s)
    h.put("k10")
    got += drain(s)
    assert [e[2] for e in events(got)] == list(range(2, 13))


def test_cancel_and_progress() -> None:
    h = Harness()
    s = h.hub.open()
    h.watch(s, "a")
    h.watch(s, "b", watch_id=7)
    h.watch(s, "c", watch_id=7)
    assert drain(s)[-1].canceled  # the second watch_id=7
    h.put("x")
    h.hub.request_progress(s)
    (progress,) = drain(s)
    assert progress.watch_id == -1 and progress.header.revision == 2 and not progress.events
    h.hub.cancel(s, 7)
    (canceled,) = drain(s)
    assert canceled.canceled and canceled.watch_id == 7 and 7 not in s.watchers


def test_duplicate_watch_id_is_refused() -> None:
    h = Harness()
    s = h.hub.open()
    h.watch(s, "a", watch_id=3)
    h.watch(s, "b", watch_id=3)
    created, dup = drain(s)
    assert created.created and dup.canceled and "duplicate" in dup.cancel_reason


def test_progress_notify_only_for_idle_watchers_that_asked() -> None:
    h = Harness()
    s = h.hub.open()
    h.watch(s, "a", progress_notify=True)
    h.watch(s, "b")
    drain(s)
    h.hub.progress_tick(0.0)
    (note,) = drain(s)
    assert note.watch_id == 0 and not note.events and note.header.revision == 1
    h.hub.progress_tick(3600.0)  # not idle long enough
    assert drain(s) == []


def _revisions(got: list[rpc_pb2.WatchResponse], *, of: str) -> list[int]:
    return [rev for _, what, rev in events(got) if what.split()[1].startswith(of)]


@pytest.mark.parametrize("case", ["catch-up-makes-it-slow", "created-on-a-slow-stream"])
def test_watcher_on_a_slow_stream_misses_nothing_published_meanwhile(case: str) -> None:
    """A watcher must not count as synced while its stream is slow: `publish` skips slow streams,
    and the catch-up after the drain skips synced watchers, so the events published in between
    reached nobody (found in a 30,000-pod scale run: a store watch silently lost events)."""
    h = Harness(max_queue=1)
    h.put("a0")  # revision 2
    for i in range(4):
        h.put(f"k{i}")  # revisions 3..6
    s = h.hub.open()
    if case == "catch-up-makes-it-slow":
        h.watch(s, "k", end="l", start=2)  # created + the history: over the bound of 1
        want = list(range(3, 10))
    else:
        h.watch(s, "a", end="b", start=2)  # another watcher's catch-up made the stream slow
        assert s.slow
        h.watch(s, "k", end="l")  # from now (revision 7)
        want = list(range(7, 10))
    assert s.slow
    got = drain(s)
    h.put("k5")  # 7: published while the stream is slow
    h.put("k6")  # 8
    got += drain(s)
    s.slow = False  # what WatchStream.responses does once the queue drained
    h.hub.catch_up(s)
    got += drain(s)
    h.put("k7")  # 9: live again
    got += drain(s)
    assert _revisions(got, of="k") == want
