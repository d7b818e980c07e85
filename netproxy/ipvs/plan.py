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

from collections.abc import Collection, Iterable, Mapping, Sequence
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


VSEntry = tuple[VirtualServer, frozenset[RealServer]]  # a virtual server and its real servers


def virtual_servers(sp: ServicePort, *, node_ips: Sequence[str], scheduler: str) -> tuple[VSEntry, ...]:
    """One service port's virtual servers (its ClusterIP's; per NodePort one per node address)."""
    real = frozenset(RealServer(ep.ip, ep.port) for ep in sp.endpoints)
    local = frozenset(RealServer(ep.ip, ep.port) for ep in sp.local_endpoints)
    # Traffic policies Local: only this node's endpoints (none: the virtual server stays, empty).
    vss = [(VirtualServer(sp.cluster_ip, sp.protocol, sp.port, scheduler, sp.affinity_timeout),
            local if sp.internal_local else real)]
    if sp.node_port:
        vss += [(VirtualServer(ip, sp.protocol, sp.node_port, scheduler, sp.affinity_timeout),
                 local if sp.external_local else real) for ip in node_ips]
    return tuple(vss)


def _state(entries: Iterable[tuple[ServicePort, tuple[VSEntry, ...]]], *, only: Collection[VSKey] | None = None,
           addresses: Collection[str] | None = None) -> IpvsState:
    """The state of these service ports' virtual servers (`only`: of those keys; `addresses`: of those)."""
    services: dict[VSKey, VirtualServer] = {}
    dests: dict[VSKey, frozenset[RealServer]] = {}
    bound: set[str] = set()
    for sp, vss in entries:
        for vs, servers in vss:
            if only is None or vs.key in only:
                services[vs.key] = vs
                dests[vs.key] = servers
        if addresses is None or sp.cluster_ip in addresses:
            bound.add(sp.cluster_ip)
    return IpvsState(services, dests, frozenset(bound), True)


def desired_state(sps: Iterable[ServicePort], *, node_ips: Iterable[str] = (), scheduler: str = "rr") -> IpvsState:
    ips = sorted(set(node_ips))
    return _state((sp, virtual_servers(sp, node_ips=ips, scheduler=scheduler)) for sp in sps)


class IpvsTable:
    """`desired_state` kept current between syncs, giving what changed as two small states.

    What must hold: after `full(sps, node_ips)`, each `step(sps')` (same node addresses) returns
    `(before, after)`: the desired state of the previous sps and of `sps'`, both restricted to the
    virtual servers and ClusterIPs of the service ports that are not the very objects of the
    previous call (ServicePortTable keeps unchanged ones), so that `plan(after, before)` touches
    exactly those; applying it to a kernel holding the previous desired state gives `sps'`'s. A
    step costs what changed: unchanged service ports are found by identity, in C.
    Two service ports sharing one virtual server (an invalid cluster: one ClusterIP twice) may be
    left to the next full sync, which compares with the kernel.
    """

    def __init__(self, *, scheduler: str = "rr") -> None:
        self.scheduler = scheduler
        self.node_ips: tuple[str, ...] = ()
        self._by_id: dict[int, tuple[ServicePort, tuple[VSEntry, ...]]] = {}
        self._ip_users: dict[str, int] = {}  # ClusterIP -> service ports using it
        self._sps: Collection[ServicePort] | None = None

    def full(self, sps: Collection[ServicePort], node_ips: Iterable[str]) -> IpvsState:
        """Forget the last state; the whole desired state for `sps`."""
        self.node_ips = tuple(sorted(set(node_ips)))
        self._by_id = {id(sp): (sp, virtual_servers(sp, node_ips=self.node_ips, scheduler=self.scheduler))
                       for sp in sps}
        self._ip_users = {}
        for sp in sps:
            self._ip_users[sp.cluster_ip] = self._ip_users.get(sp.cluster_ip, 0) + 1
        self._sps = sps
        return _state(self._by_id.values())

    def step(self, sps: Collection[ServicePort]) -> tuple[IpvsState, IpvsState]:
        """(before, after), restricted to what changed since the last call (class docstring)."""
        if sps is self._sps:
            return IpvsState(), IpvsState()
        current = dict(zip(map(id, sps), sps, strict=True))
        before_ids = self._by_id.keys()
        removed = [self._by_id.pop(i) for i in before_ids - current.keys()]
        added = [(current[i], virtual_servers(current[i], node_ips=self.node_ips, scheduler=self.scheduler))
                 for i in current.keys() - before_ids]
        self._by_id.update((id(sp), (sp, vss)) for sp, vss in added)
        ips = {sp.cluster_ip for sp, _ in removed} | {sp.cluster_ip for sp, _ in added}
        was_bound = {ip for ip in ips if self._ip_users.get(ip, 0) > 0}
        for sp, _ in removed:
            self._ip_users[sp.cluster_ip] -= 1
        for sp, _ in added:
            self._ip_users[sp.cluster_ip] = self._ip_users.get(sp.cluster_ip, 0) + 1
        now_bound = {ip for ip in ips if self._ip_users.get(ip, 0) > 0}
        for ip in ips - now_bound:
            self._ip_users.pop(ip, None)
        self._sps = sps
        before = _state(removed)
        after = _state(added)
        return (IpvsState(before.services, before.dests, frozenset(was_bound), True),
                IpvsState(after.services, after.dests, frozenset(now_bound), True))


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
