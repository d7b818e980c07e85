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


def tol(key: str, seconds: int | None = None, *, effect: str = "NoExecute") -> t.Toleration:
    out = t.Toleration(key=key, operator="Exists", effect=effect)
    if seconds is not None:
        out.toleration_seconds = seconds
    return out


DEDICATED = t.Taint(key="dedicated", value="db", effect="NoExecute")


@pytest.mark.parametrize(("tolerations", "extra", "elapsed", "evicted"), [
    ((), (), 0, True),
    ((tol(taints.UNREACHABLE, 300),), (), 299, False),
    ((tol(taints.UNREACHABLE, 300),), (), 300, True),
    ((tol(taints.UNREACHABLE),), (), 10_000, False),
    ((tol(taints.UNREACHABLE, 0),), (), 0, True),
    ((tol("other", 300),), (), 0, True),
    ((tol(taints.UNREACHABLE, 300, effect="NoSchedule"),), (), 0, True),
    ((t.Toleration(operator="Exists"),), (), 10_000, False),
    ((tol(taints.UNREACHABLE, 300), tol("dedicated", 10)), (DEDICATED,), 10, True),
    ((tol(taints.UNREACHABLE, 300), tol("dedicated")), (DEDICATED,), 299, False),
    ((tol(taints.UNREACHABLE),), (DEDICATED,), 0, True),
], ids=["untolerated-at-once", "before-toleration-seconds", "at-toleration-seconds", "tolerates-forever",
        "zero-seconds", "other-key", "other-effect", "tolerates-all", "shortest-of-two-taints",
        "forever-for-one-counts-for-the-other", "one-untolerated-taint-is-enough"])
def test_plan_evictions(tolerations: tuple[t.Toleration, ...], extra: tuple[t.Taint, ...], elapsed: float,
                        evicted: bool) -> None:
    n = node("n1", taints=(t.Taint(key=taints.UNREACHABLE, effect="NoExecute"), *extra))
    for taint in n.spec.taints:
        stamp(taint.time_added, 1000)
    p = pod("p", node="n1", tolerations=tolerations)
    assert bool(nlc.plan_evictions(n, [p], 1000 + elapsed)) == evicted


def test_plan_evictions_ignores_no_schedule_taints() -> None:
    n = node("n1", taints=(t.Taint(key=taints.UNREACHABLE, effect="NoSchedule"),))
    assert nlc.plan_evictions(n, [pod("p", node="n1")], 1000) == []


OPTS = nlc.EvictionOptions()
ZONES: list[tuple[list[tuple[str, str | None]], dict[str, tuple[str, float]]]] = [
    ([("", "True")] * 3, {"": (nlc.NORMAL_ZONE, 0.1)}),
    ([("", "True"), ("", "True"), ("", "Unknown")], {"": (nlc.NORMAL_ZONE, 0.1)}),
    ([("", "True"), ("", "Unknown")], {"": (nlc.NORMAL_ZONE, 0.1)}),
    ([("", "True"), ("", "Unknown"), ("", "False")], {"": (nlc.PARTIAL_DISRUPTION, 0.0)}),
    ([("", "True"), ("", "Unknown"), ("", None)], {"": (nlc.PARTIAL_DISRUPTION, 0.0)}),
    ([("", "Unknown")] * 3, {"": (nlc.FULL_DISRUPTION, 0.0)}),
    ([("", "True")] * 20 + [("", "Unknown")] * 40, {"": (nlc.PARTIAL_DISRUPTION, 0.01)}),
    ([("", "True")] * 10 + [("", "Unknown")] * 40, {"": (nlc.PARTIAL_DISRUPTION, 0.0)}),
    ([("a", "Unknown"), ("a", "Unknown"), ("b", "True")],
     {"a": (nlc.FULL_DISRUPTION, 0.1), "b": (nlc.NORMAL_ZONE, 0.1)}),
    ([("a", "Unknown"), ("b", "Unknown")], {"a": (nlc.FULL_DISRUPTION, 0.0), "b": (nlc.FULL_DISRUPTION, 0.0)}),
    ([("a", "Unknown"), ("a", "True"), ("a", "Unknown"), ("b", "True")],
     {"a": (nlc.PARTIAL_DISRUPTION, 0.0), "b": (nlc.NORMAL_ZONE, 0.1)}),
]


