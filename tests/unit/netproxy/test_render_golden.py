"""Golden files of rendered rules: the exact text netproxy hands to iptables-restore.

Rewrite them after an intended change with `SKIFF_UPDATE_GOLDEN=1 pytest tests/unit/netproxy`,
then read the diff: it is the change in the rules.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.render import render
from netproxy.iptables.ruleset import parse
from netproxy.ipvs.render import build_ruleset as build_ipvs
from netproxy.model import service_ports
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.netproxy.objects import eps, port, subset, svc

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SKIFF_UPDATE_GOLDEN", "") == "1"
CFG = ProxyConfig(cluster_cidr="10.244.0.0/16")

Scenario = tuple[list[t.Service], list[t.Endpoints], ProxyConfig, list[tuple[str, str]]]


def web(*ips: str) -> Scenario:
    return ([svc("web", "10.96.0.10", port(80, name="http", target="http"))],
            [eps("web", subset(list(ips), [("http", 8080)]))], CFG, [])


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "empty": lambda: ([], [], CFG, []),
    "clusterip-two-endpoints": lambda: web("10.244.1.2", "10.244.2.2"),
    "clusterip-four-endpoints": lambda: web("10.244.1.2", "10.244.1.3", "10.244.2.2", "10.244.2.3"),
    "nodeport": lambda: ([svc("web", "10.96.0.10", port(80, name="http", node_port=30080), type="NodePort")],
                         [eps("web", subset(["10.244.1.2"], [("http", 8080)]))], CFG, []),
    "no-endpoints-reject": lambda: (
        [svc("web", "10.96.0.10", port(80, name="http", node_port=30080), type="NodePort"),
         svc("dns", "10.96.0.53", port(53, name="dns", protocol="UDP"))],
        [eps("web", subset([], [("http", 8080)], not_ready=["10.244.1.2"]))], CFG, []),
    "session-affinity": lambda: ([svc("web", "10.96.0.10", port(80), affinity=True, affinity_timeout=600)],
                                 [eps("web", subset(["10.244.1.2", "10.244.2.2"], [("", 8080)]))], CFG, []),
    "multi-port-protocols": lambda: (
        [svc("dns", "10.96.0.53", port(53, name="dns", protocol="UDP"), port(53, name="dns-tcp"),
             port(9153, name="metrics", protocol="SCTP"))],
        [eps("dns", subset(["10.244.1.5"], [("dns", 53, "UDP"), ("dns-tcp", 53), ("metrics", 9153, "SCTP")]))],
        CFG, []),
    "stale-chains-deleted": lambda: (web("10.244.2.2")[0], web("10.244.2.2")[1], CFG,
                                     [("nat", "KUBE-SEP-3SIPZFJTG5NZNHYA"), ("nat", "KUBE-SVC-GONEGONEGONEGONE"),
                                      ("nat", "KUBE-SERVICES"), ("filter", "OTHER-CHAIN")]),
    "masquerade-all-nodeport-addresses": lambda: (
        [svc("web", "10.96.0.10", port(80, node_port=30080), type="NodePort")],
        [eps("web", subset(["10.244.1.2"], [("", 80)]))],
        ProxyConfig(masquerade_all=True, nodeport_addresses=("10.77.0.0/24", "192.0.2.0/24")), []),
    "no-cluster-cidr": lambda: (web("10.244.1.2")[0], web("10.244.1.2")[1], ProxyConfig(), []),
}

IPVS_SCENARIOS = {
    "ipvs-clusterip-nodeport": lambda: (
        [svc("web", "10.96.0.10", port(80, name="http", node_port=30080), type="NodePort"),
         svc("api", "10.96.0.1", port(443, name="https"), namespace="kube-system")],
        [eps("web", subset(["10.244.1.2", "10.244.2.2"], [("http", 8080)])),
         eps("api", subset(["10.77.0.10"], [("https", 6443)]), namespace="kube-system")], CFG, []),
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.rules"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}; create it with SKIFF_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} differs; if intended, rewrite with SKIFF_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_iptables_golden(name: str) -> None:
    services, endpoints, config, previous = SCENARIOS[name]()
    check_golden(name, render(services, endpoints, config, previous_chains=previous))


@pytest.mark.parametrize("name", sorted(IPVS_SCENARIOS))
def test_ipvs_golden(name: str) -> None:
    services, endpoints, config, _ = IPVS_SCENARIOS[name]()
    sps, _ = service_ports(services, endpoints)
    check_golden(name, build_ipvs(sps, config).restore_text())


def test_no_stray_golden_files() -> None:
    names = {p.stem for p in GOLDEN.glob("*.rules")}
    assert names == set(SCENARIOS) | set(IPVS_SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_render_is_deterministic_and_order_independent(name: str) -> None:
    services, endpoints, config, previous = SCENARIOS[name]()
    first = render(services, endpoints, config, previous_chains=previous)
    rng = random.Random(name)
    for _ in range(3):
        s, e, p = list(services), list(endpoints), list(previous)
        rng.shuffle(s)
        rng.shuffle(e)
        rng.shuffle(p)
        for ep in e:  # address order inside a subset must not matter either
            for sub in ep.subsets:
                addrs = list(sub.addresses)
                rng.shuffle(addrs)
                del sub.addresses[:]
                sub.addresses.extend(addrs)
        assert render(s, e, config, previous_chains=p) == first


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_rule_has_a_comment_and_chain_names_fit(name: str) -> None:
    services, endpoints, config, previous = SCENARIOS[name]()
    parsed = parse(render(services, endpoints, config, previous_chains=previous))
    for (_, chain), rules in parsed.chains.items():
        assert len(chain) <= 28
        for rule in rules:
            assert "-m comment --comment " in rule, rule


def test_probabilities_are_one_over_remaining() -> None:
    text = SCENARIOS["clusterip-four-endpoints"]()
    rules = render(text[0], text[1], CFG)
    probs = [line.split("--probability ")[1].split()[0] for line in rules.splitlines() if "--probability" in line]
    assert probs == ["0.2500000000", "0.3333333333", "0.5000000000"]
