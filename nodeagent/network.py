"""Pod networking on a node: the CNI conflist for its podCIDR, host-gw routes, sysctls.

- The conflist (skiff.hostconfig.render_cni_conflist: bridge + host-local, hairpin on, no
  masquerade, per-node IPAM dataDir) is written once the node's podCIDR is known (the
  `--pod-cidr` flag or the Node's spec.podCIDR). containerd's CRI notices the file and reports
  NetworkReady; until then no pod can get a sandbox.
- Routes: every other node's podCIDR via that node's InternalIP (host-gw). `plan_routes` is
  pure; routes the agent owns carry the protocol number ROUTE_PROTO, so stale ones (a node that
  went away or changed address) are found and removed without touching anyone else's routes.
- ip_forward=1 (the node forwards pod traffic) and bridge-nf-call-iptables=1 (Service DNAT for
  same-node pod traffic across cni0; docs/containerd.md) in the node's netns.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nodeagent.netns import NodeNetwork
from skiff import hostconfig
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("nodeagent.network")

ROUTE_PROTO = 73  # an otherwise unassigned rtnetlink protocol number marking Skiff's host-gw routes
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}


def internal_ip(node: t.Node) -> str:
    for a in node.status.addresses:
        if a.type == "InternalIP":
            return a.address
    return ""


def desired_routes(self_name: str, nodes: Iterable[t.Node]) -> dict[str, str]:
    """podCIDR -> gateway for every other node that has both."""
    out: dict[str, str] = {}
    for node in nodes:
        if node.metadata.name == self_name or node.metadata.HasField("deletion_timestamp"):
            continue
        cidr, gw = node.spec.pod_cidr, internal_ip(node)
        if not cidr or not gw:
            continue
        try:
            out[str(ipaddress.ip_network(cidr))] = str(ipaddress.ip_address(gw))
        except ValueError:
            log.warning("node %s: bad podCIDR %r or InternalIP %r; no route", node.metadata.name, cidr, gw)
    return out


@dataclass(frozen=True)
class RoutePlan:
    add: Mapping[str, str] = field(default_factory=dict)  # dst -> gateway (add or replace)
    delete: tuple[str, ...] = ()


def plan_routes(desired: Mapping[str, str], current: Mapping[str, str]) -> RoutePlan:
    add = {dst: gw for dst, gw in desired.items() if current.get(dst) != gw}
    delete = tuple(sorted(dst for dst in current if dst not in desired))
    return RoutePlan(dict(sorted(add.items())), delete)


class RouteTable(Protocol):
    async def list(self) -> dict[str, str]: ...
    async def replace(self, dst: str, gateway: str) -> None: ...
    async def delete(self, dst: str) -> None: ...


class NetlinkRoutes:
    """Routes of the main table in the node's netns, through pyroute2."""

    def __init__(self, net: NodeNetwork) -> None:
        self.net = net

    async def list(self) -> dict[str, str]:
        def work() -> dict[str, str]:
            from pyroute2 import IPRoute

            out = {}
            with IPRoute() as ipr:
                for r in ipr.get_routes(family=socket.AF_INET, table=254):
                    if r["proto"] != ROUTE_PROTO:
                        continue
                    out[f"{r.get_attr('RTA_DST')}/{r['dst_len']}"] = r.get_attr("RTA_GATEWAY") or ""
            return out

        return await self.net.run(work)

    async def replace(self, dst: str, gateway: str) -> None:
        def work() -> None:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.route("replace", dst=dst, gateway=gateway, proto=ROUTE_PROTO)

        await self.net.run(work)

    async def delete(self, dst: str) -> None:
        def work() -> None:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.route("del", dst=dst, proto=ROUTE_PROTO)

        await self.net.run(work)


class MemoryRoutes:
    def __init__(self) -> None:
        self.routes: dict[str, str] = {}

    async def list(self) -> dict[str, str]:
        return dict(self.routes)

    async def replace(self, dst: str, gateway: str) -> None:
        self.routes[dst] = gateway

    async def delete(self, dst: str) -> None:
        self.routes.pop(dst, None)


class NetworkManager:
    def __init__(self, *, node_name: str, net: NodeNetwork, routes: RouteTable, cni_conf_dir: str,
                 ipam_dir: str, pod_cidr: str = "", manage_sysctls: bool = True) -> None:
        self.node_name = node_name
        self.net = net
        self.routes = routes
        self.cni_conf_dir = cni_conf_dir
        self.ipam_dir = ipam_dir
        self.flag_pod_cidr = pod_cidr
        self.manage_sysctls = manage_sysctls
        self.pod_cidr = ""

    async def set_sysctls(self) -> None:
        def work() -> None:
            for key, value in SYSCTLS.items():
                path = f"/proc/sys/{key}"
                if not os.path.exists(path):
                    log.warning("%s is missing (br_netfilter not loaded?); not set", path)
                    continue
                with open(path) as f:
                    if f.read().strip() == value:
                        continue
                with open(path, "w") as f:
                    f.write(value)

        await self.net.run(work)

    def write_cni_config(self, pod_cidr: str) -> bool:
        text = hostconfig.render_cni_conflist(hostconfig.CniSettings(pod_cidr=pod_cidr, ipam_data_dir=self.ipam_dir))
        Path(self.ipam_dir).mkdir(parents=True, exist_ok=True)
        changed = hostconfig.write_if_changed(Path(self.cni_conf_dir) / hostconfig.CNI_CONFLIST_NAME, text)
        if changed:
            log.info("wrote CNI config for podCIDR %s", pod_cidr)
        return changed

    async def sync(self, nodes: Iterable[t.Node]) -> None:
        nodes = list(nodes)
        own = next((n for n in nodes if n.metadata.name == self.node_name), None)
        cidr = self.flag_pod_cidr or (own.spec.pod_cidr if own is not None else "")
        if cidr:
            self.write_cni_config(cidr)
            self.pod_cidr = cidr
        if self.manage_sysctls:
            await self.set_sysctls()
        plan = plan_routes(desired_routes(self.node_name, nodes), await self.routes.list())
        for dst, gw in plan.add.items():
            log.info("route %s via %s", dst, gw)
            await self.routes.replace(dst, gw)
        for dst in plan.delete:
            log.info("removing route %s", dst)
            await self.routes.delete(dst)
