"""Node lifecycle: heartbeats -> Ready=Unknown, taints, evictions; with an injected clock."""

from __future__ import annotations

import pytest

from controlplane.controllers import nodelifecycle as nlc
from skiff import conditions, taints
from skiff.clock import stamp
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, node, pod


def lease(name: str, renew: float) -> t.Lease:
    ls = t.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
    ls.metadata.name, ls.metadata.namespace = name, nlc.LEASE_NAMESPACE
    ls.spec.holder_identity = name
    ls.spec.lease_duration_seconds = 40
    stamp(ls.spec.renew_time, renew)
    return ls


async def renew(cluster: Cluster, name: str) -> None:
    ls = await cluster.api.get(t.Lease, name, nlc.LEASE_NAMESPACE)
    stamp(ls.spec.renew_time, cluster.clock.now())
    await cluster.api.update(ls)
    await cluster.settle()


def ready_of(n: t.Node) -> str:
    return next(c.status for c in n.status.conditions if c.type == "Ready")


def managed(n: t.Node) -> set[tuple[str, str]]:
    return {(tn.key, tn.effect) for tn in n.spec.taints}


@pytest.mark.parametrize(("tolerations", "elapsed", "evicted"), [
    ((), 59, False),
    ((), 60, True),
    ((t.Toleration(key=taints.UNREACHABLE, operator="Exists", effect="NoExecute"),), 10_000, False),
    ((t.Toleration(key=taints.UNREACHABLE, operator="Exists", effect="NoExecute", toleration_seconds=5),), 5, True),
    ((t.Toleration(key="other", operator="Exists"),), 60, True),
    ((t.Toleration(operator="Exists"),), 10_000, False),
], ids=["before-timeout", "at-timeout", "tolerates-forever", "toleration-seconds", "other-key", "tolerates-all"])
def test_plan_evictions(tolerations: tuple[t.Toleration, ...], elapsed: float, evicted: bool) -> None:
    n = node("n1", taints=(t.Taint(key=taints.UNREACHABLE, effect="NoExecute"),))
    stamp(n.spec.taints[0].time_added, 1000)
    p = pod("p", node="n1", tolerations=tolerations)
    assert bool(nlc.plan_evictions(n, [p], 1000 + elapsed, 60)) == evicted


def test_plan_taints_swaps_not_ready_for_unreachable_and_keeps_foreign_taints() -> None:
    foreign = t.Taint(key="dedicated", value="gpu", effect="NoSchedule")
    current = [foreign, t.Taint(key=taints.NOT_READY, effect="NoSchedule"),
               t.Taint(key=taints.NOT_READY, effect="NoExecute")]
    out = nlc.plan_taints(current, "Unknown", unschedulable=False, now=5)
    assert out is not None
    assert {(tn.key, tn.effect) for tn in out} == {("dedicated", "NoSchedule"), (taints.UNREACHABLE, "NoSchedule"),
                                                   (taints.UNREACHABLE, "NoExecute")}
    assert nlc.plan_taints(out, "Unknown", unschedulable=False, now=6) is None
    cleared = nlc.plan_taints(out, "True", unschedulable=False, now=7)
    assert cleared is not None and [tn.key for tn in cleared] == ["dedicated"]


async def test_silent_node_goes_unknown_then_its_pods_are_evicted(cluster: Cluster) -> None:
    ctrl = nlc.NodeLifecycleController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    now = cluster.clock.now()
    for name in ("n1", "n2"):
        await cluster.create(node(name))
        await cluster.create(lease(name, now))
    await cluster.create(pod("on-n1", node="n1", ready=True, phase="Running"))
    await cluster.create(pod("on-n2", node="n2", ready=True, phase="Running"))
    await cluster.start()
    await ctrl.monitor_once()
    for _ in range(8):  # n2 keeps renewing every 5 s; n1 is silent
        cluster.clock.advance(5)
        await renew(cluster, "n2")
        await ctrl.monitor_once()
        await cluster.settle()
    # 40 s without a heartbeat: not yet past the grace period.
    n1 = await cluster.api.get(t.Node, "n1")
    assert ready_of(n1) == "True" and not n1.spec.taints
    cluster.clock.advance(1)
    await renew(cluster, "n2")
    await ctrl.monitor_once()
    await cluster.settle()
    n1, n2 = await cluster.api.get(t.Node, "n1"), await cluster.api.get(t.Node, "n2")
    assert ready_of(n1) == "Unknown" and ready_of(n2) == "True"
    assert managed(n1) == {(taints.UNREACHABLE, "NoSchedule"), (taints.UNREACHABLE, "NoExecute")}
    assert not n2.spec.taints
    p = await cluster.api.get(t.Pod, "on-n1")
    assert p.status.conditions[0].status == "False", "pods on a lost node are no longer Ready"
    cluster.clock.advance(59)
    await renew(cluster, "n2")
    await ctrl.monitor_once()
    assert cluster.writes("delete", "pods") == 0
    cluster.clock.advance(1)
    await renew(cluster, "n2")
    await ctrl.monitor_once()
    deletes = [a for a in cluster.api.actions if a[0] == "delete"]
    assert deletes == [("delete", "pods", "default", "on-n1")]
    assert [p.metadata.name for p in cluster.api.objects(t.Pod)] == ["on-n2"]


