"""externalTrafficPolicy / internalTrafficPolicy: Local, traced through the rendered iptables rules
and planned as IPVS state: only this node's endpoints, the client's address kept, DROP without one."""

from __future__ import annotations

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.render import build_ruleset
from netproxy.iptables.trace import Packet, Tracer, destinations
from netproxy.ipvs.plan import desired_state
from netproxy.model import service_ports
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.netproxy.objects import eps, port, svc

CFG = ProxyConfig(cluster_cidr="10.244.0.0/16")
NODE = "10.77.0.11"  # n1; its pods are 10.244.1.0/24
LOCAL, REMOTE = "10.244.1.2", "10.244.2.2"


def on_nodes(name: str, *addresses: tuple[str, str]) -> t.Endpoints:
    e = eps(name)
    sub = e.subsets.add()
    sub.addresses.extend(t.EndpointAddress(ip=ip, node_name=node) for ip, node in addresses)
    sub.ports.add(port=8080)
    return e


def objects() -> tuple[list[t.Service], list[t.Endpoints]]:
    ext = svc("ext", "10.96.0.20", port(80, node_port=30020, target=8080), type="NodePort")
    ext.spec.external_traffic_policy = "Local"
    ext_none = svc("ext-none", "10.96.0.21", port(80, node_port=30021, target=8080), type="NodePort")
    ext_none.spec.external_traffic_policy = "Local"
    internal = svc("int", "10.96.0.22", port(80, target=8080))
    internal.spec.internal_traffic_policy = "Local"
    int_none = svc("int-none", "10.96.0.23", port(80, target=8080))
    int_none.spec.internal_traffic_policy = "Local"
    both = [(LOCAL, "n1"), (REMOTE, "n2")]
    return ([ext, ext_none, internal, int_none],
            [on_nodes("ext", *both), on_nodes("ext-none", (REMOTE, "n2")), on_nodes("int", *both),
             on_nodes("int-none", (REMOTE, "n2"))])



def rules() -> str:
    services, endpoints = objects()
    sps, problems = service_ports(services, endpoints, node_name="n1")
    assert problems == []
    return build_ruleset(sps, CFG).restore_text()


L, R = f"{LOCAL}:8080", f"{REMOTE}:8080"
TRACES = [
    # (id, packet, origin, {destination: probability}, masqueraded destinations, verdict)
    ("external-local-only-local-endpoint-client-kept", Packet("192.0.2.9", NODE, 30020), "pod", {L: 1.0}, set(),
     "ACCEPT"),
    ("external-local-from-other-node-kept", Packet("10.77.0.12", NODE, 30020), "pod", {L: 1.0}, set(), "ACCEPT"),
    ("external-local-from-a-pod-whole-service", Packet("10.244.1.7", NODE, 30020), "pod", {L: 0.5, R: 0.5}, set(),
     "ACCEPT"),
    ("external-local-from-the-node-masqueraded", Packet(NODE, NODE, 30020), "node", {L: 0.5, R: 0.5}, {L, R},
     "ACCEPT"),
    ("external-local-no-local-endpoint-dropped", Packet("192.0.2.9", NODE, 30021), "pod", {}, set(), "DROP"),
    ("external-local-clusterip-whole-service", Packet("10.244.1.7", "10.96.0.20", 80), "pod", {L: 0.5, R: 0.5},
     set(), "ACCEPT"),
    ("internal-local-only-local-endpoint", Packet("10.244.1.7", "10.96.0.22", 80), "pod", {L: 1.0}, set(),
     "ACCEPT"),
    ("internal-local-no-local-endpoint-dropped", Packet("10.244.1.7", "10.96.0.23", 80), "pod", {}, set(), "DROP"),
]


@pytest.mark.parametrize(("packet", "origin", "expected", "masqueraded", "verdict"), [x[1:] for x in TRACES],
                         ids=[x[0] for x in TRACES])
def test_trace(packet: Packet, origin: str, expected: dict[str, float], masqueraded: set[str], verdict: str) -> None:
    outcomes = Tracer(rules(), local_addresses={NODE}).trace(packet, origin=origin)
    assert {o.verdict for o in outcomes} == {verdict}
    if verdict == "ACCEPT":
        assert destinations(outcomes) == pytest.approx(expected)
        assert {o.destination for o in outcomes if o.masquerade} == masqueraded


def test_without_a_node_name_nothing_is_local() -> None:
    services, endpoints = objects()
    sps, _ = service_ports(services, endpoints)
    assert all(sp.local_endpoints == () for sp in sps)


def test_ipvs_local_policies() -> None:
    services, endpoints = objects()
    sps, _ = service_ports(services, endpoints, node_name="n1")
    state = desired_state(sps, node_ips=(NODE,))
    real = {k: {f"{d.address}:{d.port}" for d in v} for k, v in state.dests.items()}
    assert real[(NODE, "TCP", 30020)] == {L}  # NodePort, Local: this node's endpoint only
    assert real[("10.96.0.20", "TCP", 80)] == {L, R}  # its ClusterIP: every endpoint
    assert real.get((NODE, "TCP", 30021), set()) == set()
    assert real[("10.96.0.22", "TCP", 80)] == {L}
    assert real.get(("10.96.0.23", "TCP", 80), set()) == set()
