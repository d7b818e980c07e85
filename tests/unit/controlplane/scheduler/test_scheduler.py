"""The scheduler over the in-process api-server: assume-cache, spreading, FailedScheduling, bind failures."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from controlplane.scheduler.scheduler import Scheduler
from skiff import errors
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, node, pod


async def start(cluster: Cluster, nodes: list[t.Node], pods: list[t.Pod]) -> Scheduler:
    sched = Scheduler(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock,
                      rng=random.Random(1))
    for n in nodes:
        await cluster.create(n)
    for p in pods:
        await cluster.create(p)
    await cluster.start()
    return sched


async def run_until_idle(cluster: Cluster, sched: Scheduler) -> None:
    """Schedule every active pod, let binds finish and the watch catch up."""
    for _ in range(100):
        await cluster.settle()
        counts = sched.queue.counts()
        if counts["active"] == 0 and counts["flight"] == 0 and not sched._binds:
            return
        while sched.queue.counts()["active"]:
            qp = await sched.queue.pop()
            assert qp is not None
            await sched.schedule_one(qp)
        await sched.wait_binds()
    raise AssertionError("scheduler did not go idle")


def placement(cluster: Cluster) -> dict[str, str]:
    return {p.metadata.name: p.spec.node_name for p in cluster.api.objects(t.Pod)}


async def test_consecutive_decisions_see_each_other_before_the_watch(cluster: Cluster) -> None:
    # Each node fits exactly two pods; all six are decided before any bind is observed.
    nodes = [node(f"n{i}", cpu="1") for i in range(3)]
    pods = [pod(f"p{i}", cpu="500m", created=i + 1) for i in range(6)]
    sched = await start(cluster, nodes, pods)
    for _ in range(6):
        qp = await sched.queue.pop()
        assert qp is not None
        await sched.schedule_one(qp)
    await sched.wait_binds()
    await cluster.settle()
    assert Counter(placement(cluster).values()) == {"n0": 2, "n1": 2, "n2": 2}
    assert cluster.api.count("bind") == 6


async def test_spreads_an_owners_pods(cluster: Cluster) -> None:
    owner = t.ReplicaSet(kind="ReplicaSet", metadata=t.ObjectMeta(name="rs", uid="rs-uid"))
    nodes = [node(f"n{i}") for i in range(4)]
    pods = [pod(f"p{i}", owner=owner, created=i + 1) for i in range(8)]
    sched = await start(cluster, nodes, pods)
    await run_until_idle(cluster, sched)
    assert sorted(Counter(placement(cluster).values()).values()) == [2, 2, 2, 2]


async def test_filters_decide_and_failure_is_explained(cluster: Cluster) -> None:
    nodes = [node("small", cpu="1", labels={"disk": "ssd"}), node("small2", cpu="1", labels={"disk": "ssd"}),
             node("big", cpu="8", labels={"disk": "hdd"})]
    pods = [pod("picky", cpu="2", node_selector={"disk": "ssd"})]
    sched = await start(cluster, nodes, pods)
    await run_until_idle(cluster, sched)
    await cluster.recorder.flush()
    [ev] = [e for e in cluster.api.objects(t.Event) if e.reason == "FailedScheduling"]
    assert ev.message == "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) didn't match node selector."
    assert ev.involved_object.name == "picky" and ev.type == "Warning"
    assert sched.queue.where("default/picky") == "unschedulable"
    # The cluster changes: a matching node arrives, and the pod is retried and placed.
    await cluster.create(node("ssd", cpu="4", labels={"disk": "ssd"}))
    await cluster.settle()
    cluster.clock.advance(2)
    sched.queue.flush()
    await run_until_idle(cluster, sched)
    assert placement(cluster) == {"picky": "ssd"}
    await cluster.recorder.flush()
    scheduled = [e for e in cluster.api.objects(t.Event) if e.reason == "Scheduled"]
    assert scheduled[0].message == "Successfully assigned default/picky to ssd"


async def test_failed_bind_forgets_and_retries(cluster: Cluster) -> None:
    sched = await start(cluster, [node("only", cpu="1")], [pod("a", cpu="1")])
    cluster.api.fail_next("bind", "pods", errors.UnavailableError("store unavailable"))
    qp = await sched.queue.pop()
    assert qp is not None
    await sched.schedule_one(qp)
    await sched.wait_binds()
    assert sched.bind_failures == 1
    assert sched.cache.nodes["only"].req_cpu == 0, "the assumption was forgotten"
    assert sched.queue.where("default/a") == "backoff"
    cluster.clock.advance(1.5)
    sched.queue.flush()
    await run_until_idle(cluster, sched)
    assert placement(cluster) == {"a": "only"}


@pytest.mark.parametrize(
    ("error", "where", "rejected"),
    [
        (errors.PodAlreadyAssignedError('pod "a" is already assigned to node "n9"'), None, False),
        (errors.ConflictError('pod "a" is already assigned to node "n9"'), "backoff", True),
        (errors.NotFoundError('pods "a" not found'), None, False),
    ],
    ids=["bound-by-someone-else-left-to-the-watch", "a-plain-conflict-is-told-by-type-not-text",
         "deleted-meanwhile-dropped"],
)
async def test_a_lost_bind_is_told_apart_by_type(cluster: Cluster, error: errors.SkiffError, where: str | None,
                                                 rejected: bool) -> None:
    sched = await start(cluster, [node("only", cpu="1")], [pod("a", cpu="1")])
    cluster.api.fail_next("bind", "pods", error)
    qp = await sched.queue.pop()
    assert qp is not None
    await sched.schedule_one(qp)
    await sched.wait_binds()
    await cluster.recorder.flush()
    assert sched.bind_failures == 1
    assert sched.cache.nodes["only"].req_cpu == 0, "the assumption was forgotten"
    assert sched.queue.where("default/a") == where
    messages = [e.message for e in cluster.api.objects(t.Event) if e.reason == "FailedScheduling"]
    assert bool(messages) == rejected


async def decide_all(sched: Scheduler, count: int) -> None:
    """`count` decisions in a row, without letting a bind run in between (as under a backlog)."""
    for _ in range(count):
        qp = await sched.queue.pop()
        assert qp is not None
        await sched.schedule_one(qp)
    await sched.wait_binds()


@pytest.mark.parametrize(("batch", "calls"), [(True, 1), (False, 0)], ids=["batched", "one-bind-per-call"])
async def test_pods_decided_together_are_bound_in_one_call(cluster: Cluster, batch: bool, calls: int) -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    pods = [pod(f"p{i}", cpu="100m", created=i + 1) for i in range(7)]
    await start(cluster, nodes, pods)
    sched = Scheduler(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock,
                      rng=random.Random(1), batch_binds=batch)
    await cluster.start()
    await decide_all(sched, 7)
    await cluster.settle()
    assert cluster.api.count("bindbatch") == calls
    assert cluster.api.count("bind") == 7 and sched.scheduled == 7
    assert all(placement(cluster).values())


async def test_one_failed_bind_of_a_batch_fails_only_its_pod(cluster: Cluster) -> None:
    sched = await start(cluster, [node("n0", cpu="2")], [pod(f"p{i}", cpu="500m", created=i + 1) for i in range(3)])
    cluster.api.fail_next("bind", "pods", errors.UnavailableError("store unavailable"))
    await decide_all(sched, 3)
    assert cluster.api.count("bindbatch") == 1
    assert sched.scheduled == 2 and sched.bind_failures == 1
    assert sched.cache.nodes["n0"].req_cpu == 1000, "only the failed pod's assumption was forgotten"
    assert sorted(sched.queue.where(f"default/p{i}") or "" for i in range(3)) == ["", "", "backoff"]


async def test_an_api_server_without_bind_batch_gets_one_bind_per_pod(cluster: Cluster) -> None:
    sched = await start(cluster, [node("n0")], [pod(f"p{i}", created=i + 1) for i in range(4)])
    cluster.api.fail_next("bindbatch", "pods", errors.UnimplementedError("unknown method BindBatch"))
    await decide_all(sched, 4)
    await cluster.settle()
    assert sched.scheduled == 4 and sched.bind_failures == 0
    assert placement(cluster) == {f"p{i}": "n0" for i in range(4)}
    await cluster.create(pod("later", created=9))
    await cluster.settle()
    await decide_all(sched, 1)
    assert cluster.api.count("bindbatch") == 1, "after UNIMPLEMENTED, no further BindBatch"
    assert cluster.api.count("bind") == 5


async def test_pods_for_other_schedulers_and_bound_pods_are_ignored(cluster: Cluster) -> None:
    other = pod("other")
    other.spec.scheduler_name = "someone-else"
    sched = await start(cluster, [node("n1")], [other, pod("bound", node="n1", cpu="1")])
    assert len(sched.queue) == 0
    assert sched.cache.nodes["n1"].req_cpu == 1000


async def test_run_loop_binds_everything(cluster: Cluster) -> None:
    nodes = [node(f"n{i}", cpu="4") for i in range(5)]
    pods = [pod(f"p{i}", cpu="100m", created=i) for i in range(50)]
    sched = await start(cluster, nodes, pods)
    task = asyncio.ensure_future(sched.run())
    try:
        for _ in range(500):
            await asyncio.sleep(0.01)
            if all(placement(cluster).values()):
                break
    finally:
        sched.shutdown()
        task.cancel()
    assert all(placement(cluster).values())
    assert max(Counter(placement(cluster).values()).values()) <= 12


def _full_pod(node_name: str, phase: str) -> t.Pod:
    from bench.cachemem import realistic_pod
    p = realistic_pod(7)
    p.spec.node_name = node_name
    p.spec.containers[0].ports[0].host_port = 8080
    p.spec.node_selector["disk"] = "ssd"
    p.metadata.annotations["note"] = "kept on a pending pod"
    p.status.phase = phase
    return p


@pytest.mark.parametrize("node_name,phase", [("", "Pending"), ("n1", "Running"), ("n1", "Succeeded")],
                         ids=["pending-kept-whole", "bound-running", "bound-terminal"])
def test_bound_pod_view_keeps_what_the_scheduler_reads(node_name: str, phase: str) -> None:
    from controlplane.scheduler.nodeinfo import PodInfo
    from controlplane.scheduler.scheduler import bound_pod_view
    original = _full_pod(node_name, phase)
    view = bound_pod_view(_full_pod(node_name, phase))
    if not node_name:
        assert view == original
        return
    meta = t.ObjectMeta()
    meta.CopyFrom(original.metadata)
    for name in ("labels", "annotations", "managed_fields"):  # no plugin reads them of a placed pod
        meta.ClearField(name)
    assert view.metadata == meta and view.status == t.PodStatus(phase=phase)
    assert not view.spec.volumes and not view.spec.containers[0].volume_mounts
    assert view.ByteSize() < original.ByteSize() / 2
    fields = ("key", "uid", "cpu", "mem", "nz_cpu", "nz_mem", "host_ports", "node_selector", "tolerations",
              "owner_uid", "created", "best_effort", "signature")
    assert [getattr(PodInfo.of(view), f) for f in fields] == [getattr(PodInfo.of(original), f) for f in fields]
