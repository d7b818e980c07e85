"""IPVS mode, incremental: partial syncs touch only the changed virtual servers and equal a full sync.

The cluster states of the iptables RulesetBuilder test run through one ServicePortTable (unchanged
service ports stay the same objects) into one IpvsProxier on the in-memory kernel; after every
step its kernel and tables must equal a fresh full sync's, the netlink actions must name exactly
the virtual servers and addresses whose desired state changed, and a partial sync must not read
the kernel (that is what a full sync is for).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from netproxy.iptables.command import MemoryIptables
from netproxy.ipvs.kernel import MemoryIpvs
from netproxy.ipvs.plan import Action, IpvsState, IpvsTable, desired_state, plan
from netproxy.ipvs.proxier import IpvsProxier
from netproxy.ipvs.render import RulesetBuilder, build_ruleset
from netproxy.model import ServicePortTable
from netproxy.proxier import Snapshot
from tests.unit.netproxy.objects import port, svc
from tests.unit.netproxy.test_ruleset_builder import CFG, STEPS, _apply, _cluster

NODE_IPS = ("10.77.0.11",)
IPVS_STEPS = [*STEPS, ("cluster-ip-changes", [("svc", "s1", svc("s1", "10.96.1.21", port(80)))]),
              ("nodeport-service-deleted", [("svc", "s0", None), ("eps", "s0", None)])]


class CountingIpvs(MemoryIpvs):
    def __init__(self) -> None:
        super().__init__()
        self.observed = 0

    def observe(self) -> IpvsState:
        self.observed += 1
        return super().observe()


def _changed(before: IpvsState, after: IpvsState) -> tuple[set[tuple[str, str, int]], set[str]]:
    keys = before.services.keys() | after.services.keys()
    vss = {k for k in keys if (before.services.get(k), before.dests.get(k)) != (after.services.get(k),
                                                                               after.dests.get(k))}
    return vss, set(before.addresses ^ after.addresses)


def _touched(actions: Iterable[Action]) -> tuple[set[tuple[str, str, int]], set[str]]:
    acts = list(actions)
    return ({a.service.key for a in acts if a.service is not None}, {a.address for a in acts if a.address})


@pytest.mark.parametrize("last", range(len(IPVS_STEPS)), ids=[s[0] for s in IPVS_STEPS])
async def test_partial_syncs_touch_only_what_changed_and_equal_a_full_sync(last: int) -> None:
    cluster = _cluster()
    table = ServicePortTable()
    table.rebuild(cluster[0].values(), cluster[1].values())
    kernel, ipt = CountingIpvs(), MemoryIptables()
    proxier = IpvsProxier(kernel, ipt, CFG)
    await proxier.sync(Snapshot(table.ports(), NODE_IPS), full=True)
    assert kernel.observed == 1
    for _, changes in IPVS_STEPS[:last + 1]:
        previous = desired_state(table.ports(), node_ips=NODE_IPS)
        _apply(cluster, table, changes)
        sps = table.ports()
        done = len(kernel.applied)
        await proxier.sync(Snapshot(sps, NODE_IPS))
        assert kernel.observed == 1  # a partial sync trusts what it applied last
        assert _touched(kernel.applied[done:]) == _changed(previous, desired_state(sps, node_ips=NODE_IPS))
        ref_kernel, ref_ipt = MemoryIpvs(), MemoryIptables()
        await IpvsProxier(ref_kernel, ref_ipt, CFG).sync(Snapshot(sps, NODE_IPS), full=True)
        assert kernel.state == ref_kernel.state
        assert ipt.chains == ref_ipt.chains


@pytest.mark.parametrize("last", range(len(IPVS_STEPS)), ids=[s[0] for s in IPVS_STEPS])
def test_table_steps_plan_what_a_full_plan_plans(last: int) -> None:
    """Applying each step's plan to the previous desired state gives the new one; the masquerade
    rules built incrementally equal a fresh build, with Changes naming every chain that differs."""
    cluster = _cluster()
    st = ServicePortTable()
    st.rebuild(cluster[0].values(), cluster[1].values())
    ipvs, builder = IpvsTable(), RulesetBuilder(CFG)
    kernel = MemoryIpvs()
    kernel.apply(plan(ipvs.full(st.ports(), NODE_IPS), kernel.state, node_ips=NODE_IPS))
    built, _ = builder.build(st.ports())
    for _, changes in IPVS_STEPS[:last + 1]:
        _apply(cluster, st, changes)
        before, after = ipvs.step(st.ports())
        kernel.apply(plan(after, before, node_ips=NODE_IPS))
        assert kernel.state == desired_state(st.ports(), node_ips=NODE_IPS)
        previous = built.frozen()
        built, since = builder.build(st.ports())
        now = built.frozen()
        assert now == build_ruleset(st.ports(), CFG).frozen()
        assert since is not None and since.base is previous
        assert {k for k in now.keys() | previous.keys() if now.get(k) != previous.get(k)} <= since.keys


async def test_only_a_full_sync_repairs_the_kernel() -> None:
    cluster = _cluster()
    table = ServicePortTable()
    table.rebuild(cluster[0].values(), cluster[1].values())
    kernel, ipt = CountingIpvs(), MemoryIptables()
    proxier = IpvsProxier(kernel, ipt, CFG)
    snap = Snapshot(table.ports(), NODE_IPS)
    await proxier.sync(snap, full=True)
    want = kernel.state
    vs = next(iter(want.services.values()))
    kernel.apply([Action("del-service", service=vs)])  # behind netproxy's back
    assert not (await proxier.sync(snap)).changed and kernel.state != want
    assert (await proxier.sync(snap, full=True)).changed and kernel.state == want


async def test_new_node_addresses_make_the_sync_full() -> None:
    cluster = _cluster()
    table = ServicePortTable()
    table.rebuild(cluster[0].values(), cluster[1].values())
    _apply(cluster, table, [("svc", "s0", svc("s0", "10.96.1.0", port(80, node_port=30080), type="NodePort"))])
    kernel, ipt = CountingIpvs(), MemoryIptables()
    proxier = IpvsProxier(kernel, ipt, CFG)
    await proxier.sync(Snapshot(table.ports(), NODE_IPS), full=True)
    result = await proxier.sync(Snapshot(table.ports(), ("10.77.0.12",)))
    assert result.full and kernel.observed == 2
    assert ("10.77.0.12", "TCP", 30080) in kernel.state.services
    assert ("10.77.0.11", "TCP", 30080) not in kernel.state.services
