"""One table per scheduler plugin: its pure helper and its filter()/score()."""

from __future__ import annotations

from collections import Counter

import pytest

from controlplane.scheduler import framework
from controlplane.scheduler.framework import fit_message, num_feasible_nodes_to_find
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from controlplane.scheduler.plugins.balanced_allocation import BalancedAllocation, balanced_score
from controlplane.scheduler.plugins.least_allocated import LeastAllocated, least_requested_score
from controlplane.scheduler.plugins.node_ports import NodePorts, conflicts
from controlplane.scheduler.plugins.node_pressure import NodePressure
from controlplane.scheduler.plugins.node_ready import NodeReady
from controlplane.scheduler.plugins.node_resources_fit import NodeResourcesFit, insufficient
from controlplane.scheduler.plugins.node_selector import NodeSelector
from controlplane.scheduler.plugins.node_unschedulable import NodeUnschedulable
from controlplane.scheduler.plugins.owner_spread import OwnerSpread, spread_scores
from controlplane.scheduler.plugins.taint_toleration import TaintToleration, count_intolerable_soft_taints
from skiff import taints
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import node, pod


def info(p: t.Pod) -> PodInfo:
    p.metadata.uid = p.metadata.uid or f"uid-{p.metadata.name}"
    return PodInfo.of(p)


def ninfo(n: t.Node, *pods: t.Pod) -> NodeInfo:
    ni = NodeInfo(n.metadata.name)
    ni.set_node(n)
    for p in pods:
        ni.add_pod(info(p))
    return ni


def reasons(status: framework.Status | None) -> tuple[str, ...]:
    return () if status is None else status.reasons


# ------------------------------------------------------------------ NodeReady / NodeUnschedulable

@pytest.mark.parametrize(("ready", "want"), [(True, ()), (False, ("node(s) were not ready",))], ids=["ready", "not"])
def test_node_ready(ready: bool, want: tuple[str, ...]) -> None:
    assert reasons(NodeReady().filter(info(pod("p")), ninfo(node("n", ready=ready)))) == want


@pytest.mark.parametrize(("cordoned", "tolerations", "applies", "want"), [
    (False, (), True, ()),
    (True, (), True, ("node(s) were unschedulable",)),
    (True, (t.Toleration(key=taints.UNSCHEDULABLE, operator="Exists", effect="NoSchedule"),), False, ()),
], ids=["schedulable", "cordoned", "cordoned-tolerated"])
def test_node_unschedulable(cordoned: bool, tolerations: tuple[t.Toleration, ...], applies: bool,
                            want: tuple[str, ...]) -> None:
    plugin, pi = NodeUnschedulable(), info(pod("p", tolerations=tolerations))
    assert plugin.pre_filter(pi) == applies
    if applies:
        assert reasons(plugin.filter(pi, ninfo(node("n", unschedulable=cordoned)))) == want


# ------------------------------------------------------------------ NodePressure


def _pressured(n: t.Node, *conds: tuple[str, str]) -> t.Node:
    for type_, status in conds:
        n.status.conditions.add(type=type_, status=status)
    return n


BURSTABLE = {"cpu": "100m"}


@pytest.mark.parametrize(("conds", "requests", "want"), [
    ((), {}, ()),
    ((("MemoryPressure", "True"),), {}, ("node(s) had memory pressure",)),
    ((("MemoryPressure", "True"),), BURSTABLE, ()),
    ((("MemoryPressure", "False"), ("DiskPressure", "Unknown")), {}, ()),
    ((("DiskPressure", "True"),), BURSTABLE, ("node(s) had disk pressure",)),
    ((("PIDPressure", "True"),), BURSTABLE, ("node(s) had pid pressure",)),
], ids=["none", "memory-best-effort", "memory-burstable", "not-true", "disk", "pid"])
def test_node_pressure(conds: tuple[tuple[str, str], ...], requests: dict[str, str], want: tuple[str, ...]) -> None:
    assert reasons(NodePressure().filter(info(pod("p", **requests)), ninfo(_pressured(node("n"), *conds)))) == want


def test_node_pressure_follows_node_updates() -> None:
    """The conditions are derived once per node update (not per decision): an update is seen."""
    ni, pi, plugin = ninfo(node("n")), info(pod("p", cpu="100m")), NodePressure()
    assert plugin.filter(pi, ni) is None
    ni.set_node(_pressured(node("n"), ("DiskPressure", "True")))
    assert reasons(plugin.filter(pi, ni)) == ("node(s) had disk pressure",)
    ni.set_node(node("n"))
    assert plugin.filter(pi, ni) is None


# ------------------------------------------------------------------ NodeResourcesFit

