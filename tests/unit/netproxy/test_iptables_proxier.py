"""The iptables proxier against in-memory iptables: what gets written, when, and what is left."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.command import MemoryIptables, ensure_hooks
from netproxy.iptables.layout import HOOKS
from netproxy.iptables.proxier import IptablesProxier
from netproxy.iptables.render import build_ruleset
from netproxy.iptables.ruleset import BUILTIN_CHAINS, parse, restore_texts, stale_chains
from netproxy.iptables.trace import Packet, Tracer, destinations
from netproxy.model import service_ports
from netproxy.proxier import Snapshot
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.netproxy.objects import eps, port, subset, svc

CFG = ProxyConfig(cluster_cidr="10.244.0.0/16")


def snap(services: list[t.Service], endpoints: list[t.Endpoints]) -> Snapshot:
    sps, _ = service_ports(services, endpoints)
    return Snapshot(tuple(sps))


def cluster(n: int, *, eps_per: int = 2, skip: int = -1) -> Snapshot:
    services = [svc(f"s{i}", f"10.96.1.{i}", port(80)) for i in range(n) if i != skip]
    endpoints = [eps(f"s{i}", subset([f"10.244.{i}.{j + 2}" for j in range(eps_per)], [("", 8080)]))
                 for i in range(n) if i != skip]
    return snap(services, endpoints)


def kube_chains(ipt: MemoryIptables) -> set[tuple[str, str]]:
    return {k for k in ipt.user_chains() if k[1].startswith("KUBE-")}


async def saved(ipt: MemoryIptables) -> str:
    return await ipt.save("filter") + await ipt.save("nat")


async def test_first_sync_is_full_and_hooks_are_ensured_once() -> None:
    ipt = MemoryIptables()
    p = IptablesProxier(ipt, CFG)
    r = await p.sync(cluster(3))
    # One tiny restore creates the hooks' target chains, so the jumps go in while the tables
    # are small; then one restore writes everything.
    assert r.full and r.changed and len(ipt.restored) == r.restores == 2
    assert parse(ipt.restored[0]).chains == {("filter", "KUBE-EXTERNAL-SERVICES"): [],
                                             ("filter", "KUBE-FORWARD"): [], ("filter", "KUBE-SERVICES"): [],
                                             ("nat", "KUBE-POSTROUTING"): [], ("nat", "KUBE-SERVICES"): []}
    for hook in HOOKS:
        assert await ipt.check(hook.table, hook.chain, hook.args)
    assert await ensure_hooks(ipt) == 0
    assert sum(len(v) for k, v in ipt.chains.items() if k[1] in ("PREROUTING", "OUTPUT", "POSTROUTING", "INPUT",
                                                                  "FORWARD")) == len(HOOKS)


class CountingIptables(MemoryIptables):
    """MemoryIptables counting the one-rule commands (each a process of its own on a real host)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.commands: list[str] = []

    async def check(self, table: str, chain: str, args: Sequence[str]) -> bool:
        self.commands.append(f"-C {chain}")
        return await super().check(table, chain, args)

    async def insert(self, table: str, chain: str, args: Sequence[str]) -> None:
        self.commands.append(f"-I {chain}")
        await super().insert(table, chain, args)


def hooked(ipt: MemoryIptables) -> list[str]:
    """Every rule of the built-in chains, in order."""
    return [r for k, v in sorted(ipt.chains.items()) if k[1] in BUILTIN_CHAINS[k[0]] for r in v]


