"""api-server benchmark: create latency/throughput, watch fan-out, memory at 10,000 pods.

    python -m bench.apiserver [--quick] [--store-endpoints H:P,...] [--data-dir DIR]

Starts a store (etcd, unless --store-endpoints names one) and one api-server process on
loopback, then measures, from a load generator in this process:
- create throughput and p50/p99 latency with 1, 16 and 64 concurrent clients (closed loop);
- p50/p99 create latency at a fixed 200 creates/s (open loop; target p99 <= 50 ms);
- watch fan-out: events/s delivered to 100 and 1,000 concurrent watchers;
- api-server RSS after 10,000 pods exist.
Prints a table and writes JSON to bench/results/apiserver.json. The load generator shares
the machine's cores with the api-server and the store, so figures are conservative.

    python -m bench.apiserver --ha [--quick]

The highly available layout instead (issue 16), on Skiff's store and on etcd one after the other
in the same run: 3 store members and 3 api-servers (each on "its" member first, as
bench/scale.py starts them), fresh processes; creates/s and p50/p99 with 64 closed-loop clients
spread over the 3 api-servers, and with all 64 on one of them (same cluster, same run).
Written to bench/results/apiserver-ha.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench import meta
from deploy.loopback import EtcdCluster, Process, start_apiserver, start_etcd
from skiff import kinds
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import apiserver_pb2_grpc as api_grpc
from skiffpb.api.v1 import types_pb2 as t

RESULTS = meta.RESULTS_DIR / "apiserver.json"
HA_RESULTS = meta.RESULTS_DIR / "apiserver-ha.json"
TARGET_RATE = 200.0
TARGET_P99_MS = 50.0


def _pod(name: str, namespace: str) -> t.Pod:
    p = t.Pod(api_version="v1", kind="Pod", metadata=t.ObjectMeta(name=name, namespace=namespace,
                                                                    labels={"app": "bench", "tier": "web"}))
    c = p.spec.containers.add(name="main", image="registry.local/bench/app:1.0")
    c.ports.add(container_port=8080)
    c.resources.requests["cpu"] = "100m"
    c.resources.requests["memory"] = "64Mi"
    return p


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Load:
    def __init__(self, endpoint: str, *, tag: str = "") -> None:
        self.tag = tag  # in every name, so that loads on several api-servers never collide
        self.channel = grpc.aio.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", 1 << 30)])
        self.stub = api_grpc.ApiServerStub(self.channel)
        self.counter = 0

    def next_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.tag}-{self.counter}"

    async def create(self, namespace: str, prefix: str) -> float:
        request = api.CreateRequest(object=kinds.wrap(_pod(self.next_name(prefix), namespace)))
        start = time.perf_counter()
        await self.stub.Create(request, timeout=30)
        return (time.perf_counter() - start) * 1000

    async def namespace(self, name: str) -> None:
        ns = t.Namespace(api_version="v1", kind="Namespace", metadata=t.ObjectMeta(name=name))
        try:
            await self.stub.Create(api.CreateRequest(object=kinds.wrap(ns)), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise

    async def closed_loop(self, clients: int, total: int, namespace: str) -> dict[str, float]:
        latencies: list[float] = []
        remaining = [total]

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                latencies.append(await self.create(namespace, f"c{clients}"))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
        return {"clients": clients, "creates": total, "per_second": total / elapsed,
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}

    async def open_loop(self, rate: float, seconds: float, namespace: str) -> dict[str, Any]:
        latencies: list[float] = []
        count = int(rate * seconds)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []

        async def one() -> None:
            latencies.append(await self.create(namespace, "open"))

        for i in range(count):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
        return {"rate": rate, "creates": count, "achieved_per_second": count / elapsed,
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies),
                # Every sample, for `python -m bench.plots` (the latency histogram).
                "samples_ms": [round(v, 3) for v in latencies]}

    async def fan_out(self, watchers: int, events: int, namespace: str) -> dict[str, float]:
        """`watchers` streams on one resource; time until each has received `events` events."""
        await self.namespace(namespace)
        listed = await self.stub.List(api.ListRequest(resource="pods", namespace=namespace, limit=1), timeout=60)
        rv = listed.resource_version
        received = [0] * watchers
        done = asyncio.Event()
        finished = [0]
        method = self.channel.unary_stream("/skiff.api.v1.ApiServer/Watch",
                                           request_serializer=api.WatchRequest.SerializeToString,
                                           response_deserializer=lambda b: b)  # count, do not decode

        async def watch(i: int) -> None:
            call = method(api.WatchRequest(resource="pods", namespace=namespace, resource_version=rv))
            try:
                async for _ in call:
                    received[i] += 1
                    if received[i] == events:
                        finished[0] += 1
                        if finished[0] == watchers:
                            done.set()
                        return
            finally:
                call.cancel()

        tasks = [asyncio.ensure_future(watch(i)) for i in range(watchers)]
        await asyncio.sleep(1.0 + watchers / 500)  # let every stream register
        start = time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def make() -> None:
            async with sem:
                await self.create(namespace, "w")

        await asyncio.gather(*(make() for _ in range(events)))
        try:
            await asyncio.wait_for(done.wait(), 300)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - start
        return {"watchers": watchers, "events": events, "delivered": watchers * events,
                "seconds": elapsed, "events_per_second": watchers * events / elapsed}

    async def close(self) -> None:
        await self.channel.close(None)


def print_table(title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str, Callable[[Any], str]]]) -> None:
    print(f"\n{title}")
    header = [c[0] for c in columns]
    body = [[fmt(row[key]) for _, key, fmt in columns] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
    for line in [header, *body]:
        print("  " + "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))


async def run(endpoint: str, pid: int | None, *, quick: bool) -> dict[str, Any]:
    load = Load(endpoint)
    results: dict[str, Any] = {}
    if pid is not None:
        results["rss_mib_start"] = rss_mib(pid)
    try:
        await load.namespace("bench")
        scale = 0.2 if quick else 1.0
        await load.closed_loop(8, int(200 * scale), "bench")  # warm up
        results["create"] = [await load.closed_loop(c, int(n * scale), "bench")
                             for c, n in ((1, 500), (16, 2000), (64, 3000))]
        results["create_at_rate"] = await load.open_loop(TARGET_RATE, 3.0 if quick else 15.0, "bench")
        results["watch_fan_out"] = [await load.fan_out(100, 20 if quick else 100, "fan100"),
                                    await load.fan_out(1000, 5 if quick else 20, "fan1000")]
        target = 1000 if quick else 10_000
        have = len((await load.stub.List(api.ListRequest(resource="pods"), timeout=120)).items)
        await load.namespace("mass")
        if have < target:
            await load.closed_loop(64, target - have, "mass")
        total = len((await load.stub.List(api.ListRequest(resource="pods"), timeout=120)).items)
        results["pods"] = total
        if pid is not None:
            await asyncio.sleep(1.0)
            results["rss_mib_at_pods"] = rss_mib(pid)
        start = time.perf_counter()
        await load.stub.List(api.ListRequest(resource="pods"), timeout=120)
        results["list_all_pods_ms"] = (time.perf_counter() - start) * 1000
    finally:
        await load.close()
    return results


async def run_ha(endpoints: list[str], *, quick: bool) -> dict[str, Any]:
    """64 clients over every endpoint (client i on endpoint i mod n), then all 64 on the first."""
    loads = [Load(e, tag=f"a{i}") for i, e in enumerate(endpoints)]
    total = 600 if quick else 4000
    try:
        await loads[0].namespace("bench")
        for load in loads:  # every api-server's connections and caches warm
            await load.closed_loop(8, 100 if quick else 300, "bench")
        spread = await closed_loop_over(loads, 64, total, "bench")
        one = await loads[0].closed_loop(64, total, "bench")
    finally:
        for load in loads:
            await load.close()
    return {"spread": spread, "one": one}


async def closed_loop_over(loads: list[Load], clients: int, total: int, namespace: str) -> dict[str, float]:
    """Load.closed_loop with client i sending to loads[i % len(loads)]."""
    latencies: list[float] = []
    remaining = [total]

    async def worker(load: Load) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            latencies.append(await load.create(namespace, f"s{clients}"))

    start = time.perf_counter()
    await asyncio.gather(*(worker(loads[i % len(loads)]) for i in range(clients)))
    elapsed = time.perf_counter() - start
    return {"clients": clients, "apiservers": len(loads), "creates": total, "per_second": total / elapsed,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def ha_main(args: argparse.Namespace) -> int:
    from bench.scale import Cluster, start_apiservers, start_store

    bench_run = meta.start("apiserver")
    results: dict[str, Any] = {"setup": {"store_members": 3, "apiservers": 3, "clients": 64, "quick": args.quick,
                                         "cpus": _cpus()}}
    for store in ("skiff", "etcd"):
        work = Path(tempfile.mkdtemp(prefix=f"skiff-bench-apiserver-ha-{store}-", dir=args.data_dir or None))
        c = Cluster(work, store)
        try:
            start_store(c, members=3)
            start_apiservers(c, 3)
            cpu_before = {comp.name: comp.cpu_s() for comp in c.components}
            started = time.perf_counter()
            results[store] = asyncio.run(run_ha([a.endpoint for a in c.apiservers], quick=args.quick))
            elapsed = time.perf_counter() - started
            results[store]["cores"] = {comp.name: round((comp.cpu_s() - cpu_before[comp.name]) / elapsed, 2)
                                       for comp in c.components}
        finally:
            c.stop()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        r = results[store]
        for label, x in (("64 clients over 3 api-servers", r["spread"]), ("64 clients on 1 of them", r["one"])):
            print(f"{store}: {label}: {x['per_second']:,.0f} creates/s (p50 {x['p50_ms']:.1f} ms, "
                  f"p99 {x['p99_ms']:.1f} ms)")
        print(f"{store}: cores used: {r['cores']}")
    out = bench_run.write(results, Path(args.output) if args.output != str(RESULTS) else HA_RESULTS)
    print(f"\nresults: {out}")
    return 0


def report(results: dict[str, Any]) -> None:
    ms: Callable[[Any], str] = lambda v: f"{v:.1f}"  # noqa: E731
    num: Callable[[Any], str] = lambda v: f"{v:,.0f}"  # noqa: E731
    print_table("Create (closed loop)", results["create"],
                [("clients", "clients", str), ("creates/s", "per_second", num), ("p50 ms", "p50_ms", ms),
                 ("p99 ms", "p99_ms", ms)])
    r = results["create_at_rate"]
    verdict = "OK" if r["p99_ms"] <= TARGET_P99_MS else "MISSED"
    print_table(f"Create at {r['rate']:.0f}/s (open loop; target p99 <= {TARGET_P99_MS:.0f} ms: {verdict})", [r],
                [("achieved/s", "achieved_per_second", num), ("p50 ms", "p50_ms", ms), ("p99 ms", "p99_ms", ms),
                 ("max ms", "max_ms", ms)])
    print_table("Watch fan-out", results["watch_fan_out"],
                [("watchers", "watchers", num), ("events", "events", num), ("delivered", "delivered", num),
                 ("events/s", "events_per_second", num)])
    print(f"\nload average now (other work on this machine): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"api-server RSS: {results.get('rss_mib_start', float('nan')):.0f} MiB at start, "
          f"{results.get('rss_mib_at_pods', float('nan')):.0f} MiB with {results['pods']:,} pods; "
          f"listing them all: {results['list_all_pods_ms']:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.apiserver", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (smaller counts), for a smoke check")
    p.add_argument("--store-endpoints", default="", help="use this store instead of starting etcd")
    p.add_argument("--data-dir", default="", help="where etcd keeps its data (default: a temp dir on disk)")
    p.add_argument("--output", default=str(RESULTS), help="JSON results file (default %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the store's data and the logs (printed at the end)")
    p.add_argument("--ha", action="store_true",
                   help="3 store members and 3 api-servers, Skiff's store and etcd side by side (apiserver-ha.json)")
    args = p.parse_args(argv)
    gc.set_threshold(20_000, 20, 20)  # the load generator's own GC pauses would count as latency
    if args.ha:
        return ha_main(args)
    work = Path(tempfile.mkdtemp(prefix="skiff-bench-apiserver-", dir=args.data_dir or None))
    etcd: EtcdCluster | None = None
    apiserver: Process | None = None
    try:
        store = args.store_endpoints
        if not store:
            etcd = start_etcd(work)
            store = etcd.endpoints
        apiserver = start_apiserver(work, store)
        bench_run = meta.start("apiserver")
        results = asyncio.run(run(apiserver.endpoint, apiserver.pid, quick=args.quick))
        results["setup"] = {"store": "etcd " + (etcd.members[0].argv[0] if etcd else store),
                            "quick": args.quick, "cpus": _cpus(),
                            "target": {"rate": TARGET_RATE, "p99_ms": TARGET_P99_MS}}
        report(results)
        out = bench_run.write(results, Path(args.output))
        print(f"\nresults: {out}" + (f"; data and logs: {work}" if args.keep else ""))
    finally:
        if apiserver is not None:
            apiserver.stop()
        if etcd is not None:
            etcd.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _cpus() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())

