"""ClusterIP and NodePort allocation, recorded in the store one key per allocated value.

An allocated ClusterIP is the key `/registry/ranges/serviceips/<ip>` and a NodePort
`/registry/ranges/servicenodeports/<port>`, each holding "namespace/name" of its Service.
The registry creates these keys in the same transaction as the Service, with a
"must not exist" compare on each, and deletes them in the same transaction that deletes
the Service. So a value is never given twice, even by several api-servers at once: of two
creates racing for one IP exactly one transaction succeeds, the other picks again.

This module only picks candidates and checks requested values; it is pure apart from the
random source passed in. The first address after the network address is reserved for a
"kubernetes" Service and never picked automatically (it can be asked for explicitly).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable

from skiff import defaults
from skiffpb.api.v1 import types_pb2 as t

IP_PREFIX = "/registry/ranges/serviceips/"
PORT_PREFIX = "/registry/ranges/servicenodeports/"


def parse_port_range(text: str) -> range:
    """"30000-32767" -> range(30000, 32768); ValueError with a readable message."""
    try:
        lo_text, hi_text = text.split("-", 1)
        lo, hi = int(lo_text), int(hi_text)
    except ValueError:
        raise ValueError(f'invalid port range "{text}": expected LOW-HIGH such as {defaults.NODE_PORT_RANGE}') from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f'invalid port range "{text}": need 1 <= LOW <= HIGH <= 65535')
    return range(lo, hi + 1)


def parse_cidr(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f'invalid service CIDR "{text}": {exc}') from None
    if net.num_addresses < 8:
        raise ValueError(f'service CIDR "{text}" is too small: use a /29 or larger')
    return net


def ip_key(ip: str) -> str:
    return IP_PREFIX + ip


def port_key(port: int) -> str:
    return f"{PORT_PREFIX}{port}"


class Allocator:
    def __init__(self, cidr: str = defaults.SERVICE_CIDR, node_ports: str = defaults.NODE_PORT_RANGE, *,
                 rng: random.Random | None = None) -> None:
        self.network = parse_cidr(cidr)
        self.node_ports = parse_port_range(node_ports)
        self.rng = rng or random.Random()
        base = int(self.network.network_address)
        # Automatic picks skip the network address, the reserved first address and broadcast.
        self._first = base + 2
        self._last = int(self.network.broadcast_address) - 1

    @property
    def reserved_ip(self) -> str:
        return str(self.network.network_address + 1)

    def check_ip(self, ip: str) -> str | None:
        """Why a requested clusterIP cannot be used, or None."""
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            return f'"{ip}" is not a valid IPv4 address'
        if addr not in self.network or addr in (self.network.network_address, self.network.broadcast_address):
            return (f'"{ip}": provided IP is not in the valid range; the range of valid IPs is '
                    f"{self.network.with_prefixlen}")
        return None

    def check_node_port(self, port: int) -> str | None:
        if port not in self.node_ports:
            return (f"{port}: provided port is not in the valid range; the range of valid ports is "
                    f"{self.node_ports.start}-{self.node_ports.stop - 1}")
        return None

    def pick_ip(self, taken: set[str]) -> str | None:
        """A free-looking address (random start, then the next one not in `taken`), or None when full."""
        size = self._last - self._first + 1
        offset = self.rng.randrange(size)
        for i in range(size):
            ip = str(ipaddress.IPv4Address(self._first + (offset + i) % size))
            if ip not in taken:
                return ip
        return None

    def pick_port(self, taken: set[int]) -> int | None:
        size = len(self.node_ports)
        offset = self.rng.randrange(size)
        for i in range(size):
            port = self.node_ports.start + (offset + i) % size
            if port not in taken:
                return port
        return None


def allocation_keys(svc: t.Service) -> set[str]:
    """The allocation keys a stored Service holds."""
    keys: set[str] = set()
    ip = svc.spec.cluster_ip
    if ip and ip != "None":
        keys.add(ip_key(ip))
    if svc.spec.type == "NodePort":
        keys.update(port_key(p.node_port) for p in svc.spec.ports if p.node_port)
    return keys


def owner_value(svc: t.Service) -> bytes:
    return f"{svc.metadata.namespace}/{svc.metadata.name}".encode()


def needs_ip(svc: t.Service) -> bool:
    # An ExternalName Service is only a DNS alias: it never holds a ClusterIP.
    return not svc.spec.cluster_ip and svc.spec.type != "ExternalName"


def ports_needing_allocation(svc: t.Service) -> list[int]:
    """Indexes of spec.ports that need a NodePort picked."""
    if svc.spec.type != "NodePort":
        return []
    return [i for i, p in enumerate(svc.spec.ports) if not p.node_port]


def parse_ip_keys(keys: Iterable[str]) -> set[str]:
    return {k[len(IP_PREFIX):] for k in keys if k.startswith(IP_PREFIX)}


def parse_port_keys(keys: Iterable[str]) -> set[int]:
    return {int(k[len(PORT_PREFIX):]) for k in keys if k.startswith(PORT_PREFIX)}
