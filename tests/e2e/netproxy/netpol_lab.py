"""The NetworkPolicy matrix topology: two nodes, upstream's nine pods (x, y, z times a, b, c).

    pods on n1 (10.244.1.0/24) ─ cni0 ─ n1 eth0 10.77.0.11 ══ 10.77.0.12 eth0 n2 ─ cni0 ─ pods on n2 (10.244.2.0/24)

The two nodes are tests/e2e/netproxy/lab.py's `TwoNodes` (pods on each node's `cni0` bridge, host-gw routes,
nothing in the root namespace, every name with the run's prefix). Pod addresses and nodes come
from tests/support/netpol_cases.py. Every pod serves TCP and UDP 80 and 81 (answering its
name); every node serves UDP and TCP 53 on the node-local DNS address (answering "dns").
`probe` asks every (target, port, protocol) from one pod at once, with a short timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from tests.e2e.netproxy.lab import TwoNodes
from tests.support.netpol_cases import ALL, DNS_IP, NODES, ip_of, node_of

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


@dataclass
class MatrixLab(TwoNodes):
    def pod_hosts(self) -> list[str]:
        return list(ALL)

    def _serve(self, host: str, name: str, *binds: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), sys.executable, "-c", SERVER, name, *binds],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.servers.append(proc)

    def up(self) -> None:
        self.add_nodes(lo_addresses=(DNS_IP,))
        for node in NODES:
            self._serve(node, "dns", f"{DNS_IP}:53")
        for i, pod in enumerate(ALL):
            self.add_pod(pod, node_of(pod), ip_of(pod), f"v{i}")
            self._serve(pod, pod, "0.0.0.0:80", "0.0.0.0:81")
        for proc in self.servers:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", "a server did not start"

    def probe(self, src: str, targets: list[str], timeout: float = 0.5) -> dict[str, str]:
        out = self.exec(src, sys.executable, "-c", PROBE, str(timeout), json.dumps(targets))
        result: dict[str, str] = json.loads(out.stdout)
        return result
