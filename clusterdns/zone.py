"""The cluster zone as data: informer-cache snapshots in, DNS answers out. Pure: no sockets, no clock.

`build_zone(services, endpoints, pods, config)` computes every record the cluster domain holds,
the way CoreDNS' kubernetes plugin answers (the Kubernetes DNS specification):
- `<svc>.<ns>.svc.<domain>` A: the ClusterIP; for a headless Service (clusterIP None) the IP of
  every endpoint address (Endpoints `addresses`; with publishNotReadyAddresses the endpoints
  controller already lists not-ready pods there); an ExternalName Service is a CNAME of its
  externalName;
- `<host>.<svc>.<ns>.svc.<domain>` A for each endpoint of a headless Service, where `<host>` is
  the address' hostname (a pod with hostname and subdomain = the Service's name) or else its IP
  with dashes (`10-244-1-5`);
- `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for each named port (target the Service name,
  or each endpoint name of a headless Service, with the endpoint's port); `<svc>.<ns>.svc...`
  SRV lists every named port; the targets' A records go in the additional section;
- `<a-b-c-d>.<ns>.pod.<domain>` A for a pod of that namespace that has that IP ("pods verified");
- PTR for every ClusterIP, headless endpoint and pod IP; inside the reverse CIDRs (service and
  cluster CIDR) an unknown address is NXDOMAIN, elsewhere it is not ours (forwarded);
- `dns-version.<domain>` TXT `1.1.0`; SOA at the apex.

`answer(zone, qname, qtype)` then never invents anything: a name inside the domain that holds
no record and is no ancestor of one is NXDOMAIN; an existing name without the type asked is
NOERROR with no answer (NODATA); both carry the SOA for negative caching. A name outside the
domain (and outside the reverse CIDRs) is `forward`: the adapter sends it upstream or answers
SERVFAIL. Names are compared lower-case, always absolute (trailing dot).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from skiffpb.api.v1 import types_pb2 as t

DNS_SCHEMA_VERSION = "1.1.0"
DEFAULT_TTL = 5  # seconds, CoreDNS kubernetes plugin's default


@dataclass(frozen=True)
class ZoneConfig:
    domain: str = "cluster.local"
    ttl: int = DEFAULT_TTL
    reverse_cidrs: tuple[str, ...] = ()  # PTR queries for addresses in these are answered here

    @property
    def origin(self) -> str:
        return fqdn(self.domain)


@dataclass(frozen=True)
class Record:
    """One resource record; `data` is in presentation format (what `dig` prints)."""

    name: str
    rtype: str  # A, CNAME, SRV, PTR, TXT, SOA
    ttl: int
    data: str


@dataclass(frozen=True)
class Zone:
    config: ZoneConfig
    records: dict[tuple[str, str], tuple[Record, ...]] = field(default_factory=dict)
    names: frozenset[str] = frozenset()  # every owner name and every ancestor of one inside the zone
    additional: dict[str, tuple[Record, ...]] = field(default_factory=dict)  # SRV target -> its A records
    reverse_networks: tuple[ipaddress.IPv4Network, ...] = ()

    @property
    def soa(self) -> Record:
        origin = self.config.origin
        return Record(origin, "SOA", self.config.ttl,
                      f"ns.dns.{origin} hostmaster.{origin} 1 7200 1800 86400 {self.config.ttl}")


@dataclass(frozen=True)
class Answer:
    rcode: str  # NOERROR, NXDOMAIN, SERVFAIL
    answer: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    authoritative: bool = True
    forward: bool = False  # not ours: ask the upstreams


def fqdn(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def reverse_name(ip: str) -> str:
    """`d.c.b.a.in-addr.arpa.` of an IPv4 address already checked by _is_ipv4."""
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa."


@functools.lru_cache(maxsize=1 << 16)
def _is_ipv4(text: str) -> bool:
    # String checks, cached: every rebuild sees the same addresses again, and ipaddress'
    # parser was most of a rebuild's time.
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 and (p == "0" or p[0] != "0")
                                   for p in parts)


class _Builder:
    def __init__(self, config: ZoneConfig) -> None:
        self.config = config
        self.origin = config.origin
        self.records: dict[tuple[str, str], list[Record]] = {}
        self.additional: dict[str, list[Record]] = {}

    def add(self, name: str, rtype: str, data: str) -> None:
        rec = Record(name, rtype, self.config.ttl, data)
        bucket = self.records.setdefault((name, rtype), [])
        if rec not in bucket:
            bucket.append(rec)

    def add_ptr(self, ip: str, target: str) -> None:
        # The first name given for an address wins (a Service name before a pod name).
        name = reverse_name(ip)
        if (name, "PTR") not in self.records:
            self.add(name, "PTR", target)

    def service(self, svc: t.Service, eps: t.Endpoints | None) -> None:
        ns, svc_name = svc.metadata.namespace, svc.metadata.name
        base = f"{svc_name}.{ns}.svc.{self.origin}".lower()
        spec = svc.spec
        if spec.type == "ExternalName":
            if spec.external_name:
                self.add(base, "CNAME", fqdn(spec.external_name))
            return
        named = [p for p in spec.ports if p.name]
        if spec.cluster_ip and spec.cluster_ip != "None":
            if not _is_ipv4(spec.cluster_ip):
                return
            self.add(base, "A", spec.cluster_ip)
            self.add_ptr(spec.cluster_ip, base)
            for p in named:
                srv = f"_{p.name}._{(p.protocol or 'TCP').lower()}.{base}".lower()
                self.add(srv, "SRV", f"0 100 {p.port} {base}")
                self.add(base, "SRV", f"0 100 {p.port} {base}")
                self.additional.setdefault(base, [Record(base, "A", self.config.ttl, spec.cluster_ip)])
            return
        if spec.cluster_ip != "None" or eps is None:
            return
        # Headless: the endpoints are the answer.
        targets: list[tuple[str, str, t.EndpointSubset]] = []
        for subset in eps.subsets:
            for addr in subset.addresses:
                if not _is_ipv4(addr.ip):
                    continue
                host = f"{(addr.hostname or dashed(addr.ip))}.{base}".lower()
                self.add(base, "A", addr.ip)
                self.add(host, "A", addr.ip)
                self.add_ptr(addr.ip, host)
                targets.append((host, addr.ip, subset))
        for p in named:
            proto = (p.protocol or "TCP").lower()
            srv = f"_{p.name}._{proto}.{base}".lower()
            for host, ip, subset in targets:
                port = next((ep.port for ep in subset.ports
                             if ep.name == p.name and (ep.protocol or "TCP").lower() == proto), None)
                if port is None:
                    continue
                weight = max(100 // max(len(targets), 1), 1)
                self.add(srv, "SRV", f"0 {weight} {port} {host}")
                self.add(base, "SRV", f"0 {weight} {port} {host}")
                self.additional.setdefault(host, [Record(host, "A", self.config.ttl, ip)])

    def pod(self, pod: t.Pod) -> None:
        ip = pod.status.pod_ip
        if not ip or not _is_ipv4(ip) or pod.spec.host_network:
            return
        name = f"{dashed(ip)}.{pod.metadata.namespace}.pod.{self.origin}".lower()
        self.add(name, "A", ip)

    def pod_ptr(self, pod: t.Pod) -> None:
        ip = pod.status.pod_ip
        if ip and _is_ipv4(ip) and not pod.spec.host_network:
            self.add_ptr(ip, f"{dashed(ip)}.{pod.metadata.namespace}.pod.{self.origin}".lower())


def _ancestors(name: str, origin: str) -> Iterable[str]:
    """`name` and each parent down to `origin`, when name is inside origin."""
    while name.endswith(origin) and len(name) >= len(origin):
        yield name
        if name == origin:
            return
        name = name.split(".", 1)[1]


def build_zone(services: Iterable[t.Service], endpoints: Iterable[t.Endpoints], pods: Iterable[t.Pod],
               config: ZoneConfig) -> Zone:
    """Every record of the cluster domain (and the reverse CIDRs) for one snapshot of the caches."""
    b = _Builder(config)
    eps_by_key = {(e.metadata.namespace, e.metadata.name): e for e in endpoints}
    ordered_pods = sorted(pods, key=lambda p: (p.metadata.namespace, p.metadata.name))
    for svc in sorted(services, key=lambda s: (s.metadata.namespace, s.metadata.name)):
        b.service(svc, eps_by_key.get((svc.metadata.namespace, svc.metadata.name)))
    for pod in ordered_pods:
        b.pod(pod)
    for pod in ordered_pods:
        b.pod_ptr(pod)
    origin = b.origin
    b.add(origin, "SOA", Zone(config).soa.data)
    b.add(f"dns-version.{origin}", "TXT", f'"{DNS_SCHEMA_VERSION}"')
    names: set[str] = set()
    for name, _ in b.records:
        if name in names:
            continue
        names.add(name)
        # Ancestors inside the zone exist too (empty non-terminals answer NODATA, not NXDOMAIN);
        # stop at the first one already known, its own ancestors are then known as well.
        for parent in _ancestors(name, origin):
            if parent != name and parent in names:
                break
            names.add(parent)
    networks = tuple(ipaddress.IPv4Network(c, strict=False) for c in config.reverse_cidrs)
    return Zone(config=config, records={k: tuple(v) for k, v in b.records.items()}, names=frozenset(names),
                additional={k: tuple(v) for k, v in b.additional.items()}, reverse_networks=networks)


def _reverse_ip(name: str) -> ipaddress.IPv4Address | None:
    """The address an `in-addr.arpa.` name stands for, or None (partial or not IPv4)."""
    suffix = ".in-addr.arpa."
    if not name.endswith(suffix):
        return None
    parts = name[: -len(suffix)].split(".")
    if len(parts) != 4:
        return None
    try:
        return ipaddress.IPv4Address(".".join(reversed(parts)))
    except ValueError:
        return None


def _reverse_zone_of(zone: Zone, name: str) -> bool:
    """Whether a reverse name (full address or a parent like 96.10.in-addr.arpa.) falls in our CIDRs."""
    ip = _reverse_ip(name)
    if ip is not None:
        return any(ip in net for net in zone.reverse_networks)
    return False


def answer(zone: Zone, qname: str, qtype: str) -> Answer:
    """The reply to one question: records, NODATA, NXDOMAIN, or `forward` when the name is not ours."""
    name = fqdn(qname)
    origin = zone.config.origin
    in_zone = name == origin or name.endswith("." + origin)
    if not in_zone and not _reverse_zone_of(zone, name):
        return Answer("NOERROR", authoritative=False, forward=True)
    negative = (zone.soa,)
    cname = zone.records.get((name, "CNAME"))
    if cname and qtype != "CNAME":
        # A CNAME owns its name: every type is answered with it, chased once when it stays inside the zone.
        target = cname[0].data
        chased = answer(zone, target, qtype) if target.endswith("." + origin) else None
        if chased is not None and chased.rcode == "NOERROR":
            return Answer("NOERROR", cname + chased.answer, chased.additional)
        return Answer("NOERROR", cname)
    if qtype == "ANY":
        found = tuple(r for (n, _), recs in sorted(zone.records.items()) if n == name for r in recs)
    else:
        found = zone.records.get((name, qtype), ())
    if found:
        additional: tuple[Record, ...] = ()
        if qtype == "SRV":
            seen: set[str] = set()
            extra: list[Record] = []
            for rec in found:
                target = rec.data.rsplit(" ", 1)[1]
                if target not in seen:
                    seen.add(target)
                    extra.extend(zone.additional.get(target, ()))
            additional = tuple(extra)
        return Answer("NOERROR", found, additional)
    if name in zone.names:
        return Answer("NOERROR", authority=negative)
    return Answer("NXDOMAIN", authority=negative)
