"""The NetworkPolicy truth table shared by the unit trace tests and the e2e matrix.

Upstream's NetworkPolicy e2e model (test/e2e/network/netpol): namespaces x, y, z, each with
pods a, b, c; every pod serves TCP and UDP on ports 80 and 81 (named serve-80-tcp, ...).
Each case is a list of steps; a step is the set of policies (and label changes) in force and
the expected answer for every (source pod, destination pod, port, protocol). A pod reaching
itself is left out: that never leaves the pod (loopback), as upstream's AllowLoopback says.
Pods alternate between two nodes, so most pairs cross hosts and some share a bridge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skiff.convert import from_data
from skiffpb.api.v1 import types_pb2 as t

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
NODES = ("n1", "n2")
PORTS = ((80, "tcp"), (81, "tcp"), (80, "udp"), (81, "udp"))
DNS_IP = "169.254.20.10"
ALL = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]


def node_of(pod: str) -> str:
    return NODES[ALL.index(pod) % 2]


def ip_of(pod: str) -> str:
    i = ALL.index(pod)
    return f"10.244.{1 + i % 2}.{10 + i}"


def pod_object(pod: str, extra_labels: dict[str, str] | None = None) -> t.Pod:
    ns, name = pod.split("/")
    p = t.Pod(metadata=t.ObjectMeta(name=name, namespace=ns, labels={"pod": name, **(extra_labels or {})}))
    c = p.spec.containers.add(name="server", image="busybox")
    for number, proto in PORTS:
        c.ports.add(name=f"serve-{number}-{proto}", container_port=number, protocol=proto.upper())
    p.spec.node_name = node_of(pod)
    p.status.pod_ip = ip_of(pod)
    p.status.phase = "Running"
    return p


def namespace_object(ns: str, extra_labels: dict[str, str] | None = None) -> t.Namespace:
    return t.Namespace(metadata=t.ObjectMeta(name=ns, labels={"ns": ns, "kubernetes.io/metadata.name": ns,
                                                              **(extra_labels or {})}))


def policy(name: str, ns: str, spec: dict[str, Any]) -> t.NetworkPolicy:
    return from_data({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": name, "namespace": ns}, "spec": spec}, t.NetworkPolicy)


Expect = Callable[[str, str, int, str], bool]  # (from, to, port, protocol) -> allowed


@dataclass
class Step:
    policies: list[t.NetworkPolicy]
    expect: Expect
    pod_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # extra labels per pod
    ns_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # extra labels per namespace
    dns: Callable[[str], bool] | None = None  # whether a pod reaches the node-local DNS (None: not asked)

    def pods(self) -> list[t.Pod]:
        return [pod_object(p, self.pod_labels.get(p)) for p in ALL]

    def namespaces(self) -> list[t.Namespace]:
        return [namespace_object(ns, self.ns_labels.get(ns)) for ns in NAMESPACES]


def everything(src: str, dst: str, port: int, proto: str) -> bool:
    return True


def ns(pod: str) -> str:
    return pod.split("/")[0]


INGRESS_ONLY = {"policyTypes": ["Ingress"]}
A_IN_X = {"matchLabels": {"pod": "a"}}


def pods_labelled(value: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"pod": value}}}


def namespaces_labelled(key: str, value: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {key: value}}}


def x_a_from(*peers: dict[str, Any]) -> dict[str, Any]:
    """The spec isolating x/a for ingress, allowing from `peers`."""
    return {"podSelector": A_IN_X, "ingress": [{"from": list(peers)}]}

CASES: dict[str, list[Step]] = {
    "no-policy-everything-allowed": [Step([], everything, dns=lambda s: True)],
    "default-deny-ingress": [Step([policy("deny", "x", {"podSelector": {}, **INGRESS_ONLY})],
                                  lambda s, d, p, pr: ns(d) != "x")],
    "default-deny-egress": [Step([policy("deny", "x", {"podSelector": {}, "policyTypes": ["Egress"]})],
                                 lambda s, d, p, pr: ns(s) != "x", dns=lambda s: ns(s) != "x")],
    "deny-all-both-directions": [Step([policy("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
                                      lambda s, d, p, pr: ns(s) != "x" and ns(d) != "x")],
    "allow-from-same-namespace": [Step([policy("same", "x", {"podSelector": {}, "ingress": [
        {"from": [{"podSelector": {}}]}]})], lambda s, d, p, pr: ns(d) != "x" or ns(s) == "x")],
    "allow-from-labelled-pod": [Step([policy("from-b", "x", {"podSelector": A_IN_X, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})],
        lambda s, d, p, pr: d != "x/a" or s == "x/b")],
    "allow-from-namespace-by-label": [Step([policy("from-y", "x", {"podSelector": A_IN_X, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})],
        lambda s, d, p, pr: d != "x/a" or ns(s) == "y")],
    "allow-from-namespace-by-metadata-name": [Step([policy("from-z", "x", {"podSelector": A_IN_X, "ingress": [
        {"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["z"]}]}}]}]})],
        lambda s, d, p, pr: d != "x/a" or ns(s) == "z")],
    "pod-and-namespace-selector": [Step([policy("b-in-yz", "x", {"podSelector": A_IN_X, "ingress": [
        {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y", "z"]}]},
                   "podSelector": {"matchLabels": {"pod": "b"}}}]}]})],
        lambda s, d, p, pr: d != "x/a" or s in ("y/b", "z/b"))],
    "pod-or-namespace-selector": [Step([policy("b-or-y", "x", {"podSelector": A_IN_X, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                  {"podSelector": {"matchLabels": {"pod": "b"}}}]}]})],
        lambda s, d, p, pr: d != "x/a" or ns(s) == "y" or s == "x/b")],
    "ipblock-except": [Step([policy("cidr", "x", {"podSelector": A_IN_X, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{ip_of('y/b')}/32"]}}]}]})],
        lambda s, d, p, pr: d != "x/a" or s != "y/b")],
    "ingress-port-81-only": [Step([policy("p81", "x", {"podSelector": A_IN_X, "ingress": [
        {"ports": [{"port": 81}]}]})], lambda s, d, p, pr: d != "x/a" or (p, pr) == (81, "tcp"))],
    "ingress-named-port-udp": [Step([policy("named", "x", {"podSelector": A_IN_X, "ingress": [
        {"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]})],
        lambda s, d, p, pr: d != "x/a" or (p, pr) == (80, "udp"))],
    "port-range-end-port": [Step([policy("range", "x", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": {}}], "ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]})],
        lambda s, d, p, pr: ns(d) != "x" or pr == "tcp")],
    "egress-to-namespace-named-port": [Step([policy("to-y", "x", {"podSelector": A_IN_X, "policyTypes": ["Egress"],
                                                                  "egress": [{"to": [{"namespaceSelector": {
                                                                      "matchLabels": {"ns": "y"}}}],
                                                                      "ports": [{"port": "serve-81-tcp"}]}]})],
        lambda s, d, p, pr: s != "x/a" or (ns(d) == "y" and (p, pr) == (81, "tcp")))],
    "egress-deny-dns-allowed": [Step([policy("dns-only", "x", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]})],
        lambda s, d, p, pr: ns(s) != "x", dns=lambda s: True)],
    "egress-ipblock": [Step([policy("to-n2-pods", "x", {"podSelector": A_IN_X, "egress": [
        {"to": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": [f"{ip_of('z/b')}/32"]}}]}]})],
        # No policyTypes: Ingress is implied too, and x/a has no ingress rule.
        lambda s, d, p, pr: (s != "x/a" or (node_of(d) == "n2" and d != "z/b")) and d != "x/a")],
    "policies-add-up": [Step([
        policy("from-xb", "x", x_a_from(pods_labelled("b"))),
        policy("from-yc", "x", x_a_from({**namespaces_labelled("ns", "y"), **pods_labelled("c")}))],
        lambda s, d, p, pr: d != "x/a" or s in ("x/b", "y/c"))],
    # A policy changed, then a pod's labels, then a namespace's, then the policy deleted.
    "update-label-change-delete": [
        Step([policy("np", "x", x_a_from(pods_labelled("b")))], lambda s, d, p, pr: d != "x/a" or s == "x/b"),
        Step([policy("np", "x", x_a_from(pods_labelled("c")))], lambda s, d, p, pr: d != "x/a" or s == "x/c"),
        Step([policy("np", "x", x_a_from(pods_labelled("c")))],
             lambda s, d, p, pr: d != "x/a" or s in ("x/c", "x/b"), pod_labels={"x/b": {"pod": "c"}}),
        Step([policy("np", "x", x_a_from(namespaces_labelled("team", "t")))],
             lambda s, d, p, pr: d != "x/a" or ns(s) == "z", ns_labels={"z": {"team": "t"}}),
        Step([], everything),
    ],
}
