"""iptables mode: render the ruleset for a snapshot and hand it to the writer.

Fragments are cached per ServicePort between syncs (only the current ones are kept), so a
sync after one endpoint change re-renders one service port and diffs chain tuples; crossing the
large-cluster threshold (render.large_cluster) renders every fragment again.
"""

from __future__ import annotations

from netproxy.config import ProxyConfig
from netproxy.iptables import cleanup as iptables_cleanup
from netproxy.iptables.command import Iptables
from netproxy.iptables.render import Fragment, build_ruleset, large_cluster
from netproxy.iptables.writer import RulesetWriter
from netproxy.model import ServicePort
from netproxy.proxier import Snapshot, SyncResult


class IptablesProxier:
    mode = "iptables"

    def __init__(self, ipt: Iptables, config: ProxyConfig, *, max_chains: int | None = -1) -> None:
        self.ipt = ipt
        self.config = config
        self.writer = RulesetWriter(ipt, max_chains=max_chains)
        self._cache: dict[ServicePort, Fragment] = {}
        self._large = False  # the mode the cached fragments were rendered in

    async def sync(self, snapshot: Snapshot, *, full: bool = False) -> SyncResult:
        large = large_cluster(snapshot.service_ports, self.config)
        if large != self._large:  # every endpoint rule changes: render all fragments again
            self._cache.clear()
            self._large = large
        rs = build_ruleset(snapshot.service_ports, self.config, cache=self._cache, large=large)
        if len(self._cache) > len(snapshot.service_ports):  # forget ServicePorts that are gone
            self._cache = {sp: self._cache[sp] for sp in snapshot.service_ports}
        try:
            w = await self.writer.write(rs, full=full)
        except Exception:
            self.writer.forget()
            raise
        return SyncResult(changed=w.changed, full=w.full, rules=rs.rule_count(), restores=w.restores,
                          detail=f"{w.chains_written} chains written, {w.chains_deleted} deleted, "
                                 f"{w.restores} restores")

    async def cleanup(self) -> None:
        await iptables_cleanup.cleanup(self.ipt, max_chains=self.writer.max_chains)
        self.writer.forget()
