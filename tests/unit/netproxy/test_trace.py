"""Packet traces through rendered rules: which endpoints a new connection can reach, and masquerade."""

from __future__ import annotations

from pathlib import Path

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.render import render
from netproxy.iptables.trace import Outcome, Packet, TraceError, Tracer, destinations
from tests.unit.netproxy.objects import eps, port, subset, svc

CFG = ProxyConfig(cluster_cidr="10.244.0.0/16")
NODE = "10.77.0.11"

RULES = render(
    [svc("web", "10.96.0.10", port(80, name="http", node_port=30080), type="NodePort"),
     svc("empty", "10.96.0.11", port(80, node_port=30081), type="NodePort"),
     svc("sticky", "10.96.0.12", port(80), affinity=True),
     svc("dns", "10.96.0.53", port(53, name="dns", protocol="UDP"))],
    [eps("web", subset(["10.244.1.2", "10.244.2.2"], [("http", 8080)])),
     eps("sticky", subset(["10.244.1.2", "10.244.2.2"], [("", 80)])),
     eps("dns", subset(["10.244.1.5"], [("dns", 53, "UDP")]))],
    CFG)

HALF = 0.5
TRACES = [
    # (id, packet, origin, {destination: probability}, masqueraded destinations, verdict)
    ("pod-to-clusterip-spreads-evenly", Packet("10.244.1.7", "10.96.0.10", 80), "pod",
     {"10.244.1.2:8080": HALF, "10.244.2.2:8080": HALF}, set(), "ACCEPT"),
    ("hairpin-masquerades-only-the-self-path", Packet("10.244.1.2", "10.96.0.10", 80), "pod",
     {"10.244.1.2:8080": HALF, "10.244.2.2:8080": HALF}, {"10.244.1.2:8080"}, "ACCEPT"),
    ("node-to-clusterip-masquerades", Packet(NODE, "10.96.0.10", 80), "node",
     {"10.244.1.2:8080": HALF, "10.244.2.2:8080": HALF}, {"10.244.1.2:8080", "10.244.2.2:8080"}, "ACCEPT"),
    ("off-cluster-source-masquerades", Packet("192.0.2.9", "10.96.0.10", 80), "pod",
     {"10.244.1.2:8080": HALF, "10.244.2.2:8080": HALF}, {"10.244.1.2:8080", "10.244.2.2:8080"}, "ACCEPT"),
    ("nodeport-from-other-host", Packet("10.77.0.12", NODE, 30080), "pod",
     {"10.244.1.2:8080": HALF, "10.244.2.2:8080": HALF}, {"10.244.1.2:8080", "10.244.2.2:8080"}, "ACCEPT"),
    ("nodeport-from-the-node-itself", Packet(NODE, NODE, 30080), "node",
     {"10.244.1.2:8080": HALF, "10.244.2.2:8080": HALF}, {"10.244.1.2:8080", "10.244.2.2:8080"}, "ACCEPT"),
    ("nodeport-not-on-loopback", Packet("127.0.0.1", "127.0.0.1", 30080), "node", {None: 1.0}, set(), "ACCEPT"),
    ("nodeport-not-on-foreign-address", Packet("10.77.0.12", "10.77.0.99", 30080), "pod", {None: 1.0}, set(),
     "ACCEPT"),
    ("wrong-port-untouched", Packet("10.244.1.7", "10.96.0.10", 81), "pod", {None: 1.0}, set(), "ACCEPT"),
    ("wrong-protocol-untouched", Packet("10.244.1.7", "10.96.0.10", 80, "udp"), "pod", {None: 1.0}, set(),
     "ACCEPT"),
    ("udp-service", Packet("10.244.1.7", "10.96.0.53", 53, "udp"), "pod", {"10.244.1.5:53": 1.0}, set(),
     "ACCEPT"),
    ("no-endpoints-rejected-from-pod", Packet("10.244.1.7", "10.96.0.11", 80), "pod", {}, set(), "REJECT"),
    ("no-endpoints-rejected-from-node", Packet(NODE, "10.96.0.11", 80), "node", {}, set(), "REJECT"),
    ("no-endpoints-nodeport-rejected", Packet("10.77.0.12", NODE, 30081), "pod", {}, set(), "REJECT"),
]


@pytest.mark.parametrize(("packet", "origin", "expected", "masqueraded", "verdict"), [t[1:] for t in TRACES],
                         ids=[t[0] for t in TRACES])
def test_trace(packet: Packet, origin: str, expected: dict, masqueraded: set, verdict: str) -> None:
    outcomes = Tracer(RULES, local_addresses={NODE}).trace(packet, origin=origin)
    assert {o.verdict for o in outcomes} == {verdict}
    assert destinations(outcomes) == expected
    assert {o.destination for o in outcomes if o.masquerade} == masqueraded
    assert sum(o.probability for o in outcomes) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8], ids=lambda n: f"{n}-endpoints")
def test_random_balancing_is_uniform(n: int) -> None:
    ips = [f"10.244.{i}.2" for i in range(1, n + 1)]
    rules = render([svc("web", "10.96.0.10")], [eps("web", subset(ips, [("", 80)]))], CFG)
    got = destinations(Tracer(rules).trace(Packet("10.244.9.9", "10.96.0.10", 80)))
    assert sorted(got) == sorted(f"{ip}:80" for ip in ips)
    assert all(p == pytest.approx(1 / n, abs=1e-9) for p in got.values())


def test_session_affinity_returns_to_the_remembered_endpoint() -> None:
    tracer = Tracer(RULES, local_addresses={NODE})
    packet = Packet("10.244.1.7", "10.96.0.12", 80)
    assert destinations(tracer.trace(packet)) == {"10.244.1.2:80": HALF, "10.244.2.2:80": HALF}
    remembered = next(line.split("--name ")[1].split()[0] for line in RULES.splitlines()
                      if "-> 10.244.2.2:80" in line and "--rcheck" in line)
    sticky = Tracer(RULES, local_addresses={NODE}, recent={remembered})
    assert destinations(sticky.trace(packet)) == {"10.244.2.2:80": 1.0}


# iptables-save prints rules its own way (options reordered, MARK as --set-xmark); the tracer
# must read a real host's dump too.
SAVED = (Path(__file__).parent / "iptables-save-sample.txt").read_text()


def test_reads_iptables_save_output() -> None:
    out = Tracer(SAVED).trace(Packet("10.244.1.2", "10.96.0.10", 80))
    assert out == [Outcome(1.0, "ACCEPT", "10.244.1.2:8080", True)]


@pytest.mark.parametrize("rule", [
    "-A KUBE-SERVICES -m physdev --physdev-is-bridged -j ACCEPT",
    "-A KUBE-SERVICES -d 10.96.0.10/32 -j SNAT --to-source 1.2.3.4",
    "-A KUBE-SERVICES -m addrtype --dst-type UNICAST -j ACCEPT",
], ids=["unknown-match", "unknown-target", "unknown-addrtype"])
def test_unknown_rules_are_errors_not_guesses(rule: str) -> None:
    text = f"*nat\n:KUBE-SERVICES - [0:0]\n{rule}\nCOMMIT\n"
    with pytest.raises(TraceError):
        Tracer(text).trace(Packet("10.244.1.7", "10.96.0.10", 80))
