"""Settings the rule renderers and planners read (everything else stays in the adapters).

A ProxyConfig is immutable and hashable, so renders can be cached per (ServicePort, config).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from skiff.errors import InvalidError

MASQ_MARK = 0x4000  # bit 14, as kube-proxy: traffic marked with it is masqueraded on the way out
# Bit 16: set by a NetworkPolicy chain when one of its rules allows the packet (netproxy/netpol).
NETPOL_MARK = 0x10000


@dataclass(frozen=True)
class ProxyConfig:
    # Pod addresses: traffic to a ClusterIP from outside this range is masqueraded so that
    # replies come back through this node. "" disables that rule (then only hairpin and
    # NodePort traffic is masqueraded).
    cluster_cidr: str = ""
    # CIDRs whose local addresses serve NodePorts; empty: every local address but 127/8.
    nodeport_addresses: tuple[str, ...] = ()
    # Masquerade every ClusterIP connection, not only those from outside the cluster CIDR.
    masquerade_all: bool = False
    # IPVS mode: node addresses that get NodePort virtual servers, and the scheduler.
    node_ips: tuple[str, ...] = ()
    ipvs_scheduler: str = "rr"
    # iptables mode: with more endpoints than this (all Services together), endpoint rules carry
    # no comment (kube-proxy's large-cluster mode and threshold): the ruleset shrinks by about a
    # third, and the kernel blob iptables-legacy copies on every restore by more.
    large_cluster_endpoints: int = 1000

    def __post_init__(self) -> None:
        for field_name, value in [("cluster_cidr", self.cluster_cidr)] + [
                ("nodeport_addresses", c) for c in self.nodeport_addresses]:
            if not value:
                continue
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise InvalidError(f"{field_name}: {value!r} is not a CIDR ({exc})") from exc
            if net.version != 4:
                raise InvalidError(f"{field_name}: {value!r} is IPv6; only IPv4 is supported")
        for ip in self.node_ips:
            try:
                ipaddress.IPv4Address(ip)
            except ValueError as exc:
                raise InvalidError(f"node_ips: {ip!r} is not an IPv4 address") from exc

    @property
    def cluster_net(self) -> str:
        """The cluster CIDR normalised (10.244.0.0/16), or ""."""
        return str(ipaddress.ip_network(self.cluster_cidr, strict=False)) if self.cluster_cidr else ""
