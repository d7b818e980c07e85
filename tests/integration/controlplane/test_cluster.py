"""A whole control plane on loopback: store + api-server + controllers + 2 schedulers + 3 nodes.

The nodes are real node agents over their in-memory runtime, so pods go through the real
path: Deployment -> ReplicaSet -> Pod -> scheduled -> Running -> Ready -> Endpoints. Timings
(node grace period, the api-server's default toleration seconds, leader election) are
shortened by flags. The tests run in file order against one cluster and leave it as the next
one expects.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deploy.loopback import Process, control_plane
from skiff import errors
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t
from tests.support.cluster import start_controllers, start_fake_node, start_scheduler
from tests.support.prereq import require_binaries

pytestmark = pytest.mark.integration
T = TypeVar("T")
NODES = 3


@dataclass
class Lab:
    api: str
    workdir: Path
    nodes: dict[str, Process]
    controllers: Process
    schedulers: list[Process]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_binaries("etcd")
    work = tmp_path_factory.mktemp("controlplane")
    # Pods tolerate a lost node for 3 s (not 300) so the lost-node test is short.
    with control_plane(work, apiserver_args=["--default-not-ready-toleration-seconds", "3",
                                             "--default-unreachable-toleration-seconds", "3"]) as cp:
        api = cp.apiserver_endpoints
        started: list[Process] = []
        try:
            nodes = {}
            for i in range(NODES):
                nodes[f"node-{i}"] = start_fake_node(work, api, f"node-{i}", pod_cidr=f"10.200.{i}.0/24")
                started.append(nodes[f"node-{i}"])
            cm = start_controllers(work, api, extra=["--node-monitor-grace-period", "5s", "--node-monitor-period",
                                                     "1s"])
            started.append(cm)
            scheds = [start_scheduler(work, api, name=f"scheduler-{x}") for x in "ab"]
            started += scheds
            yield Lab(api, work, nodes, cm, scheds)
        finally:
            for proc in reversed(started):
                proc.stop()


@pytest.fixture
async def client(lab: Lab) -> AsyncIterator[Client]:
    c = Client(lab.api)
    yield c
    await c.close()


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, *, timeout: float = 60.0) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` and the last value."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except errors.SkiffError as exc:
            last = exc
        else:
            if last:
                return last
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.25)


def ready(p: t.Pod) -> bool:
    return p.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


def live(pods: list[t.Pod]) -> list[t.Pod]:
    return [p for p in pods if not p.metadata.HasField("deletion_timestamp")]


async def web_pods(client: Client) -> list[t.Pod]:
    return live((await client.list(t.Pod, namespace="default", label_selector="app=web")).items)


def deployment(image: str, replicas: int) -> t.Deployment:
    d = t.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = "web", "default"
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.metadata.labels["app"] = "web"
    c = d.spec.template.spec.containers.add(name="web", image=image)
    c.ports.add(name="http", container_port=8080)
    c.resources.requests.update({"cpu": "100m", "memory": "32Mi"})
    return d


async def update_deployment(client: Client, change: Callable[[t.Deployment], None]) -> None:
    for _ in range(10):
        d = await client.get(t.Deployment, "web", "default")
        change(d)
        try:
            await client.update(d)
            return
        except errors.ConflictError:
            continue
    raise AssertionError("could not update the deployment (conflicts)")


async def all_ready(client: Client, count: int, image: str = "") -> list[t.Pod] | None:
    pods = await web_pods(client)
    if len(pods) != count or not all(ready(p) and p.spec.node_name for p in pods):
        return None
    if image and any(p.spec.containers[0].image != image for p in pods):
        return None
    return pods


# ------------------------------------------------------------------ tests, in order


async def test_nodes_register_become_ready_and_get_distinct_pod_cidrs(client: Client) -> None:
    async def nodes() -> list[t.Node] | None:
        items = (await client.list(t.Node)).items
        ok = len(items) == NODES and all(n.spec.pod_cidr and any(
            c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in items)
        return items if ok else None

    items = await eventually(nodes, "3 Ready nodes with podCIDRs")
    assert len({n.spec.pod_cidr for n in items}) == NODES


async def test_deployment_gets_one_replicaset_and_pods_on_two_nodes(client: Client) -> None:
    svc = t.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "web", "default"
    svc.spec.selector["app"] = "web"
    svc.spec.ports.add(name="http", port=80, target_port=t.IntOrString(str_val="http"))
    await client.create(svc)
    await client.create(deployment("img:a", 2))
    pods = await eventually(lambda: all_ready(client, 2), "2 Running, Ready pods")
    assert len({p.spec.node_name for p in pods}) == 2, "the two pods are spread over two nodes"
    rss = (await client.list(t.ReplicaSet, namespace="default")).items
    assert len(rss) == 1 and rss[0].metadata.owner_references[0].name == "web"

    async def endpoints() -> t.Endpoints | None:
        ep = await client.get(t.Endpoints, "web", "default")
        ok = ep.subsets and len(ep.subsets[0].addresses) == 2 and ep.subsets[0].ports[0].port == 8080
        return ep if ok else None

    await eventually(endpoints, "Endpoints with both pods on the named port")

    async def deployment_available() -> t.Deployment | None:
        d = await client.get(t.Deployment, "web", "default")
        conds = {c.type: c.reason for c in d.status.conditions}
        done = d.status.available_replicas == 2 and conds.get("Progressing") == "NewReplicaSetAvailable"
        return d if done else None

    await eventually(deployment_available, "Deployment status: 2 available, NewReplicaSetAvailable")
    events = (await client.list(t.Event, namespace="default")).items
    assert any(e.reason == "Scheduled" and e.source.component == "default-scheduler" for e in events)
    assert any(e.reason == "ScalingReplicaSet" for e in events)


async def test_rolling_update_keeps_minimum_availability(client: Client) -> None:
    # 2 replicas, default 25%/25%: maxSurge 1, maxUnavailable 0 -> never fewer than 2 ready pods.
    await update_deployment(client, lambda d: setattr(d.spec.template.spec.containers[0], "image", "img:b"))
    lowest = 2
    loop = asyncio.get_running_loop()
    end = loop.time() + 90
    while loop.time() < end:
        pods = await web_pods(client)
        lowest = min(lowest, sum(1 for p in pods if ready(p)))
        if await all_ready(client, 2, "img:b"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the rollout to img:b did not finish in 90 s")
    assert lowest >= 2, f"only {lowest} ready pods during the rollout"
    rss = {rs.spec.template.spec.containers[0].image: rs for rs in
           (await client.list(t.ReplicaSet, namespace="default")).items}
    assert rss["img:a"].spec.replicas == 0 and rss["img:b"].spec.replicas == 2


async def test_scale_up_then_down(client: Client) -> None:
    await update_deployment(client, lambda d: setattr(d.spec, "replicas", 10))
    await eventually(lambda: all_ready(client, 10), "10 ready pods")
    await update_deployment(client, lambda d: setattr(d.spec, "replicas", 1))
    await eventually(lambda: all_ready(client, 1), "1 pod left")


async def test_undo_returns_to_the_old_replicaset(client: Client) -> None:
    rss = (await client.list(t.ReplicaSet, namespace="default")).items
    old = next(rs for rs in rss if rs.spec.template.spec.containers[0].image == "img:a")

    def undo(d: t.Deployment) -> None:  # what `skiff rollout undo` does
        d.spec.template.CopyFrom(old.spec.template)
        d.spec.template.metadata.labels.pop("pod-template-hash", None)

    await update_deployment(client, undo)
    await eventually(lambda: all_ready(client, 1, "img:a"), "back on img:a")
    rss = (await client.list(t.ReplicaSet, namespace="default")).items
    assert len(rss) == 2, "no new ReplicaSet for a template that already has one"
    again = next(rs for rs in rss if rs.metadata.uid == old.metadata.uid)
    assert again.metadata.annotations["deployment.kubernetes.io/revision"] == "3"


async def test_killing_the_active_scheduler_hands_over(lab: Lab, client: Client) -> None:
    lease = await client.get(t.Lease, "skiff-scheduler", "kube-system")
    leader = next(s for s in lab.schedulers if s.name == lease.spec.holder_identity)
    os.kill(leader.pid, signal.SIGKILL)
    leader.popen.wait(10)  # type: ignore[union-attr]
    p = t.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = "after-failover", "default"
    p.spec.containers.add(name="c", image="img:a")
    await client.create(p)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def bound() -> str:
        return (await client.get(t.Pod, "after-failover", "default")).spec.node_name

    try:
        await eventually(bound, "the pod to be bound by the standby scheduler", timeout=30)
    except AssertionError as exc:
        events = [f"{e.reason}: {e.message}" for e in (await client.list(t.Event, namespace="default")).items
                  if e.involved_object.name == "after-failover"]
        raise AssertionError(f"{exc}; events: {events}") from None
    assert loop.time() - start < 15
    holder = (await client.get(t.Lease, "skiff-scheduler", "kube-system")).spec.holder_identity
    assert holder != leader.name
    await client.delete(t.Pod, "after-failover", "default", grace_period_seconds=0)


async def test_lost_node_goes_unknown_and_its_pods_move(lab: Lab, client: Client) -> None:
    await update_deployment(client, lambda d: setattr(d.spec, "replicas", 3))
    pods = await eventually(lambda: all_ready(client, 3), "3 ready pods")
    victim = pods[0].spec.node_name
    os.kill(lab.nodes[victim].pid, signal.SIGKILL)
    lab.nodes[victim].popen.wait(10)  # type: ignore[union-attr]

    async def unknown() -> t.Node | None:
        n = await client.get(t.Node, victim)
        cond = next((c for c in n.status.conditions if c.type == "Ready"), None)
        tainted = any(tn.key == "node.kubernetes.io/unreachable" for tn in n.spec.taints)
        return n if cond is not None and cond.status == "Unknown" and tainted else None

    await eventually(unknown, f"{victim} Ready=Unknown and tainted unreachable", timeout=30)

    async def moved() -> list[t.Pod] | None:
        ok = await all_ready(client, 3)
        return ok if ok and all(p.spec.node_name != victim for p in ok) else None

    await eventually(moved, "3 ready pods, none on the lost node", timeout=60)