@pytest.mark.parametrize(("before", "commands"), [
    ([], []),
    # A jump to KUBE-SERVICES printed differently than rendered: only that hook is checked (and
    # inserted, since it does not match); the others go in with the restore.
    (["-A PREROUTING -j KUBE-SERVICES"], ["-C PREROUTING", "-I PREROUTING"]),
    # A hook present verbatim costs nothing.
    (["-A POSTROUTING -m comment --comment 'kubernetes postrouting rules' -j KUBE-POSTROUTING"], []),
], ids=["fresh-host", "jump-printed-differently", "hook-present"])
async def test_absent_hooks_go_in_with_the_first_restore(before: list[str], commands: list[str]) -> None:
    ipt = CountingIptables()
    reference = MemoryIptables()
    for line in before:
        for i in (ipt, reference):
            chain = line.split()[1]
            await i.restore("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\nCOMMIT\n")
            i.chains[("nat", chain)].append(line)
    r = await IptablesProxier(ipt, CFG).sync(cluster(3))
    assert ipt.commands == commands
    assert r.restores == 2
    # The same jumps, in the same order, as inserting them one by one gives.
    await reference.restore("*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\n"
                            ":KUBE-FORWARD - [0:0]\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n"
                            ":KUBE-POSTROUTING - [0:0]\nCOMMIT\n")
    await ensure_hooks(reference)
    assert hooked(ipt) == hooked(reference)
    assert await ensure_hooks(ipt) == 0


async def test_unchanged_state_writes_nothing() -> None:
    ipt = MemoryIptables()
    p = IptablesProxier(ipt, CFG)
    await p.sync(cluster(5))
    restores = len(ipt.restored)
    r = await p.sync(cluster(5))
    assert not r.changed and len(ipt.restored) == restores
    # A full resync with the hooks in place runs no -C: they are found in iptables-save output.
    checks = 0
    real_check = ipt.check

    async def counting_check(*args: object) -> bool:
        nonlocal checks
        checks += 1
        return await real_check(*args)  # type: ignore[arg-type]

    ipt.check = counting_check  # type: ignore[method-assign]
    r = await p.sync(cluster(5), full=True)
    assert r.full and r.restores == 1 and checks == 0


async def test_endpoint_change_writes_only_the_changed_chains() -> None:
    ipt = MemoryIptables()
    p = IptablesProxier(ipt, CFG)
    await p.sync(cluster(50))
    services = [svc(f"s{i}", f"10.96.1.{i}", port(80)) for i in range(50)]
    endpoints = [eps(f"s{i}", subset([f"10.244.{i}.2", f"10.244.{i}.3"], [("", 8080)])) for i in range(50)]
    endpoints[7] = eps("s7", subset(["10.244.7.2", "10.244.7.9"], [("", 8080)]))
    r = await p.sync(snap(services, endpoints))
    assert r.changed and not r.full
    text = ipt.restored[-1]
    written = parse(text).chains
    # The service chain, the new endpoint chain; the old endpoint chain deleted; nothing else.
    assert len([k for k in written if k[1].startswith("KUBE-SVC-")]) == 1
    assert len([k for k in written if k[1].startswith("KUBE-SEP-")]) == 1
    assert text.count("-X KUBE-SEP-") == 1
    assert "KUBE-SERVICES" not in text
    # And the result equals a from-scratch render of the same state.
    fresh = MemoryIptables()
    await IptablesProxier(fresh, CFG).sync(snap(services, endpoints))
    assert await saved(ipt) == await saved(fresh)


async def test_deleted_service_loses_all_its_chains_in_one_restore() -> None:
    ipt = MemoryIptables()
    p = IptablesProxier(ipt, CFG)
    await p.sync(cluster(4, eps_per=3))
    before = kube_chains(ipt)
    await p.sync(cluster(4, eps_per=3, skip=2))
    gone = before - kube_chains(ipt)
    assert len(gone) == 4  # one service chain, three endpoint chains
    assert all(f"-X {c}" in ipt.restored[-1] for _, c in gone)
    assert "10.96.1.2" not in await saved(ipt)


