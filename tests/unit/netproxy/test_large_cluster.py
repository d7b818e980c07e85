"""Large-cluster mode (kube-proxy's): above the endpoint threshold, endpoint rules lose their comments.

The mode must change only the text of per-endpoint rules: where each packet goes (traced),
the chains and the commented rules that enter them stay the same; and the proxier switches
modes cleanly when the cluster crosses the threshold.
"""

from __future__ import annotations

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.command import MemoryIptables
from netproxy.iptables.proxier import IptablesProxier
from netproxy.iptables.render import build_ruleset, large_cluster
from netproxy.iptables.ruleset import parse
from netproxy.iptables.trace import Packet, Tracer, destinations
from netproxy.model import service_ports
from netproxy.proxier import Snapshot
from tests.unit.netproxy.objects import eps, port, subset, svc


def config(threshold: int) -> ProxyConfig:
    return ProxyConfig(cluster_cidr="10.244.0.0/16", large_cluster_endpoints=threshold)


def cluster(n: int, eps_per: int, *, affinity: bool = False) -> Snapshot:
    services = [svc(f"s{i}", f"10.96.1.{i}", port(80, node_port=30000 + i), type="NodePort") for i in range(n)]
    if affinity:
        for s in services:
            s.spec.session_affinity = "ClientIP"
    endpoints = [eps(f"s{i}", subset([f"10.244.{i}.{j + 2}" for j in range(eps_per)], [("", 8080)]))
                 for i in range(n)]
    sps, problems = service_ports(services, endpoints)
    assert problems == []
    return Snapshot(tuple(sps))


@pytest.mark.parametrize(("services", "eps_per", "threshold", "large"), [
    (3, 2, 6, False),   # 6 endpoints, threshold 6: not above it
    (3, 2, 5, True),    # 6 > 5
    (0, 0, 0, False),   # no endpoints at all
    (250, 4, 1000, False),  # kube-proxy's default threshold: exactly 1,000 endpoints
    (251, 4, 1000, True),
], ids=["at-threshold", "above", "empty", "default-at", "default-above"])
def test_threshold(services: int, eps_per: int, threshold: int, large: bool) -> None:
    assert large_cluster(cluster(services, eps_per).service_ports, config(threshold)) is large


@pytest.mark.parametrize("affinity", [False, True], ids=["random", "client-ip-affinity"])
def test_only_endpoint_rules_lose_comments_and_traffic_is_unchanged(affinity: bool) -> None:
    sps = cluster(4, 3, affinity=affinity).service_ports
    small = build_ruleset(sps, config(1000))
    large = build_ruleset(sps, config(1))
    assert set(small.chains) == set(large.chains)
    for key, rules in large.chains.items():
        chain = key[1]
        for rule in rules:
            endpoint_rule = chain.startswith("KUBE-SEP-") or (chain.startswith("KUBE-SVC-") and "-j KUBE-SEP-" in rule)
            assert ("--comment" in rule) is not endpoint_rule, rule
    uncommented = sum(1 for rules in large.chains.values() for r in rules if "--comment" not in r)
    assert uncommented == 4 * 3 * (4 if affinity else 3)  # per endpoint: 2 SEP rules, 1 (+1 affinity) pick
    assert len(large.restore_text()) < 0.85 * len(small.restore_text())
    for text in (small.restore_text(), large.restore_text()):
        tracer = Tracer(text, local_addresses={"10.77.0.11"})
        for i in range(4):
            want = {f"10.244.{i}.{j + 2}:8080": pytest.approx(1 / 3) for j in range(3)}
            assert destinations(tracer.trace(Packet("10.244.99.9", f"10.96.1.{i}", 80))) == want
            assert destinations(tracer.trace(Packet("192.0.2.1", "10.77.0.11", 30000 + i))) == want


async def test_proxier_rewrites_every_endpoint_chain_when_crossing_the_threshold() -> None:
    ipt = MemoryIptables()
    p = IptablesProxier(ipt, config(6))
    await p.sync(cluster(3, 2))  # 6 endpoints: comments
    assert all("--comment" in r for rules in ipt.chains.values() for r in rules)
    r = await p.sync(cluster(3, 3))  # 9: large; the cached fragments must not be reused
    assert r.restores == 1
    seps = {k: v for k, v in ipt.chains.items() if k[1].startswith("KUBE-SEP-")}
    assert len(seps) == 9 and all("--comment" not in rule for rules in seps.values() for rule in rules)
    r = await p.sync(cluster(3, 2))  # back under: commented again
    assert all("--comment" in rule for k, rules in ipt.chains.items() if k[1].startswith("KUBE-") for rule in rules)
    rendered = parse(build_ruleset(cluster(3, 2).service_ports, config(6)).restore_text()).chains
    assert {k: v for k, v in ipt.chains.items() if k[1].startswith("KUBE-")} == rendered
