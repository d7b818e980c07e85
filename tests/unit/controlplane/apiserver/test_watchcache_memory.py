"""What the watch cache's event ring keeps: bounded by events and by bytes, nothing decoded or
encoded once offered or replayed, and watchers that see the same events either way."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controlplane.apiserver.filters import make_filter
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.storage import Event
from controlplane.apiserver.watchcache import TooOldForCache, WatchCache, Watcher
from skiff import kinds
from skiffpb.api.v1 import apiserver_pb2 as api
from tests.support.builders import pod

POD = kinds.by_kind("Pod")
assert POD is not None


def _value(name: str, pad: int) -> bytes:
    """A pod's stored value, made about `pad` bytes larger by an annotation."""
    p = pod(name)
    p.metadata.annotations["pad"] = "x" * pad
    return p.SerializeToString()


def _key(name: str) -> str:
    return f"/registry/pods/default/{name}"


@dataclass(frozen=True)
class RingCase:
    id: str
    capacity: int
    capacity_bytes: int
    pads: tuple[int, ...]  # one PUT of its own pod per entry, at revisions 2, 3, ...
    kept: tuple[int, ...]  # the revisions the ring holds afterwards


def _size(pad: int) -> int:
    return len(_value("p", pad))


RING_CASES = [
    RingCase("under-both-bounds", 8, 1 << 20, (10, 10, 10), (2, 3, 4)),
    RingCase("count-bound-drops-the-oldest", 2, 1 << 20, (10, 10, 10), (3, 4)),
    RingCase("byte-bound-drops-the-oldest", 8, 2 * _size(1000) + 10, (1000, 1000, 1000), (3, 4)),
    RingCase("a-big-event-pushes-out-several-small", 8, _size(3000) + _size(10) + 10,
             (10, 10, 10, 3000), (4, 5)),
    RingCase("an-event-over-the-byte-bound-stays-alone", 8, 100, (10, 5000), (3,)),
]


@pytest.mark.parametrize("case", RING_CASES, ids=[c.id for c in RING_CASES])
def test_the_ring_is_bounded_by_events_and_by_bytes(case: RingCase) -> None:
    cache = WatchCache(MemoryStore(), POD, capacity=case.capacity, capacity_bytes=case.capacity_bytes)
    for i, pad in enumerate(case.pads):
        cache._apply(Event("PUT", _key(f"p{i}"), _value(f"p{i}", pad), None, i + 2))
    assert tuple(ev.revision for ev in cache.events) == case.kept
    assert cache.events_bytes == sum(ev.held_bytes for ev in cache.events)
    assert cache.events_bytes <= case.capacity_bytes or len(cache.events) == 1
    # The ring holds every event after window_start: a watch from there is served, an older one is not.
    dropped = len(case.kept) < len(case.pads)
    assert cache.window_start == (case.kept[0] - 1 if dropped else 0)
    cache.revision = case.kept[-1]
    w, _ = cache.register(make_filter(POD), start_revision=cache.window_start, allow_bookmarks=False)
    assert [api.WatchEvent.FromString(data).object.pod.metadata.resource_version for data in w.queue] == \
        [str(r) for r in case.kept]
    if dropped:
        with pytest.raises(TooOldForCache):
            cache.register(make_filter(POD), start_revision=cache.window_start - 1, allow_bookmarks=False)


def _held(cache: WatchCache) -> list[tuple[int, bool, bool, bool]]:
    """Per ring event: (revision, holds a decoded object, a decoded prev, an encoding)."""
    return [(ev.revision, ev._obj is not None, ev._prev is not None, ev._encoded is not None) for ev in cache.events]


@dataclass(frozen=True)
class ReplayCase:
    id: str
    field_selector: str
    start: int  # the resourceVersion the watch resumes from
    after: int  # the revision its replay starts after (one back when it resumes inside a shared one)
    expected: tuple[tuple[str, str, str], ...]  # (type, name, resourceVersion) it is replayed


# Revision 2: a and b created in one transaction; 3: a changed; 4: b leaves phase Pending; 5: a deleted.
REPLAY_CASES = [
    ReplayCase("everything-from-the-ring-start", "", 1, 1,
               (("ADDED", "a", "2"), ("ADDED", "b", "2"), ("MODIFIED", "a", "3"), ("MODIFIED", "b", "4"),
                ("DELETED", "a", "5"))),
    ReplayCase("a-shared-revision-is-replayed-whole", "", 2, 1,
               (("ADDED", "a", "2"), ("ADDED", "b", "2"), ("MODIFIED", "a", "3"), ("MODIFIED", "b", "4"),
                ("DELETED", "a", "5"))),
    ReplayCase("leaving-the-filter-is-deleted", "status.phase=Pending", 3, 3,
               (("DELETED", "b", "4"), ("DELETED", "a", "5"))),
    ReplayCase("one-name", "metadata.name=b", 1, 1, (("ADDED", "b", "2"), ("MODIFIED", "b", "4"))),
]


def _fill(cache: WatchCache) -> None:
    a1, a2 = pod("a"), pod("a")
    a2.metadata.labels["v"] = "2"
    b1, b2 = pod("b"), pod("b")
    for p in (a1, a2, b1):
        p.status.phase = "Pending"
    b2.status.phase = "Running"
    cache._apply(Event("PUT", _key("a"), a1.SerializeToString(), None, 2))
    cache._apply(Event("PUT", _key("b"), b1.SerializeToString(), None, 2))
    cache._apply(Event("PUT", _key("a"), a2.SerializeToString(), None, 3))
    cache._apply(Event("PUT", _key("b"), b2.SerializeToString(), None, 4))
    cache._apply(Event("DELETE", _key("a"), b"", None, 5))
    cache.revision = 5


def _seen(w: Watcher) -> tuple[tuple[str, str, str], ...]:
    out = []
    for data in w.queue:
        ev = api.WatchEvent.FromString(data)
        out.append((ev.type, ev.object.pod.metadata.name, ev.object.pod.metadata.resource_version))
    return tuple(out)


@pytest.mark.parametrize("case", REPLAY_CASES, ids=[c.id for c in REPLAY_CASES])
def test_a_replay_leaves_the_ring_holding_only_stored_bytes(case: ReplayCase) -> None:
    """A watch resumed inside the ring decodes ring events to filter them and encodes what it
    gets; the ring forgets both afterwards (it kept them until it dropped the event: a resumed
    Endpoints watch held ~1 GB so), and what the watcher got is what a live watcher got."""
    cache = WatchCache(MemoryStore(), POD)
    filt = make_filter(POD, field_selector=case.field_selector)
    live, _ = cache.register(filt, start_revision=None, allow_bookmarks=False)
    _fill(cache)
    assert all(held == (held[0], False, False, False) for held in _held(cache)), "released once offered"
    resumed, _ = cache.register(filt, start_revision=case.start, allow_bookmarks=False)
    assert _seen(resumed) == case.expected
    assert all(held == (held[0], False, False, False) for held in _held(cache)), "released after the replay"
    # The live watcher got the same events (from the encodings made when they were offered).
    assert tuple(e for e in _seen(live) if int(e[2]) > case.after) == case.expected
