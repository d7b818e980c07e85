"""A two-node network-namespace topology for netproxy's real-iptables tests.

    P-p1 (10.244.1.2) ─┐                                     ┌─ P-p3 (10.244.2.2)
    P-p2 (10.244.1.3) ─┴ cni0 10.244.1.1  P-n1 ══ P-n2  cni0 10.244.2.1
                          eth0 10.77.0.11 ───────── eth0 10.77.0.12

Nodes are joined by one veth pair (no bridge needed for two), pods hang off each node's
`cni0` bridge with hairpin mode on, and host-gw routes join the pod CIDRs. Every pod runs
busybox httpd on port 8080 answering its own name. Nothing is created in the root network
namespace; every name starts with the run's prefix; `down()` removes it all (deleting a
namespace removes its links and rules) and stops the servers it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff import defaults

NODE_IPS = {"n1": "10.77.0.11", "n2": "10.77.0.12"}
POD_CIDRS = {"n1": "10.244.1.0/24", "n2": "10.244.2.0/24"}
PODS = {"p1": ("n1", "10.244.1.2"), "p2": ("n1", "10.244.1.3"), "p3": ("n2", "10.244.2.2")}
POD_PORT = 8080
SERVICE_CIDR = defaults.SERVICE_CIDR

# Opens `count` new TCP connections (new source ports, so new conntrack entries) and counts
# the answers by body; failures count as "ERR:<exception name>". Runs inside a namespace.
CLIENT = r"""
import json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = {}
for _ in range(count):
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        key = data.split(b"\r\n\r\n", 1)[-1].decode().strip() or "EMPTY"
    except OSError as exc:
        key = "ERR:" + type(exc).__name__
    seen[key] = seen.get(key, 0) + 1
print(json.dumps(seen))
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


@dataclass
class TwoNodes:
    """The topology both netns labs share: nodes n1 and n2 joined by a veth pair, each with a
    `cni0` bridge for its pods and host-gw routes to the other's pod CIDR. Subclasses say which
    pods exist (`pod_hosts`) and start what serves in them."""

    prefix: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="netns-lab-")))
    servers: list[subprocess.Popen[Any]] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host.replace('/', '-')}"

    def netns_path(self, host: str) -> str:
        return f"/run/netns/{self.ns(host)}"

    def ip(self, host: str, *args: str) -> None:
        sh("ip", "-n", self.ns(host), *args)

    def exec(self, host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns(host), *argv, check=check)

    def pod_hosts(self) -> list[str]:
        raise NotImplementedError

    def add_nodes(self, *, lo_addresses: tuple[str, ...] = ()) -> None:
        """Namespaces for every host, the node link, bridges, forwarding and routes."""
        for host in (*NODE_IPS, *self.pod_hosts()):
            sh("ip", "netns", "add", self.ns(host))
            self.ip(host, "link", "set", "lo", "up")
        self.ip("n1", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.ns("n2"))
        for node, addr in NODE_IPS.items():
            self.ip(node, "addr", "add", f"{addr}/24", "dev", "eth0")
            self.ip(node, "link", "set", "eth0", "up")
            self.ip(node, "link", "add", "cni0", "type", "bridge")
            self.ip(node, "addr", "add", f"{_gateway(node)}/24", "dev", "cni0")
            self.ip(node, "link", "set", "cni0", "up")
            for lo_addr in lo_addresses:
                self.ip(node, "addr", "add", f"{lo_addr}/32", "dev", "lo")
            for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"),
                               ("net.ipv4.conf.default.rp_filter", "0")):
                self.exec(node, "sysctl", "-qw", f"{key}={value}")
            other = "n2" if node == "n1" else "n1"
            self.ip(node, "route", "add", POD_CIDRS[other], "via", NODE_IPS[other])
            # connect() to a ClusterIP from the node needs some route before nat OUTPUT runs.
            self.ip(node, "route", "add", SERVICE_CIDR, "dev", "eth0")

    def add_pod(self, pod: str, node: str, addr: str, veth: str) -> None:
        """`pod` on `node`'s bridge (hairpin on, so a pod reaches itself through a Service)."""
        self.ip(node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns(pod))
        self.ip(node, "link", "set", veth, "master", "cni0", "up")
        self.ip(node, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
        self.ip(pod, "addr", "add", f"{addr}/24", "dev", "eth0")
        self.ip(pod, "link", "set", "eth0", "up")
        self.ip(pod, "route", "add", "default", "via", _gateway(node))

    def bridge_nf(self, node: str) -> str:
        """bridge-nf-call-iptables in `node` ("" when br_netfilter is absent)."""
        out = self.exec(node, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables", check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    def save(self, node: str, backend: str) -> str:
        return self.exec(node, f"iptables-{backend}-save").stdout

    def down(self) -> None:
        for proc in self.servers:
            proc.terminate()
        for proc in self.servers:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.servers.clear()
        for host in (*self.pod_hosts(), *NODE_IPS):
            sh("ip", "netns", "del", self.ns(host), check=False)
        sh("rm", "-rf", str(self.workdir), check=False)

    def leftovers(self) -> list[str]:
        names = sh("ip", "netns", "list").stdout.split()
        return [n for n in names if n.startswith(self.prefix + "-")]


def _gateway(node: str) -> str:
    return POD_CIDRS[node].replace(".0/24", ".1")


@dataclass
class Lab(TwoNodes):
    """Pods p1, p2 on n1 and p3 on n2, each running busybox httpd answering its own name."""

    def pod_hosts(self) -> list[str]:
        return list(PODS)

    def up(self) -> None:
        self.add_nodes()
        for pod, (node, addr) in PODS.items():
            self.add_pod(pod, node, addr, f"v{pod}")
            www = self.workdir / pod
            www.mkdir()
            (www / "index.html").write_text(f"{pod}\n")
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns(pod), "busybox", "httpd", "-f", "-p", str(POD_PORT), "-h", str(www)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def connect(self, host: str, address: str, port: int, count: int) -> dict[str, int]:
        out = self.exec(host, sys.executable, "-c", CLIENT, address, str(port), str(count))
        result: dict[str, int] = json.loads(out.stdout)
        return result


def new_prefix() -> str:
    return f"np{os.getpid() % 100:02d}{os.urandom(1).hex()}"