@pytest.mark.parametrize(("nodes", "want"), ZONES, ids=[
    "healthy", "one-of-three", "half-is-below-threshold", "two-of-three-is-partial", "no-condition-is-unhealthy",
    "all-down-is-full", "large-zone-partial-secondary-rate", "fifty-nodes-is-not-large", "one-zone-gone-evicts",
    "every-zone-gone-stops", "zones-apart"])
def test_plan_zones(nodes: list[tuple[str, str | None]], want: dict[str, tuple[str, float]]) -> None:
    got = nlc.plan_zones(nodes, OPTS)
    assert {z: (p.state, p.rate) for z, p in got.items()} == want
    assert sum(p.size for p in got.values()) == len(nodes)


@pytest.mark.parametrize(("rate", "takes", "want"), [
    (0.1, [0, 0, 5, 10, 10, 19, 20], [True, False, False, True, False, False, True]),
    (1.0, [0, 1, 1.5, 2], [True, True, False, True]),
    (0.0, [0, 100], [False, False]),
], ids=["one-per-ten-seconds", "burst-one", "zero-never"])
def test_token_bucket(rate: float, takes: list[float], want: list[bool]) -> None:
    bucket = nlc.TokenBucket.full(rate, 0.0)
    got = []
    for now in takes:
        ok, bucket = bucket.take(now)
        got.append(ok)
    assert got == want


UNREACH_NS = (taints.UNREACHABLE, "NoSchedule")
UNREACH_NE = (taints.UNREACHABLE, "NoExecute")
NOTREADY_NS = (taints.NOT_READY, "NoSchedule")
NOTREADY_NE = (taints.NOT_READY, "NoExecute")


@pytest.mark.parametrize(("have", "status", "evicting", "may_add", "want"), [
    ((), "Unknown", True, True, {UNREACH_NS, UNREACH_NE}),
    ((), "Unknown", True, False, {UNREACH_NS}),
    ((UNREACH_NS,), "Unknown", False, True, {UNREACH_NS}),
    ((UNREACH_NS, UNREACH_NE), "Unknown", False, False, {UNREACH_NS}),
    ((UNREACH_NS, UNREACH_NE), "Unknown", True, False, {UNREACH_NS, UNREACH_NE}),
    ((NOTREADY_NS, NOTREADY_NE), "Unknown", True, False, {UNREACH_NS, UNREACH_NE}),
    ((), "False", True, True, {NOTREADY_NS, NOTREADY_NE}),
    ((UNREACH_NS, UNREACH_NE), "True", True, False, set()),
], ids=["lost-with-token", "lost-waits-for-token", "disrupted-no-execute-withheld", "disrupted-lifts-no-execute",
        "tainted-keeps-without-token", "swap-needs-no-token", "not-ready", "healthy-again"])
def test_plan_taints_no_execute(have: tuple[tuple[str, str], ...], status: str, evicting: bool, may_add: bool,
                                want: set[tuple[str, str]]) -> None:
    current = [t.Taint(key=k, effect=e) for k, e in have]
    out = nlc.plan_taints(current, status, unschedulable=False, now=5, evicting=evicting, may_add=may_add)
    got = {(tn.key, tn.effect) for tn in (current if out is None else out)}
    assert got == want
    assert (out is None) == (set(have) == want)


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


async def step(cluster: Cluster, ctrl: nlc.NodeLifecycleController, seconds: float,
               renewing: tuple[str, ...]) -> None:
    """`seconds` pass; the nodes in `renewing` renew their Lease (the others are silent); one pass."""
    cluster.clock.advance(seconds)
    for name in renewing:
        await renew(cluster, name)
    await ctrl.monitor_once()
    await cluster.settle()


async def nodes_with_leases(cluster: Cluster, *names: str) -> None:
    for name in names:
        await cluster.create(node(name))
        await cluster.create(lease(name, cluster.clock.now()))


