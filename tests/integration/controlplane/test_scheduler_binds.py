"""The scheduler's concurrent binds against a real api-server process (over etcd): whatever
happens to a pod between the decision and its bind, no node's capacity is lost or counted twice.

Two nodes have room for exactly 5 pods each and 10 pods wait before the scheduler starts, so all
10 binds are in flight together. For one pod, a racer acts through the same api-server just
before the scheduler's bind reaches it (its Bind, or its binding in a BindBatch: both ways are
run): it binds the pod itself, deletes it, deletes it and creates a new pod of the same name (a
new uid), or has the api-server refuse the bind (no target node; the pod stays unbound, so only
the scheduler's own forget frees its node). Afterwards a
replacement pod fills any freed slot. Every pod the api-server then holds must be bound, 5 per
node: an assumption the failed bind left behind would leave a pod pending (a slot lost), a pod
counted twice would do the same, and a freed slot not given back would keep the replacement
pending.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from controlplane.scheduler.scheduler import Scheduler
from deploy.loopback import control_plane
from skiff import errors
from skiff.client import Client, new_binding
from skiff.events import EventRecorder
from skiff.guard import guard
from skiff.informer import InformerFactory
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from tests.support.prereq import require_binaries

pytestmark = pytest.mark.integration

# (client, namespace, pod name, chosen node) -> the node the bind then names (None: the chosen one)
Race = Callable[[Client, str, str, str], Awaitable[str | None]]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_binaries("etcd")
    with control_plane(Path(tmp_path_factory.mktemp("binds"))) as cp:
        yield cp.apiserver_endpoints


class RacingClient(Client):
    """The real client; before binding `victim`, `race` acts on it through the api-server."""

    def __init__(self, endpoints: str, victim: str, race: Race) -> None:
        super().__init__(endpoints)
        self.victim, self.race = victim, race
        self.raced = 0

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str = "") -> t.Pod:
        if pod == self.victim and not self.raced:
            self.raced += 1
            named = await self.race(self, namespace, pod, node)
            node = node if named is None else named
        return await super().bind(namespace, pod, node, uid=uid)

    async def bind_batch(self, bindings: Sequence[t.Binding]) -> list[errors.SkiffError | None]:
        sent = []
        for b in bindings:
            if b.metadata.name == self.victim and not self.raced:
                self.raced += 1
                named = await self.race(self, b.metadata.namespace, b.metadata.name, b.target.name)
                if named is not None:
                    b = new_binding(b.metadata.namespace, b.metadata.name, named, uid=b.metadata.uid)
            sent.append(b)
        return await super().bind_batch(sent)


def make_node(name: str) -> t.Node:
    n = t.Node(metadata=t.ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}))
    for field in (n.status.allocatable, n.status.capacity):
        field.update({"cpu": "8", "memory": "16Gi", "pods": "5"})
    n.status.conditions.add(type="Ready", status="True")
    return n


def make_pod(ns: str, name: str) -> t.Pod:
    p = t.Pod(metadata=t.ObjectMeta(name=name, namespace=ns))
    p.spec.containers.add(name="c", image="skiff/web:1.0").resources.requests.update({"cpu": "100m"})
    return p


async def no_race(client: Client, ns: str, pod: str, node: str) -> None:
    return None


async def bound_by_someone_else(client: Client, ns: str, pod: str, node: str) -> None:
    await Client.bind(client, ns, pod, node)


async def deleted(client: Client, ns: str, pod: str, node: str) -> None:
    await client.delete(t.Pod, pod, namespace=ns)  # unbound: gone at once


async def recreated(client: Client, ns: str, pod: str, node: str) -> None:
    await client.delete(t.Pod, pod, namespace=ns)
    await client.create(make_pod(ns, pod))


async def rejected(client: Client, ns: str, pod: str, node: str) -> str:
    # The api-server refuses this bind (no target node) and the pod stays as it was: no watch
    # event cleans up after us, only the scheduler's own forget frees the node.
    return ""


@pytest.mark.parametrize(("race", "failures", "replacement"), [
    (no_race, 0, False),
    (bound_by_someone_else, 1, False),  # PodAlreadyAssigned: the watch shows it on the node, once
    (deleted, 1, True),  # NotFound: dropped, its slot freed for the replacement
    (recreated, 1, False),  # the uid precondition fails: the new pod is scheduled in its own turn
    (rejected, 1, False),  # Invalid: the pod is retried after its backoff, on a node freed for it
], ids=["no-race", "bound-by-someone-else", "deleted", "recreated", "rejected"])
@pytest.mark.parametrize("batch", [True, False], ids=["bind-batch", "bind-per-pod"])
async def test_concurrent_binds_keep_capacity_exact(api: str, race: Race, failures: int, replacement: bool,
                                                    batch: bool) -> None:
    ns = race.__name__.replace("_", "-") + ("-batch" if batch else "")
    nodes = [f"{ns}-n{i}" for i in range(2)]
    async with Client(api) as admin:
        for name in nodes:
            await admin.create(make_node(name))
        await admin.create(t.Namespace(metadata=t.ObjectMeta(name=ns)))
        await asyncio.gather(*(admin.create(make_pod(ns, f"p{i}")) for i in range(10)))

        client = RacingClient(api, "p3", race)
        factory = InformerFactory(client)
        recorder = EventRecorder(client, "default-scheduler")
        # The earlier cases' nodes are cordoned: only this case's two take pods.
        sched = Scheduler(client, factory, recorder=recorder, rng=random.Random(7), max_binds_in_flight=10,
                          batch_binds=batch)
        await factory.start()
        await factory.wait_synced(30)
        tasks = [guard(sched.run(), "test-scheduler"), guard(recorder.run(), "test-events")]
        try:
            async def binds_done() -> bool:
                return client.raced == 1 and not sched._binds and sched.scheduled + sched.bind_failures >= 10

            await eventually(binds_done, timeout=30, what="the binds, the raced one included")
            if replacement:
                await admin.create(make_pod(ns, "p10"))

            async def placement() -> Counter[str]:
                pods = (await admin.list(t.Pod, namespace=ns)).items
                return Counter(p.spec.node_name for p in pods)

            async def full() -> bool:
                return await placement() == Counter({nodes[0]: 5, nodes[1]: 5})

            await eventually(full, timeout=30, what="every pod bound, 5 per node")
            assert sched.bind_failures == failures
            assert not any(sched.cache.is_assumed(f"{ns}/p{i}") for i in range(11))
            if race is recreated:
                pods = {p.metadata.name: p for p in (await admin.list(t.Pod, namespace=ns)).items}
                assert pods["p3"].spec.node_name in nodes  # the new p3, bound in its own turn
        finally:
            for task in tasks:
                task.cancel()
            sched.shutdown()
            recorder.shutdown()
            await factory.stop()
            await client.close()
            for name in nodes:  # full nodes of this case must not take the next case's pods
                await admin.update(_cordoned(await admin.get(t.Node, name)))


def _cordoned(node: t.Node) -> t.Node:
    node.spec.unschedulable = True
    return node