async def post_ready(cluster: Cluster, name: str, status: str, reason: str) -> None:
    """What the node agent does: write its Ready condition with a fresh heartbeat."""
    n = await cluster.api.get(t.Node, name)
    cond = t.NodeCondition(type="Ready", status=status, reason=reason)
    stamp(cond.last_heartbeat_time, cluster.clock.now())
    stamp(cond.last_transition_time, cluster.clock.now())
    conditions.replace_condition(n.status.conditions, cond)
    await cluster.api.update_status(n)
    await cluster.settle()


async def test_node_that_comes_back_is_ready_again_and_keeps_its_pods(cluster: Cluster) -> None:
    """Only the agent writes Ready=True: a renewed lease alone does not, the agent's post does."""
    ctrl = nlc.NodeLifecycleController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.create(node("n1"))
    await cluster.create(lease("n1", cluster.clock.now()))
    await cluster.create(pod("p", node="n1", ready=True, phase="Running"))
    await cluster.start()
    await ctrl.monitor_once()
    cluster.clock.advance(45)
    await ctrl.monitor_once()
    await cluster.settle()
    lost = await cluster.api.get(t.Node, "n1")
    cond = conditions.node_ready_condition(lost)
    assert cond is not None and (cond.status, cond.reason, cond.message) == (
        "Unknown", nlc.REASON_UNKNOWN, "Kubelet stopped posting node status.")
    cluster.clock.advance(10)
    await renew(cluster, "n1")
    await ctrl.monitor_once()
    await cluster.settle()
    n1 = await cluster.api.get(t.Node, "n1")
    assert ready_of(n1) == "Unknown", "the lifecycle controller never writes Ready=True"
    await post_ready(cluster, "n1", "True", "KubeletReady")
    await ctrl.monitor_once()
    await cluster.settle()
    n1 = await cluster.api.get(t.Node, "n1")
    assert ready_of(n1) == "True" and not n1.spec.taints
    cluster.clock.advance(120)
    await renew(cluster, "n1")
    await ctrl.monitor_once()
    assert cluster.writes("delete", "pods") == 0
    assert [p.metadata.name for p in cluster.api.objects(t.Pod)] == ["p"]


@pytest.mark.parametrize(("ready", "silent_for", "want"), [
    (None, 41, ("Unknown", nlc.REASON_NEVER_UPDATED)),
    (("True", "KubeletReady"), 41, ("Unknown", nlc.REASON_UNKNOWN)),
    (("False", "ContainerRuntimeDown"), 41, ("Unknown", nlc.REASON_UNKNOWN)),
    (("Unknown", nlc.REASON_UNKNOWN), 41, None),
    (("True", "KubeletReady"), 40, None),
    (("False", "KubeletNotReady"), 10, None),
    (("Unknown", nlc.REASON_UNKNOWN), 10, None),
], ids=["never-posted", "ready-goes-silent", "not-ready-goes-silent", "already-unknown", "within-grace",
        "not-ready-is-the-agents-word", "heartbeat-back-still-the-agents-to-say"])
def test_plan_ready_condition_only_ever_writes_unknown(ready: tuple[str, str] | None, silent_for: float,
                                                       want: tuple[str, str] | None) -> None:
    n = t.Node()
    if ready is not None:
        n.status.conditions.add(type="Ready", status=ready[0], reason=ready[1])
    health = nlc.NodeHealth(probe=1000.0, lease_marker="", heartbeat_marker="")
    got = nlc.plan_ready_condition(n, health, 1000.0 + silent_for, 40.0)
    assert (None if got is None else (got.status, got.reason)) == want
    if got is not None:
        assert got.last_transition_time.seconds == 1000 + silent_for


async def test_restart_gives_every_node_a_full_grace_period(cluster: Cluster) -> None:
    ctrl = nlc.NodeLifecycleController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.create(node("n1"))
    await cluster.create(lease("n1", cluster.clock.now() - 3600))  # stale long before we started
    await cluster.start()
    await ctrl.monitor_once()
    cluster.clock.advance(39)
    await ctrl.monitor_once()
    assert ready_of(await cluster.api.get(t.Node, "n1")) == "True"


async def test_not_ready_node_gets_graceful_evictions(cluster: Cluster) -> None:
    """The agent reports Ready=False (alive, runtime broken): pods are deleted with their grace period."""
    ctrl = nlc.NodeLifecycleController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.create(node("n1", ready=False))
    await cluster.create(lease("n1", cluster.clock.now()))
    await cluster.create(pod("p", node="n1", ready=True, phase="Running"))
    await cluster.start()
    await ctrl.monitor_once()
    await cluster.settle()
    assert managed(await cluster.api.get(t.Node, "n1")) == {(taints.NOT_READY, "NoSchedule"),
                                                           (taints.NOT_READY, "NoExecute")}
    for _ in range(13):  # 65 s, the lease kept fresh: NotReady, not Unknown
        cluster.clock.advance(5)
        await renew(cluster, "n1")
        await ctrl.monitor_once()
        await cluster.settle()
    p = await cluster.api.get(t.Pod, "p")
    assert p.metadata.HasField("deletion_timestamp") and p.metadata.deletion_grace_period_seconds == 30
