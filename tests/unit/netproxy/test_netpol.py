"""NetworkPolicy planner: golden rulesets, the truth table traced through the planned rules, the enforcer.

Golden files are rewritten only on request: `SKIFF_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/netproxy`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from netproxy.iptables.command import MemoryIptables
from netproxy.iptables.ruleset import parse
from netproxy.netpol.enforcer import NetpolEnforcer, cleanup
from netproxy.netpol.plan import MAIN, plan, pod_chain, pod_info
from netproxy.netpol.trace import Packet, TraceError, trace
from skiff.informer import InformerFactory
from skiff.networkpolicy import EGRESS, INGRESS
from skiffpb.api.v1 import types_pb2 as t
from tests.support.netpol_cases import ALL, CASES, DNS_IP, PORTS, Step, ip_of, node_of, pod_object, policy

GOLDEN = Path(__file__).parent / "golden" / "netpol"
UPDATE = os.environ.get("SKIFF_UPDATE_GOLDEN", "") == "1"

STEPS = [(f"{name}-{i}" if len(steps) > 1 else name, step) for name, steps in CASES.items()
         for i, step in enumerate(steps)]


def rulesets(step: Step) -> dict[str, str]:
    return {node: plan(step.policies, step.pods(), step.namespaces(), node).restore_text() for node in ("n1", "n2")}


def verdict(rules: dict[str, str], src: str, dst: str, port: int, proto: str, *, state: str = "NEW") -> bool:
    """Both hosts' chains pass the packet: the source's (egress) and the destination's (ingress)."""
    pkt = Packet(ip_of(src), ip_of(dst), port, proto, state)
    return all(trace(rules[n], pkt) == "PASS" for n in {node_of(src), node_of(dst)})


@pytest.mark.parametrize("step", [s for _, s in STEPS], ids=[i for i, _ in STEPS])
def test_truth_table(step: Step) -> None:
    rules = rulesets(step)
    wrong = [f"{s} -> {d} {port}/{proto}: expected {'allowed' if want else 'denied'}"
             for s in ALL for d in ALL if s != d for port, proto in PORTS
             if verdict(rules, s, d, port, proto) != (want := step.expect(s, d, port, proto))]
    assert wrong == []


@pytest.mark.parametrize("step", [s for _, s in STEPS], ids=[i for i, _ in STEPS])
def test_replies_always_pass(step: Step) -> None:
    rules = rulesets(step)
    assert all(verdict(rules, s, d, 80, "tcp", state="ESTABLISHED") for s in ALL for d in ALL if s != d)


@pytest.mark.parametrize(("src", "dport", "proto", "want"), [
    ("x/a", 53, "udp", "PASS"),
    ("x/a", 53, "tcp", "PASS"),
    ("x/a", 54, "udp", "DROP"),
    ("x/a", 80, "tcp", "DROP"),
    ("y/a", 80, "tcp", "PASS"),
], ids=["dns-udp", "dns-tcp", "other-udp", "other-tcp", "unselected-pod"])
def test_egress_to_node_local_dns(src: str, dport: int, proto: str, want: str) -> None:
    step = CASES["egress-deny-dns-allowed"][0]
    rules = plan(step.policies, step.pods(), step.namespaces(), node_of(src)).restore_text()
    assert trace(rules, Packet(ip_of(src), DNS_IP, dport, proto)) == want


GOLDEN_CASES = ["default-deny-ingress", "allow-from-labelled-pod", "pod-and-namespace-selector", "ipblock-except",
                "ingress-named-port-udp", "port-range-end-port", "egress-to-namespace-named-port", "policies-add-up"]


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden(name: str) -> None:
    step = CASES[name][0]
    text = plan(step.policies, step.pods(), step.namespaces(), "n1").restore_text()
    path = GOLDEN / f"{name}.rules"
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; rewrite with SKIFF_UPDATE_GOLDEN=1 and read the diff"
    # Deterministic whatever the order of the inputs.
    again = plan(list(reversed(step.policies)), list(reversed(step.pods())), step.namespaces(), "n1")
    assert again.restore_text() == text


def test_no_stray_golden_files() -> None:
    assert {p.stem for p in GOLDEN.glob("*.rules")} == set(GOLDEN_CASES)


def test_every_rule_is_commented() -> None:
    for _, step in STEPS:
        for rules in rulesets(step).values():
            for line in rules.splitlines():
                assert not line.startswith("-A ") or "--comment" in line, line


