"""What the proxy serves: Services and Endpoints reduced to plain, hashable ServicePorts.

Both proxy modes start from `service_ports()` (or its incremental form, `ServicePortTable`).
What must hold:
- it is pure and deterministic: the same objects give the same ServicePorts in the same order
  (sorted by namespace, name, port name, protocol), each with its ready endpoints sorted and
  unique, so renders of unchanged state are identical text;
- only ready addresses (`subsets[].addresses`) are endpoints; `notReadyAddresses` never are;
- a Service the proxy cannot serve (headless, no ClusterIP yet, IPv6, unknown protocol) is
  left out and reported as a problem string, never half-served;
- a ServicePort is equal to another exactly when the rules for it are equal, which lets the
  renderers cache per ServicePort.

Endpoint ports are resolved from the Endpoints object, where the endpoints controller wrote
the numbers: the subset port whose name is the service port's name, else (for a named
targetPort) the subset port named like the targetPort; a subset without ports falls back to
a numeric targetPort (or the service port when targetPort is unset). A subset that resolves
to no port contributes no endpoints to that service port.
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import ipaddress
import itertools
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from skiffpb.api.v1 import types_pb2 as t

PROTOCOLS = ("TCP", "UDP", "SCTP")
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, as Kubernetes defaults ClientIP affinity


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One (Service, port) the proxy serves, with everything its rules depend on."""

    namespace: str
    name: str
    port_name: str  # the ServicePort's name; "" for a single unnamed port
    protocol: str  # TCP, UDP or SCTP
    cluster_ip: str
    port: int
    node_port: int = 0  # 0: no NodePort
    affinity_timeout: int = 0  # seconds of ClientIP affinity; 0: none
    endpoints: tuple[Endpoint, ...] = ()  # ready endpoints, sorted, unique
    # Traffic policies Local: NodePort traffic (external) / ClusterIP traffic (internal) only to
    # `local_endpoints`, the endpoints on this node (EndpointAddress.nodeName).
    external_local: bool = False
    internal_local: bool = False
    local_endpoints: tuple[Endpoint, ...] = ()

    def __hash__(self) -> int:
        # Cached: renderers look ServicePorts up in caches on every sync.
        h: int | None = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.namespace, self.name, self.port_name, self.protocol, self.cluster_ip, self.port,
                      self.node_port, self.affinity_timeout, self.endpoints, self.external_local,
                      self.internal_local, self.local_endpoints))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def key(self) -> str:
        """"ns/svc:port" — the port's name, or its number when unnamed; used in comments."""
        return f"{self.namespace}/{self.name}:{self.port_name or self.port}"

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def proto(self) -> str:
        """The protocol as iptables spells it."""
        return self.protocol.lower()


def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(sp: ServicePort) -> str:
    """KUBE-SVC-<16 chars of base32(sha256)>: 25 characters, under iptables' 28."""
    return "KUBE-SVC-" + _hash16(sp.key + sp.protocol)


def sep_chain(sp: ServicePort, ep: Endpoint) -> str:
    return "KUBE-SEP-" + _hash16(sp.key + sp.protocol + str(ep))


def svl_chain(sp: ServicePort) -> str:
    """KUBE-SVL-: the service port's local endpoints (a traffic policy Local)."""
    return "KUBE-SVL-" + _hash16(sp.key + sp.protocol)


def ext_chain(sp: ServicePort) -> str:
    """KUBE-EXT-: NodePort traffic of an externalTrafficPolicy: Local service port."""
    return "KUBE-EXT-" + _hash16(sp.key + sp.protocol)


def _resolve_port(sp: t.ServicePort, protocol: str, subset: t.EndpointSubset) -> int | None:
    def proto_of(p: t.EndpointPort) -> str:
        return (p.protocol or "TCP").upper()

    for p in subset.ports:
        if p.name == sp.name and proto_of(p) == protocol:
            return p.port
    target = sp.target_port
    which = target.WhichOneof("value")
    if which == "str_val" and target.str_val:
        for p in subset.ports:
            if p.name == target.str_val and proto_of(p) == protocol:
                return p.port
        return None
    if len(subset.ports) == 0:
        if which == "int_val" and target.int_val:
            return target.int_val
        return sp.port
    return None


