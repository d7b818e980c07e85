"""PolicyBuilder: step by step, incremental builds equal a fresh `plan`, and Changes name every chain that differs.

One scenario (the truth table's namespaces x, y, z and pods a, b, c on nodes n1 and n2, plus
policies using every kind of peer and named ports) is applied change by change to a builder per
node, as the enforcer does; after every step each builder's chains must equal a fresh full plan
of the same objects, and its Changes must name every chain that differs from its previous build.
The mutants below each skip one recompute; every one must make the scenario fail, which shows
that the scenario reaches what each recompute is for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from netproxy.iptables.command import MemoryIptables
from netproxy.iptables.ruleset import ChainEdit, ChainKey, Ruleset
from netproxy.iptables.writer import RulesetWriter
from netproxy.netpol.builder import Key, PolicyBuilder
from netproxy.netpol.plan import HOOKS, PREFIXES, PodInfo, plan, pod_info
from skiffpb.api.v1 import types_pb2 as t
from tests.support.netpol_cases import ALL, NAMESPACES, namespace_object, pod_object, policy

NODES = ("n1", "n2")

# One change: ("policy", "ns/name", object or None), ("pod", "ns/name", Pod or None),
# ("namespace", "name", Namespace or None).
Change = tuple[str, str, Any]


def _pod(name: str, node: str = "", ip: str = "", labels: dict[str, str] | None = None,
         port_81: int = 81) -> t.Pod:
    p = pod_object(name if name in ALL else "x/a", labels)
    ns, short = name.split("/")
    p.metadata.namespace, p.metadata.name, p.metadata.labels["pod"] = ns, short, short
    if labels:
        p.metadata.labels.update(labels)
    if node:
        p.spec.node_name = node
    if ip:
        p.status.pod_ip = ip
    for port in p.spec.containers[0].ports:
        if port.container_port == 81:
            port.container_port = port_81
    return p


def _np(name: str, ns: str, spec: dict[str, Any]) -> t.NetworkPolicy:
    return policy(name, ns, spec)


A = {"matchLabels": {"pod": "a"}}
STEPS: list[tuple[str, list[Change]]] = [
    ("policy-add-default-deny", [("policy", "x/deny", _np("deny", "x", {"podSelector": {}}))]),
    ("policy-add-pod-peer", [("policy", "x/from-b", _np("from-b", "x", {"podSelector": A, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))]),
    ("policy-update-port", [("policy", "x/from-b", _np("from-b", "x", {"podSelector": A, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}))]),
    ("policy-add-namespace-peer", [("policy", "y/from-team", _np("from-team", "y", {
        "podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}},
                       "podSelector": {"matchLabels": {"role": "client"}}}]}]}))]),
    ("namespace-relabel-into-peer", [("namespace", "z", namespace_object("z", {"team": "blue"}))]),
    ("pod-relabel-into-peer", [("pod", "z/b", _pod("z/b", labels={"role": "client"}))]),
    ("pod-add-peer", [("pod", "z/d", _pod("z/d", node="n2", ip="10.244.2.40", labels={"role": "client"}))]),
    ("pod-add-selected-local", [("pod", "x/e", _pod("x/e", node="n1", ip="10.244.1.41", labels={"pod": "a"}))]),
    ("pod-relabel-out-of-selection", [("pod", "x/a", _pod("x/a", labels={"pod": "z"}))]),
    ("pod-moves-node", [("pod", "x/e", _pod("x/e", node="n2", ip="10.244.2.41"))]),
    ("pod-ip-changes", [("pod", "x/c", _pod("x/c", ip="10.244.1.99"))]),
    ("namespace-relabel-out-of-peer", [("namespace", "z", namespace_object("z"))]),
    ("policy-named-port-ingress", [("policy", "y/named", _np("named", "y", {
        "podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))]),
    ("pod-named-port-changes", [("pod", "y/b", _pod("y/b", port_81=8181))]),
    ("policy-named-port-egress-to-every-pod", [("policy", "z/egress", _np("egress", "z", {
        "podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-81-tcp"}]}]}))]),
    ("pod-elsewhere-named-port-changes", [("pod", "x/b", _pod("x/b", port_81=9181))]),
    ("policy-named-port-egress-ipblock", [("policy", "z/block", _np("block", "z", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "egress": [
            {"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}],
             "ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]}))]),
    ("pod-deleted-peer", [("pod", "z/d", None)]),
    ("pod-deleted-selected", [("pod", "x/e", None), ("pod", "y/c", None)]),
    ("policy-types-change", [("policy", "x/deny", _np("deny", "x", {"podSelector": {},
                                                                    "policyTypes": ["Ingress", "Egress"]}))]),
    ("several-at-once", [("namespace", "w", namespace_object("w", {"team": "blue"})),
                         ("pod", "w/a", _pod("w/a", node="n1", ip="10.244.1.50", labels={"role": "client"})),
                         ("policy", "x/from-b", None)]),
    ("namespace-deleted", [("namespace", "w", None)]),
    ("policy-deleted", [("policy", "y/from-team", None), ("policy", "x/deny", None)]),
    ("nothing", []),
]


class Cluster:
    """The objects in force, as the informers would hold them."""

    def __init__(self) -> None:
        self.policies: dict[str, t.NetworkPolicy] = {}
        self.pods: dict[str, t.Pod] = {p: pod_object(p) for p in ALL}
        self.namespaces: dict[str, t.Namespace] = {n: namespace_object(n) for n in NAMESPACES}

    def apply(self, change: Change) -> None:
        kind, key, obj = change
        store: dict[str, Any] = {"policy": self.policies, "pod": self.pods, "namespace": self.namespaces}[kind]
        if obj is None:
            store.pop(key, None)
        else:
            store[key] = obj

    def plan(self, node: str) -> dict[ChainKey, tuple[str, ...]]:
        return plan(self.policies.values(), self.pods.values(), self.namespaces.values(), node).frozen()


def _tell(builder: PolicyBuilder, change: Change) -> None:
    kind, key, obj = change
    if kind == "namespace":
        builder.set_namespace(key, obj.metadata.labels if obj is not None else None)
        return
    ns, name = key.split("/")
    if kind == "policy":
        builder.set_policy((ns, name), obj)
    else:
        builder.set_pod((ns, name), pod_info(obj) if obj is not None else None)


def run_scenario(make: Callable[[str], PolicyBuilder]) -> list[str]:
    """Every step; what differed from a fresh plan (empty: the builders were right throughout)."""
    cluster = Cluster()
    builders = {n: make(n) for n in NODES}
    for b in builders.values():
        b.rebuild(cluster.policies.values(), cluster.pods.values(), cluster.namespaces.values())
    previous = {n: b.build()[0] for n, b in builders.items()}
    wrong: list[str] = []
    for step, changes in STEPS:
        for change in changes:
            cluster.apply(change)
            for b in builders.values():
                _tell(b, change)
        for n, b in builders.items():
            rs, since = b.build()
            got, want = rs.frozen(), cluster.plan(n)
            diff = sorted(k[1] for k in got.keys() | want.keys() if got.get(k) != want.get(k))
            if diff:
                wrong.append(f"{step} on {n}: chains differ from a fresh plan: {diff}")
            before = previous[n].frozen()
            differ = {k for k in got.keys() | before.keys() if got.get(k) != before.get(k)}
            if since is None or since.base is not before or not differ <= since.keys:
                wrong.append(f"{step} on {n}: Changes miss {sorted(differ - (since.keys if since else set()))}")
            if sum(rs.rule_count().values()) != sum(len(v) for v in got.values()):
                wrong.append(f"{step} on {n}: rule count {rs.rule_count()} is off")
            previous[n] = rs
    return wrong


def test_every_step_equals_a_fresh_plan() -> None:
    assert run_scenario(PolicyBuilder) == []


def test_the_scenario_exercises_both_nodes() -> None:
    """Guards the scenario itself: each node ends up with pod and policy chains, and steps change them."""
    cluster = Cluster()
    sizes = []
    for _, changes in STEPS:
        for change in changes:
            cluster.apply(change)
        sizes.append({n: len(cluster.plan(n)) for n in NODES})
    assert all(max(s[n] for s in sizes) > 5 for n in NODES)
    assert len({tuple(s.values()) for s in sizes}) > 5


# ---------------------------------------------------------------------------- mutants: one recompute skipped


class _NoPolicyReachedByPods(PolicyBuilder):
    def _reached_by(self, pod: PodInfo) -> list[Key]:
        return []


class _NoPeerPolicyReachedByPods(PolicyBuilder):
    def _reached_by(self, pod: PodInfo) -> list[Key]:
        lab = pod.label_map()
        return [k for k in super()._reached_by(pod) if self._policies[k].selects(pod, lab)]


class _NoEveryPodPolicies(PolicyBuilder):
    def _reached_by(self, pod: PodInfo) -> list[Key]:
        return [k for k in super()._reached_by(pod) if k not in self._every_pod]


class _NamespacesReachNothing(PolicyBuilder):
    def set_namespace(self, name: str, ns_labels: Any) -> None:
        before = set(self._dirty_policies)
        super().set_namespace(name, ns_labels)
        self._dirty_policies = before


class _SelectionDirtiesNoPod(PolicyBuilder):
    def _build_policy(self, key: Key, edit: ChainEdit, dirty_pods: set[Key]) -> None:
        super()._build_policy(key, edit, set())


class _MainNeverRejoined(PolicyBuilder):
    def _build_pod(self, key: Key, edit: ChainEdit) -> bool:
        super()._build_pod(key, edit)
        return False


class _ChangesEmpty(PolicyBuilder):
    def build(self) -> tuple[Ruleset, Any]:
        rs, since = super().build()
        return rs, (type(since)(since.base, frozenset()) if since is not None else None)


@pytest.mark.parametrize("mutant", [
    _NoPolicyReachedByPods, _NoPeerPolicyReachedByPods, _NoEveryPodPolicies, _NamespacesReachNothing,
    _SelectionDirtiesNoPod, _MainNeverRejoined, _ChangesEmpty,
], ids=["pods-reach-no-policy", "pods-reach-only-selecting-policies", "no-every-pod-policies",
        "namespaces-reach-nothing", "selection-dirties-no-pod", "main-never-rejoined", "changes-empty"])
def test_a_skipped_recompute_fails_the_scenario(mutant: Callable[[str], PolicyBuilder]) -> None:
    assert run_scenario(mutant) != []


# ---------------------------------------------------------------------------- the writer diffs only named chains


async def test_writer_gets_only_the_changed_chains() -> None:
    """One policy's port changes among many: one restore, writing that policy's chain only."""
    cluster = Cluster()
    for i in range(20):
        cluster.apply(("policy", f"x/p{i}", _np(f"p{i}", "x", {"podSelector": A, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 1000 + i}]}]})))
    ipt = MemoryIptables()
    writer = RulesetWriter(ipt, max_chains=None, hooks=HOOKS, prefixes=PREFIXES, hooks_first=True)
    b = PolicyBuilder("n1")
    b.rebuild(cluster.policies.values(), cluster.pods.values(), cluster.namespaces.values())
    rs, since = b.build()
    await writer.write(rs, full=True, since=since)
    change: Change = ("policy", "x/p7", _np("p7", "x", {"podSelector": A, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 7777}]}]}))
    cluster.apply(change)
    _tell(b, change)
    rs, since = b.build()
    assert since is not None and len(since.keys) == 1
    before = len(ipt.restored)
    w = await writer.write(rs, since=since)
    assert (w.restores, w.chains_written, w.chains_deleted) == (1, 1, 0)
    assert len(ipt.restored) == before + 1 and "7777" in ipt.restored[-1]
    assert {k: tuple(v) for k, v in ipt.chains.items() if k[1].startswith("SKIFF-")} == cluster.plan("n1")
