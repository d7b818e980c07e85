"""Cluster DNS benchmark (`make bench-dns`).

1. Zone build: `build_zone` over a synthetic cluster (by default 1,000 ClusterIP Services with a
   named port, 100 headless Services with 4 endpoints each, 4,400 pods): what every change
   costs the server (it rebuilds the whole zone and swaps it in). Median of --repeat runs.
2. Answer latency from the cache: the real DnsServer (the dnspython wire adapter over the pure
   zone) in a child process on 127.0.0.1, queried over UDP by this process one query at a
   time (send -> reply), --queries per kind: A of a ClusterIP Service, A of a headless Service
   (4 records), SRV of a named port, PTR of a ClusterIP, NXDOMAIN of a missing name in the
   search path, and SERVFAIL of an outside name (no upstream). Target (issue 14): p50 < 1 ms.

Prints a table and writes bench/results/dns.json (bench/meta.py: date, machine, load, versions);
`python -m bench.report` puts it in README's table. Sends nothing outside 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import statistics
import time

import dns.message
import dns.rcode

from bench import meta
from clusterdns.server import DnsServer
from clusterdns.zone import ZoneConfig, build_zone
from skiffpb.api.v1 import types_pb2 as t

CONFIG = ZoneConfig(domain="cluster.local", reverse_cidrs=("10.96.0.0/12", "10.244.0.0/16"))


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def cluster(services: int, headless: int) -> tuple[list[t.Service], list[t.Endpoints], list[t.Pod]]:
    svcs, eps, pods = [], [], []
    for i in range(services):
        s = t.Service(metadata=t.ObjectMeta(name=f"svc-{i}", namespace=f"ns-{i % 20}"))
        s.spec.cluster_ip = f"10.96.{i // 250}.{i % 250 + 2}"
        s.spec.ports.add(name="http", port=80, protocol="TCP")
        svcs.append(s)
    for i in range(headless):
        s = t.Service(metadata=t.ObjectMeta(name=f"hl-{i}", namespace="db"))
        s.spec.cluster_ip = "None"
        s.spec.ports.add(name="pg", port=5432, protocol="TCP")
        svcs.append(s)
        e = t.Endpoints(metadata=t.ObjectMeta(name=f"hl-{i}", namespace="db"))
        sub = e.subsets.add()
        sub.ports.add(name="pg", port=5432, protocol="TCP")
        for j in range(4):
            ip = f"10.244.{i % 200}.{j * 50 + i // 200 + 2}"
            sub.addresses.add(ip=ip, hostname=f"db-{j}")
        eps.append(e)
    for i in range(services * 4 + headless * 4):
        p = t.Pod(metadata=t.ObjectMeta(name=f"pod-{i}", namespace=f"ns-{i % 20}"))
        p.status.pod_ip = f"10.245.{i // 250}.{i % 250 + 2}"
        pods.append(p)
    return svcs, eps, pods


def _serve(port_out: mp.Queue[int], services: int, headless: int) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        server = DnsServer(CONFIG)
        server.zone = build_zone(*cluster(services, headless), CONFIG)
        port_out.put(await server.start("127.0.0.1", 0))
        await asyncio.get_running_loop().create_future()

    asyncio.run(run())


def measure(port: int, name: str, rdtype: str, count: int) -> tuple[list[float], str, int]:
    """Latencies in ms of `count` queries sent one after another; the rcode and answer count seen."""
    query = dns.message.make_query(name, rdtype)
    wire = query.to_wire()
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.settimeout(2)
        reply = b""
        for _ in range(count):
            t0 = time.perf_counter()
            s.send(wire)
            reply = s.recv(65535)
            out.append((time.perf_counter() - t0) * 1000)
    msg = dns.message.from_wire(reply)
    return out, dns.rcode.to_text(msg.rcode()), sum(len(r) for r in msg.answer)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--headless", type=int, default=100)
    p.add_argument("--queries", type=int, default=5000, help="queries per kind")
    p.add_argument("--repeat", type=int, default=5, help="zone builds to take the median of")
    args = p.parse_args()
    run = meta.start("dns")
    objs = cluster(args.services, args.headless)
    builds = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        zone = build_zone(*objs, CONFIG)
        builds.append((time.perf_counter() - t0) * 1000)
    names = len(zone.names)

    ctx = mp.get_context("spawn")
    port_q: mp.Queue[int] = ctx.Queue()
    child = ctx.Process(target=_serve, args=(port_q, args.services, args.headless), daemon=True)
    child.start()
    try:
        port = port_q.get(timeout=60)
        kinds = [
            ("A clusterIP", "svc-7.ns-7.svc.cluster.local.", "A"),
            ("A headless (4)", "hl-3.db.svc.cluster.local.", "A"),
            ("SRV", "_http._tcp.svc-7.ns-7.svc.cluster.local.", "SRV"),
            ("PTR", "9.0.96.10.in-addr.arpa.", "PTR"),
            ("NXDOMAIN", "svc-7.ns-7.ns-7.svc.cluster.local.", "A"),
            ("SERVFAIL (outside, no upstream)", "example.com.", "A"),
        ]
        measure(port, kinds[0][1], "A", 500)  # warm-up
        rows = []
        for label, name, rdtype in kinds:
            lat, rcode, answers = measure(port, name, rdtype, args.queries)
            rows.append({"kind": label, "qname": name, "qtype": rdtype, "rcode": rcode, "answers": answers,
                         "queries": len(lat), "p50_ms": round(statistics.median(lat), 4),
                         "p99_ms": round(pct(lat, 99), 4), "max_ms": round(max(lat), 3),
                         "qps_sequential": round(len(lat) / (sum(lat) / 1000))})
    finally:
        child.terminate()
        child.join(5)

    out: dict[str, object] = {
        "cluster": {"services": args.services, "headless": args.headless, "pods": len(objs[2]), "names": names},
        "zone_build_ms_median": round(statistics.median(builds), 1),
        "queries": rows,
        "targets": {"p50 < 1 ms from cache": all(r["p50_ms"] < 1.0 for r in rows)},  # type: ignore[operator]
    }
    print(f"zone: {names} names from {args.services} + {args.headless} headless Services, {len(objs[2])} pods; "
          f"build {out['zone_build_ms_median']} ms (median of {args.repeat})")
    print(f"{'kind':<34}{'rcode':<10}{'answers':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'q/s':>9}")
    for r in rows:
        print(f"{r['kind']:<34}{r['rcode']:<10}{r['answers']:>8}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
              f"{r['max_ms']:>10.2f}{r['qps_sequential']:>9}")
    written = run.write(out)
    print(f"targets: {json.dumps(out['targets'])}")
    print(f"load average before: {run.load_before[0]:.1f}; wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
