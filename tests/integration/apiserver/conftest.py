"""Fixtures: a Registry over each storage backend (in-memory, and a real etcd process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from controlplane.apiserver.allocator import Allocator
from controlplane.apiserver.etcd import EtcdStore
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import Options, Registry
from controlplane.apiserver.storage import Delete, Store
from deploy.loopback import EtcdCluster, start_etcd
from skiffpb.api.v1 import apiserver_pb2 as api

BACKENDS = ["memory", "etcd"]


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = start_etcd(Path(tmp_path_factory.mktemp("etcd")))
    try:
        yield cluster
    finally:
        cluster.stop()


async def wipe(store: Store) -> None:
    page = await store.range("/")
    for kv in page.kvs:
        await store.txn([], [Delete(kv.key)])


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(progress_interval=0.5)
        return
    cluster: EtcdCluster = request.getfixturevalue("etcd")
    etcd_store = EtcdStore(cluster.endpoints)
    await wipe(etcd_store)
    try:
        yield etcd_store
    finally:
        await etcd_store.close()


def options(**overrides: object) -> Options:
    base = dict(bookmark_interval=0.2, compaction_interval=0.0, namespace_sweep_interval=0.2)
    base.update(overrides)
    return Options(**base)  # type: ignore[arg-type]


async def make_registry(store: Store, *, cidr: str = "10.96.0.0/24", **overrides: object) -> Registry:
    registry = Registry(store, allocator=Allocator(cidr, "30000-30099"), options=options(**overrides))
    await registry.start()
    return registry


@pytest.fixture
async def registry(store: Store) -> AsyncIterator[Registry]:
    reg = await make_registry(store)
    try:
        yield reg
    finally:
        await reg.stop()


async def collect(stream: AsyncIterator[bytes], count: int, *, timeout: float = 10.0) -> list[api.WatchEvent]:
    """The first `count` events of a registry watch stream, decoded."""
    out: list[api.WatchEvent] = []

    async def run() -> None:
        async for data in stream:
            out.append(api.WatchEvent.FromString(data))
            if len(out) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return out


def summary(events: list[api.WatchEvent]) -> list[tuple[str, str]]:
    """(type, name) of each event, for compact assertions."""
    from skiff import kinds

    return [(e.type, kinds.unwrap(e.object).metadata.name) for e in events]  # type: ignore[attr-defined]
