"""DaemonSet controller: eligible nodes, one pod per node, rolling update with maxUnavailable/maxSurge,
history (ControllerRevisions), and sync against the in-process api-server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controlplane.controllers import daemonset as dsc
from controlplane.controllers import history
from controlplane.controllers.daemonset import DaemonSetController
from skiff import taints
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, node, pod

NOW = 10_000.0
HASH = "newhash"


def daemonset(*, selector: dict[str, str] | None = None, tolerations: tuple[t.Toleration, ...] = (),
              surge: int | None = None, unavailable: int | None = None, on_delete: bool = False,
              min_ready: int = 0, image: str = "img:1") -> t.DaemonSet:
    ds = t.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    ds.metadata.name, ds.metadata.namespace = "agent", "default"
    ds.spec.selector.match_labels["app"] = "agent"
    ds.spec.template.metadata.labels["app"] = "agent"
    ds.spec.template.spec.containers.add(name="c", image=image)
    ds.spec.template.spec.node_selector.update(selector or {})
    ds.spec.template.spec.tolerations.extend(tolerations)
    ds.spec.min_ready_seconds = min_ready
    ds.spec.update_strategy.type = "OnDelete" if on_delete else "RollingUpdate"
    if surge is not None:
        ds.spec.update_strategy.rolling_update.max_surge.int_val = surge
    if unavailable is not None:
        ds.spec.update_strategy.rolling_update.max_unavailable.int_val = unavailable
    return ds


def dpod(name: str, node_name: str, *, hash_: str = HASH, ready: bool = True, phase: str = "Running",
         created: float = 1.0, deleting: bool = False) -> t.Pod:
    p = pod(name, node=node_name, phase=phase, ready=ready, created=created, labels={"app": "agent"})
    p.metadata.labels[dsc.REVISION_HASH] = hash_
    if deleting:
        p.metadata.deletion_timestamp.FromSeconds(int(NOW))
    return p


NO_SCHEDULE = t.Taint(key="dedicated", value="db", effect="NoSchedule")
PREFER = t.Taint(key="soft", effect="PreferNoSchedule")


@pytest.mark.parametrize(("ds", "n", "want"), [
    (daemonset(), node("n1"), True),
    (daemonset(selector={"disk": "ssd"}), node("n1", labels={"disk": "ssd"}), True),
    (daemonset(selector={"disk": "ssd"}), node("n1", labels={"disk": "hdd"}), False),
    (daemonset(), node("n1", taints=(NO_SCHEDULE,)), False),
    (daemonset(tolerations=(t.Toleration(key="dedicated", operator="Exists"),)), node("n1", taints=(NO_SCHEDULE,)),
     True),
    (daemonset(), node("n1", taints=(PREFER,)), True),
    (daemonset(), node("n1", taints=(t.Taint(key=taints.NOT_READY, effect="NoExecute"),)), True),
    (daemonset(), node("n1", unschedulable=True, taints=(t.Taint(key=taints.UNSCHEDULABLE, effect="NoSchedule"),)),
     True),
], ids=["plain", "selector-match", "selector-mismatch", "untolerated-taint", "tolerated-taint", "soft-taint",
        "not-ready-tolerated-by-default", "unschedulable-still-runs"])
def test_should_run(ds: t.DaemonSet, n: t.Node, want: bool) -> None:
    assert dsc.should_run(dsc.pod_template(ds), n) is want


@dataclass
class Case:
    id: str
    ds: t.DaemonSet
    nodes: list[t.Node]
    pods: list[t.Pod]
    create: list[str]
    delete: list[str] = field(default_factory=list)
    status: tuple[int, int, int, int, int] = (-1, 0, 0, 0, 0)  # desired, current, misscheduled, ready, updated


N3 = [node("n1"), node("n2"), node("n3")]
CASES = [
    Case("every node gets one", daemonset(), N3, [], ["n1", "n2", "n3"], status=(3, 0, 0, 0, 0)),
    Case("only the missing node", daemonset(), N3, [dpod("a", "n1"), dpod("b", "n2")], ["n3"],
         status=(3, 2, 0, 2, 2)),
    Case("ineligible node: its pod goes", daemonset(selector={"role": "edge"}),
         [node("n1", labels={"role": "edge"}), node("n2")], [dpod("a", "n1"), dpod("b", "n2")], [], ["b"],
         status=(1, 1, 1, 1, 1)),
    Case("two on a node: the oldest stays", daemonset(), [node("n1")],
         [dpod("old", "n1", created=1), dpod("young", "n1", created=5)], [], ["young"]),
    Case("a failed pod is deleted and replaced later", daemonset(), [node("n1")],
         [dpod("a", "n1", phase="Failed", ready=False)], [], ["a"]),
    # As Kubernetes does: a terminating pod does not count, its replacement starts at once.
    Case("a terminating pod is replaced", daemonset(), [node("n1")], [dpod("a", "n1", deleting=True)], ["n1"]),
    Case("rolling: maxUnavailable 1 replaces one old pod at a time", daemonset(unavailable=1), N3,
         [dpod("a", "n1", hash_="old"), dpod("b", "n2", hash_="old"), dpod("c", "n3", hash_="old")], [], ["a"],
         status=(3, 3, 0, 3, 0)),
    Case("rolling: budget spent while a node has no available pod", daemonset(unavailable=1), N3,
         [dpod("a", "n1", ready=False), dpod("b", "n2", hash_="old"), dpod("c", "n3", hash_="old")], []),
    Case("rolling: an unavailable old pod goes at no cost, but uses the budget", daemonset(unavailable=1), N3,
         [dpod("a", "n1", hash_="old", ready=False), dpod("b", "n2", hash_="old"), dpod("c", "n3", hash_="old")],
         [], ["a"]),
    Case("rolling: unavailable old pods all go", daemonset(unavailable=1), N3,
         [dpod("a", "n1", hash_="old", ready=False), dpod("b", "n2", hash_="old", ready=False),
          dpod("c", "n3", hash_="old")], [], ["a", "b"]),
    Case("rolling: maxUnavailable 2", daemonset(unavailable=2), N3,
         [dpod("a", "n1", hash_="old"), dpod("b", "n2", hash_="old"), dpod("c", "n3", hash_="old")], [], ["a", "b"]),
    Case("surge: new pod beside the old one", daemonset(surge=1, unavailable=0), N3,
         [dpod("a", "n1", hash_="old"), dpod("b", "n2", hash_="old"), dpod("c", "n3", hash_="old")], ["n1"]),
    Case("surge: old goes once the new one is available", daemonset(surge=1, unavailable=0), N3,
         [dpod("a", "n1", hash_="old", created=1), dpod("a2", "n1", created=2), dpod("b", "n2", hash_="old"),
          dpod("c", "n3", hash_="old")], ["n2"], ["a"]),
    Case("surge: a new pod not yet ready holds the budget", daemonset(surge=1, unavailable=0), N3,
         [dpod("a", "n1", hash_="old", created=1), dpod("a2", "n1", created=2, ready=False),
          dpod("b", "n2", hash_="old"), dpod("c", "n3", hash_="old")], []),
    Case("OnDelete: old pods stay", daemonset(on_delete=True), N3,
         [dpod("a", "n1", hash_="old"), dpod("b", "n2", hash_="old")], ["n3"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_daemonset(case: Case) -> None:
    by_node: dict[str, list[t.Pod]] = {}
    for p in case.pods:
        by_node.setdefault(p.spec.node_name, []).append(p)
    plan = dsc.plan_daemonset(case.ds, case.nodes, by_node, NOW, current_hash=HASH)
    assert sorted(plan.create) == sorted(case.create)
    assert sorted(p.metadata.name for p in plan.delete) == sorted(case.delete)
    if case.status[0] >= 0:
        s = plan.status
        got = (s.desired_number_scheduled, s.current_number_scheduled, s.number_misscheduled, s.number_ready,
               s.updated_number_scheduled)
        assert got == case.status


def revision(name: str, number: int, hash_: str) -> t.ControllerRevision:
    r = t.ControllerRevision(revision=number)
    r.metadata.name, r.metadata.namespace = name, "default"
    r.metadata.labels[history.REVISION_HASH] = hash_
    return r


@pytest.mark.parametrize(("existing", "in_use", "limit", "create", "renumber", "delete"), [
    ([], set(), 10, 1, None, []),
    ([revision("agent-h1", 1, "h1")], set(), 10, 2, None, []),
    ([revision("agent-h1", 1, "h1"), revision("agent-cur", 2, "cur")], set(), 10, None, None, []),
    ([revision("agent-cur", 1, "cur"), revision("agent-h2", 2, "h2")], set(), 10, None, 3, []),
    ([revision("agent-h1", 1, "h1"), revision("agent-h2", 2, "h2"), revision("agent-h3", 3, "h3")], set(), 1,
     4, None, ["agent-h1", "agent-h2"]),
    ([revision("agent-h1", 1, "h1"), revision("agent-h2", 2, "h2"), revision("agent-h3", 3, "h3")], {"h1"}, 1,
     4, None, ["agent-h2", "agent-h3"]),  # h1 is kept: pods still run it
], ids=["first", "new-template", "unchanged", "rollback-renumbers", "history-limit", "in-use-kept"])
def test_plan_revisions(existing: list[t.ControllerRevision], in_use: set[str], limit: int, create: int | None,
                        renumber: int | None, delete: list[str]) -> None:
    ds = daemonset()
    ds.spec.revision_history_limit = limit
    made, renumbered, dropped = history.plan_revisions(ds, ds.spec.template, existing, "cur", in_use | {"cur"})
    assert (made.revision if made else None) == create
    assert (renumbered.revision if renumbered else None) == renumber
    assert dropped == delete
    if made is not None:
        assert made.metadata.name == "agent-cur" and made.data.spec.template == ds.spec.template


# ---------------------------------------------------------------- sync on the in-process api-server


async def start(cluster: Cluster, ds: t.DaemonSet, *nodes: t.Node) -> DaemonSetController:
    ctrl = DaemonSetController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    for n in nodes:
        await cluster.create(n)
    await cluster.create(ds)
    await cluster.start()
    return ctrl


async def pods_by_node(cluster: Cluster) -> dict[str, list[t.Pod]]:
    out: dict[str, list[t.Pod]] = {}
    for p in (await cluster.api.list(t.Pod, namespace="default")).items:
        if not p.metadata.HasField("deletion_timestamp"):
            out.setdefault(p.spec.node_name, []).append(p)
    return out


async def make_ready(cluster: Cluster) -> None:
    for p in (await cluster.api.list(t.Pod, namespace="default")).items:
        p.status.phase = "Running"
        p.status.conditions.add(type="Ready", status="True")
        await cluster.api.update_status(p)


async def test_one_pod_per_node_and_a_new_node_gets_one(cluster: Cluster) -> None:
    ctrl = await start(cluster, daemonset(tolerations=(t.Toleration(key="dedicated", operator="Exists"),)),
                       node("n1"), node("n2", taints=(NO_SCHEDULE,)))
    await cluster.drain(ctrl)
    placed = await pods_by_node(cluster)
    assert {n: len(ps) for n, ps in placed.items()} == {"n1": 1, "n2": 1}
    p = placed["n1"][0]
    assert p.metadata.owner_references[0].kind == "DaemonSet"
    assert {(tol.key, tol.effect) for tol in p.spec.tolerations} >= {(taints.NOT_READY, "NoExecute"),
                                                                    (taints.UNREACHABLE, "NoExecute")}
    await cluster.api.create(node("n3"))
    await cluster.drain(ctrl)
    assert sorted(await pods_by_node(cluster)) == ["n1", "n2", "n3"]
    await make_ready(cluster)
    await cluster.drain(ctrl)
    ds = await cluster.api.get(t.DaemonSet, "agent", "default")
    assert (ds.status.desired_number_scheduled, ds.status.number_ready, ds.status.number_available) == (3, 3, 3)
    revs = (await cluster.api.list(t.ControllerRevision, namespace="default")).items
    assert [r.revision for r in revs] == [1]


async def test_rolling_update_replaces_pods_one_node_at_a_time(cluster: Cluster) -> None:
    ctrl = await start(cluster, daemonset(unavailable=1), node("n1"), node("n2"))
    await cluster.drain(ctrl)
    await make_ready(cluster)
    await cluster.drain(ctrl)
    ds = await cluster.api.get(t.DaemonSet, "agent", "default")
    old_hash = dsc.template_hash(ds)
    ds.spec.template.spec.containers[0].image = "img:2"
    await cluster.api.update(ds)
    await cluster.drain(ctrl)
    # One old pod deleted (maxUnavailable 1; the api-server keeps it terminating on its bound node)
    # and its replacement created; the other node keeps its old pod until the new one is ready.
    pods = (await cluster.api.list(t.Pod, namespace="default")).items
    deleting = [p for p in pods if p.metadata.HasField("deletion_timestamp")]
    live = {p.spec.node_name: p.metadata.labels[history.REVISION_HASH] for p in pods
            if not p.metadata.HasField("deletion_timestamp")}
    assert len(deleting) == 1
    new_hash = dsc.template_hash(await cluster.api.get(t.DaemonSet, "agent", "default"))
    assert live == {deleting[0].spec.node_name: new_hash,
                    ({"n1", "n2"} - {deleting[0].spec.node_name}).pop(): old_hash}
    revs = sorted((await cluster.api.list(t.ControllerRevision, namespace="default")).items,
                  key=lambda r: r.revision)
    assert [r.metadata.labels[history.REVISION_HASH] for r in revs] == [old_hash, new_hash]
    assert [r.revision for r in revs] == [1, 2]
