"""An informer too slow for its watch, over gRPC, against a real api-server process on a real
Skiff store: it lags, and it still ends up holding exactly what the store holds.

Found while looking into a full-size scale run whose controller manager (one process on a
2-core machine at load 10) acted for minutes on a stale view (update conflicts on every kind,
"no heartbeat" for nodes whose leases were current) while every api-server's watch cache was
current and no informer logged an error. Measured here: with the api-server's slow-watcher
bound at 50 events, the client fell about two thousand events behind and its watch was never
closed. The api-server hands each batch to gRPC as soon as the client's stream takes it, so its
watcher queue stays short and the bound does not see how far behind the client really is: the
backlog waits in the transport. That is lag, not loss: this test pins that nothing is lost
while it lasts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.store.cluster import StoreCluster
from deploy.loopback import Process, free_port, start_apiserver
from skiff.client import Client
from skiff.informer import Informer
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import namespace, pod
from tests.support.cluster import running_store

pytestmark = pytest.mark.integration

PODS = 300
BOUND = 50  # events queued for one watcher beyond which the api-server closes it as too slow
HANDLER_SECONDS = 0.01  # what each event costs the informer's process (its loop is busy)


@pytest.fixture(scope="module")
def cluster() -> Iterator[StoreCluster]:
    with running_store(1) as c:
        yield c


@pytest.fixture(scope="module")
def apiserver(cluster: StoreCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    workdir = tmp_path_factory.mktemp("slow-informer")
    flags = ["--watch-buffer", str(BOUND), "--metrics-bind-address", f"127.0.0.1:{free_port()}"]
    proc = start_apiserver(workdir, ",".join(cluster.endpoints), extra_args=flags)
    try:
        yield proc
    finally:
        proc.stop()
        print(f"----- apiserver.log\n{(Path(workdir) / 'apiserver.log').read_text()[-3000:]}")


def write_in_thread(endpoint: str, ns: str) -> threading.Thread:
    """Create PODS pods, then change each once, from a thread with its own loop and client (the
    informer's loop is kept busy by its handler, as a CPU-starved component's is)."""

    async def write() -> None:
        async with Client(endpoint, timeout=30) as c:
            limit = asyncio.Semaphore(16)

            async def create(i: int) -> None:
                async with limit:
                    await c.create(pod(f"p{i:03d}", namespace=ns))

            async def relabel(i: int) -> None:
                async with limit:
                    current = await c.get(t.Pod, f"p{i:03d}", ns)
                    current.metadata.labels["phase"] = "two"
                    await c.update(current)

            await asyncio.gather(*(create(i) for i in range(PODS)))
            await asyncio.gather(*(relabel(i) for i in range(PODS)))

    thread = threading.Thread(target=asyncio.run, args=(write(),), daemon=True)
    thread.start()
    return thread


async def test_a_slow_informer_lags_but_loses_nothing(apiserver: Process) -> None:
    ns = "slow"
    async with Client(apiserver.endpoint, timeout=30) as client:
        await client.create(namespace(ns))
        informer = Informer(client, t.Pod, namespace=ns)
        handled = {"events": 0}

        def busy(*_: t.Pod) -> None:
            handled["events"] += 1
            time.sleep(HANDLER_SECONDS)

        informer.add_handler(on_add=busy, on_update=busy)
        task = asyncio.create_task(informer.run())
        try:
            await informer.wait_synced(30)
            writer = write_in_thread(apiserver.endpoint, ns)
            most_behind = 0
            deadline = time.monotonic() + 120
            while True:
                await asyncio.sleep(0.2)
                page = await client.list(t.Pod, namespace=ns)
                stored = {p.metadata.name: p.metadata.resource_version for p in page.items}
                most_behind = max(most_behind, int(page.resource_version) - int(informer.resource_version))
                held = {p.metadata.name: p.metadata.resource_version for p in informer.list()}
                if not writer.is_alive() and held == stored and len(stored) == PODS:
                    break
                assert time.monotonic() < deadline, f"informer holds {len(held)} pods, the store {len(stored)}"
            print(f"most revisions behind: {most_behind} (the api-server's bound: {BOUND} events)")
            assert all(p.metadata.labels.get("phase") == "two" for p in informer.list())
            assert handled["events"] >= 2 * PODS
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