async def test_silent_node_goes_unknown_then_its_pods_are_evicted(cluster: Cluster) -> None:
    ctrl = nlc.NodeLifecycleController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await nodes_with_leases(cluster, "n1", "n2")
    await cluster.create(pod("on-n1", node="n1", ready=True, phase="Running"))
    await cluster.create(pod("on-n2", node="n2", ready=True, phase="Running"))
    await cluster.start()
    admitted = await cluster.api.get(t.Pod, "on-n1")
    assert {(tn.key, tn.effect, tn.toleration_seconds) for tn in admitted.spec.tolerations} == {
        (taints.NOT_READY, "NoExecute", 300), (taints.UNREACHABLE, "NoExecute", 300)}, "DefaultTolerationSeconds"
    await ctrl.monitor_once()
    for _ in range(8):  # n2 keeps renewing every 5 s; n1 is silent
        await step(cluster, ctrl, 5, ("n2",))
    # 40 s without a heartbeat: not yet past the grace period.
    n1 = await cluster.api.get(t.Node, "n1")
    assert ready_of(n1) == "True" and not n1.spec.taints
    await step(cluster, ctrl, 1, ("n2",))
    n1, n2 = await cluster.api.get(t.Node, "n1"), await cluster.api.get(t.Node, "n2")
    assert ready_of(n1) == "Unknown" and ready_of(n2) == "True"
    # 1 of 2 nodes lost is below the 55% threshold: the NoExecute taint goes on at once (a full bucket).
    assert managed(n1) == {(taints.UNREACHABLE, "NoSchedule"), (taints.UNREACHABLE, "NoExecute")}
    assert not n2.spec.taints
    assert ctrl.metrics.evictions_total == {"": 1} and ctrl.metrics.zone_disruption == {"": 0}
    p = await cluster.api.get(t.Pod, "on-n1")
    assert p.status.conditions[0].status == "False", "pods on a lost node are no longer Ready"
    await step(cluster, ctrl, 299, ("n2",))
    assert cluster.writes("delete", "pods") == 0, "the pod tolerates unreachable for 300 s"
    await step(cluster, ctrl, 1, ("n2",))
    deletes = [a for a in cluster.api.actions if a[0] == "delete"]
    assert deletes == [("delete", "pods", "default", "on-n1")]
    assert [p.metadata.name for p in cluster.api.objects(t.Pod)] == ["on-n2"]
    assert ctrl.metrics.pod_evictions_total == 1


async def events(cluster: Cluster, reason: str) -> list[str]:
    await cluster.recorder.flush()
    return sorted(e.involved_object.name for e in cluster.api.objects(t.Event) if e.reason == reason)


async def test_partition_of_the_workers_evicts_nothing(cluster: Cluster) -> None:
    """cp keeps its heartbeat, n1 and n2 go silent together: 2 of 3 unhealthy, evictions stop."""
    ctrl = nlc.NodeLifecycleController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await nodes_with_leases(cluster, "cp", "n1", "n2")
    short = (tol(taints.UNREACHABLE, 5), tol(taints.NOT_READY, 5))
    for name in ("n1", "n2"):
        await cluster.create(pod(f"on-{name}", node=name, ready=True, phase="Running", tolerations=short))
    await cluster.start()
    await ctrl.monitor_once()
    await step(cluster, ctrl, 41, ("cp",))
    for name in ("n1", "n2"):
        n = await cluster.api.get(t.Node, name)
        assert ready_of(n) == "Unknown" and managed(n) == {(taints.UNREACHABLE, "NoSchedule")}
    assert ctrl.zones[""].state == nlc.PARTIAL_DISRUPTION
    assert ctrl.metrics.zone_disruption == {"": 1} and ctrl.metrics.disruptions_total == 1
    assert ctrl.metrics.unhealthy_nodes_in_zone == {"": 2}
    assert await events(cluster, "NodeEvictionsStopped") == ["n1", "n2"]
    for _ in range(10):
        await step(cluster, ctrl, 100, ("cp",))
    assert cluster.writes("delete", "pods") == 0
    assert ctrl.metrics.evictions_total == {} and ctrl.metrics.disruptions_total == 1
    # The cut heals: the agents post Ready again; nothing was deleted, the taints go.
    for name in ("n1", "n2"):
        await post_ready(cluster, name, "True", "KubeletReady")
    await step(cluster, ctrl, 5, ("cp", "n1", "n2"))
    for name in ("n1", "n2"):
        assert not (await cluster.api.get(t.Node, name)).spec.taints
    assert ctrl.metrics.zone_disruption == {"": 0}
    assert cluster.writes("delete", "pods") == 0
    assert sorted(p.metadata.name for p in cluster.api.objects(t.Pod)) == ["on-n1", "on-n2"]


