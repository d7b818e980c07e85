"""NetworkPolicy as iptables rules: the policies, pods and namespaces of the cluster -> this node's ruleset.

Pure: `plan(policies, pods, namespaces, node_name)` returns a filter-table Ruleset and the same
input gives the same text. Layout (docs/networkpolicy.md has a dump):

- SKIFF-NETPOL, jumped to first from FORWARD (routed and, with br_netfilter, bridged pod
  traffic, after any DNAT: the destination is the endpoint) and from INPUT (pods reaching the
  node, e.g. the node-local DNS): established and related packets RETURN (replies to allowed
  connections always pass); then per local pod isolated for egress `-s podIP -j SKIFF-NPE-x`,
  per local pod isolated for ingress `-d podIP -j SKIFF-NPI-y`;
- SKIFF-NPE-x / SKIFF-NPI-y (one per pod and direction): clear the allow mark, jump to the
  chain of every policy selecting the pod in that direction, RETURN if one marked the packet,
  else DROP — so several policies add up and a pod selected by none is not isolated;
- SKIFF-PE-z / SKIFF-PI-z (one per policy and direction): per rule, peers x ports, each match
  setting the allow mark; an ipBlock with `except` gets its own chain SKIFF-PB-w (the excepts
  RETURN first).

What must hold, as in Kubernetes: a pod is isolated in a direction only when some policy of its
namespace selects it with that policyType; a rule allows when one of its peers and one of its
ports match (none given: any); podSelector peers mean pods of the policy's namespace,
namespaceSelector peers pods of matching namespaces, both together pods matching both; an
ipBlock matches addresses (pod IPs too) in the CIDR but not in an except; named ports resolve
against the destination pod (ingress: the selected pod; egress: each peer pod), per pod, with
the protocol; only pods with an IP that are not host-network and not finished take part.
Only policies that select a pod on this node produce chains. Traffic from the node itself to
its pods (OUTPUT) is not filtered: as in Kubernetes, a node always reaches its own pods
(probes).
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netproxy.config import NETPOL_MARK
from netproxy.iptables.layout import Hook, comment
from netproxy.iptables.ruleset import Ruleset
from skiff import labels, networkpolicy
from skiff.networkpolicy import EGRESS, INGRESS
from skiffpb.api.v1 import types_pb2 as t

MAIN = "SKIFF-NETPOL"
PREFIXES = ("SKIFF-NPI-", "SKIFF-NPE-", "SKIFF-PI-", "SKIFF-PE-", "SKIFF-PB-")
MARK = f"{NETPOL_MARK:#x}"
HOOK_COMMENT = "skiff network policies"
# Both first in their chain (the adapter keeps them there): an ACCEPT before them (KUBE-FORWARD
# accepts masquerade-marked NodePort traffic) would bypass the policies.
HOOKS: tuple[Hook, ...] = (
    Hook("filter", "FORWARD", ("-m", "comment", "--comment", HOOK_COMMENT, "-j", MAIN)),
    Hook("filter", "INPUT", ("-m", "comment", "--comment", HOOK_COMMENT, "-j", MAIN)),
)
FINISHED = ("Succeeded", "Failed")
ALLOW = f"-j MARK --set-xmark {MARK}/{MARK}"


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    ip: str
    node: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[tuple[str, str, int], ...]  # (name, protocol, containerPort) of named ports

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def named_port(self, name: str, protocol: str) -> int | None:
        return next((port for n, proto, port in self.ports if n == name and proto == protocol), None)


def pod_info(pod: t.Pod) -> PodInfo | None:
    """The pod as policies see it, or None when it takes no part (no IP, host network, finished)."""
    ip = pod.status.pod_ip
    if not ip or ":" in ip or pod.spec.host_network or pod.status.phase in FINISHED:  # IPv4 only
        return None
    ports = tuple(sorted((p.name, p.protocol or "TCP", p.container_port)
                         for c in pod.spec.containers for p in c.ports if p.name))
    return PodInfo(pod.metadata.namespace, pod.metadata.name, pod.status.pod_ip, pod.spec.node_name,
                   tuple(sorted(pod.metadata.labels.items())), ports)


@functools.lru_cache(maxsize=65536)  # the same pods' and policies' chains are named on every sync
def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def pod_chain(direction: str, pod: PodInfo) -> str:
    return ("SKIFF-NPI-" if direction == INGRESS else "SKIFF-NPE-") + _hash(f"{pod.key} {pod.ip}")


def policy_chain(direction: str, policy: t.NetworkPolicy) -> str:
    prefix = "SKIFF-PI-" if direction == INGRESS else "SKIFF-PE-"
    return prefix + _hash(f"{policy.metadata.namespace}/{policy.metadata.name}")


class Cluster:
    """Pods (indexed by namespace, labels as dicts) and namespace labels, with the peer lookups.

    Kept sorted by (namespace, name) through `put`/`remove`, so an incremental planner holds one
    and changes it a pod at a time (a bisect, not a sort of every pod)."""

    def __init__(self, pods: Iterable[PodInfo], namespaces: Mapping[str, Mapping[str, str]]) -> None:
        self.pods = sorted(pods, key=_pod_key)
        self._keys = [_pod_key(p) for p in self.pods]
        self.namespaces = namespaces
        self.by_ns: dict[str, list[tuple[PodInfo, dict[str, str]]]] = {}
        for p in self.pods:
            self.by_ns.setdefault(p.namespace, []).append((p, p.label_map()))

    def get(self, key: tuple[str, str]) -> PodInfo | None:
        i = bisect.bisect_left(self._keys, key)
        return self.pods[i] if i < len(self._keys) and self._keys[i] == key else None

    def put(self, pod: PodInfo) -> None:
        """Add the pod, or replace the one of the same namespace and name."""
        self.remove(_pod_key(pod))
        i = bisect.bisect_left(self._keys, _pod_key(pod))
        self._keys.insert(i, _pod_key(pod))
        self.pods.insert(i, pod)
        in_ns = self.by_ns.setdefault(pod.namespace, [])
        j = bisect.bisect_left(in_ns, pod.name, key=lambda e: e[0].name)
        in_ns.insert(j, (pod, pod.label_map()))

    def remove(self, key: tuple[str, str]) -> None:
        i = bisect.bisect_left(self._keys, key)
        if i == len(self._keys) or self._keys[i] != key:
            return
        del self._keys[i], self.pods[i]
        in_ns = self.by_ns[key[0]]
        del in_ns[bisect.bisect_left(in_ns, key[1], key=lambda e: e[0].name)]
        if not in_ns:
            del self.by_ns[key[0]]

    def selected(self, namespace: str, selector: labels.Selector) -> list[PodInfo]:
        return [p for p, lab in self.by_ns.get(namespace, ()) if labels.matches(selector, lab)]

    def peer_pods(self, policy_ns: str, peer: t.NetworkPolicyPeer) -> list[PodInfo]:
        pod_sel = labels.from_label_selector(peer.pod_selector) if peer.HasField("pod_selector") else labels.EVERYTHING
        if peer.HasField("namespace_selector"):
            ns_sel = labels.from_label_selector(peer.namespace_selector)
            namespaces = sorted(n for n, lab in self.namespaces.items() if labels.matches(ns_sel, lab))
        else:
            namespaces = [policy_ns]
        return [p for n in namespaces for p in self.selected(n, pod_sel)]


def _pod_key(pod: PodInfo) -> tuple[str, str]:
    return pod.namespace, pod.name


@dataclass(frozen=True)
class _Port:
    protocol: str
    match: str  # "-p tcp -m tcp --dport 80" or "-p udp"
    name: str = ""  # a named port, resolved per destination pod


def _ports(ports: Iterable[t.NetworkPolicyPort]) -> list[_Port]:
    out = []
    for port in ports:
        proto = networkpolicy.port_protocol(port)
        p = proto.lower()
        which = port.port.WhichOneof("value") if port.HasField("port") else None
        if which == "str_val":
            out.append(_Port(proto, "", port.port.str_val))
        elif which == "int_val":
            end = f":{port.end_port}" if port.HasField("end_port") and port.end_port > port.port.int_val else ""
            out.append(_Port(proto, f"-p {p} -m {p} --dport {port.port.int_val}{end}"))
        else:
            out.append(_Port(proto, f"-p {p}"))
    return out


def _resolved(port: _Port, pod: PodInfo) -> str | None:
    number = pod.named_port(port.name, port.protocol)
    if number is None:
        return None
    p = port.protocol.lower()
    return f"-d {pod.ip}/32 -p {p} -m {p} --dport {number}"


def _in_block(ip: str, block: t.IPBlock) -> bool:
    addr = ipaddress.ip_address(ip)
    try:
        if addr not in ipaddress.ip_network(block.cidr, strict=False):
            return False
        return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.except_)
    except ValueError:
        return False


def policy_rules(rs: Ruleset, direction: str, policy: t.NetworkPolicy, selected: list[PodInfo],
                  cluster: Cluster) -> str:
    """Fill the policy's chain for `direction`; its name."""
    chain = policy_chain(direction, policy)
    ns, name = policy.metadata.namespace, policy.metadata.name
    rules = rs.declare("filter", chain)
    ingress = direction == INGRESS
    peer_flag = "-s" if ingress else "-d"
    spec_rules: Iterable[t.NetworkPolicyIngressRule | t.NetworkPolicyEgressRule] = (
        policy.spec.ingress if ingress else policy.spec.egress)
    for i, rule in enumerate(spec_rules):
        note = comment(f"{ns}/{name} {direction.lower()} rule {i}")
        peers = list(rule.from_ if isinstance(rule, t.NetworkPolicyIngressRule) else rule.to)
        ports = _ports(rule.ports) or [_Port("", "")]
        numeric = [p for p in ports if not p.name]
        named = [p for p in ports if p.name]

        def emit(match: str, target_rules: list[str] = rules, target: str = chain, note: str = note) -> None:
            text = " ".join(x for x in (note, match, ALLOW) if x)
            target_rules.append(f"-A {target} {text}")

        if not peers:
            for port in numeric:
                emit(port.match)
            for port in named:
                dests = selected if ingress else cluster.pods
                for pod in dests:
                    m = _resolved(port, pod)
                    if m is not None:
                        emit(m)
            continue
        for j, peer in enumerate(peers):
            if peer.HasField("ip_block"):
                block = peer.ip_block
                cidr = str(ipaddress.ip_network(block.cidr, strict=False))
                # A named port needs a pod to resolve it: the selected pod (ingress), or each
                # pod inside the block (egress, where the block is then checked here).
                matches = [port.match for port in numeric]
                if ingress:
                    matches += [m for port in named for pod in selected if (m := _resolved(port, pod))]
                else:
                    for port in named:
                        for pod in cluster.pods:
                            m = _resolved(port, pod) if _in_block(pod.ip, block) else None
                            if m is not None:
                                emit(m)
                if not matches:
                    continue
                if block.except_:
                    sub = "SKIFF-PB-" + _hash(f"{ns}/{name} {direction} {i} {j}")
                    sub_rules = rs.declare("filter", sub)
                    for ex in block.except_:
                        sub_rules.append(f"-A {sub} {note} {peer_flag} {ipaddress.ip_network(ex, strict=False)} "
                                         "-j RETURN")
                    for m in matches:
                        emit(m, sub_rules, sub)
                    rules.append(f"-A {chain} {note} {peer_flag} {cidr} -j {sub}")
                else:
                    for m in matches:
                        emit(f"{peer_flag} {cidr} {m}".strip())
                continue
            for pod in cluster.peer_pods(ns, peer):
                for port in numeric:
                    emit(f"{peer_flag} {pod.ip}/32 {port.match}".strip())
                for port in named:
                    for dest in (selected if ingress else [pod]):
                        m = _resolved(port, dest)
                        if m is not None:
                            emit(f"{peer_flag} {pod.ip}/32 {m}" if ingress else m)
    return chain


