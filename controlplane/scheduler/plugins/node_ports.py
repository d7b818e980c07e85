"""NodePorts: a pod's hostPorts must be free on the node (same protocol and port, overlapping IP)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from controlplane.scheduler.framework import Status, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo

NAME = "NodePorts"
REASON = "node(s) didn't have free ports for the requested pod ports"
_CONFLICT = unschedulable(NAME, REASON)
ANY = "0.0.0.0"


def conflicts(wanted: Iterable[tuple[str, str, int]], used: Mapping[tuple[str, int], Sequence[str]]) -> bool:
    """True if any wanted (protocol, hostIP, port) collides: same protocol and port, and either
    address is the wildcard or both are the same address."""
    for proto, ip, port in wanted:
        ips = used.get((proto, port))
        if not ips:
            continue
        if ip == ANY or ANY in ips or ip in ips:
            return True
    return False


class NodePorts:
    name = NAME
    memoizable = True

    def pre_filter(self, pod: PodInfo) -> bool:
        return bool(pod.host_ports)

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        return _CONFLICT if conflicts(pod.host_ports, node.ports) else None
