"""An Event's create reads its namespace's ResourceQuotas from the watch cache (no consistent
list, a store round trip of its own); every other kind still reads them consistently. A quota
the cache holds still refuses an Event over it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controlplane.apiserver.allocator import Allocator
from controlplane.apiserver.inprocess import DEFAULT_OPTIONS
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import PrefixStatus
from skiff import errors
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import pod


class CountingStore(MemoryStore):
    """The in-memory store, counting the consistent-list proofs (prefix_status) asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.prefix_reads: list[str] = []

    async def prefix_status(self, prefix: str, *, modified_after: int) -> PrefixStatus:
        self.prefix_reads.append(prefix)
        return await super().prefix_status(prefix, modified_after=modified_after)


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    r = Registry(CountingStore(), allocator=Allocator(), options=DEFAULT_OPTIONS)
    await r.start(background=False)
    try:
        yield r
    finally:
        await r.stop()


def event(name: str) -> t.Event:
    ev = t.Event(reason="Scheduled", message=f"Successfully assigned default/{name} to n0", type="Normal")
    ev.metadata.name, ev.metadata.namespace = f"{name}.1", "default"
    ev.involved_object.kind, ev.involved_object.name, ev.involved_object.namespace = "Pod", name, "default"
    return ev


def quota_reads(store: CountingStore) -> int:
    return sum(1 for p in store.prefix_reads if p.startswith("/registry/resourcequotas/"))


@pytest.mark.parametrize(("obj", "consistent_quota_reads"), [
    (event("p0"), 0),
    (pod("p0"), 1),
], ids=["event-reads-the-cache", "pod-reads-consistently"])
async def test_quota_read_per_create(registry: Registry, obj: t.Event | t.Pod, consistent_quota_reads: int) -> None:
    store = registry.store
    assert isinstance(store, CountingStore)
    store.prefix_reads.clear()
    await registry.create(obj)
    assert quota_reads(store) == consistent_quota_reads


async def test_a_cached_quota_still_refuses_an_event_over_it(registry: Registry) -> None:
    q = t.ResourceQuota(metadata=t.ObjectMeta(name="events", namespace="default"),
                        spec=t.ResourceQuotaSpec(hard={"count/events": "1"}))
    await registry.create(q)
    cache = registry.caches["resourcequotas"]
    for _ in range(100):  # the cache applies the quota's write from its watch
        if cache.count("/registry/resourcequotas/default/"):
            break
        await asyncio.sleep(0.01)
    await registry.create(event("p0"))
    with pytest.raises(errors.ForbiddenError, match="exceeded quota: events"):
        await registry.create(event("p1"))
