"""IPVS mode against a real kernel: virtual servers, kube-ipvs0, traffic, cleanup.

This machine's kernel has no IP_VS, so here the test skips and says so (the only skip the
project allows). In the Vagrant lab (docs/netproxy.md, "Running the IPVS test") it runs:
node n1 of the netns topology gets a virtual server for a ClusterIP with two pod endpoints,
connections from the node and from a pod reach both, and cleanup leaves nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netproxy.ipvs.kernel import ipvs_available
from tests.e2e.netproxy.lab import POD_PORT, PODS, Lab, new_prefix
from tests.support.prereq import require_binaries, require_ipvs, require_root

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
VIP = "10.96.0.20"


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_ipvs()  # skips here ("kernel has no IP_VS"); fails in the Vagrant lab if it is missing
    require_root()
    require_binaries("ip", "busybox", "iptables-nft-restore")
    lab = Lab(new_prefix())
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def helper(lab: Lab, command: str, data: dict | None = None) -> dict:  # type: ignore[type-arg]
    argv = ["ip", "netns", "exec", lab.ns("n1"), sys.executable, "-m", "tests.e2e.netproxy.ipvs_helper",
            command, "nft"] + ([json.dumps(data)] if data is not None else [])
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    result: dict = json.loads(out.stdout)  # type: ignore[type-arg]
    return result


def test_netproxy_ipvs_check_matches_the_kernel() -> None:
    """netproxy's own detection (used by --mode ipvs) agrees with the kernel's module list:
    /sys/module/ip_vs exists exactly when IP_VS is built in or loaded."""
    ok, why = ipvs_available()
    assert ok == Path("/sys/module/ip_vs").is_dir(), why
    assert ok or "kernel has no IP_VS" in why


def test_ipvs_virtual_server_reaches_both_endpoints_and_cleans_up(lab: Lab) -> None:
    data = {"node_ips": ["10.77.0.11"], "service_ports": [{
        "namespace": "default", "name": "web", "port_name": "http", "protocol": "TCP", "cluster_ip": VIP,
        "port": 80, "node_port": 30090, "endpoints": [[PODS["p1"][1], POD_PORT], [PODS["p3"][1], POD_PORT]]}]}
    state = helper(lab, "sync", data)
    assert state["link"] and state["addresses"] == [VIP]
    assert f"TCP {VIP}:80 rr" in state["services"] and "TCP 10.77.0.11:30090 rr" in state["services"]
    assert state["dests"][f"TCP {VIP}:80"] == sorted(f"{PODS[p][1]}:{POD_PORT}" for p in ("p1", "p3"))
    for client in ("n1", "p2"):
        got = lab.connect(client, VIP, 80, 20)
        assert set(got) == {"p1", "p3"}, f"{client}: {got}"
    got = lab.connect("n2", "10.77.0.11", 30090, 20)
    assert set(got) == {"p1", "p3"}, f"NodePort: {got}"
    state = helper(lab, "cleanup")
    assert state == {"services": [], "dests": {}, "addresses": [], "link": False}
    assert "KUBE-" not in lab.save("n1", "nft")
