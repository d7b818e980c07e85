"""What a removed Skiff worker leaves in its host's network: pod routes and the CNI bridge.

Used by `python -m deploy.install remove`, after the pods are gone (deploy/containerd.py removes
them through CRI, and cleans up after a crashed containerd). The node agent installed a route to
every other node's podCIDR (host-gw) and the bridge plugin made `cni0` with a route to the
node's own podCIDR; neither goes away with the daemons.

What must hold: only routes inside the cluster's pod CIDR are deleted (the planning is pure and
tested), and running it twice is harmless.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Mapping, Sequence


def plan_route_removal(routes: Sequence[Mapping[str, object]], cluster_cidr: str) -> list[str]:
    """Destinations (from `ip -j route show`) inside the cluster's pod CIDR."""
    cluster = ipaddress.IPv4Network(cluster_cidr)
    out = []
    for r in routes:
        dst = str(r.get("dst", ""))
        if not dst or dst == "default":
            continue
        try:
            net = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if net.subnet_of(cluster):
            out.append(dst)
    return out


def remove_node_network(cluster_cidr: str, *, bridge: str = "cni0") -> list[str]:
    """Delete the pod routes and the CNI bridge of this host (its current network namespace)."""
    notes = []
    proc = subprocess.run(["ip", "-j", "-4", "route", "show"], capture_output=True, text=True, check=False)
    routes = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []
    for dst in plan_route_removal(routes, cluster_cidr):
        if subprocess.run(["ip", "route", "del", dst], capture_output=True, check=False).returncode == 0:
            notes.append(f"deleted route {dst}")
    if subprocess.run(["ip", "link", "show", bridge], capture_output=True, check=False).returncode == 0:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        notes.append(f"deleted bridge {bridge}")
    return notes
