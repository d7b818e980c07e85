"""The NetworkPolicy matrix topology: two nodes, upstream's nine pods (x, y, z times a, b, c).

    pods on n1 (10.244.1.0/24) ─ cni0 ─ n1 eth0 10.77.0.11 ══ 10.77.0.12 eth0 n2 ─ cni0 ─ pods on n2 (10.244.2.0/24)

Built like tests/e2e/netproxy/lab.py (pods on each node's `cni0` bridge, host-gw routes,
nothing in the root namespace, every name with the run's prefix). Pod addresses and nodes come
from tests/support/netpol_cases.py. Every pod serves TCP and UDP 80 and 81 (answering its
name); every node serves UDP and TCP 53 on the node-local DNS address (answering "dns").
`probe` asks every (target, port, protocol) from one pod at once, with a short timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.netproxy.lab import sh
from tests.support.netpol_cases import ALL, DNS_IP, NODES, ip_of, node_of

NODE_IPS = {"n1": "10.77.0.11", "n2": "10.77.0.12"}
POD_CIDRS = {"n1": "10.244.1.0/24", "n2": "10.244.2.0/24"}
SERVICE_CIDR = "10.96.0.0/12"

# Serves "<name>\n" on TCP and UDP on each of the given address:port; runs inside a namespace.
SERVER = r"""
import selectors, socket, sys
name = sys.argv[1].encode() + b"\n"
sel = selectors.DefaultSelector()
for spec in sys.argv[2:]:
    host, port = spec.rsplit(":", 1)
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        if kind == socket.SOCK_STREAM:
            s.listen(64)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, kind)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == socket.SOCK_STREAM:
                conn, _ = s.accept()
                conn.settimeout(1)
                try:
                    conn.sendall(name)
                finally:
                    conn.close()
            else:
                _, peer = s.recvfrom(512)
                s.sendto(name, peer)
        except OSError:
            pass
"""

# Probes every "ip:port/proto" in argv[2] (JSON list) at once; prints {target: answer or ""}.
PROBE = r"""
import json, socket, sys, threading
timeout = float(sys.argv[1]); targets = json.loads(sys.argv[2]); out = {}
def one(target):
    addr, proto = target.split("/")
    host, port = addr.rsplit(":", 1)
    try:
        if proto == "tcp":
            with socket.create_connection((host, int(port)), timeout=timeout) as s:
                out[target] = s.recv(64).decode().strip()
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(b"hi", (host, int(port)))
                out[target] = s.recv(64).decode().strip()
    except OSError:
        out[target] = ""
threads = [threading.Thread(target=one, args=(t,)) for t in targets]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(out))
"""


def ns_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host.replace('/', '-')}"


@dataclass
class MatrixLab:
    prefix: str
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="netpol-lab-")))

    def ns(self, host: str) -> str:
        return ns_name(self.prefix, host)

    def ip(self, host: str, *args: str) -> None:
        sh("ip", "-n", self.ns(host), *args)

    def exec(self, host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns(host), *argv, check=check)

    def _serve(self, host: str, name: str, *binds: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), sys.executable, "-c", SERVER, name, *binds],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.servers.append(proc)

    def up(self) -> None:
        for host in (*NODES, *ALL):
            sh("ip", "netns", "add", self.ns(host))
            self.ip(host, "link", "set", "lo", "up")
        self.ip("n1", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.ns("n2"))
        for node in NODES:
            gw = POD_CIDRS[node].replace(".0/24", ".1")
            self.ip(node, "addr", "add", f"{NODE_IPS[node]}/24", "dev", "eth0")
            self.ip(node, "link", "set", "eth0", "up")
            self.ip(node, "link", "add", "cni0", "type", "bridge")
            self.ip(node, "addr", "add", f"{gw}/24", "dev", "cni0")
            self.ip(node, "link", "set", "cni0", "up")
            self.ip(node, "addr", "add", f"{DNS_IP}/32", "dev", "lo")
            for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"),
                               ("net.ipv4.conf.default.rp_filter", "0")):
                self.exec(node, "sysctl", "-qw", f"{key}={value}")
            other = "n2" if node == "n1" else "n1"
            self.ip(node, "route", "add", POD_CIDRS[other], "via", NODE_IPS[other])
            self.ip(node, "route", "add", SERVICE_CIDR, "dev", "eth0")
            self._serve(node, "dns", f"{DNS_IP}:53")
        for i, pod in enumerate(ALL):
            node = node_of(pod)
            veth = f"v{i}"
            gw = POD_CIDRS[node].replace(".0/24", ".1")
            self.ip(node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns(pod))
            self.ip(node, "link", "set", veth, "master", "cni0", "up")
            self.ip(node, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
            self.ip(pod, "addr", "add", f"{ip_of(pod)}/24", "dev", "eth0")
            self.ip(pod, "link", "set", "eth0", "up")
            self.ip(pod, "route", "add", "default", "via", gw)
            self._serve(pod, pod, "0.0.0.0:80", "0.0.0.0:81")
        for proc in self.servers:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", "a server did not start"

    def bridge_nf(self, node: str) -> str:
        out = self.exec(node, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables", check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    def probe(self, src: str, targets: list[str], timeout: float = 0.5) -> dict[str, str]:
        out = self.exec(src, sys.executable, "-c", PROBE, str(timeout), json.dumps(targets))
        result: dict[str, str] = json.loads(out.stdout)
        return result

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
        for host in (*ALL, *NODES):
            sh("ip", "netns", "del", self.ns(host), check=False)
        sh("rm", "-rf", str(self.workdir), check=False)

    def leftovers(self) -> list[str]:
        names = sh("ip", "netns", "list").stdout.split()
        return [n for n in names if n.startswith(self.prefix + "-")]
