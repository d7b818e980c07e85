"""IPVS mode, the kernel side: observe and change virtual servers and kube-ipvs0 via netlink.

`PyrouteIpvs` uses pyroute2's IPVS generic-netlink socket and IPRoute; it runs in the
network namespace of the calling process (start netproxy inside the node's namespace).
`MemoryIpvs` holds the same state in memory and applies actions with `apply_actions`, so
the proxier is tested where the kernel has no IP_VS. `ipvs_available()` says which applies.
Real servers use masquerading (NAT) forwarding, as kube-proxy does; pyroute2's default is
direct routing, so it is set explicitly.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from netproxy.ipvs.plan import LINK, Action, IpvsState, RealServer, VirtualServer, VSKey, apply_actions, owned

PROTO_NUMBERS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}
FWD_MASQ = 0  # IP_VS_CONN_F_MASQ
SVC_F_PERSISTENT = 0x1

# IPVS rewrites the destination only; iptables must see the connection to masquerade it,
# and the node must not answer ARP for the addresses on kube-ipvs0.
SYSCTLS = {
    "net/ipv4/vs/conntrack": "1",
    "net/ipv4/conf/all/arp_ignore": "1",
    "net/ipv4/conf/all/arp_announce": "2",
}


def ipvs_available() -> tuple[bool, str]:
    """(True, "") when this kernel serves IPVS, else (False, why)."""
    if not os.path.exists("/proc/net/ip_vs"):
        return False, "kernel has no IP_VS (/proc/net/ip_vs is missing)"
    try:
        from pyroute2 import IPVS

        IPVS().close()
    except Exception as exc:  # NetlinkError(2) when the generic-netlink family is missing
        return False, f"kernel has no IP_VS (pyroute2 IPVS(): {exc})"
    return True, ""


class IpvsKernel(Protocol):
    def observe(self) -> IpvsState: ...

    def apply(self, actions: Iterable[Action]) -> None: ...

    def cleanup(self, *, node_ips: Iterable[str] = ()) -> int: ...


@dataclass
class MemoryIpvs:
    state: IpvsState = field(default_factory=lambda: IpvsState(link=False))
    applied: list[Action] = field(default_factory=list)

    def observe(self) -> IpvsState:
        return self.state

    def apply(self, actions: Iterable[Action]) -> None:
        actions = list(actions)
        self.state = apply_actions(self.state, actions)
        self.applied.extend(actions)

    def cleanup(self, *, node_ips: Iterable[str] = ()) -> int:
        gone = [k for k in self.state.services if owned(k, addresses=self.state.addresses, node_ips=node_ips)]
        services = {k: v for k, v in self.state.services.items() if k not in gone}
        dests = {k: v for k, v in self.state.dests.items() if k in services}
        self.state = IpvsState(services, dests, frozenset(), False)
        return len(gone)


def _attr(nla: Any, name: str) -> Any:
    return nla.get_attr(name) if hasattr(nla, "get_attr") else nla.get(name)


class PyrouteIpvs:
    """The real kernel through pyroute2 (generic netlink "IPVS" and rtnetlink).

    pyroute2's (0.9) synchronous sockets are bound to the thread that made them (each other
    thread gets a socket whose transport is torn down after one request) and cannot be made
    or used inside a running event loop; so every call runs on one private worker thread, and
    the methods may be called from any thread, the event loop's included.
    """

    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyroute-ipvs")
        self._worker.submit(self._open).result()

    def _open(self) -> None:
        from pyroute2 import IPVS, IPRoute

        self._ipvs = IPVS()
        self._ipr = IPRoute()

    def close(self) -> None:
        def close() -> None:
            self._ipvs.close()
            self._ipr.close()

        try:
            self._worker.submit(close).result()
        finally:
            self._worker.shutdown()

    def observe(self) -> IpvsState:
        return self._worker.submit(self._observe).result()

    def apply(self, actions: Iterable[Action]) -> None:
        actions = list(actions)
        self._worker.submit(self._apply, actions).result()

    def cleanup(self, *, node_ips: Iterable[str] = ()) -> int:
        """Delete the virtual servers netproxy owns and kube-ipvs0."""
        node_ips = list(node_ips)
        return self._worker.submit(self._cleanup, node_ips).result()

    # ------------------------------------------------------------------ reading

    def _link_index(self) -> int | None:
        found = self._ipr.link_lookup(ifname=LINK)
        return found[0] if found else None

    def _observe(self) -> IpvsState:
        from pyroute2 import IPVSService

        services: dict[VSKey, VirtualServer] = {}
        dests: dict[VSKey, frozenset[RealServer]] = {}
        # The service dump is read completely before the destination dumps, so no second
        # request runs on the socket while a dump on it is still being read.
        for msg in list(self._ipvs.service("dump")):
            svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
            proto = PROTO_NAMES.get(_attr(svc, "IPVS_SVC_ATTR_PROTOCOL"))
            address = _attr(svc, "IPVS_SVC_ATTR_ADDR")
            if proto is None or not address or _attr(svc, "IPVS_SVC_ATTR_FWMARK"):
                continue  # firewall-mark and unknown-protocol services are not ours
            port = int(_attr(svc, "IPVS_SVC_ATTR_PORT"))
            flags = _attr(svc, "IPVS_SVC_ATTR_FLAGS")
            persistent_flag = bool(flags and (flags.get("flags", 0) if isinstance(flags, dict)
                                              else flags["flags"]) & SVC_F_PERSISTENT)
            vs = VirtualServer(address, proto, port, str(_attr(svc, "IPVS_SVC_ATTR_SCHED_NAME")),
                               int(_attr(svc, "IPVS_SVC_ATTR_TIMEOUT") or 0) if persistent_flag else 0)
            services[vs.key] = vs
            key_svc = IPVSService(addr=address, port=port, protocol=PROTO_NUMBERS[proto])
            real: set[RealServer] = set()
            for dmsg in self._ipvs.dest("dump", service=key_svc):
                d = dmsg.get_attr("IPVS_CMD_ATTR_DEST")
                real.add(RealServer(_attr(d, "IPVS_DEST_ATTR_ADDR"), int(_attr(d, "IPVS_DEST_ATTR_PORT")),
                                    int(_attr(d, "IPVS_DEST_ATTR_WEIGHT"))))
            dests[vs.key] = frozenset(real)
        index = self._link_index()
        addresses: set[str] = set()
        if index is not None:
            for a in self._ipr.get_addr(index=index, family=socket.AF_INET):
                addresses.add(a.get_attr("IFA_ADDRESS"))
        return IpvsState(services, dests, frozenset(addresses), index is not None)

    # ------------------------------------------------------------------ writing

    @staticmethod
    def _service(vs: VirtualServer) -> Any:
        from pyroute2 import IPVSService

        return IPVSService(addr=vs.address, port=vs.port, protocol=PROTO_NUMBERS[vs.protocol],
                           sched_name=vs.scheduler, timeout=vs.persistent,
                           flags={"flags": SVC_F_PERSISTENT if vs.persistent else 0, "mask": 0xFFFF})

    @staticmethod
    def _dest(rs: RealServer) -> Any:
        from pyroute2 import IPVSDest

        return IPVSDest(addr=rs.address, port=rs.port, weight=rs.weight, fwd_method=FWD_MASQ)

    def _apply(self, actions: list[Action]) -> None:
        for a in actions:
            if a.op == "add-link":
                self._ipr.link("add", ifname=LINK, kind="dummy")
            elif a.op in ("add-address", "del-address"):
                index = self._link_index()
                if index is None:
                    raise RuntimeError(f"{a}: {LINK} is missing")
                self._ipr.addr("add" if a.op == "add-address" else "del", index=index, address=a.address,
                               prefixlen=32)
            elif a.op in ("add-service", "update-service", "del-service"):
                assert a.service is not None
                cmd = {"add-service": "add", "update-service": "set", "del-service": "del"}[a.op]
                self._ipvs.service(cmd, service=self._service(a.service))
            elif a.op in ("add-dest", "update-dest", "del-dest"):
                assert a.service is not None and a.dest is not None
                cmd = {"add-dest": "add", "update-dest": "set", "del-dest": "del"}[a.op]
                self._ipvs.dest(cmd, service=self._service(a.service), dest=self._dest(a.dest))
            else:
                raise ValueError(f"unknown action {a.op}")

    def set_sysctls(self) -> None:
        for key, value in SYSCTLS.items():
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)

    def _cleanup(self, node_ips: list[str]) -> int:
        state = self._observe()
        gone = [vs for k, vs in sorted(state.services.items())
                if owned(k, addresses=state.addresses, node_ips=node_ips)]
        for vs in gone:
            self._ipvs.service("del", service=self._service(vs))
        index = self._link_index()
        if index is not None:
            self._ipr.link("del", index=index)
        return len(gone)