@pytest.mark.parametrize(("kw", "want"), [
    ({"pod_cpu": 500, "pod_mem": 0, "alloc_cpu": 1000, "req_cpu": 500}, ()),
    ({"pod_cpu": 501, "pod_mem": 0, "alloc_cpu": 1000, "req_cpu": 500}, ("Insufficient cpu",)),
    ({"pod_cpu": 0, "pod_mem": 2, "alloc_mem": 3, "req_mem": 2}, ("Insufficient memory",)),
    ({"pod_cpu": 0, "pod_mem": 0, "alloc_cpu": 0, "req_cpu": 5000}, ()),
    ({"pod_cpu": 1, "pod_mem": 1, "alloc_pods": 3, "pod_count": 3}, ("Too many pods", "Insufficient cpu",
                                                                    "Insufficient memory")),
], ids=["exact-fit", "cpu", "memory", "zero-request-always-fits", "all-three"])
def test_insufficient(kw: dict[str, int], want: tuple[str, ...]) -> None:
    args = {"alloc_cpu": 0, "alloc_mem": 0, "alloc_pods": 110, "req_cpu": 0, "req_mem": 0, "pod_count": 0, **kw}
    assert insufficient(args.pop("pod_cpu"), args.pop("pod_mem"), **args) == want


def test_node_resources_fit_counts_pods_already_there() -> None:
    n = ninfo(node("n", cpu="2", memory="1Gi"), pod("a", cpu="1500m"), pod("b", memory="512Mi"))
    fit = NodeResourcesFit()
    assert fit.filter(info(pod("p", cpu="500m", memory="512Mi")), n) is None
    assert reasons(fit.filter(info(pod("p", cpu="501m")), n)) == ("Insufficient cpu",)
    assert reasons(fit.filter(info(pod("p", memory="513Mi")), n)) == ("Insufficient memory",)
    n.remove_pod(n.pods["default/a"])
    assert fit.filter(info(pod("p", cpu="2")), n) is None


# ------------------------------------------------------------------ NodeSelector

@pytest.mark.parametrize(("selector", "node_labels", "want"), [
    ({}, {}, ()),
    ({"disk": "ssd"}, {"disk": "ssd", "zone": "a"}, ()),
    ({"disk": "ssd"}, {"disk": "hdd"}, ("node(s) didn't match node selector",)),
    ({"disk": "ssd", "zone": "a"}, {"disk": "ssd"}, ("node(s) didn't match node selector",)),
], ids=["none", "match", "mismatch", "partial"])
def test_node_selector(selector: dict[str, str], node_labels: dict[str, str], want: tuple[str, ...]) -> None:
    plugin, pi = NodeSelector(), info(pod("p", node_selector=selector))
    assert plugin.pre_filter(pi) == bool(selector)
    assert reasons(plugin.filter(pi, ninfo(node("n", labels=node_labels)))) == want


# ------------------------------------------------------------------ TaintToleration

GPU = t.Taint(key="gpu", value="yes", effect="NoSchedule")
UNTOLERATED = ("node(s) had untolerated taint {gpu: yes}",)
SOFT = t.Taint(key="spot", value="", effect="PreferNoSchedule")


@pytest.mark.parametrize(("node_taints", "tolerations", "want"), [
    ((), (), ()),
    ((GPU,), (), UNTOLERATED),
    ((GPU,), (t.Toleration(key="gpu", value="yes", effect="NoSchedule"),), ()),
    ((GPU,), (t.Toleration(key="gpu", operator="Exists"),), ()),
    ((GPU,), (t.Toleration(key="gpu", value="no"),), UNTOLERATED),
    ((GPU,), (t.Toleration(key="gpu", value="yes", effect="NoExecute"),), UNTOLERATED),
    ((SOFT,), (), ()),
], ids=["none", "untolerated", "equal", "exists", "wrong-value", "wrong-effect", "soft-only"])
def test_taint_toleration_filter(node_taints: tuple[t.Taint, ...], tolerations: tuple[t.Toleration, ...],
                                 want: tuple[str, ...]) -> None:
    n = ninfo(node("n", taints=node_taints))
    assert reasons(TaintToleration().filter(info(pod("p", tolerations=tolerations)), n)) == want


def test_taint_toleration_score_prefers_fewer_soft_taints() -> None:
    assert count_intolerable_soft_taints([SOFT], []) == 1
    assert count_intolerable_soft_taints([SOFT], [t.Toleration(key="spot", operator="Exists")]) == 0
    plugin, pi = TaintToleration(), info(pod("p"))
    scores = [plugin.score(pi, ninfo(node("a", taints=(SOFT,)))), plugin.score(pi, ninfo(node("b")))]
    plugin.normalize(pi, scores)
    assert scores == [0, 100]


# ------------------------------------------------------------------ NodePorts

@pytest.mark.parametrize(("wanted", "used", "want"), [
    ((("TCP", "0.0.0.0", 80),), {}, False),
    ((("TCP", "0.0.0.0", 80),), {("TCP", 80): ["0.0.0.0"]}, True),
    ((("UDP", "0.0.0.0", 80),), {("TCP", 80): ["0.0.0.0"]}, False),
    ((("TCP", "10.0.0.1", 80),), {("TCP", 80): ["10.0.0.2"]}, False),
    ((("TCP", "10.0.0.1", 80),), {("TCP", 80): ["0.0.0.0"]}, True),
    ((("TCP", "0.0.0.0", 80),), {("TCP", 80): ["10.0.0.2"]}, True),
], ids=["free", "taken", "other-protocol", "other-ip", "wildcard-used", "wildcard-wanted"])
def test_port_conflicts(wanted: tuple[tuple[str, str, int], ...], used: dict[tuple[str, int], list[str]],
                        want: bool) -> None:
    assert conflicts(wanted, used) == want


