"""IPVS mode, pure part: the desired IPVS state for a snapshot and the plan that reaches it.

Desired state: one virtual server per (ClusterIP, protocol, port), and per NodePort one on
every node address, each with the ready endpoints as real servers (masquerading, weight 1) —
only this node's endpoints for a ClusterIP with internalTrafficPolicy Local, or a NodePort
with externalTrafficPolicy Local;
ClientIP affinity becomes IPVS persistence with the affinity timeout. Every ClusterIP is
bound to the dummy interface `kube-ipvs0`, which makes the node accept packets for it.

What must hold for `plan(desired, observed)`:
- applying the actions to `observed` gives `desired` for everything netproxy owns, and
  leaves everything else alone: a virtual server is owned when its address is bound to
  kube-ipvs0 (or is about to be), or it is a node address with a port in the NodePort range;
- actions are ordered so each one is valid when it runs: the link before its addresses,
  services before their destinations, destinations removed before their services;
- it is deterministic (sorted within each step), and empty when nothing differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netproxy.model import ServicePort
from skiff import defaults

LINK = "kube-ipvs0"
NODEPORT_RANGE = (defaults.NODE_PORT_MIN, defaults.NODE_PORT_MAX)

VSKey = tuple[str, str, int]  # (address, protocol, port)


@dataclass(frozen=True, order=True)
class VirtualServer:
    address: str
    protocol: str  # TCP, UDP, SCTP
    port: int
    scheduler: str = "rr"
    persistent: int = 0  # seconds of persistence (ClientIP affinity); 0: none

    @property
    def key(self) -> VSKey:
        return (self.address, self.protocol, self.port)

    def __str__(self) -> str:
        extra = f" persistent {self.persistent}" if self.persistent else ""
        return f"{self.protocol} {self.address}:{self.port} {self.scheduler}{extra}"


@dataclass(frozen=True, order=True)
class RealServer:
    address: str
    port: int
    weight: int = 1

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)

    def __str__(self) -> str:
        return f"{self.address}:{self.port} weight {self.weight}"


@dataclass(frozen=True)
class IpvsState:
    services: Mapping[VSKey, VirtualServer] = field(default_factory=dict)
    dests: Mapping[VSKey, frozenset[RealServer]] = field(default_factory=dict)
    addresses: frozenset[str] = frozenset()  # bound to kube-ipvs0
    link: bool = True  # kube-ipvs0 exists


@dataclass(frozen=True)
class Action:
    op: str  # add-link, add-address, del-address, add-service, update-service, del-service,
    #          add-dest, update-dest, del-dest
    service: VirtualServer | None = None
    dest: RealServer | None = None
    address: str = ""

    def __str__(self) -> str:
        what = self.address or (f"{self.service} -> {self.dest}" if self.dest else str(self.service or LINK))
        return f"{self.op} {what}"


def desired_state(sps: Iterable[ServicePort], *, node_ips: Iterable[str] = (), scheduler: str = "rr") -> IpvsState:
    services: dict[VSKey, VirtualServer] = {}
    dests: dict[VSKey, frozenset[RealServer]] = {}
    addresses: set[str] = set()
    ips = sorted(set(node_ips))
    for sp in sps:
        real = frozenset(RealServer(ep.ip, ep.port) for ep in sp.endpoints)
        local = frozenset(RealServer(ep.ip, ep.port) for ep in sp.local_endpoints)
        # Traffic policies Local: only this node's endpoints (none: the virtual server stays, empty).
        vss = [(VirtualServer(sp.cluster_ip, sp.protocol, sp.port, scheduler, sp.affinity_timeout),
                local if sp.internal_local else real)]
        if sp.node_port:
            vss += [(VirtualServer(ip, sp.protocol, sp.node_port, scheduler, sp.affinity_timeout),
                     local if sp.external_local else real) for ip in ips]
        for vs, servers in vss:
            services[vs.key] = vs
            dests[vs.key] = servers
        addresses.add(sp.cluster_ip)
    return IpvsState(services, dests, frozenset(addresses), True)


def owned(key: VSKey, *, addresses: Iterable[str], node_ips: Iterable[str]) -> bool:
    address, _, port = key
    if address in set(addresses):
        return True
    return address in set(node_ips) and NODEPORT_RANGE[0] <= port <= NODEPORT_RANGE[1]


def plan(desired: IpvsState, observed: IpvsState, *, node_ips: Iterable[str] = ()) -> list[Action]:
    ips = set(node_ips)
    bound = observed.addresses | desired.addresses
    actions: list[Action] = []
    if not observed.link:
        actions.append(Action("add-link"))
    actions += [Action("add-address", address=a) for a in sorted(desired.addresses - observed.addresses)]
    for key in sorted(desired.services):
        vs = desired.services[key]
        have = observed.services.get(key)
        if have is None:
            actions.append(Action("add-service", service=vs))
        elif have != vs:
            actions.append(Action("update-service", service=vs))
    dest_adds: list[Action] = []
    dest_dels: list[Action] = []
    for key in sorted(desired.services):
        vs = desired.services[key]
        want = {d.key: d for d in desired.dests.get(key, frozenset())}
        have_d = {d.key: d for d in observed.dests.get(key, frozenset())} if key in observed.services else {}
        for dk in sorted(want):
            if dk not in have_d:
                dest_adds.append(Action("add-dest", service=vs, dest=want[dk]))
            elif have_d[dk] != want[dk]:
                dest_adds.append(Action("update-dest", service=vs, dest=want[dk]))
        dest_dels += [Action("del-dest", service=vs, dest=have_d[dk]) for dk in sorted(set(have_d) - set(want))]
    actions += dest_adds + dest_dels
    for key in sorted(set(observed.services) - set(desired.services)):
        if owned(key, addresses=bound, node_ips=ips):
            actions.append(Action("del-service", service=observed.services[key]))
    actions += [Action("del-address", address=a) for a in sorted(observed.addresses - desired.addresses)]
    return actions


def apply_actions(state: IpvsState, actions: Iterable[Action]) -> IpvsState:
    """The state after `actions` — the in-memory kernel's semantics; raises on an invalid action."""
    services = dict(state.services)
    dests = {k: set(v) for k, v in state.dests.items()}
    addresses = set(state.addresses)
    link = state.link
    for a in actions:
        key = a.service.key if a.service is not None else None
        if a.op == "add-link":
            if link:
                raise ValueError(f"{a}: {LINK} exists")
            link = True
        elif a.op in ("add-address", "del-address"):
            if not link:
                raise ValueError(f"{a}: no {LINK}")
            if (a.address in addresses) == (a.op == "add-address"):
                raise ValueError(f"{a}: address {'already' if a.op == 'add-address' else 'not'} bound")
            (addresses.add if a.op == "add-address" else addresses.discard)(a.address)
        elif a.op in ("add-service", "update-service", "del-service"):
            assert a.service is not None and key is not None
            exists = key in services
            if exists != (a.op != "add-service"):
                raise ValueError(f"{a}: service {'exists' if exists else 'missing'}")
            if a.op == "del-service":
                del services[key]
                dests.pop(key, None)
            else:
                services[key] = a.service
                dests.setdefault(key, set())
        elif a.op in ("add-dest", "update-dest", "del-dest"):
            assert a.dest is not None and key is not None
            if key not in services:
                raise ValueError(f"{a}: service missing")
            current = {d.key: d for d in dests[key]}
            exists = a.dest.key in current
            if exists != (a.op != "add-dest"):
                raise ValueError(f"{a}: destination {'exists' if exists else 'missing'}")
            if exists:
                dests[key].discard(current[a.dest.key])
            if a.op != "del-dest":
                dests[key].add(a.dest)
        else:
            raise ValueError(f"unknown action {a.op}")
    return IpvsState(services, {k: frozenset(v) for k, v in dests.items()}, frozenset(addresses), link)
