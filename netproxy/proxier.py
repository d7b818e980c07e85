"""The seam between the sync loop and a proxy mode.

A Proxier turns a Snapshot (what to serve) into kernel state. `sync` is idempotent and may
be called with the same snapshot any number of times; `full=True` means "trust nothing you
remember about the kernel". It raises on failure, and the caller retries with a full sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from netproxy.model import ServicePort


@dataclass(frozen=True)
class Snapshot:
    service_ports: tuple[ServicePort, ...]
    node_ips: tuple[str, ...] = ()  # this node's addresses (NodePort virtual servers in IPVS mode)


@dataclass
class SyncResult:
    changed: bool  # the kernel was written to
    full: bool
    rules: dict[str, int] = field(default_factory=dict)  # iptables rules per table
    restores: int = 0  # iptables-restore runs
    detail: str = ""  # one line for the log


class Proxier(Protocol):
    mode: str

    async def sync(self, snapshot: Snapshot, *, full: bool = False) -> SyncResult: ...

    async def cleanup(self) -> None: ...
