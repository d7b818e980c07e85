"""IPVS mode without an IPVS kernel: desired state, the plan as a diff, and the proxier on memory."""

from __future__ import annotations

import random

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.command import MemoryIptables
from netproxy.ipvs.kernel import MemoryIpvs
from netproxy.ipvs.plan import (
    Action,
    IpvsState,
    RealServer,
    VirtualServer,
    apply_actions,
    desired_state,
    owned,
    plan,
)
from netproxy.ipvs.proxier import IpvsProxier
from netproxy.model import Endpoint, ServicePort
from netproxy.proxier import Snapshot

VS = VirtualServer
RS = RealServer


def sp(ip: str, port: int, *eps: str, node_port: int = 0, affinity: int = 0, proto: str = "TCP") -> ServicePort:
    return ServicePort("default", f"s{ip.split('.')[-1]}", "", proto, ip, port, node_port, affinity,
                       tuple(Endpoint(e, 8080) for e in eps))


def state(*entries: tuple[VirtualServer, set[RealServer]], addresses: set[str] | None = None,
          link: bool = True) -> IpvsState:
    return IpvsState({vs.key: vs for vs, _ in entries}, {vs.key: frozenset(d) for vs, d in entries},
                     frozenset(addresses if addresses is not None else {vs.address for vs, _ in entries}), link)


def test_desired_state_covers_cluster_ips_nodeports_and_affinity() -> None:
    d = desired_state([sp("10.96.0.10", 80, "10.244.1.2", "10.244.2.2", node_port=30080),
                       sp("10.96.0.11", 53, proto="UDP", affinity=60)],
                      node_ips=["10.77.0.11", "192.0.2.5"], scheduler="lc")
    assert sorted(d.services) == [("10.77.0.11", "TCP", 30080), ("10.96.0.10", "TCP", 80), ("10.96.0.11", "UDP", 53),
                                  ("192.0.2.5", "TCP", 30080)]
    assert d.services[("10.96.0.11", "UDP", 53)] == VS("10.96.0.11", "UDP", 53, "lc", 60)
    assert d.dests[("192.0.2.5", "TCP", 30080)] == {RS("10.244.1.2", 8080), RS("10.244.2.2", 8080)}
    assert d.dests[("10.96.0.11", "UDP", 53)] == frozenset()
    assert d.addresses == {"10.96.0.10", "10.96.0.11"}  # node addresses are not bound to kube-ipvs0


A = VS("10.96.0.10", "TCP", 80)
B = VS("10.96.0.11", "TCP", 80)
FOREIGN = VS("192.168.5.5", "TCP", 80)  # someone else's virtual server