@pytest.mark.parametrize(("change", "isolated"), [
    ("none", True),
    ("other-node", False),
    ("no-ip", False),
    ("host-network", False),
    ("succeeded", False),
    ("labels", False),
], ids=lambda v: str(v))
def test_which_pods_are_isolated(change: str, isolated: bool) -> None:
    pod = pod_object("x/a")  # on n1
    if change == "other-node":
        pod.spec.node_name = "n2"
    elif change == "no-ip":
        pod.status.pod_ip = ""
    elif change == "host-network":
        pod.spec.host_network = True
    elif change == "succeeded":
        pod.status.phase = "Succeeded"
    elif change == "labels":
        pod.metadata.labels["pod"] = "z"
    deny = policy("deny", "x", {"podSelector": {"matchLabels": {"pod": "a"}}})
    rs = plan([deny], [pod], [], "n1")
    info = pod_info(pod_object("x/a"))
    assert info is not None
    assert (("filter", pod_chain(INGRESS, info)) in rs.chains) == isolated
    assert ("filter", pod_chain(EGRESS, info)) not in rs.chains


def test_tracer_refuses_what_it_does_not_model() -> None:
    text = f"*filter\n:{MAIN} - [0:0]\n-A {MAIN} -m set --match-set foo src -j DROP\nCOMMIT\n"
    with pytest.raises(TraceError):
        trace(text, Packet("10.0.0.1", "10.0.0.2", 80))


# ---------------------------------------------------------------------------- the enforcer on MemoryIptables


async def test_enforcer_writes_changes_and_cleans_up() -> None:
    from controlplane.apiserver.inprocess import InProcessApi

    api = InProcessApi()
    ipt = MemoryIptables()
    # Something already first in FORWARD: the policy jump must go before it.
    ipt.chains[("filter", "FORWARD")].append("-A FORWARD -j ACCEPT")
    factory = InformerFactory(api)
    enforcer = NetpolEnforcer(factory, ipt, node_name="n1", min_sync_period=0.0)
    for ns in ("x", "y"):
        await api.create(t.Namespace(metadata=t.ObjectMeta(name=ns)))
    for pod in ("x/a", "x/b", "y/a"):
        p = pod_object(pod)
        status = p.status
        p.ClearField("status")
        created = await api.create(p)
        created.status.CopyFrom(status)
        await api.update_status(created)
    enforcer.wire()
    await factory.start()
    try:
        await factory.wait_synced()
        await enforcer._sync(True)
        assert ipt.chains[("filter", "FORWARD")][0].endswith(f"-j {MAIN}")
        assert ipt.chains[("filter", "INPUT")][0].endswith(f"-j {MAIN}")
        assert [k for k in ipt.chains if k[1].startswith("SKIFF-") and k[1] != MAIN] == []
        await api.create(policy("deny", "x", {"podSelector": {}}))
        for _ in range(200):
            if len(enforcer.policies.list()) == 1:
                break
            await asyncio.sleep(0.01)
        before = len(ipt.restored)
        await enforcer._sync(False)
        assert len(ipt.restored) == before + 1
        saved = parse(await ipt.save("filter"))
        x_a = ip_of("x/a")
        assert trace(saved, Packet(ip_of("y/a"), x_a, 80)) == "DROP"
        assert trace(saved, Packet(x_a, ip_of("y/a"), 80)) == "PASS"
        await enforcer._sync(False)  # nothing changed: nothing written
        assert len(ipt.restored) == before + 1
    finally:
        await factory.stop()
    assert await cleanup(ipt) > 0
    assert not any(k[1].startswith("SKIFF-") for k in ipt.chains)
    assert not any("SKIFF-" in r for k in ipt.chains for r in ipt.chains[k])


@pytest.mark.parametrize(("proto", "dport", "want"), [
    ("sctp", 9000, "PASS"), ("sctp", 9100, "PASS"), ("sctp", 9101, "DROP"), ("tcp", 9000, "DROP"),
], ids=["sctp-low", "sctp-end", "sctp-above", "tcp-same-port"])
def test_sctp_port_range(proto: str, dport: int, want: str) -> None:
    np = policy("sctp", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"ports": [{"protocol": "SCTP", "port": 9000, "endPort": 9100}]}]})
    rules = plan([np], [pod_object("x/a"), pod_object("y/b")], [], "n1").restore_text()
    assert "-p sctp -m sctp --dport 9000:9100" in rules
    assert trace(rules, Packet(ip_of("y/b"), ip_of("x/a"), dport, proto)) == want
