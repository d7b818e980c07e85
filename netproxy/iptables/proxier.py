"""iptables mode: render the ruleset for a snapshot and hand it to the writer.

The RulesetBuilder keeps the last build between syncs, so a sync after one endpoint change
re-renders one service port and hands the writer the few chains that may differ; crossing the
large-cluster threshold (render.large_cluster) renders every fragment again.
"""

from __future__ import annotations

from netproxy.config import ProxyConfig
from netproxy.iptables import cleanup as iptables_cleanup
from netproxy.iptables.command import Iptables
from netproxy.iptables.render import RulesetBuilder
from netproxy.iptables.writer import RulesetWriter
from netproxy.proxier import Snapshot, SyncResult


class IptablesProxier:
    mode = "iptables"

    def __init__(self, ipt: Iptables, config: ProxyConfig, *, max_chains: int | None = -1) -> None:
        self.ipt = ipt
        self.config = config
        self.writer = RulesetWriter(ipt, max_chains=max_chains)
        self.builder = RulesetBuilder(config)

    async def sync(self, snapshot: Snapshot, *, full: bool = False) -> SyncResult:
        rs, changes = self.builder.build(snapshot.service_ports)
        try:
            w = await self.writer.write(rs, full=full, since=changes)
        except Exception:
            self.writer.forget()
            raise
        return SyncResult(changed=w.changed, full=w.full, rules=rs.rule_count(), restores=w.restores,
                          detail=f"{w.chains_written} chains written, {w.chains_deleted} deleted, "
                                 f"{w.restores} restores")

    async def cleanup(self) -> None:
        await iptables_cleanup.cleanup(self.ipt, max_chains=self.writer.max_chains)
        self.writer.forget()