PLANS = [
    ("nothing-to-do", state((A, {RS("10.0.0.1", 80)})), state((A, {RS("10.0.0.1", 80)})), []),
    ("from-scratch", state((A, {RS("10.0.0.1", 80)})), IpvsState(link=False),
     ["add-link kube-ipvs0", "add-address 10.96.0.10", f"add-service {A}", f"add-dest {A} -> 10.0.0.1:80 weight 1"]),
    ("endpoint-swap", state((A, {RS("10.0.0.2", 80)})), state((A, {RS("10.0.0.1", 80)})),
     [f"add-dest {A} -> 10.0.0.2:80 weight 1", f"del-dest {A} -> 10.0.0.1:80 weight 1"]),
    ("weight-change", state((A, {RS("10.0.0.1", 80, 1)})), state((A, {RS("10.0.0.1", 80, 0)})),
     [f"update-dest {A} -> 10.0.0.1:80 weight 1"]),
    ("scheduler-change-keeps-dests", state((VS(A.address, "TCP", 80, "lc"), {RS("10.0.0.1", 80)})),
     state((A, {RS("10.0.0.1", 80)})), [f"update-service {VS(A.address, 'TCP', 80, 'lc')}"]),
    ("service-removed", state((A, set())), state((A, set()), (B, {RS("10.0.0.1", 80)})),
     [f"del-service {B}", "del-address 10.96.0.11"]),
    ("foreign-service-left-alone", state((A, set())), state((A, set()), (FOREIGN, set()), addresses={A.address}),
     []),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_plan(desired: IpvsState, observed: IpvsState, expected: list[str]) -> None:
    actions = plan(desired, observed)
    assert [str(a) for a in actions] == expected
    after = apply_actions(observed, actions)
    assert {k: v for k, v in after.services.items() if k in desired.services} == dict(desired.services)
    assert plan(desired, after) == []


def test_nodeport_virtual_servers_on_node_addresses_are_owned() -> None:
    assert owned(("10.77.0.11", "TCP", 30080), addresses=(), node_ips=["10.77.0.11"])
    assert not owned(("10.77.0.11", "TCP", 22), addresses=(), node_ips=["10.77.0.11"])
    assert not owned(("10.77.0.99", "TCP", 30080), addresses=(), node_ips=["10.77.0.11"])
    stale_np = VS("10.77.0.11", "TCP", 30080)
    assert [str(a) for a in plan(IpvsState(), state((stale_np, set()), addresses=set()),
                                 node_ips=["10.77.0.11"])] == [f"del-service {stale_np}"]


def test_random_diffs_converge() -> None:
    """Any observed state plans to the desired one in one step, leaving foreign services alone."""
    rng = random.Random(7)

    def random_state(foreign: bool) -> IpvsState:
        entries = []
        for i in rng.sample(range(12), rng.randint(0, 8)):
            vs = VS(f"10.96.0.{i}", "TCP", 80, rng.choice(["rr", "lc"]), rng.choice([0, 60]))
            entries.append((vs, {RS(f"10.244.0.{j}", 8080, rng.choice([0, 1])) for j in rng.sample(range(6), 3)}))
        if foreign:
            entries.append((FOREIGN, {RS("192.168.5.6", 80)}))
        addrs = {vs.address for vs, _ in entries if vs is not FOREIGN}
        return state(*entries, addresses=addrs, link=rng.random() < 0.8 or bool(addrs))

    for _ in range(200):
        desired, observed = random_state(False), random_state(True)
        actions = plan(desired, observed)
        after = apply_actions(observed, actions)  # raises if any action is invalid in order
        assert {k: v for k, v in after.services.items() if k != FOREIGN.key} == dict(desired.services)
        assert {k: v for k, v in after.dests.items() if k != FOREIGN.key} == dict(desired.dests)
        assert after.services.get(FOREIGN.key) == FOREIGN
        assert after.addresses == desired.addresses
        assert plan(desired, after) == []


def test_invalid_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="service missing"):
        apply_actions(IpvsState(), [Action("add-dest", service=A, dest=RS("10.0.0.1", 80))])
    with pytest.raises(ValueError, match="exists"):
        apply_actions(state((A, set())), [Action("add-service", service=A)])


async def test_ipvs_proxier_syncs_kernel_and_masquerade_rules_then_cleans_up() -> None:
    kernel, ipt = MemoryIpvs(), MemoryIptables()
    p = IpvsProxier(kernel, ipt, ProxyConfig(cluster_cidr="10.244.0.0/16"))
    snap = Snapshot((sp("10.96.0.10", 80, "10.244.1.2", node_port=30080),), node_ips=("10.77.0.11",))
    r = await p.sync(snap)
    assert r.changed and r.full
    assert set(kernel.state.services) == {("10.96.0.10", "TCP", 80), ("10.77.0.11", "TCP", 30080)}
    assert kernel.state.addresses == {"10.96.0.10"} and kernel.state.link
    nat = await ipt.save("nat")
    assert "-s 10.244.1.2/32 -d 10.244.1.2/32 -p tcp -m tcp --dport 8080 -j MASQUERADE" in nat
    assert "KUBE-SVC-" not in nat  # IPVS does the balancing
    assert not (await p.sync(snap)).changed
    # Endpoint moves: one dest swapped per virtual server, the hairpin rule follows.
    moved = Snapshot((sp("10.96.0.10", 80, "10.244.2.2", node_port=30080),), node_ips=("10.77.0.11",))
    assert (await p.sync(moved)).changed
    assert [a.op for a in kernel.applied[-4:]] == ["add-dest", "add-dest", "del-dest", "del-dest"]
    assert "10.244.1.2" not in await ipt.save("nat")
    await p.cleanup()
    assert kernel.state.services == {} and not kernel.state.link
    assert "KUBE-" not in await ipt.save("nat") + await ipt.save("filter")
