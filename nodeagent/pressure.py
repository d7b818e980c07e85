"""Node pressure and allocatable, from the host. `read_host` reads /proc and statvfs; the rest is
pure.

What must hold (the kubelet's defaults for its hard eviction thresholds):
- MemoryPressure is True when MemAvailable < `memory_available` (100Mi); DiskPressure when the
  filesystem holding the node's state has less than `nodefs_available` (10%) free;
  PIDPressure when fewer than `pid_available` (10%) of kernel.pid_max are left. Each condition
  carries the kubelet's reasons (KubeletHasSufficientMemory / KubeletHasInsufficientMemory, ...)
  and keeps its lastTransitionTime while its status stays the same;
- allocatable is capacity minus the memory threshold (pods may not use what would trigger
  eviction), never below zero; cpu and pods are allocatable in full.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from skiff import conditions, quantity
from skiff.clock import micro_timestamp
from skiffpb.api.v1 import types_pb2 as t

PRESSURE_TYPES = ("MemoryPressure", "DiskPressure", "PIDPressure")


@dataclass(frozen=True)
class HostStats:
    mem_available: int  # bytes
    disk_available: int  # bytes, for unprivileged users
    disk_total: int
    pids: int  # processes now
    pid_max: int


@dataclass(frozen=True)
class Thresholds:
    memory_available: int = 100 * 2**20
    nodefs_available: float = 0.10
    pid_available: float = 0.10


def read_host(path: str) -> HostStats:
    """The host's memory, the free space of the filesystem holding `path`, and process counts."""
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                mem = int(line.split()[1]) * 1024
    while not os.path.exists(path) and path not in ("", "/"):
        path = os.path.dirname(path)  # the state dir may not exist yet: its filesystem is the parent's
    st = os.statvfs(path or "/")
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    pids = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
    return HostStats(mem, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, pids, pid_max)


def _condition(ctype: str, under: bool, reasons: tuple[str, str, str, str], previous: Sequence[t.NodeCondition],
               now: float) -> t.NodeCondition:
    ok_reason, ok_msg, bad_reason, bad_msg = reasons
    status = "True" if under else "False"
    out = t.NodeCondition(type=ctype, status=status, reason=bad_reason if under else ok_reason,
                          message=bad_msg if under else ok_msg)
    out.last_heartbeat_time.CopyFrom(micro_timestamp(now))
    out.last_transition_time.CopyFrom(conditions.transition_time(previous, ctype, status, now))
    return out


def pressure_conditions(stats: HostStats, previous: Sequence[t.NodeCondition], now: float,
                        thresholds: Thresholds = Thresholds()) -> list[t.NodeCondition]:
    memory = stats.mem_available < thresholds.memory_available
    disk = stats.disk_total > 0 and stats.disk_available < thresholds.nodefs_available * stats.disk_total
    pid = stats.pid_max > 0 and stats.pid_max - stats.pids < thresholds.pid_available * stats.pid_max
    return [
        _condition("MemoryPressure", memory, (
            "KubeletHasSufficientMemory", "node agent has sufficient memory available",
            "KubeletHasInsufficientMemory", "node agent has insufficient memory available"), previous, now),
        _condition("DiskPressure", disk, (
            "KubeletHasNoDiskPressure", "node agent has no disk pressure",
            "KubeletHasDiskPressure", "node agent has disk pressure"), previous, now),
        _condition("PIDPressure", pid, (
            "KubeletHasSufficientPID", "node agent has sufficient PID available",
            "KubeletHasInsufficientPID", "node agent has insufficient PID available"), previous, now),
    ]


def allocatable(capacity: Mapping[str, str], thresholds: Thresholds = Thresholds()) -> dict[str, str]:
    out = dict(capacity)
    if "memory" in capacity:
        out["memory"] = quantity.format_bytes(max(quantity.to_bytes(capacity["memory"])
                                                  - thresholds.memory_available, 0))
    return out


def merge_conditions(node: t.Node, pressure: Sequence[t.NodeCondition]) -> None:
    """Put the pressure conditions into node.status, after the ones they replace, in place."""
    others = [c for c in node.status.conditions if c.type not in PRESSURE_TYPES]
    del node.status.conditions[:]
    node.status.conditions.extend([*pressure, *others])


def same(a: Sequence[t.NodeCondition], b: Sequence[t.NodeCondition]) -> bool:
    """Equal but for heartbeat times."""
    return [(c.type, c.status, c.reason) for c in a] == [(c.type, c.status, c.reason) for c in b]
