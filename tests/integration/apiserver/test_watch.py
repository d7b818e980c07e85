"""Watch through the registry's watch cache, against each storage backend."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import Put, Store
from skiff import errors, kinds
from skiffpb.api.v1 import types_pb2 as t
from tests.integration.apiserver.conftest import collect, make_registry, summary
from tests.support.builders import pod

pytestmark = pytest.mark.integration


async def watch_from_now(registry: Registry, **kw: object):  # type: ignore[no-untyped-def]
    """A watch from the current resourceVersion (a generator registers only when first iterated)."""
    _, rv, _ = await registry.list("pods")
    return registry.watch("pods", resource_version=rv, **kw)  # type: ignore[arg-type]


def relabel(p: t.Pod, **labels: str) -> t.Pod:
    out = t.Pod()
    out.CopyFrom(p)
    out.metadata.labels.clear()
    out.metadata.labels.update(labels)
    return out


async def test_list_then_watch_sees_every_later_change_once(registry: Registry) -> None:
    await registry.create(pod("before"))
    _, rv, _ = await registry.list("pods")
    stream = registry.watch("pods", resource_version=rv)
    a = await registry.create(pod("a"))
    await registry.update(relabel(a, x="1"))  # type: ignore[arg-type]
    await registry.delete("pods", "default", "a")
    events = await collect(stream, 3)
    assert summary(events) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    rvs = [int(kinds.unwrap(e.object).metadata.resource_version) for e in events]  # type: ignore[attr-defined]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


async def test_initial_events_then_bookmark(registry: Registry) -> None:
    for name in ("x", "y"):
        await registry.create(pod(name))
    stream = registry.watch("pods", send_initial_events=True, allow_bookmarks=True)
    first = await collect(stream, 3)
    assert summary(first)[:2] == [("ADDED", "x"), ("ADDED", "y")]
    assert first[2].type == "BOOKMARK" and first[2].object.pod.metadata.resource_version
    await registry.create(pod("z"))
    assert summary(await collect(stream, 1)) == [("ADDED", "z")]


async def test_selector_transitions(registry: Registry) -> None:
    """An object entering a watcher's selector is ADDED, leaving it is DELETED (Kubernetes' rule)."""
    stream = await watch_from_now(registry, label_selector="app=web")
    p = await registry.create(pod("p", app="db"))
    p = await registry.update(relabel(p, app="web"))  # type: ignore[arg-type]
    p = await registry.update(relabel(p, app="web", v="2"))  # type: ignore[arg-type]
    await registry.update(relabel(p, app="db"))  # type: ignore[arg-type]
    events = await collect(stream, 3)
    assert summary(events) == [("ADDED", "p"), ("MODIFIED", "p"), ("DELETED", "p")]
    gone = events[2].object.pod
    assert gone.metadata.labels["app"] == "web"  # the last state it matched, at the new version
    assert int(gone.metadata.resource_version) > int(events[1].object.pod.metadata.resource_version)


async def test_node_field_selector(registry: Registry) -> None:
    """A node agent's watch (spec.nodeName=n1) sees its pods appear when bound, and only those."""
    stream = await watch_from_now(registry, field_selector="spec.nodeName=n1")
    for name in ("mine", "theirs"):
        await registry.create(pod(name))
    await registry.bind(t.Binding(metadata=t.ObjectMeta(name="theirs", namespace="default"),
                                  target=t.ObjectReference(name="n2")))
    await registry.bind(t.Binding(metadata=t.ObjectMeta(name="mine", namespace="default"),
                                  target=t.ObjectReference(name="n1")))
    await registry.delete("pods", "default", "mine", grace_period=0)
    assert summary(await collect(stream, 2)) == [("ADDED", "mine"), ("DELETED", "mine")]


async def test_namespace_and_bookmarks(registry: Registry) -> None:
    stream = await watch_from_now(registry, namespace="kube-system", allow_bookmarks=True)
    await registry.create(pod("elsewhere"))
    await registry.create(pod("here", namespace="kube-system"))
    events = await collect(stream, 2, timeout=10)
    assert summary(events)[0] == ("ADDED", "here")
    assert events[1].type == "BOOKMARK"  # bookmark_interval is 0.2 s in these tests


async def test_timeout_ends_the_stream(registry: Registry) -> None:
    stream = registry.watch("pods", timeout_seconds=1)
    got = await asyncio.wait_for(collect(stream, 1000), 10)
    assert got == []


async def test_bad_watch_requests(registry: Registry) -> None:
    with pytest.raises(errors.InvalidError, match="invalid resourceVersion"):
        await collect(registry.watch("pods", resource_version="abc"), 1)
    with pytest.raises(errors.InvalidError, match="not supported"):
        await collect(registry.watch("pods", field_selector="status.bogus=x"), 1)