def plan(policies: Iterable[t.NetworkPolicy], pods: Iterable[t.Pod | PodInfo | None],
         namespaces: Iterable[t.Namespace], node_name: str) -> Ruleset:
    """This node's NetworkPolicy ruleset (filter table). Pods may come as `pod_info`s already
    (the enforcer keeps them per resourceVersion: converting 5,000 pods is most of a plan)."""
    infos = [i for i in (p if isinstance(p, PodInfo) or p is None else pod_info(p) for p in pods) if i is not None]
    ns_labels = {n.metadata.name: dict(n.metadata.labels) for n in namespaces}
    cluster = Cluster(infos, ns_labels)
    local = [p for p in cluster.pods if p.node == node_name]
    local_cluster = Cluster(local, ns_labels)
    rs = Ruleset()
    main = rs.declare("filter", MAIN)
    main.extend(main_head())
    isolating: dict[tuple[str, PodInfo], list[tuple[str, str]]] = {}
    for policy in sorted(policies, key=lambda p: (p.metadata.namespace, p.metadata.name)):
        try:
            sel = labels.from_label_selector(policy.spec.pod_selector)
        except labels.SelectorError:
            continue
        selected = local_cluster.selected(policy.metadata.namespace, sel)
        if not selected:
            continue
        for direction in (INGRESS, EGRESS):
            if direction not in networkpolicy.policy_types(policy.spec):
                continue
            chain = policy_rules(rs, direction, policy, selected, cluster)
            for pod in selected:
                isolating.setdefault((direction, pod), []).append(
                    (f"{policy.metadata.namespace}/{policy.metadata.name}", chain))
    for direction in (EGRESS, INGRESS):
        for pod in local:
            chains = isolating.get((direction, pod))
            if chains is None:
                continue
            main.append(main_rule(direction, pod))
            pc, rules = pod_rules(direction, pod, chains)
            rs.chains[("filter", pc)] = list(rules)
    return rs


