"""Remembered verdicts (NodeInfo.verdicts): the same decisions as running every plugin, fewer plugin runs."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from controlplane.scheduler.framework import FitError, Status
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from controlplane.scheduler.plugins import default_filters, default_scores
from controlplane.scheduler.scheduler import Scheduler
from skiff import taints
from skiff.events import EventRecorder
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import node, pod

OWNER_A = t.ReplicaSet(kind="ReplicaSet", metadata=t.ObjectMeta(name="a", uid="uid-a"))
OWNER_B = t.ReplicaSet(kind="ReplicaSet", metadata=t.ObjectMeta(name="b", uid="uid-b"))
TOLERATE = t.Toleration(key="dedicated", operator="Equal", value="x", effect=taints.NO_SCHEDULE)


def info(p: t.Pod) -> PodInfo:
    p.metadata.uid = p.metadata.uid or f"uid-{p.metadata.name}"
    return PodInfo.of(p)


def scheduler(*, filters: list[Any] | None = None, scores: list[Any] | None = None) -> Scheduler:
    api = InProcessApi()  # never started: decisions only
    return Scheduler(api, InformerFactory(api), recorder=EventRecorder(api, "test"), rng=random.Random(7),
                     filters=filters, scores=scores)


def _labels(p: t.Pod) -> t.Pod:
    p.metadata.labels["extra"] = "label"
    return p


def _named(name: str) -> Callable[[t.Pod], t.Pod]:
    def rename(p: t.Pod) -> t.Pod:
        p.metadata.name = name
        return p
    return rename


@pytest.mark.parametrize(("change", "same"), [
    (_named("other"), True),
    (_labels, True),
    (lambda p: pod("p", cpu="200m", memory="64Mi", owner=OWNER_A), False),
    (lambda p: pod("p", cpu="100m", memory="65Mi", owner=OWNER_A), False),
    (lambda p: pod("p", cpu="100m", memory="64Mi", owner=OWNER_B), False),
    (lambda p: pod("p", cpu="100m", memory="64Mi"), False),
    (lambda p: pod("p", cpu="100m", memory="64Mi", owner=OWNER_A, host_ports=(80,)), False),
    (lambda p: pod("p", cpu="100m", memory="64Mi", owner=OWNER_A, node_selector={"disk": "ssd"}), False),
    (lambda p: pod("p", cpu="100m", memory="64Mi", owner=OWNER_A, tolerations=(TOLERATE,)), False),
    (lambda p: pod("p", owner=OWNER_A), False),  # BestEffort: NodePressure reads it
], ids=["name", "labels", "cpu", "memory", "owner", "no-owner", "host-port", "node-selector", "toleration",
        "best-effort"])
def test_signature_names_every_input_of_the_plugins(change: Callable[[t.Pod], t.Pod], same: bool) -> None:
    base = info(pod("p", cpu="100m", memory="64Mi", owner=OWNER_A))
    other = info(change(pod("p", cpu="100m", memory="64Mi", owner=OWNER_A)))
    assert (base.signature == other.signature) is same


@pytest.mark.parametrize("change", [
    lambda ni: ni.add_pod(info(pod("new", cpu="1"))),
    lambda ni: ni.remove_pod(next(iter(ni.pods.values()))),
    lambda ni: ni.set_node(node("n", cpu="8")),
], ids=["add-pod", "remove-pod", "node-update"])
def test_every_change_of_the_node_forgets_its_verdicts(change: Callable[[NodeInfo], None]) -> None:
    ni = NodeInfo("n")
    ni.set_node(node("n"))
    ni.add_pod(info(pod("old", cpu="1")))
    ni.remember("sig", (None, 3, 1, 2))
    change(ni)
    assert ni.verdicts == {}


class Counting:
    """A default plugin, counted; `memoizable` as given (False: the scheduler runs every plugin)."""

    def __init__(self, plugin: Any, calls: list[str], *, memo: bool) -> None:
        self.plugin, self.calls, self.memoizable = plugin, calls, memo
        self.name = plugin.name
        self.weight = getattr(plugin, "weight", 0)

    def pre_filter(self, p: PodInfo) -> bool:
        return bool(self.plugin.pre_filter(p))

    def filter(self, p: PodInfo, n: NodeInfo) -> Status | None:
        self.calls.append(self.name)
        status: Status | None = self.plugin.filter(p, n)
        return status

    def score(self, p: PodInfo, n: NodeInfo) -> int:
        self.calls.append(self.name)
        return int(self.plugin.score(p, n))

    def score_all(self, p: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        self.calls.extend([self.name] * len(nodes))
        return list(self.plugin.score_all(p, nodes))

    def normalize(self, p: PodInfo, scores: list[int]) -> None:
        self.plugin.normalize(p, scores)


def counted(*, memo: bool) -> tuple[Scheduler, list[str]]:
    calls: list[str] = []
    return scheduler(filters=[Counting(f, calls, memo=memo) for f in default_filters()],
                     scores=[Counting(s, calls, memo=memo) for s in default_scores()]), calls


def cluster_nodes(rng: random.Random, count: int) -> list[t.Node]:
    out = []
    for i in range(count):
        kind = rng.randrange(8)
        n = node(f"n{i:03d}", cpu=rng.choice(["1", "2", "4"]), memory=rng.choice(["1Gi", "4Gi"]),
                 pods=rng.choice(["2", "3"]), ready=kind != 0, unschedulable=kind == 1,
                 labels={"disk": "ssd"} if kind in (2, 3) else {},
                 taints=(t.Taint(key="dedicated", value="x", effect=taints.NO_SCHEDULE),) if kind == 4 else
                 (t.Taint(key="soft", effect=taints.PREFER_NO_SCHEDULE),) if kind == 5 else ())
        if kind == 6:
            n.status.conditions.add(type="MemoryPressure", status="True")
        out.append(n)
    return out


def cluster_pods(rng: random.Random, count: int) -> list[t.Pod]:
    out = []
    for i in range(count):
        shape = rng.randrange(6)
        out.append(pod(f"p{i:03d}", cpu=rng.choice(["", "100m", "500m"]), memory=rng.choice(["", "256Mi"]),
                       owner=rng.choice([OWNER_A, OWNER_B, None]), host_ports=(8080,) if shape == 0 else (),
                       node_selector={"disk": "ssd"} if shape == 1 else None,
                       tolerations=(TOLERATE,) if shape == 2 else ()))
    return out


def decide(sched: Scheduler, nodes: list[t.Node], pods: list[t.Pod]) -> list[str]:
    for n in nodes:
        sched.cache.add_node(n)
    out = []
    for i, p in enumerate(pods):
        pi = info(p)
        try:
            choice = sched.schedule(pi)
        except FitError as err:
            out.append(str(err))
            continue
        sched.cache.assume(pi, choice)
        out.append(choice)
        if i % 7 == 6:  # a node update now and then (a changed node forgets its verdicts)
            sched.cache.update_node(nodes[i % len(nodes)])
    return out


@pytest.mark.parametrize(("num_nodes", "num_pods"), [(20, 80), (150, 400)], ids=["all-examined", "sampled"])
def test_remembered_verdicts_decide_as_running_every_plugin(num_nodes: int, num_pods: int) -> None:
    """Mixed nodes (not ready, cordoned, labelled, tainted, pressured, small) and pod shapes: the
    same placements and FitError messages, in order, with and without remembered verdicts."""
    rng = random.Random(num_nodes)
    nodes, pods = cluster_nodes(rng, num_nodes), cluster_pods(rng, num_pods)
    remembered, memo_calls = counted(memo=True)
    plain, plain_calls = counted(memo=False)
    got = decide(remembered, nodes, pods)
    assert got == decide(plain, nodes, pods)
    assert any(g.startswith("0/") for g in got) and any(not g.startswith("0/") for g in got)
    assert len(memo_calls) < len(plain_calls)


def test_pods_of_one_shape_reuse_the_verdicts_of_unchanged_nodes() -> None:
    sched, calls = counted(memo=True)
    for i in range(50):  # under 100 nodes every node is examined for every pod
        sched.cache.add_node(node(f"n{i:03d}"))
    first = info(pod("p0", cpu="100m", owner=OWNER_A))
    sched.cache.assume(first, sched.schedule(first))
    calls.clear()
    second = info(pod("p1", cpu="100m", owner=OWNER_A))
    sched.schedule(second)
    # Only the node the first pod went to is evaluated again (every filter, every score plugin).
    assert 0 < len(calls) <= len(default_filters()) + len(default_scores())
