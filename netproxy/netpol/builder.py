"""NetworkPolicy rules kept current one change at a time: `plan` at the cost of what changed.

`PolicyBuilder` holds the cluster as the planner sees it (policies, pods as `PodInfo`s,
namespace labels) and the chains it built from them. Each `set_policy` / `set_pod` /
`set_namespace` marks what that change can reach; `build()` recomputes only that and gives the
ruleset with the `ruleset.Changes` since the previous build, which the writer turns into a
restore of the changed chains only (the proxy's mechanism: `ruleset.ChainEdit`).

What must hold: after `rebuild(...)` and any sequence of set_* calls, `build()` gives a ruleset
whose chains equal `plan(...)`'s for the same objects, and Changes naming every chain that
differs from the previous build. What a change reaches:
- a policy: its own chains (SKIFF-PI/PE/PB); the chains of the local pods it selected before or
  selects now, when that selection or its directions changed (their lists of policies);
- a pod: every policy whose podSelector selects it on this node (before or after: the policy's
  chains exist only while it selects a local pod, and named ingress ports resolve against
  those pods), every policy with a peer matching it (before or after), every policy whose
  egress resolves named ports against all pods (no peers, or an ipBlock); and its own chains
  when it is local;
- a namespace's labels: every policy with a namespaceSelector peer matching them before or after.
Policies are indexed by namespace, and those with namespaceSelector peers or egress named ports
over all pods are kept apart, so a change checks only the policies that could care.
SKIFF-NETPOL is joined again only when a local pod's isolation (or its address) changed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netproxy.iptables.ruleset import ChainEdit, ChainKey, Changes, Ruleset
from netproxy.netpol.plan import (
    MAIN,
    Cluster,
    PodInfo,
    main_head,
    main_rule,
    pod_info,
    pod_rules,
    policy_chain,
    policy_rules,
)
from skiff import labels, networkpolicy
from skiff.networkpolicy import EGRESS, INGRESS
from skiffpb.api.v1 import types_pb2 as t

Key = tuple[str, str]  # (namespace, name) of a policy or a pod
DIRECTIONS = (EGRESS, INGRESS)  # SKIFF-NETPOL's order: a pod's egress jumps, then ingress jumps


@dataclass(frozen=True)
class _Policy:
    """A policy with what the index asks of it: its selector and the pods its peers can name."""

    policy: t.NetworkPolicy
    namespace: str
    name: str  # "ns/name", as rule comments name it
    chains: tuple[str, str]  # its chain per direction of DIRECTIONS
    selector: labels.Selector | None  # None: invalid, selects nothing (plan skips it)
    types: tuple[str, ...]
    same_ns_peers: tuple[labels.Selector, ...]  # pod selectors of peers without a namespaceSelector
    ns_peers: tuple[tuple[labels.Selector, labels.Selector], ...]  # (namespace, pod) selectors
    every_pod: bool  # egress named ports resolved against every pod (no peers, or an ipBlock)

    def selects(self, pod: PodInfo, lab: Mapping[str, str]) -> bool:
        return pod.namespace == self.namespace and self.selector is not None and labels.matches(self.selector, lab)

    def reaches(self, pod: PodInfo, lab: Mapping[str, str], ns_labels: Mapping[str, Mapping[str, str]],
                node: str) -> bool:
        """Whether the pod can appear in this policy's chains (selected here, a peer, or by port)."""
        if self.every_pod:
            return True
        if pod.node == node and self.selects(pod, lab):
            return True
        if pod.namespace == self.namespace and any(labels.matches(s, lab) for s in self.same_ns_peers):
            return True
        ns_lab = ns_labels.get(pod.namespace)
        return ns_lab is not None and any(labels.matches(n, ns_lab) and labels.matches(p, lab)
                                          for n, p in self.ns_peers)


def _compile(policy: t.NetworkPolicy) -> _Policy:
    try:
        selector: labels.Selector | None = labels.from_label_selector(policy.spec.pod_selector)
    except labels.SelectorError:
        selector = None
    same_ns: list[labels.Selector] = []
    ns_peers: list[tuple[labels.Selector, labels.Selector]] = []
    every_pod = False
    rules: list[tuple[bool, t.NetworkPolicyIngressRule | t.NetworkPolicyEgressRule]] = (
        [(False, r) for r in policy.spec.ingress] + [(True, r) for r in policy.spec.egress])
    for egress, rule in rules:
        peers = list(rule.to if isinstance(rule, t.NetworkPolicyEgressRule) else rule.from_)
        named = any(p.HasField("port") and p.port.WhichOneof("value") == "str_val" for p in rule.ports)
        if egress and named and (not peers or any(p.HasField("ip_block") for p in peers)):
            every_pod = True
        for peer in peers:
            if peer.HasField("ip_block"):
                continue
            try:
                pod_sel = (labels.from_label_selector(peer.pod_selector) if peer.HasField("pod_selector")
                           else labels.EVERYTHING)
                if peer.HasField("namespace_selector"):
                    ns_peers.append((labels.from_label_selector(peer.namespace_selector), pod_sel))
                else:
                    same_ns.append(pod_sel)
            except labels.SelectorError:
                every_pod = True  # cannot tell whom it names: any pod change reaches it
    ns = policy.metadata.namespace
    chains = (policy_chain(EGRESS, policy), policy_chain(INGRESS, policy))
    return _Policy(policy, ns, f"{ns}/{policy.metadata.name}", chains, selector,
                   networkpolicy.policy_types(policy.spec), tuple(same_ns), tuple(ns_peers), every_pod)


