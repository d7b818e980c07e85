"""The IPVS-mode scenario, run where the kernel has IP_VS (a QEMU guest here), recording what it sees.

Usage: python -m tests.e2e.netproxy.ipvs_scenario OUT.json   (as root)

It builds the two-node namespace topology of `lab.py`, moves itself into node n1's network
namespace (pyroute2 programs the IPVS of its own namespace) and drives netproxy's IpvsProxier
through the phases of PHASES: each phase is one sync of a snapshot (the first full, the others
partial, as netproxy runs them) or the cleanup `--cleanup` runs, after which it records the raw
facts: the kernel's IPVS state as pyroute2 dumps it, `ipvsadm -Ln` (an independent reader),
kube-ipvs0 (`ip -d -j`), `iptables-nft-save`, `ipset list -n`, the IPVS sysctls, and the
answers to new TCP connections from nodes and pods. It decides nothing: test_ipvs_kernel.py, on
the host, checks the record. Everything is one process and the clients are busybox, because
Python is 10-20x slower under emulation.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import subprocess
import sys
import time
from typing import Any

from tests.e2e.netproxy.lab import POD_PORT, PODS, Lab, new_prefix

CLONE_NEWNET = 0x40000000
CLUSTER_CIDR = "10.244.0.0/16"
NODE_IP = "10.77.0.11"
VIP = "10.96.0.20"
STICKY_VIP = "10.96.0.21"
NODE_PORT = 30090
FOREIGN = f"{NODE_IP}:8000"  # a virtual server netproxy does not own: cleanup must leave it
CONNECTIONS = 20
MODULES = ("ip_vs", "ip_vs_rr", "nf_conntrack", "br_netfilter", "dummy")
SYSCTLS = ("net/ipv4/vs/conntrack", "net/ipv4/conf/all/arp_ignore", "net/ipv4/conf/all/arp_announce")


def service(name: str, cluster_ip: str, port: int, pods: list[str], *, node_port: int = 0,
            affinity: int = 0) -> dict[str, Any]:
    return {"namespace": "default", "name": name, "port_name": "http", "protocol": "TCP", "cluster_ip": cluster_ip,
            "port": port, "node_port": node_port, "affinity_timeout": affinity,
            "endpoints": [[PODS[p][1], POD_PORT] for p in sorted(pods)]}


WEB = service("web", VIP, 80, ["p1", "p3"], node_port=NODE_PORT)
STICKY = service("sticky", STICKY_VIP, 81, ["p1"], affinity=600)
# (phase, services of the snapshot or None for cleanup, [(client host, address, port, connections)])
PHASES: list[tuple[str, list[dict[str, Any]] | None, list[tuple[str, str, int, int]]]] = [
    ("sync", [WEB, STICKY], [("n1", VIP, 80, CONNECTIONS), ("p2", VIP, 80, CONNECTIONS),
                             ("n2", NODE_IP, NODE_PORT, CONNECTIONS)]),
    ("resync", [WEB, STICKY], []),
    ("endpoints-changed", [{**WEB, "endpoints": [[PODS[p][1], POD_PORT] for p in ("p1", "p2")]}, STICKY],
     [("n1", VIP, 80, CONNECTIONS), ("n2", NODE_IP, NODE_PORT, CONNECTIONS)]),
    ("web-deleted", [STICKY], [("n1", VIP, 80, 2)]),
    ("cleanup", None, []),
]

# New TCP connections one after another (new source ports, so new IPVS connections); one line
# per answer: the pod's name (the body's last line), or ERR when there was no answer.
# (busybox nc, since busybox-static's wget crashes.)
CLIENT = """for i in $(busybox seq {count}); do
  body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {address} {port} 2>/dev/null | busybox tail -n 1)
  echo "${{body:-ERR}}"
done"""


def sh(*argv: str, check: bool = True) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def enter_netns(path: str) -> None:
    """Move this (still single-threaded) process into a network namespace, as `ip netns exec` does."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def connect(lab: Lab, host: str, address: str, port: int, count: int) -> dict[str, int]:
    out = lab.exec(host, "busybox", "sh", "-c", CLIENT.format(count=count, address=address, port=port)).stdout
    seen: dict[str, int] = {}
    for line in out.split():
        seen[line] = seen.get(line, 0) + 1
    return seen


