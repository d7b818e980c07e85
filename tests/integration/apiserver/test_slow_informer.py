"""An informer too slow for its watch, over gRPC, against a real api-server process on a real
Skiff store: its watch is closed as too slow within the api-server's lag bound, it resumes from
its last resourceVersion, and it ends up holding exactly what the store holds, each change
handed to its handlers once.

Found while looking into a full-size scale run whose controller manager (one process on a
2-core machine at load 10) acted for minutes on a stale view while no informer logged an error.
The api-server's bound counted the events queued in it, and they never queued: each write to
the stream completed as soon as the client's transport took it, and the client's HTTP/2 receive
window, grown by BDP probing to about 4 MiB, took thousands of events in ahead of a busy client
(this test measured an informer 392 revisions behind a bound of 50 events, never closed). Now the
client keeps its window at 64 KiB, so a slow reader holds the api-server's writes back, and the
api-server closes a watch whose oldest event has waited longer than `--watch-max-lag`.
"""

from __future__ import annotations

import asyncio
import logging
import re
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
MAX_LAG = 1.0  # seconds an event may wait for the client to take it (the api-server's --watch-max-lag)
HANDLER_SECONDS = 0.05  # what each event costs the informer's process (its loop is busy)
WRITE_PACE = HANDLER_SECONDS / 2  # seconds between two writes (plus the write itself)


@pytest.fixture(scope="module")
def cluster() -> Iterator[StoreCluster]:
    with running_store(1) as c:
        yield c


@pytest.fixture(scope="module")
def apiserver(cluster: StoreCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    workdir = tmp_path_factory.mktemp("slow-informer")
    # The event and byte bounds stay at their defaults: only the lag bound can close this watch.
    flags = ["--watch-max-lag", str(MAX_LAG), "--metrics-bind-address", f"127.0.0.1:{free_port()}"]
    proc = start_apiserver(workdir, ",".join(cluster.endpoints), extra_args=flags)
    try:
        yield proc
    finally:
        proc.stop()
        print(f"----- apiserver.log\n{(Path(workdir) / 'apiserver.log').read_text()[-3000:]}")


def write_in_thread(endpoint: str, ns: str) -> threading.Thread:
    """Create PODS pods, then change each once, from a thread with its own loop and client (the
    informer's loop is kept busy by its handler, as a CPU-starved component's is). One write at a
    time, paced, so that writes keep coming for several seconds at about twice the rate the
    informer handles them: the api-server checks a watcher's lag when the next event comes for it
    (as Kubernetes' cacher does), and a burst over before the bound ran out would not show it."""

    async def write() -> None:
        async with Client(endpoint, timeout=30) as c:
            for i in range(PODS):
                await c.create(pod(f"p{i:03d}", namespace=ns))
                await asyncio.sleep(WRITE_PACE)
            for i in range(PODS):
                current = await c.get(t.Pod, f"p{i:03d}", ns)
                current.metadata.labels["phase"] = "two"
                await c.update(current)
                await asyncio.sleep(WRITE_PACE)

    thread = threading.Thread(target=asyncio.run, args=(write(),), daemon=True)
    thread.start()
    return thread


async def test_a_slow_informer_is_closed_within_the_lag_bound_and_loses_nothing(
        apiserver: Process, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="skiff.informer")
    ns = "slow"
    async with Client(apiserver.endpoint, timeout=30) as client:
        await client.create(namespace(ns))
        informer = Informer(client, t.Pod, namespace=ns)
        handled: list[tuple[str, str]] = []  # (name, resourceVersion) of each change handed over

        def busy(*objs: t.Pod) -> None:
            handled.append((objs[-1].metadata.name, objs[-1].metadata.resource_version))
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
            closes = [r.getMessage() for r in caplog.records if "too slow" in r.getMessage()]
            waited = [float(m) for c in closes for m in re.findall(r"queued ([0-9.]+)s ago", c)]
            print(f"most revisions behind: {most_behind}; watch closed as too slow {len(closes)} times, "
                  f"the oldest event having waited {waited} s (bound {MAX_LAG} s)")
            assert all(p.metadata.labels.get("phase") == "two" for p in informer.list())
            # Each pod's creation and its one change reach the handlers once each, in order.
            assert len(handled) == len(set(handled)) == 2 * PODS
            versions: dict[str, list[int]] = {}
            for name, rv in handled:
                versions.setdefault(name, []).append(int(rv))
            assert all(len(v) == 2 and v[0] < v[1] for v in versions.values()), versions
            # At 0.02 s per event (178 revisions behind) the bound never fired: that backlog still fit
            # in what the client holds beyond the api-server's view (its 64 KiB window and the
            # WatchBatch message it is handling). At 0.05 s the backlog outgrows it.
            assert closes, "the lagging watch was never closed"
            assert all(MAX_LAG <= w < MAX_LAG + 5 for w in waited), closes
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
