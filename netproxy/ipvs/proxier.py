"""IPVS mode: plan virtual servers against what the kernel holds, then write the iptables part.

Each sync observes the kernel (so changes made behind netproxy's back are repaired on the
next sync, full or not), applies the plan, then hands the masquerade rules to the same
RulesetWriter the iptables mode uses. Netlink calls are blocking and run in a thread.
"""

from __future__ import annotations

import asyncio
import logging

from netproxy.config import ProxyConfig
from netproxy.iptables import cleanup as iptables_cleanup
from netproxy.iptables.command import Iptables
from netproxy.iptables.writer import RulesetWriter
from netproxy.ipvs.kernel import IpvsKernel
from netproxy.ipvs.plan import desired_state, plan
from netproxy.ipvs.render import build_ruleset
from netproxy.proxier import Snapshot, SyncResult

log = logging.getLogger("netproxy.ipvs")


class IpvsProxier:
    mode = "ipvs"

    def __init__(self, kernel: IpvsKernel, ipt: Iptables, config: ProxyConfig) -> None:
        self.kernel = kernel
        self.ipt = ipt
        self.config = config
        self.writer = RulesetWriter(ipt)
        self._node_ips: tuple[str, ...] = ()

    async def sync(self, snapshot: Snapshot, *, full: bool = False) -> SyncResult:
        self._node_ips = snapshot.node_ips
        desired = desired_state(snapshot.service_ports, node_ips=snapshot.node_ips,
                                scheduler=self.config.ipvs_scheduler)
        observed = await asyncio.to_thread(self.kernel.observe)
        actions = plan(desired, observed, node_ips=snapshot.node_ips)
        if actions:
            for a in actions[:20]:
                log.debug("ipvs: %s", a)
            await asyncio.to_thread(self.kernel.apply, actions)
        rs = build_ruleset(snapshot.service_ports, self.config)
        try:
            w = await self.writer.write(rs, full=full)
        except Exception:
            self.writer.forget()
            raise
        return SyncResult(changed=bool(actions) or w.changed, full=w.full, rules=rs.rule_count(),
                          restores=w.restores,
                          detail=f"{len(actions)} ipvs changes, {len(desired.services)} virtual servers; "
                                 f"{w.chains_written} chains written, {w.restores} restores")

    async def cleanup(self) -> None:
        removed = await asyncio.to_thread(self.kernel.cleanup, node_ips=self._node_ips)
        log.info("removed %d IPVS virtual servers and %s", removed, "kube-ipvs0")
        await iptables_cleanup.cleanup(self.ipt, max_chains=self.writer.max_chains)
        self.writer.forget()