@functools.lru_cache(maxsize=65536)
def ipv4_key(text: str) -> bytes | None:
    """The address as 4 bytes (a sort key), or None unless `text` is a dotted-quad IPv4 address."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return None
    # Not socket.inet_ntop: pysyncobj (imported by the store, maybe in the same test process)
    # replaces it with a Windows-only version on import.
    return packed if ".".join(map(str, packed)) == text else None


def _endpoints_for(sp: t.ServicePort, protocol: str, eps: t.Endpoints | None, node_name: str = ""
                   ) -> tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]:
    """The ready endpoints, and those of them on `node_name` (none when it is "")."""
    if eps is None:
        return (), ()
    found: dict[Endpoint, bytes] = {}
    local: set[Endpoint] = set()
    for subset in eps.subsets:
        port = _resolve_port(sp, protocol, subset)
        if port is None or not 0 < port < 65536:
            continue
        for addr in subset.addresses:
            key = ipv4_key(addr.ip)
            if key is not None:  # IPv6 or malformed addresses are not proxied
                ep = Endpoint(addr.ip, port)
                found[ep] = key
                if node_name and addr.node_name == node_name:
                    local.add(ep)
    ordered = tuple(sorted(found, key=lambda e: (found[e], e.port)))
    return ordered, tuple(e for e in ordered if e in local)


def _affinity_timeout(svc: t.Service) -> int:
    if svc.spec.session_affinity != "ClientIP":
        return 0
    cfg = svc.spec.session_affinity_config.client_ip
    if cfg.HasField("timeout_seconds") and cfg.timeout_seconds > 0:
        return int(cfg.timeout_seconds)
    return DEFAULT_AFFINITY_TIMEOUT


def _ports_of(svc: t.Service, eps: t.Endpoints | None, node_name: str = "") -> tuple[list[ServicePort], list[str]]:
    ns, name = svc.metadata.namespace, svc.metadata.name
    ip_text = svc.spec.cluster_ip
    if svc.spec.type == "ExternalName" or ip_text in ("", "None"):
        return [], []  # headless or not allocated yet: nothing to proxy
    try:
        vip = ipaddress.ip_address(ip_text)
    except ValueError:
        return [], [f"service {ns}/{name}: clusterIP {ip_text!r} is not an IP address"]
    if vip.version != 4:
        return [], [f"service {ns}/{name}: clusterIP {ip_text} is IPv6; only IPv4 is proxied"]
    node_ports = svc.spec.type in ("NodePort", "LoadBalancer")
    out: list[ServicePort] = []
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for p in svc.spec.ports:
        protocol = (p.protocol or "TCP").upper()
        if protocol not in PROTOCOLS:
            problems.append(f"service {ns}/{name} port {p.name or p.port}: protocol {p.protocol!r} "
                            f"is not one of {', '.join(PROTOCOLS)}")
            continue
        if not 0 < p.port < 65536:
            problems.append(f"service {ns}/{name}: port {p.port} is out of range")
            continue
        endpoints, local = _endpoints_for(p, protocol, eps, node_name)
        node_port = p.node_port if node_ports and 0 < p.node_port < 65536 else 0
        external_local = bool(node_port) and svc.spec.external_traffic_policy == "Local"
        internal_local = svc.spec.internal_traffic_policy == "Local"
        sp = ServicePort(
            namespace=ns, name=name, port_name=p.name, protocol=protocol, cluster_ip=str(vip), port=p.port,
            node_port=node_port, affinity_timeout=_affinity_timeout(svc), endpoints=endpoints,
            external_local=external_local, internal_local=internal_local,
            local_endpoints=local if external_local or internal_local else (),
        )
        if (sp.key, protocol) in seen:  # two ports would share one chain name
            problems.append(f"service {ns}/{name}: port {sp.key} {protocol} is declared twice")
            continue
        seen.add((sp.key, protocol))
        out.append(sp)
    return out, problems


ServiceKey = tuple[str, str]  # (namespace, name): a Service and its Endpoints share it


def _port_order(sp: ServicePort) -> tuple[str, int, str]:
    return sp.port_name, sp.port, sp.protocol


class ServicePortTable:
    """The ServicePorts of a cluster, kept current one Service at a time.

    What must hold: after `rebuild` with every Service and Endpoints, and after any sequence of
    `refresh` calls naming each Service whose Service or Endpoints object changed (or went),
    `ports()` and `problems()` equal what `service_ports` gives for the same objects, and a
    Service whose ServicePorts did not change keeps the very same objects. A refresh costs what
    one Service costs, not what the cluster costs — the proxy's sync after one endpoint change
    among thousands of Services depends on it.
    """

    def __init__(self, node_name: str = "") -> None:
        self.node_name = node_name  # whose endpoints are local (traffic policy Local)
        self._ports_of: dict[ServiceKey, tuple[ServicePort, ...]] = {}
        self._problems_of: dict[ServiceKey, tuple[str, ...]] = {}
        self._order: list[ServiceKey] = []  # the keys of _ports_of, sorted
        self._joined: tuple[tuple[ServicePort, ...], list[str]] | None = ((), [])  # None: to be joined again

    def rebuild(self, services: Iterable[t.Service], endpoints: Iterable[t.Endpoints]) -> None:
        """Forget everything and take these objects as the whole cluster."""
        by_key = {(e.metadata.namespace, e.metadata.name): e for e in endpoints}
        before, self._ports_of, self._problems_of = self._ports_of, {}, {}
        for svc in services:
            key = (svc.metadata.namespace, svc.metadata.name)
            sps, problems = self._compute(svc, by_key.get(key))
            old = before.get(key)
            self._ports_of[key] = old if old == sps else sps  # equal: keep the old objects
            self._problems_of[key] = problems
        self._order = sorted(self._ports_of)
        self._joined = None

    def refresh(self, key: ServiceKey, svc: t.Service | None, eps: t.Endpoints | None) -> None:
        """The Service `key` is now `svc` (None: gone) with Endpoints `eps` (None: none)."""
        if svc is None:
            if self._ports_of.pop(key, None) is not None:
                del self._problems_of[key]
                del self._order[bisect.bisect_left(self._order, key)]
                self._joined = None
            return
        sps, problems = self._compute(svc, eps)
        old = self._ports_of.get(key)
        if old is None:
            bisect.insort(self._order, key)
        elif old == sps and self._problems_of[key] == problems:
            return  # keep the old objects: the renderers' caches know them
        self._ports_of[key] = sps
        self._problems_of[key] = problems
        self._joined = None

    def _compute(self, svc: t.Service, eps: t.Endpoints | None) -> tuple[tuple[ServicePort, ...], tuple[str, ...]]:
        sps, problems = _ports_of(svc, eps, self.node_name)
        return tuple(sorted(sps, key=_port_order)), tuple(problems)

    def _join(self) -> tuple[tuple[ServicePort, ...], list[str]]:
        if self._joined is None:
            # map/chain keep the walk over every Service in C: it runs on every sync that changed one.
            self._joined = (tuple(itertools.chain.from_iterable(map(self._ports_of.__getitem__, self._order))),
                            list(itertools.chain.from_iterable(map(self._problems_of.__getitem__, self._order))))
        return self._joined

    def ports(self) -> tuple[ServicePort, ...]:
        """Every ServicePort, sorted by namespace, name, port name, port and protocol; the same
        tuple object until something changes."""
        return self._join()[0]

    def problems(self) -> list[str]:
        """Why Services were left out, in the order of the Services' keys."""
        return list(self._join()[1])


def service_ports(services: Iterable[t.Service], endpoints: Iterable[t.Endpoints], *,
                  node_name: str = "") -> tuple[list[ServicePort], list[str]]:
    """The ServicePorts to program, sorted, and the problems of the Services left out.

    `node_name`: this node, whose endpoints are the local ones of a traffic policy Local.
    """
    table = ServicePortTable(node_name)
    table.rebuild(services, endpoints)
    return list(table.ports()), table.problems()


def node_ips(node: t.Node | None) -> tuple[str, ...]:
    """The node's IPv4 InternalIP and ExternalIP addresses, sorted."""
    if node is None:
        return ()
    ips: set[str] = set()
    for a in node.status.addresses:
        if a.type in ("InternalIP", "ExternalIP"):
            try:
                ip = ipaddress.ip_address(a.address)
            except ValueError:
                continue
            if ip.version == 4:
                ips.add(str(ip))
    return tuple(sorted(ips, key=ipaddress.IPv4Address))