async def test_old_revision_served_from_store_then_too_old_after_compaction(store: Store) -> None:
    registry = await make_registry(store, watch_cache_size=4)
    try:
        _, rv, _ = await registry.list("pods")
        for i in range(10):
            await registry.create(pod(f"p{i}"))
        # Older than the 4-event cache window: served from a store watch, nothing missed.
        events = await collect(registry.watch("pods", resource_version=rv), 10)
        assert [n for _, n in summary(events)] == [f"p{i}" for i in range(10)]
        # Once compacted, the same request is OUT_OF_RANGE "too old resource version".
        await store.compact(await store.revision())
        with pytest.raises(errors.GoneError, match=f"too old resource version: {rv} "):
            await collect(registry.watch("pods", resource_version=rv), 1)
    finally:
        await registry.stop()


async def test_store_served_backlog_larger_than_the_bound_is_delivered_whole(store: Store) -> None:
    """A watch older than the ring is paced by its client, not closed as slow: closing it made a
    client whose backlog exceeded the bound resume from the same resourceVersion and get the
    same backlog, over and over (a livelock until compaction, seen at 30,000 pods)."""
    registry = await make_registry(store, watch_cache_size=4, watcher_buffer=5)
    try:
        _, rv, _ = await registry.list("pods")
        for i in range(30):
            await registry.create(pod(f"p{i}"))
        stream = registry.watch("pods", resource_version=rv)
        events = await collect(stream, 30)
        assert [n for _, n in summary(events)] == [f"p{i}" for i in range(30)]
        await registry.create(pod("live"))  # and it goes on live
        assert summary(await collect(stream, 1)) == [("ADDED", "live")]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await registry.stop()


async def test_slow_watcher_is_closed_and_never_blocks_others(store: Store) -> None:
    registry = await make_registry(store, watcher_buffer=5)
    try:
        slow = registry.watch("pods")
        fast = registry.watch("pods")
        # Start both streams (registration happens on the first iteration).
        slow_first = asyncio.ensure_future(slow.__anext__())
        fast_events = asyncio.ensure_future(collect(fast, 20))
        await asyncio.sleep(0.2)
        for i in range(20):
            await registry.create(pod(f"p{i}"))
            await asyncio.sleep(0.01)  # a reader that keeps up gets to run between writes
        assert len(await fast_events) == 20  # the fast one got everything
        await slow_first  # one event taken; then the slow one falls 5 behind and is closed
        with pytest.raises(errors.TooManyRequestsError, match="too slow"):
            await collect(slow, 100)
        assert registry.caches["pods"].watcher_count == 1  # only the fast one is left
        await fast.aclose()
        assert registry.caches["pods"].watcher_count == 0
    finally:
        await registry.stop()


async def test_cache_serves_consistent_lists(registry: Registry) -> None:
    created = await registry.create(pod("fresh"))
    items, rv, _ = await registry.list("pods")
    assert [p.metadata.name for p in items] == ["fresh"]  # type: ignore[attr-defined]
    assert int(rv) >= int(created.metadata.resource_version)  # type: ignore[attr-defined]


class _LaggingWatch:
    """A store watch that delivers every batch late (a cache falling behind the store)."""

    def __init__(self, inner: object, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        async for batch in self.inner:  # type: ignore[attr-defined]
            await asyncio.sleep(self.delay)
            yield batch

    async def close(self) -> None:
        await self.inner.close()  # type: ignore[attr-defined]


class _LaggingStore(MemoryStore):
    def watch(self, prefix: str, *, start_revision: int):  # type: ignore[no-untyped-def,override]
        return _LaggingWatch(super().watch(prefix, start_revision=start_revision), 0.5)


@pytest.mark.parametrize("wait", [2.0, 0.05], ids=["cache-catches-up", "store-fallback"])
async def test_consistent_list_from_a_lagging_cache(wait: float) -> None:
    """A List right after a write sees it, whether the cache catches up in time or not."""
    store = _LaggingStore()
    registry = await make_registry(store, fresh_read_timeout=wait)
    try:
        created = await registry.create(pod("a"))
        items, rv, _ = await registry.list("pods")
        assert [p.metadata.name for p in items] == ["a"]  # type: ignore[attr-defined]
        assert int(rv) >= int(created.metadata.resource_version)  # type: ignore[attr-defined]
        await registry.delete("pods", "default", "a")
        items, _, _ = await registry.list("pods")
        assert items == []
        # A write elsewhere does not make the (unchanged) pods look stale.
        await store.txn([], [Put("/registry/leases/default/x", b"")])
        loop = asyncio.get_running_loop()
        begin = loop.time()
        _, rv, _ = await registry.list("pods")
        assert loop.time() - begin < 0.3 and int(rv) == store.current_revision
    finally:
        await registry.stop()