def snapshot(services: list[dict[str, Any]]) -> Any:
    from netproxy.model import Endpoint, ServicePort
    from netproxy.proxier import Snapshot

    return Snapshot(tuple(ServicePort(s["namespace"], s["name"], s["port_name"], s["protocol"], s["cluster_ip"],
                                      s["port"], s["node_port"], s["affinity_timeout"],
                                      tuple(Endpoint(ip, p) for ip, p in s["endpoints"])) for s in services),
                    (NODE_IP,))


def observe(kernel: Any) -> dict[str, Any]:
    state = kernel.observe()
    return {"services": [[vs.address, vs.protocol, vs.port, vs.scheduler, vs.persistent]
                         for vs in sorted(state.services.values())],
            "dests": [[list(k), sorted([d.address, d.port, d.weight] for d in v)]
                      for k, v in sorted(state.dests.items())],
            "addresses": sorted(state.addresses), "link": state.link}


def record(kernel: Any) -> dict[str, Any]:
    sysctls = {}
    for key in SYSCTLS:
        with open(f"/proc/sys/{key}") as f:
            sysctls[key] = f.read().strip()
    return {"observed": observe(kernel), "ipvsadm": sh("ipvsadm", "-Ln"),
            "link": json.loads(sh("ip", "-d", "-j", "addr", "show", "dev", "kube-ipvs0", check=False) or "[]"),
            "iptables": sh("iptables-nft-save"), "ipsets": sh("ipset", "list", "-n"), "sysctls": sysctls}


async def run(lab: Lab) -> list[dict[str, Any]]:
    from netproxy.__main__ import cleanup_all
    from netproxy.config import ProxyConfig
    from netproxy.iptables.command import IptablesCmd
    from netproxy.ipvs.kernel import PyrouteIpvs
    from netproxy.ipvs.proxier import IpvsProxier

    kernel = PyrouteIpvs()
    phases: list[dict[str, Any]] = []
    try:
        kernel.set_sysctls()
        proxier = IpvsProxier(kernel, IptablesCmd("nft"), ProxyConfig(cluster_cidr=CLUSTER_CIDR, ipvs_scheduler="rr"))
        last: dict[Any, Any] = {}
        for i, (name, services, clients) in enumerate(PHASES):
            started = time.monotonic()
            entry: dict[str, Any] = {"phase": name, "services": services}
            if services is None:
                sh("ipvsadm", "-A", "-t", FOREIGN, "-s", "wlc")
                entry["cleanup_exit"] = await cleanup_all()  # what `netproxy --cleanup` runs
            else:
                # After the first, partial syncs as netproxy runs them: unchanged service ports are
                # the previous objects (as ServicePortTable keeps them), only the others are touched.
                snap = snapshot(services)
                snap = type(snap)(tuple(last.get(sp, sp) for sp in snap.service_ports), snap.node_ips)
                last = {sp: sp for sp in snap.service_ports}
                result = await proxier.sync(snap, full=i == 0)
                entry["detail"] = result.detail
            entry.update(await asyncio.to_thread(record, kernel))
            entry["connections"] = [[c, a, p, connect(lab, c, a, p, n)] for c, a, p, n in clients]
            entry["seconds"] = round(time.monotonic() - started, 2)
            phases.append(entry)
    finally:
        await asyncio.to_thread(kernel.close)
    return phases


def main(out_path: str) -> int:
    started = time.monotonic()
    for module in MODULES:
        subprocess.run(["modprobe", module], capture_output=True, check=False)  # built in or absent: fine
    lab = Lab(new_prefix())
    try:
        lab.up()
        setup = time.monotonic() - started
        enter_netns(lab.netns_path("n1"))
        phases = asyncio.run(run(lab))
        result = {"kernel": os.uname().release, "setup_seconds": round(setup, 2), "phases": phases,
                  "bridge_nf": lab.bridge_nf("n1"), "seconds": round(time.monotonic() - started, 2)}
    finally:
        lab.down()
    with open(out_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out_path + ".tmp", out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