async def test_entering_disruption_lifts_a_no_execute_taint_already_set(cluster: Cluster) -> None:
    """n1 is lost first and tainted NoExecute; n2 follows 10 s later: the zone is disrupted, and
    n1's pending eviction is called off."""
    ctrl = nlc.NodeLifecycleController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await nodes_with_leases(cluster, "cp", "n1", "n2")
    await cluster.create(pod("on-n1", node="n1", ready=True, phase="Running",
                             tolerations=(tol(taints.UNREACHABLE, 30),)))
    await cluster.start()
    await ctrl.monitor_once()
    await step(cluster, ctrl, 10, ("cp", "n2"))
    await step(cluster, ctrl, 31, ("cp",))
    assert managed(await cluster.api.get(t.Node, "n1")) == {(taints.UNREACHABLE, "NoSchedule"),
                                                           (taints.UNREACHABLE, "NoExecute")}
    for _ in range(4):
        await step(cluster, ctrl, 5, ("cp",))
    assert ready_of(await cluster.api.get(t.Node, "n2")) == "Unknown"
    assert managed(await cluster.api.get(t.Node, "n1")) == {(taints.UNREACHABLE, "NoSchedule")}
    await step(cluster, ctrl, 200, ("cp",))
    assert cluster.writes("delete", "pods") == 0


async def test_no_execute_taints_are_rate_limited_per_zone(cluster: Cluster) -> None:
    """2 of 5 nodes lost at once (40%: no disruption): one is tainted now, the next 10 s later (0.1/s)."""
    ctrl = nlc.NodeLifecycleController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    healthy = ("h1", "h2", "h3")
    await nodes_with_leases(cluster, "n1", "n2", *healthy)
    await cluster.start()
    await ctrl.monitor_once()
    await step(cluster, ctrl, 41, healthy)

    async def executing() -> list[str]:
        nodes = [await cluster.api.get(t.Node, n) for n in ("n1", "n2")]
        return [n.metadata.name for n in nodes if (taints.UNREACHABLE, "NoExecute") in managed(n)]

    assert len(await executing()) == 1
    await step(cluster, ctrl, 5, healthy)
    assert len(await executing()) == 1
    await step(cluster, ctrl, 5, healthy)
    assert await executing() == ["n1", "n2"]
    assert ctrl.metrics.evictions_total == {"": 2} and ctrl.metrics.zone_disruption == {"": 0}


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
    await nodes_with_leases(cluster, "h1", "h2")
    await cluster.create(lease("n1", cluster.clock.now()))
    await cluster.create(pod("p", node="n1", ready=True, phase="Running", tolerations=(tol(taints.NOT_READY, 60),)))
    await cluster.start()
    await ctrl.monitor_once()
    await cluster.settle()
    assert managed(await cluster.api.get(t.Node, "n1")) == {(taints.NOT_READY, "NoSchedule"),
                                                           (taints.NOT_READY, "NoExecute")}
    for _ in range(11):  # 55 s, the leases kept fresh: NotReady, not Unknown
        await step(cluster, ctrl, 5, ("n1", "h1", "h2"))
    assert cluster.writes("delete", "pods") == 0
    await step(cluster, ctrl, 5, ("n1", "h1", "h2"))
    p = await cluster.api.get(t.Pod, "p")
    assert p.metadata.HasField("deletion_timestamp") and p.metadata.deletion_grace_period_seconds == 30
