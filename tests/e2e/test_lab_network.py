"""The lab network for real: hosts reach each other over the LAN bridge, the root namespace
reaches them only through the uplink, and teardown leaves no namespace or link behind."""

from __future__ import annotations

import os
import subprocess

from deploy import netplan
from tests.support.prereq import require_binaries, require_root


def ping(netns: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", netns, "ping", "-c1", "-W2", address],
                          capture_output=True, check=False).returncode == 0


def test_lab_network_up_and_down() -> None:
    require_root()
    require_binaries("ip", "ping")
    prefix = f"ln{os.getpid() % 10000}"
    lab = netplan.make_lab(prefix, workers=2, lan_cidr="10.213.0.0/24")
    try:
        netplan.apply(netplan.plan_up(lab))
        assert ping(lab.netns("cp"), "10.213.0.11")
        assert ping(lab.netns("n2"), "10.213.0.10")
        assert netplan.route_device("10.213.0.10") == lab.uplink_name
        # Forwarding is on in every host (routing pods between hosts depends on it).
        out = subprocess.run(["ip", "netns", "exec", lab.netns("n1"), "sysctl", "-n", "net.ipv4.ip_forward"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == "1"
    finally:
        netplan.apply(netplan.plan_down(lab), ignore_errors=True)
    left = {ns for ns in netplan.existing_netns() if ns.startswith(prefix + "-")}
    assert left == set()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"{prefix}-up" not in links
    # Down twice is fine.
    assert netplan.apply(netplan.plan_down(lab), ignore_errors=True)
