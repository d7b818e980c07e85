"""A watch that falls behind the watch cache's window, on a real 3-member Skiff store.

Found in a full-size scale run (30,000 pods): the bench's own pod informer was CPU-starved, its
watch was closed for being slow, and it resumed from a resourceVersion older than the cache's
ring, so the api-server served it from a store watch. That path closed the watch again for
being slow while replaying the backlog (larger than the bound), and the informer resumed from
the same resourceVersion, again and again, until compaction. After its relist the informer
missed changes for good while its watch stayed open without an error. Here, at small size:
a small ring, a small watcher bound, an informer whose handler blocks the loop, bursts of
writes, optionally a store leader change; the informer must end up holding exactly what a
paged List returns, and a store watch that ends under a client's watch must end it with an
error the client sees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from controlplane.apiserver.etcd import EtcdStore
from controlplane.apiserver.inprocess import InProcessApi
from controlplane.apiserver.registry import Options
from controlplane.store.cluster import StoreCluster
from skiff import errors
from skiff.informer import Informer
from skiffpb.api.v1 import types_pb2 as t
from tests.integration.apiserver.conftest import collect, make_registry
from tests.support.builders import namespace, pod
from tests.support.cluster import running_store

pytestmark = pytest.mark.integration

RING = 32  # events in each watch cache's ring
BOUND = 16  # events queued for one watcher beyond which it is closed as too slow
PODS = 240


@pytest.fixture(scope="module")
def cluster() -> Iterator[StoreCluster]:
    with running_store(3) as c:
        yield c


@pytest.fixture
async def store(cluster: StoreCluster) -> AsyncIterator[EtcdStore]:
    s = EtcdStore(cluster.endpoints)
    try:
        yield s
    finally:
        await s.close()


async def listed(api: InProcessApi, ns: str) -> dict[str, str]:
    """name -> resourceVersion of every pod in `ns`, from a paged List (what the store holds)."""
    out: dict[str, str] = {}
    token = ""
    while True:
        page = await api.list(t.Pod, namespace=ns, limit=50, continue_token=token)
        out.update((p.metadata.name, p.metadata.resource_version) for p in page.items)
        token = page.continue_token
        if not token:
            return out


def held(informer: Informer[t.Pod]) -> dict[str, str]:
    return {p.metadata.name: p.metadata.resource_version for p in informer.list()}


def relabelled(p: t.Pod) -> t.Pod:
    out = t.Pod()
    out.CopyFrom(p)
    out.metadata.labels["phase"] = "two"
    return out


@pytest.mark.parametrize("leader_change", [False, True], ids=["steady-store", "store-leader-change"])
async def test_slow_informer_behind_the_cache_window_ends_up_with_what_a_list_returns(
        cluster: StoreCluster, store: EtcdStore, leader_change: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="skiff.informer")
    ns = f"backlog-{'leader' if leader_change else 'steady'}"
    # The store may be used by the other case: the informer and the List see only this namespace.
    options = Options(watch_cache_size=RING, watcher_buffer=BOUND, bookmark_interval=0.2, compaction_interval=0.0,
                      namespace_sweep_interval=0.2)
    api = InProcessApi(store=store, options=options)  # type: ignore[arg-type]  # any Store serves the registry
    informer = Informer(api, t.Pod, namespace=ns, page_size=20)
    handled = 0

    def starved(*_: object) -> None:
        # A CPU-starved client: every event it handles holds the loop (the api-server's too).
        nonlocal handled
        handled += 1
        time.sleep(0.002)

    informer.add_handler(on_add=starved, on_update=starved)
    stopped = ""
    task: asyncio.Task[None] | None = None
    try:
        await api.start()
        await api.create(namespace(ns))
        task = asyncio.create_task(informer.run())
        await informer.wait_synced(10)
        created: list[t.Pod] = []
        for start in range(0, PODS, 60):  # bursts far larger than the bound and the ring
            created += await asyncio.gather(*(api.create(pod(f"p{i}", namespace=ns)) for i in range(start, start + 60)))
        if leader_change:
            stopped = cluster.leader()
            cluster.stop_member(stopped)
        for start in range(0, PODS, 60):
            await asyncio.gather(*(api.update(relabelled(p)) for p in created[start:start + 60]))

        want = await listed(api, ns)
        assert len(want) == PODS
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while held(informer) != want and loop.time() < deadline:
            await asyncio.sleep(0.2)
        have = held(informer)
        missing = sorted(set(want) - set(have))
        stale = sorted(n for n in want if n in have and have[n] != want[n])
        closed_slow = sum("too slow" in r.getMessage() for r in caplog.records)
        assert have == want, (f"the informer holds {len(have)} pods, the store {len(want)}: {len(missing)} never "
                              f"added ({missing[:5]}), {len(stale)} not updated ({stale[:5]}); its watch was "
                              f"closed as too slow {closed_slow} times; {handled} events handled")
        # The case this test is about did happen: the informer's watch was closed for being slow.
        assert closed_slow >= 1
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await api.close()
        if stopped:
            cluster.start_member(stopped)


async def test_a_store_watch_ended_under_a_client_watch_ends_it_with_an_error(store: EtcdStore) -> None:
    """A watch older than the cache window is served from a store watch of its own; when that
    store watch ends (here its channel is closed under it: the call is CANCELLED), the client's
    watch must end with an error it can act on, not stay open with nothing more to come."""
    registry = await make_registry(store, watch_cache_size=4)
    try:
        ns = "store-served"
        await registry.create(namespace(ns))
        _, rv, _ = await registry.list("pods", namespace=ns)
        for i in range(10):
            await registry.create(pod(f"p{i}", namespace=ns))
        stream = registry.watch("pods", namespace=ns, resource_version=rv)
        assert len(await collect(stream, 10)) == 10  # older than the 4-event ring: from the store
        await store.close()  # every call on the store's channels ends CANCELLED
        with pytest.raises(errors.UnavailableError):
            await collect(stream, 1, timeout=10)
    finally:
        await registry.stop()
