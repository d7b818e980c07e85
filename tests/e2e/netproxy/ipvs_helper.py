"""Run inside a node namespace (`ip netns exec`) by test_ipvs_kernel: one IPVS-mode sync, or cleanup.

pyroute2 talks to the IPVS of the namespace its process lives in, hence a separate process.
Usage: python -m tests.e2e.netproxy.ipvs_helper sync|cleanup BACKEND [SNAPSHOT_JSON]
Prints the observed IPVS state as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from netproxy.config import ProxyConfig
from netproxy.iptables.command import IptablesCmd
from netproxy.ipvs.kernel import PyrouteIpvs
from netproxy.ipvs.proxier import IpvsProxier
from netproxy.model import Endpoint, ServicePort
from netproxy.proxier import Snapshot


def snapshot(data: dict) -> Snapshot:  # type: ignore[type-arg]
    sps = tuple(ServicePort(s["namespace"], s["name"], s["port_name"], s["protocol"], s["cluster_ip"], s["port"],
                            s["node_port"], 0, tuple(Endpoint(ip, p) for ip, p in s["endpoints"]))
                for s in data["service_ports"])
    return Snapshot(sps, tuple(data["node_ips"]))


async def run(command: str, backend: str, data: dict) -> None:  # type: ignore[type-arg]
    kernel = PyrouteIpvs()
    try:
        proxier = IpvsProxier(kernel, IptablesCmd(backend), ProxyConfig(cluster_cidr="10.244.0.0/16"))
        if command == "sync":
            kernel.set_sysctls()
            await proxier.sync(snapshot(data), full=True)
        else:
            await proxier.cleanup()
        state = kernel.observe()
        print(json.dumps({
            "services": sorted(f"{vs.protocol} {vs.address}:{vs.port} {vs.scheduler}"
                               for vs in state.services.values()),
            "dests": {f"{k[1]} {k[0]}:{k[2]}": sorted(f"{d.address}:{d.port}" for d in v)
                      for k, v in state.dests.items()},
            "addresses": sorted(state.addresses), "link": state.link}))
    finally:
        kernel.close()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
