"""Network proxy benchmark (`make bench-netproxy`).

1. Render + apply for 1,000 and 5,000 Services with 4 ready endpoints each: render (Services
   and Endpoints -> ServicePorts -> ruleset -> restore text) in this process; apply = the
   writer's first, full sync into an empty throwaway network namespace (read the tables,
   ensure the jumps, iptables-restore), and a full resync on top of the existing rules; for
   both iptables backends.
   Median of --repeat runs, each in a fresh namespace. Target: <= 1 s to apply 5,000 Services.
   The floor, in a fresh namespace too: iptables-restore alone running the same restore texts
   the writer runs (the same pieces with nft), with no Python in between; and, once per size,
   the whole ruleset as ONE restore text. Skiff's overhead = first apply - floor (reading the
   tables, the jumps, making the text).
2. Network programming latency with 1,000 Services present: the whole netproxy in this
   process (the api-server's registry in-process, informers, sync runner, real iptables in the
   namespace). Each
   Endpoints update carries the endpoints.kubernetes.io/last-change-trigger-time annotation
   stamped just before the update (as the endpoints controller does); the latency is the
   netproxy metric from that time to the end of the sync that applied it. Measured at
   --min-sync-period 0 (changes one after another, the next once the previous is applied)
   and at the default 1 s (changes at random 0-1.5 s intervals). Target: p99 <= 100 ms at 0.
   Each sync's iptables-restore is timed too (IptablesCmd.restore_seconds): sync minus restore
   is the Python side (snapshot, render, diff).

Needs root (network namespaces). Prints a table and writes bench/results/netproxy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import meta
from controlplane.apiserver.inprocess import InProcessApi
from netproxy.app import TRIGGER_ANNOTATION, NetProxy
from netproxy.config import ProxyConfig
from netproxy.iptables.command import IptablesCmd
from netproxy.iptables.proxier import IptablesProxier
from netproxy.iptables.render import build_ruleset
from netproxy.iptables.ruleset import restore_texts
from netproxy.model import service_ports
from skiff import defaults
from skiffpb.api.v1 import types_pb2 as t

CONFIG = ProxyConfig(cluster_cidr=defaults.CLUSTER_CIDR)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def service(i: int) -> t.Service:
    ip = i + 1  # 10.96.0.0 is the service range's network address, never a ClusterIP
    s = t.Service(metadata=t.ObjectMeta(name=f"svc-{i}", namespace="bench"),
                  spec=t.ServiceSpec(cluster_ip=f"10.{96 + ip // 65536}.{ip // 256 % 256}.{ip % 256}"))
    s.spec.ports.add(name="http", port=80).target_port.str_val = "http"
    return s


def endpoints(i: int, generation: int = 0) -> t.Endpoints:
    e = t.Endpoints(metadata=t.ObjectMeta(name=f"svc-{i}", namespace="bench"))
    sub = e.subsets.add()
    for j in range(4):
        n = i * 4 + j + generation * 7919
        sub.addresses.add(ip=f"10.{244 + n // 65536 % 8}.{n // 256 % 256}.{n % 256}")
    sub.ports.add(name="http", port=8080)
    return e


@contextlib.contextmanager
def netns(name: str):  # type: ignore[no-untyped-def]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


async def bench_apply(n: int, backend: str, prefix: str, *, repeat: int) -> dict[str, float]:
    services = [service(i) for i in range(n)]
    eps = [endpoints(i) for i in range(n)]
    render_times = []
    for _ in range(3):
        dt, (sps, _) = timed(lambda: service_ports(services, eps))
        dt2, rs = timed(lambda sps=sps: build_ruleset(sps, CONFIG))
        dt3, text = timed(lambda rs=rs: rs.restore_text())
        render_times.append(dt + dt2 + dt3)
    rules = sum(rs.rule_count().values())
    firsts, resyncs, cleanups, floors = [], [], [], []
    floor_one = 0.0
    for rep in range(repeat):
        name = f"{prefix}-{backend[0]}{n}-f{rep}"
        with netns(name):
            ipt = IptablesCmd(backend, netns=name)
            texts = restore_texts(rs.chains, list(rs.chains), max_chains=IptablesProxier(ipt, CONFIG).writer.max_chains)
            start = time.perf_counter()
            for piece in texts:
                await ipt.restore(piece)
            floors.append(time.perf_counter() - start)
        if rep == 0:
            with netns(name):
                start = time.perf_counter()
                await IptablesCmd(backend, netns=name).restore(text)
                floor_one = time.perf_counter() - start
        name = f"{prefix}-{backend[0]}{n}-{rep}"
        with netns(name):
            proxier = IptablesProxier(IptablesCmd(backend, netns=name), CONFIG)
            # Apply = the writer's part of a sync (read the tables, jumps, iptables-restore);
            # the ruleset is rendered above.
            start = time.perf_counter()
            result = await proxier.writer.write(rs, full=True)
            firsts.append(time.perf_counter() - start)
            start = time.perf_counter()
            await proxier.writer.write(rs, full=True)
            resyncs.append(time.perf_counter() - start)
            start = time.perf_counter()
            await proxier.cleanup()
            cleanups.append(time.perf_counter() - start)
    return {"services": n, "rules": rules, "bytes": len(text), "render_s": statistics.median(render_times),
            "first_apply_s": statistics.median(firsts), "first_apply_min_s": min(firsts),
            "restores": result.restores, "full_resync_s": statistics.median(resyncs),
            "floor_restore_s": statistics.median(floors), "floor_one_restore_s": floor_one,
            "overhead_over_floor_s": statistics.median(firsts) - statistics.median(floors),
            "cleanup_s": statistics.median(cleanups), "repeat": repeat}


async def bench_latency(backend: str, prefix: str, *, min_sync: float, changes: int, n: int = 1000) -> dict[str, float]:
    async with InProcessApi() as api:
        return await _latency(api, backend, prefix, min_sync=min_sync, changes=changes, n=n)


async def _latency(api: InProcessApi, backend: str, prefix: str, *, min_sync: float, changes: int,
                   n: int) -> dict[str, float]:
    await api.create(t.Namespace(metadata=t.ObjectMeta(name="bench")))
    for i in range(n):
        await api.create(service(i))
        await api.create(endpoints(i))
    name = f"{prefix}-l{backend[0]}{int(min_sync * 10)}"
    with netns(name):
        ipt = IptablesCmd(backend, netns=name)
        proxy = NetProxy(api, IptablesProxier(ipt, CONFIG), min_sync_period=min_sync, sync_period=0)
        task = asyncio.ensure_future(proxy.run())
        try:
            await asyncio.wait_for(proxy.synced.wait(), 120)
            ipt.restore_seconds.clear()  # the first, full sync is not part of the figure
            hist = proxy.metrics.programming_latency
            rng = random.Random(1)
            for k in range(changes):
                i = rng.randrange(n)
                e = endpoints(i, generation=k + 1)
                e.metadata.annotations[TRIGGER_ANNOTATION] = datetime.now(UTC).isoformat()
                before = hist.n
                await api.update(e)
                if min_sync == 0:
                    while hist.n == before:
                        await asyncio.sleep(0.001)
                else:
                    await asyncio.sleep(rng.uniform(0, 1.5))
            async with asyncio.timeout(10):
                while hist.n < changes:
                    await asyncio.sleep(0.01)
            samples = hist.recent[-changes:]
            durations = proxy.metrics.sync_duration.recent[1:]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    out: dict[str, Any] = {"min_sync_period_s": min_sync, "changes": changes, "p50_ms": pct(samples, 50) * 1000,
            "p90_ms": pct(samples, 90) * 1000, "p99_ms": pct(samples, 99) * 1000, "max_ms": max(samples) * 1000,
            "sync_p50_ms": pct(durations, 50) * 1000 if durations else 0.0,
            "restore_p50_ms": pct(ipt.restore_seconds, 50) * 1000 if ipt.restore_seconds else 0.0,
            "restore_p99_ms": pct(ipt.restore_seconds, 99) * 1000 if ipt.restore_seconds else 0.0,
            "samples_ms": [round(v * 1000, 2) for v in samples]}  # for `python -m bench.plots`
    return out


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    prefix = f"npb{os.getpid() % 1000}"
    out: dict[str, object] = {"apply": [], "latency": []}
    for backend in args.backends:
        for n in args.sizes:
            r = await bench_apply(n, backend, prefix, repeat=args.repeat)
            r["backend"] = backend  # type: ignore[assignment]
            out["apply"].append(r)  # type: ignore[attr-defined]
            print(f"apply  {backend:6} {n:5} services: {r['rules']:6.0f} rules, render {r['render_s']:.3f} s, "
                  f"first apply {r['first_apply_s']:.3f} s (min {r['first_apply_min_s']:.3f}; "
                  f"{r['restores']:.0f} restores; floor {r['floor_restore_s']:.3f} s, "
                  f"one restore {r['floor_one_restore_s']:.3f} s), "
                  f"full resync {r['full_resync_s']:.3f} s, cleanup {r['cleanup_s']:.3f} s", flush=True)
    for backend in args.backends:
        for min_sync, changes in ((0.0, args.changes), (1.0, args.default_changes)):
            r = await bench_latency(backend, prefix, min_sync=min_sync, changes=changes)
            r["backend"] = backend  # type: ignore[assignment]
            out["latency"].append(r)  # type: ignore[attr-defined]
            print(f"latency {backend:6} min-sync {min_sync:g}s, {changes} changes, 1000 services: "
                  f"p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                  f"max {r['max_ms']:.1f} ms (sync p50 {r['sync_p50_ms']:.1f} ms, "
                  f"iptables-restore p50 {r['restore_p50_ms']:.1f} ms)", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--backends", nargs="+", default=["nft", "legacy"], choices=["nft", "legacy"])
    p.add_argument("--changes", type=int, default=200, help="endpoint changes at min sync period 0")
    p.add_argument("--default-changes", type=int, default=20, help="endpoint changes at min sync period 1 s")
    p.add_argument("--repeat", type=int, default=3, help="apply measurements per size and backend (median)")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/netproxy.py needs root (network namespaces)", file=sys.stderr)
        return 1
    run = meta.start("netproxy")
    out = asyncio.run(main_async(args))
    apply_5000 = [r for r in out["apply"] if r["services"] == 5000]  # type: ignore[attr-defined]
    lat0 = [r for r in out["latency"] if r["min_sync_period_s"] == 0]  # type: ignore[attr-defined]
    out["targets"] = {
        "apply_5000_le_1s": {r["backend"]: r["first_apply_s"] <= 1.0 for r in apply_5000},
        "latency_p99_le_100ms_at_0": {r["backend"]: r["p99_ms"] <= 100 for r in lat0},
    }
    written = run.write(out)
    print(f"targets: {json.dumps(out['targets'])}")
    print(f"load average before/after: {run.load_before[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
          f"CPUs; wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