@dataclass(frozen=True)
class _Built:
    """What one policy contributed to the last build."""

    selected: tuple[Key, ...] = ()  # local pods it selects
    directions: tuple[str, ...] = ()  # the directions it has chains for (none when it selects none)
    chains: tuple[tuple[ChainKey, tuple[str, ...]], ...] = ()


class PolicyBuilder:
    """This node's NetworkPolicy ruleset, kept current between syncs (see the module docstring)."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.rebuild([], [], [])

    # ------------------------------------------------------------------ the cluster

    def rebuild(self, policies: Iterable[t.NetworkPolicy], pods: Iterable[t.Pod | PodInfo | None],
                namespaces: Iterable[t.Namespace]) -> None:
        """Forget everything and take these objects as the whole cluster; the next build is whole."""
        infos = [i for i in (p if isinstance(p, PodInfo) or p is None else pod_info(p) for p in pods)
                 if i is not None]
        self._ns_labels: dict[str, dict[str, str]] = {n.metadata.name: dict(n.metadata.labels) for n in namespaces}
        self.cluster = Cluster(infos, self._ns_labels)
        self.local = Cluster((p for p in infos if p.node == self.node_name), self._ns_labels)  # selectable pods
        self._policies: dict[Key, _Policy] = {}
        self._by_ns: dict[str, set[Key]] = {}
        self._ns_peer_policies: set[Key] = set()
        self._every_pod: set[Key] = set()
        for p in policies:
            self._index(_key(p), _compile(p))
        self._built_policies: dict[Key, _Built] = {}
        self._selecting: dict[Key, set[Key]] = {}  # local pod -> the policies whose last build selected it
        self._pod_chains: dict[Key, tuple[tuple[ChainKey, tuple[str, ...]], ...]] = {}
        self._main_lines: dict[Key, tuple[str | None, str | None]] = {}  # (egress, ingress) jump per local pod
        self._main_order: list[Key] = []  # the keys of _main_lines, sorted
        self._dirty_policies: set[Key] = set(self._policies)
        self._dirty_pods: set[Key] = {_key_of(p) for p in infos if p.node == self.node_name}
        self._built: Ruleset | None = None

    def set_policy(self, key: Key, policy: t.NetworkPolicy | None) -> None:
        """The policy `key` is now `policy` (None: deleted)."""
        self._unindex(key)
        if policy is not None:
            self._index(key, _compile(policy))
        self._dirty_policies.add(key)

    def set_pod(self, key: Key, info: PodInfo | None) -> None:
        """The pod `key` is now `info` (None: deleted, or no longer taking part)."""
        old = self.cluster.get(key)
        if old == info:
            return
        for pod in (old, info):
            if pod is None:
                continue
            self._dirty_policies.update(self._reached_by(pod))
            if pod.node == self.node_name:
                self._dirty_pods.add(key)
        self.local.remove(key)
        if info is None:
            self.cluster.remove(key)
        else:
            self.cluster.put(info)
            if info.node == self.node_name:
                self.local.put(info)

    def set_namespace(self, name: str, ns_labels: Mapping[str, str] | None) -> None:
        """The namespace `name` now has these labels (None: deleted)."""
        old = self._ns_labels.get(name)
        new = dict(ns_labels) if ns_labels is not None else None
        if old == new:
            return
        if name in self.cluster.by_ns:  # a namespace without pods names no peer
            for key in self._ns_peer_policies:
                if any(labels.matches(n, lab) for n, _ in self._policies[key].ns_peers
                       for lab in (old, new) if lab is not None):
                    self._dirty_policies.add(key)
        if new is None:
            del self._ns_labels[name]
        else:
            self._ns_labels[name] = new

    def _reached_by(self, pod: PodInfo) -> list[Key]:
        """The policies whose chains can name this pod (module docstring)."""
        lab = pod.label_map()
        candidates = self._by_ns.get(pod.namespace, set()) | self._ns_peer_policies | self._every_pod
        return [k for k in candidates if self._policies[k].reaches(pod, lab, self._ns_labels, self.node_name)]

    def _index(self, key: Key, p: _Policy) -> None:
        self._policies[key] = p
        self._by_ns.setdefault(key[0], set()).add(key)
        if p.ns_peers:
            self._ns_peer_policies.add(key)
        if p.every_pod:
            self._every_pod.add(key)

    def _unindex(self, key: Key) -> None:
        if self._policies.pop(key, None) is None:
            return
        in_ns = self._by_ns[key[0]]
        in_ns.discard(key)
        if not in_ns:
            del self._by_ns[key[0]]
        self._ns_peer_policies.discard(key)
        self._every_pod.discard(key)

    # ------------------------------------------------------------------ building

    def build(self) -> tuple[Ruleset, Changes | None]:
        """The ruleset now, and the Changes since the previous build (None after a rebuild)."""
        previous = self._built
        if previous is not None and not self._dirty_policies and not self._dirty_pods:
            return previous, Changes(previous.frozen(), frozenset())
        edit = ChainEdit(previous)
        dirty_pods, self._dirty_pods = self._dirty_pods, set()
        for key in self._dirty_policies:
            self._build_policy(key, edit, dirty_pods)
        self._dirty_policies = set()
        main_changed = previous is None
        for key in dirty_pods:
            main_changed = self._build_pod(key, edit) or main_changed
        if main_changed:
            lines = [(k, self._main_lines[k]) for k in self._main_order]
            edit.put(("filter", MAIN), main_head() + tuple(rule for d in (0, 1) for _, line in lines
                                                           if (rule := line[d]) is not None))
        self._built, changes = edit.seal()
        return self._built, changes

    def _build_policy(self, key: Key, edit: ChainEdit, dirty_pods: set[Key]) -> None:
        old = self._built_policies.pop(key, _Built())
        new = _Built()
        p = self._policies.get(key)
        if p is not None and p.selector is not None:
            selected = self.local.selected(key[0], p.selector)
            if selected:
                rs = Ruleset()
                directions = tuple(d for d in (INGRESS, EGRESS) if d in p.types)
                for direction in directions:
                    policy_rules(rs, direction, p.policy, selected, self.cluster)
                new = _Built(tuple(map(_key_of, selected)), directions,
                             tuple((k, tuple(v)) for k, v in rs.chains.items()))
        if new.chains:
            self._built_policies[key] = new
        chains = dict(new.chains)
        for k, _ in old.chains:
            if k not in chains:
                edit.put(k, None)
        for k, rules in new.chains:
            edit.put(k, rules)
        if (old.selected, old.directions) != (new.selected, new.directions):
            dirty_pods.update(old.selected, new.selected)
            for pod in old.selected:
                self._selecting[pod].discard(key)
                if not self._selecting[pod]:
                    del self._selecting[pod]
            for pod in new.selected:
                self._selecting.setdefault(pod, set()).add(key)

    def _build_pod(self, key: Key, edit: ChainEdit) -> bool:
        """Rebuild a local pod's chains; whether its jumps from SKIFF-NETPOL changed."""
        new_chains: list[tuple[ChainKey, tuple[str, ...]]] = []
        lines: list[str | None] = [None, None]
        pod = self.cluster.get(key)
        if pod is not None and pod.node == self.node_name:
            # The policies built after set_* are current: a pod they select (or no longer do)
            # reached them, so their selections are this pod's.
            selecting = [self._policies[k] for k in sorted(self._selecting.get(key, ()))]
            for i, direction in enumerate(DIRECTIONS):
                calls = [(p.name, p.chains[i]) for p in selecting if direction in p.types]
                if calls:
                    name, rules = pod_rules(direction, pod, calls)
                    new_chains.append((("filter", name), rules))
                    lines[i] = main_rule(direction, pod)
        keep = dict(new_chains)
        for k, _ in self._pod_chains.pop(key, ()):
            if k not in keep:
                edit.put(k, None)
        for k, rules in new_chains:
            edit.put(k, rules)
        if new_chains:
            self._pod_chains[key] = tuple(new_chains)
        old_lines = self._main_lines.get(key)
        new_lines = (lines[0], lines[1]) if lines != [None, None] else None
        if old_lines == new_lines:
            return False
        if old_lines is None:
            bisect.insort(self._main_order, key)
        if new_lines is None:
            del self._main_lines[key]
            del self._main_order[bisect.bisect_left(self._main_order, key)]
        else:
            self._main_lines[key] = new_lines
        return True


def _key(obj: t.NetworkPolicy | t.Pod) -> Key:
    return obj.metadata.namespace, obj.metadata.name


def _key_of(pod: PodInfo) -> Key:
    return pod.namespace, pod.name
