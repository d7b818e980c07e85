"""The api-server's etcd client (EtcdStore) against a real 3-member Skiff store whose member in use dies.

The api-server opens one store watch per kind (its watch caches) on one EtcdStore. When the
member they are on is killed, they all fail at once; they must all move to a live member and
deliver every event written after the kill, with no gap and no duplicate. Moving once per
failure (the old rule) turned 9 failures over 3 members into a full turn back to the dead
member, round after round while the failures kept arriving together.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import grpc.aio
import pytest

from controlplane.apiserver.etcd import EtcdStore
from controlplane.apiserver.storage import Put
from controlplane.store.cluster import StoreCluster
from tests.support.cluster import running_store

pytestmark = pytest.mark.integration

# The api-server opens one watch per kind (more than 9 now); any multiple of the 3 members makes
# the old rule come full turn back to the dead member, which is the case this test pins down.
WATCHES = 9


@pytest.fixture(scope="module")
def cluster() -> Iterator[StoreCluster]:
    with running_store(3) as c:
        yield c


async def _until(check: object, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_watches_failing_together_move_once_and_lose_nothing(cluster: StoreCluster) -> None:
    assert WATCHES % len(cluster.members) == 0, "the case that went wrong: a full turn of failures"
    leader = cluster.leader()
    others = [n for n in cluster.members if n != leader]
    store = EtcdStore([cluster.client(leader)] + [cluster.client(n) for n in others])
    writer = EtcdStore([cluster.client(n) for n in others])
    got: dict[int, list[tuple[str, int]]] = {i: [] for i in range(WATCHES)}

    async def follow(i: int) -> None:
        async for batch in store.watch(f"/failover/{i}/", start_revision=start):
            got[i].extend((ev.key, ev.revision) for ev in batch.events)

    tasks: list[asyncio.Task[None]] = []
    try:
        start = await store.revision() + 1
        tasks += [asyncio.create_task(follow(i)) for i in range(WATCHES)]
        for i in range(WATCHES):
            await store.txn([], [Put(f"/failover/{i}/before", b"1")])
        assert await _until(lambda: all(len(v) == 1 for v in got.values()), 10), got
        assert store.moves == 0

        cluster.kill(leader)
        revisions = []
        for i in range(WATCHES):
            revisions.append((await writer.txn([], [Put(f"/failover/{i}/after", b"2")])).revision)
        delivered = await _until(lambda: all(len(v) >= 2 for v in got.values()), 20)
        await asyncio.sleep(0.3)  # a duplicate would arrive now

        assert delivered, f"watches missing events after the member died: {got}"
        for i in range(WATCHES):
            assert [k for k, _ in got[i]] == [f"/failover/{i}/before", f"/failover/{i}/after"]
            assert got[i][1][1] == revisions[i]
        # Nine watches failed on the dead member together: one move, to the next member, and
        # none of them went back to the dead one (which would have moved it again).
        assert store.moves == 1, f"moved {store.moves} times for one dead member"
        assert store.targets[store._current] == cluster.client(others[0])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
        await writer.close()
        cluster.start_member(leader)



async def _hung_member() -> tuple[grpc.aio.Server, str]:
    """A gRPC server that takes watch requests and never answers them (a member whose serving
    loop is stuck): the connection stays healthy, so only a deadline can tell."""

    async def watch(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for _ in requests:
            pass
        yield b""  # never reached while the client keeps the stream open

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("etcdserverpb.Watch", {
        "Watch": grpc.stream_stream_rpc_method_handler(watch),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_a_member_that_never_answers_does_not_hold_a_watch(cluster: StoreCluster) -> None:
    hung, hung_addr = await _hung_member()
    live = cluster.client(cluster.leader())
    store = EtcdStore([hung_addr, live], timeout=1.0)
    writer = EtcdStore([live])
    got: list[str] = []

    async def follow() -> None:
        async for batch in store.watch("/hung/", start_revision=start):
            got.extend(ev.key for ev in batch.events)

    task: asyncio.Task[None] | None = None
    try:
        start = await writer.revision() + 1
        task = asyncio.create_task(follow())
        await writer.txn([], [Put("/hung/a", b"1")])
        assert await _until(lambda: got == ["/hung/a"], 8), f"watch still held by the hung member: {got}"
        assert store.moves == 1
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await store.close()
        await writer.close()
        await hung.stop(None)
