"""IPVS mode: plan virtual servers against what the kernel holds, then write the iptables part.

What must hold, as in iptables mode: a sync costs what changed. A full sync (the first, every
sync period, after a failure, when the node's addresses change) observes the kernel and plans
the whole desired state against it, so changes made behind netproxy's back are repaired then. A
partial sync trusts that the kernel still holds what the last sync applied: the IpvsTable gives
the previous and the new desired state of only the service ports that changed (by identity, as
ServicePortTable keeps unchanged ones), and only their virtual servers, real servers and
ClusterIP addresses are touched through netlink; the masquerade rules come from the IPVS
RulesetBuilder and the writer restores only the chains that changed. A failed apply makes the
next sync full. Netlink calls are blocking and run in a thread.
"""

from __future__ import annotations

import asyncio
import logging

from netproxy.config import ProxyConfig
from netproxy.iptables import cleanup as iptables_cleanup
from netproxy.iptables.command import Iptables
from netproxy.iptables.writer import RulesetWriter
from netproxy.ipvs.kernel import IpvsKernel
from netproxy.ipvs.plan import IpvsTable, plan
from netproxy.ipvs.render import RulesetBuilder
from netproxy.proxier import Snapshot, SyncResult

log = logging.getLogger("netproxy.ipvs")


class IpvsProxier:
    mode = "ipvs"

    def __init__(self, kernel: IpvsKernel, ipt: Iptables, config: ProxyConfig) -> None:
        self.kernel = kernel
        self.ipt = ipt
        self.config = config
        self.writer = RulesetWriter(ipt)
        self.table = IpvsTable(scheduler=config.ipvs_scheduler)
        self.builder = RulesetBuilder(config)
        self._node_ips: tuple[str, ...] = ()
        self._trusted = False  # the kernel holds the table's last state (else: observe it, fully)

    async def sync(self, snapshot: Snapshot, *, full: bool = False) -> SyncResult:
        sps = snapshot.service_ports
        full = full or not self._trusted or tuple(sorted(set(snapshot.node_ips))) != self.table.node_ips
        # NodePort virtual servers on an address the node no longer has are still ours to delete.
        owned_ips = (*self.table.node_ips, *snapshot.node_ips)
        self._node_ips = snapshot.node_ips
        self._trusted = False
        if full:
            desired = self.table.full(sps, snapshot.node_ips)
            observed = await asyncio.to_thread(self.kernel.observe)
            actions = plan(desired, observed, node_ips=owned_ips)
            servers = len(desired.services)
        else:
            before, after = self.table.step(sps)
            actions = plan(after, before, node_ips=snapshot.node_ips)
            servers = len(set(after.services) | set(before.services))
        if actions:
            for a in actions[:20]:
                log.debug("ipvs: %s", a)
            await asyncio.to_thread(self.kernel.apply, actions)
        self._trusted = True
        rs, changes = self.builder.build(sps)
        try:
            w = await self.writer.write(rs, full=full, since=changes)
        except Exception:
            self.writer.forget()
            raise
        return SyncResult(changed=bool(actions) or w.changed, full=w.full, rules=rs.rule_count(),
                          restores=w.restores,
                          detail=f"{len(actions)} ipvs changes, {servers} virtual servers "
                                 f"{'planned' if full else 'touched'}; {w.chains_written} chains written, "
                                 f"{w.restores} restores")

    async def cleanup(self) -> None:
        removed = await asyncio.to_thread(self.kernel.cleanup, node_ips=self._node_ips)
        log.info("removed %d IPVS virtual servers and %s", removed, "kube-ipvs0")
        await iptables_cleanup.cleanup(self.ipt, max_chains=self.writer.max_chains)
        self.writer.forget()
        self._trusted = False