async def test_restart_cleans_chains_left_behind_while_down() -> None:
    ipt = MemoryIptables()
    await IptablesProxier(ipt, CFG).sync(cluster(4))
    # A new process knows nothing; meanwhile service s1 was deleted.
    p2 = IptablesProxier(ipt, CFG)
    r = await p2.sync(cluster(4, skip=1))
    assert r.full
    expected = MemoryIptables()
    await IptablesProxier(expected, CFG).sync(cluster(4, skip=1))
    assert await saved(ipt) == await saved(expected)


async def test_failed_restore_makes_the_next_sync_full() -> None:
    ipt = MemoryIptables()
    p = IptablesProxier(ipt, CFG)
    await p.sync(cluster(3))
    ipt.fail_next_restore = "iptables-restore: line 3 failed"
    with pytest.raises(Exception, match="line 3 failed"):
        await p.sync(cluster(4))
    r = await p.sync(cluster(4))
    assert r.full
    # Someone flushed a chain behind our back: a full sync repairs it, a partial one would not.
    ipt.chains[("nat", "KUBE-SERVICES")] = []
    assert not (await p.sync(cluster(4))).changed
    assert (await p.sync(cluster(4), full=True)).changed
    assert ipt.chains[("nat", "KUBE-SERVICES")]


async def test_other_chains_and_rules_are_left_alone() -> None:
    ipt = MemoryIptables()
    await ipt.restore("*nat\n:CNI-HOSTPORT-DNAT - [0:0]\n-A PREROUTING -j CNI-HOSTPORT-DNAT\n"
                      "-A CNI-HOSTPORT-DNAT -p tcp --dport 8080 -j DNAT --to-destination 10.244.1.2:80\nCOMMIT\n")
    p = IptablesProxier(ipt, CFG)
    await p.sync(cluster(3))
    await p.sync(cluster(1))
    await p.cleanup()
    assert ipt.user_chains() == {("nat", "CNI-HOSTPORT-DNAT")}
    assert ipt.chains[("nat", "PREROUTING")] == ["-A PREROUTING -j CNI-HOSTPORT-DNAT"]


@pytest.mark.parametrize("max_chains", [1, 3, 7, 1000], ids=lambda m: f"max-{m}")
async def test_split_restores_give_the_same_result(max_chains: int) -> None:
    whole, split = MemoryIptables(), MemoryIptables()
    pw, ps = IptablesProxier(whole, CFG, max_chains=None), IptablesProxier(split, CFG, max_chains=max_chains)
    for state in (cluster(6, eps_per=3), cluster(6, eps_per=2, skip=3), cluster(2)):
        await pw.sync(state)
        await ps.sync(state)
        assert await saved(whole) == await saved(split)
    await ps.cleanup()
    assert kube_chains(split) == set()


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 2)], ids=["grow", "shrink"])
async def test_each_split_piece_leaves_working_rules(before: int, after: int) -> None:
    """Apply the pieces one by one: after each, every Service resolves to old or new endpoints."""
    ipt = MemoryIptables()
    p = IptablesProxier(ipt, CFG, max_chains=None)
    await p.sync(cluster(5, eps_per=before))
    rs = build_ruleset(cluster(5, eps_per=after).service_ports, CFG)
    texts = restore_texts(rs.frozen(), list(rs.chains), stale_chains(ipt.user_chains(), rs), max_chains=2)
    assert len(texts) > 3
    for text in texts:
        await ipt.restore(text)
        tracer = Tracer(await saved(ipt))
        for i in range(5):
            got = destinations(tracer.trace(Packet("10.244.99.9", f"10.96.1.{i}", 80)))
            assert None not in got and got, f"service s{i} broken after a piece"


async def test_cleanup_removes_every_kube_chain_and_hook_and_is_idempotent() -> None:
    ipt = MemoryIptables()
    p = IptablesProxier(ipt, CFG)
    await p.sync(cluster(5))
    await p.cleanup()
    assert kube_chains(ipt) == set()
    assert all(not rules for rules in ipt.chains.values())
    await p.cleanup()
    # And it can start again afterwards.
    assert (await p.sync(cluster(2))).full
