"""IPVS mode, the iptables part: which connections to masquerade (IPVS itself only DNATs).

- nat KUBE-SERVICES: mark ClusterIP connections from outside the cluster CIDR; local
  destinations jump to KUBE-NODEPORTS, which marks every NodePort connection (with
  externalTrafficPolicy Local only the node's own);
- nat KUBE-POSTROUTING: first masquerade hairpin connections (an endpoint reaching itself
  through its Service: source and destination are the endpoint after IPVS's DNAT), then the
  marked ones (the same base rules as iptables mode).
The fixed chains and jumps are the iptables mode's, so switching modes needs no other hooks.
Pure and deterministic, like the iptables renderer.
"""

from __future__ import annotations

from collections.abc import Iterable

from netproxy.config import ProxyConfig
from netproxy.iptables.layout import MARK_MASQ, NODEPORTS, POSTROUTING, SERVICES, base_ruleset, comment
from netproxy.iptables.render import nodeports_jumps
from netproxy.iptables.ruleset import Ruleset
from netproxy.model import ServicePort


def build_ruleset(sps: Iterable[ServicePort], config: ProxyConfig) -> Ruleset:
    rs = base_ruleset()
    services = rs.declare("nat", SERVICES)
    nodeports = rs.declare("nat", NODEPORTS)
    hairpin: list[str] = []
    seen: set[tuple[str, str, int]] = set()
    for sp in sps:
        dest = f"-d {sp.cluster_ip}/32 -p {sp.proto} -m {sp.proto} --dport {sp.port}"
        if config.masquerade_all:
            services.append(f'-A {SERVICES} {comment(sp.key + " cluster IP")} {dest} -j {MARK_MASQ}')
        elif config.cluster_net:
            services.append(f'-A {SERVICES} {comment(sp.key + " cluster IP")} ! -s {config.cluster_net} {dest} '
                            f"-j {MARK_MASQ}")
        if sp.node_port:
            # externalTrafficPolicy Local keeps the client's address: only the node's own
            # connections are masqueraded.
            local = "-m addrtype --src-type LOCAL " if sp.external_local else ""
            nodeports.append(f"-A {NODEPORTS} {comment(sp.key)} {local}-p {sp.proto} -m {sp.proto} "
                             f"--dport {sp.node_port} -j {MARK_MASQ}")
        for ep in sp.endpoints:
            if (ep.ip, sp.proto, ep.port) in seen:
                continue
            seen.add((ep.ip, sp.proto, ep.port))
            hairpin.append(f'-A {POSTROUTING} {comment(sp.key + " hairpin")} -s {ep.ip}/32 -d {ep.ip}/32 '
                           f"-p {sp.proto} -m {sp.proto} --dport {ep.port} -j MASQUERADE")
    services.extend(nodeports_jumps(config))
    post = rs.declare("nat", POSTROUTING)
    post[:0] = hairpin
    return rs