def main_head() -> tuple[str, ...]:
    """SKIFF-NETPOL's first rule: replies and established connections pass."""
    return (f'-A {MAIN} {comment("replies and established connections")} '
            "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",)


def main_rule(direction: str, pod: PodInfo) -> str:
    """SKIFF-NETPOL's jump to a local pod's chain for `direction` (the pod is isolated in it)."""
    flag = "-d" if direction == INGRESS else "-s"
    return f"-A {MAIN} {comment(f'{pod.key} {direction.lower()}')} {flag} {pod.ip}/32 -j {pod_chain(direction, pod)}"


def pod_rules(direction: str, pod: PodInfo, chains: Iterable[tuple[str, str]]) -> tuple[str, tuple[str, ...]]:
    """A local pod's chain for `direction`: its name and rules, calling `chains` ((policy key,
    policy chain) of every policy selecting it, in policy order)."""
    pc = pod_chain(direction, pod)
    what = f"{pod.key} {direction.lower()}"
    rules = [f"-A {pc} {comment(what)} -j MARK --set-xmark 0x0/{MARK}"]
    rules += [f"-A {pc} {comment(f'{what}: policy {key}')} -j {chain}" for key, chain in chains]
    rules.append(f"-A {pc} {comment(f'{what}: allowed')} -m mark --mark {MARK}/{MARK} -j RETURN")
    rules.append(f"-A {pc} {comment(f'{what}: no policy allows it')} -j DROP")
    return pc, tuple(rules)