def test_node_ports_filter_and_skip() -> None:
    plugin = NodePorts()
    assert not plugin.pre_filter(info(pod("p")))
    n = ninfo(node("n"), pod("web", host_ports=(8080,)))
    pi = info(pod("p", host_ports=(8080,)))
    assert reasons(plugin.filter(pi, n)) == ("node(s) didn't have free ports for the requested pod ports",)
    n.remove_pod(n.pods["default/web"])
    assert plugin.filter(pi, n) is None


# ------------------------------------------------------------------ scores

@pytest.mark.parametrize(("requested", "allocatable", "want"), [
    (0, 4000, 100), (1000, 4000, 75), (4000, 4000, 0), (5000, 4000, 0), (10, 0, 0),
], ids=["empty", "quarter", "full", "over", "no-capacity"])
def test_least_requested_score(requested: int, allocatable: int, want: int) -> None:
    assert least_requested_score(requested, allocatable) == want


def test_least_allocated_prefers_the_emptier_node_with_nonzero_defaults() -> None:
    plugin, pi = LeastAllocated(), info(pod("p"))  # no requests: counts as 100m / 200Mi
    empty = ninfo(node("a", cpu="1", memory="1000Mi"))
    busy = ninfo(node("b", cpu="1", memory="1000Mi"), pod("x"), pod("y"))
    assert plugin.score(pi, empty) == (90 + 80) // 2
    assert plugin.score(pi, busy) < plugin.score(pi, empty)


@pytest.mark.parametrize(("cpu", "mem", "want"), [
    (0.5, 0.5, 100), (0.2, 0.6, 80), (1.0, 0.0, 50), (1.5, 0.5, 75),
], ids=["balanced", "skewed", "extreme", "capped"])
def test_balanced_score(cpu: float, mem: float, want: int) -> None:
    assert balanced_score(cpu, mem) == want


def test_balanced_allocation_plugin() -> None:
    n = ninfo(node("n", cpu="1", memory="1000Mi"))
    assert BalancedAllocation().score(info(pod("p", cpu="400m", memory="400Mi")), n) == 100


def test_owner_spread_prefers_nodes_with_fewer_siblings() -> None:
    assert spread_scores([0, 1, 2]) == [100, 50, 0]
    assert spread_scores([0, 0]) == [100, 100]
    owner = t.ReplicaSet(metadata=t.ObjectMeta(name="rs", uid="rs-uid"), kind="ReplicaSet")
    n1 = ninfo(node("a"), pod("s1", owner=owner), pod("s2", owner=owner))
    n2 = ninfo(node("b"), pod("other"))
    plugin, pi = OwnerSpread(), info(pod("new", owner=owner))
    scores = [plugin.score(pi, n1), plugin.score(pi, n2)]
    plugin.normalize(pi, scores)
    assert scores == [0, 100]


# ------------------------------------------------------------------ framework

def test_fit_message() -> None:
    assert fit_message(3, Counter({"Insufficient cpu": 2, "node(s) didn't match node selector": 1})) == (
        "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) didn't match node selector.")
    assert fit_message(0, Counter()) == "0/0 nodes are available: no nodes available to schedule pods."


@pytest.mark.parametrize(("nodes", "pct", "want"), [
    (50, 0, 50), (100, 0, 100), (1000, 0, 420), (5000, 0, 500), (10000, 0, 500), (1000, 10, 100), (1000, 100, 1000),
], ids=["small", "hundred", "1k", "5k", "10k", "explicit", "all"])
def test_num_feasible_nodes_to_find(nodes: int, pct: int, want: int) -> None:
    assert num_feasible_nodes_to_find(nodes, pct) == want


def test_score_all_equals_score_per_node() -> None:
    """The batched hot path must agree with the per-node definition, for every score plugin."""
    owner = t.ReplicaSet(metadata=t.ObjectMeta(name="rs", uid="rs-uid"), kind="ReplicaSet")
    nodes = [ninfo(node("a", cpu="2", memory="1Gi"), pod("x", cpu="1", owner=owner)),
             ninfo(node("b", cpu="1", memory="4Gi", taints=(SOFT,))),
             ninfo(node("c", cpu="500m", memory="100Mi"), pod("y", cpu="1", memory="1Gi")),
             ninfo(node("d", cpu="0", memory="0"))]
    for p in (pod("p", cpu="250m", memory="64Mi", owner=owner), pod("q"), pod("r", cpu="4")):
        pi = info(p)
        for plugin in (LeastAllocated(), BalancedAllocation(), OwnerSpread(), TaintToleration()):
            assert plugin.score_all(pi, nodes) == [plugin.score(pi, n) for n in nodes], plugin.name
