"""Benchmark: a 3-member Skiff store against a 3-member real etcd, same client, same durability.

    python -m bench.store            (make bench-store)
    python -m bench.store --quick    (shorter runs, 20k keys for the memory figure)

Both clusters run on loopback with private temp data dirs and fsync on commit (etcd's
default; Skiff always fdatasyncs before acknowledging). The load comes from the same Python
grpc.aio client code for both, in separate processes, spread over the three members'
endpoints. Measured, each as a Skiff/etcd ratio:

- put throughput with 1 and with 64 concurrent clients, p50/p99 put latency at each;
- linearizable Range throughput (64 clients), and serializable Range (no ReadIndex: what
  serving a read costs without making it linearizable);
- the CPU the three members spend per operation in each of those runs (all threads, from
  /proc: less at the mercy of the machine's load than the throughput);
- watch events delivered per second to 100 watchers (100 streams) on one prefix;
- RSS of the leader holding 100k keys of 1 KiB.

The machine is shared and small (2 cores for everything: 3 members, the clients, and anyone
else's work), so absolute numbers are low and noisy; the ratios are the point. Prints a table
and writes JSON to bench/results/store.json.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from bench import meta
from controlplane.store.cluster import StoreCluster, free_addr
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc

# ---------------------------------------------------------------- clusters


@dataclass
class Target:
    name: str
    endpoints: list[str]
    pids: Callable[[], dict[str, int]]  # member name -> pid
    leader_pid: Callable[[], int]
    stop: Callable[[], None]


def start_skiff(base: str) -> Target:
    c = StoreCluster(3, base_dir=os.path.join(base, "skiff"))
    c.start()

    def leader_pid() -> int:
        proc = c.members[c.leader()].proc
        assert proc is not None
        return proc.pid

    return Target("skiff", c.endpoints, lambda: {n: m.proc.pid for n, m in c.members.items() if m.proc},
                  leader_pid, c.close)


def start_etcd(base: str) -> Target:
    members = []
    for i in range(1, 4):
        host = f"127.0.0.{random.randint(2, 254)}"
        members.append((f"e{i}", free_addr(host), free_addr(host)))
    cluster = ",".join(f"{n}=http://{p}" for n, _, p in members)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, client, peer in members:
        data = os.path.join(base, "etcd", name)
        os.makedirs(data, exist_ok=True)
        log = open(os.path.join(base, "etcd", f"{name}.log"), "wb")
        procs[name] = subprocess.Popen([
            "etcd", "--name", name, "--data-dir", data,
            "--listen-client-urls", f"http://{client}", "--advertise-client-urls", f"http://{client}",
            "--listen-peer-urls", f"http://{peer}", "--initial-advertise-peer-urls", f"http://{peer}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "bench",
        ], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoints = [c for _, c, _ in members]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(_status(ep) is not None and _status(ep).leader for ep in endpoints):  # type: ignore[union-attr]
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("etcd cluster did not start")

    def leader_pid() -> int:
        st = _status(endpoints[0])
        assert st is not None
        for name, client, _ in members:
            s = _status(client)
            if s is not None and s.header.member_id == st.leader:
                return procs[name].pid
        raise RuntimeError("no etcd leader")

    def stop() -> None:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    return Target("etcd", endpoints, lambda: {n: p.pid for n, p in procs.items()}, leader_pid, stop)


def _status(endpoint: str) -> rpc_pb2.StatusResponse | None:
    with grpc.insecure_channel(endpoint) as ch:
        try:
            resp: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=1)
            return resp
        except grpc.RpcError:
            return None


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------- client workers (separate processes)


def _worker(kind: str, endpoints: list[str], tasks: int, start: Any, duration: float, wid: int,
            value_size: int, out: Any) -> None:
    out.put(asyncio.run(_aworker(kind, endpoints, tasks, start, duration, wid, value_size, out)))


async def _aworker(kind: str, endpoints: list[str], tasks: int, start: Any, duration: float, wid: int,
                   value_size: int, out: Any) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    value = os.urandom(value_size)
    lat: list[float] = []
    errors = 0
    await stubs[0].Range(rpc_pb2.RangeRequest(key=b"warmup"))
    # Connected: say so, and wait for the common start time (set once every worker is here).
    out.put("ready")
    await asyncio.to_thread(start["go"].wait)
    start_at = start["at"].value

    async def run(t: int) -> None:
        nonlocal errors
        stub = stubs[(wid + t) % len(stubs)]
        i = 0
        while time.time() < start_at:
            await asyncio.sleep(start_at - time.time())
        end = start_at + duration
        while time.time() < end:
            t0 = time.perf_counter()
            try:
                if kind == "put":
                    await stub.Put(rpc_pb2.PutRequest(key=b"/bench/put/%d/%d/%d" % (wid, t, i), value=value))
                else:
                    await stub.Range(rpc_pb2.RangeRequest(key=b"/bench/read", serializable=kind == "serializable"))
            except grpc.RpcError:
                errors += 1
            lat.append(time.perf_counter() - t0)
            i += 1

    await asyncio.gather(*(run(t) for t in range(tasks)))
    for ch in channels:
        await ch.close(None)
    return {"ops": len(lat) - errors, "errors": errors, "lat": lat}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_run(kind: str, endpoints: list[str], clients: int, duration: float, *, procs: int = 1,
             value_size: int = 256, pids: dict[str, int] | None = None) -> dict[str, Any]:
    """`clients` concurrent loops of `kind` for `duration` seconds. With the members' `pids`,
    also the CPU the members spent per operation (summed over members, in microseconds): on a
    shared machine the throughput moves with everyone else's load, this much less."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    # The run starts once every worker has imported and connected: on a loaded machine that can
    # take longer than any fixed head start, and a late worker would measure a shorter run.
    start: dict[str, Any] = {"go": ctx.Event(), "at": ctx.Value("d", 0.0)}
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ps = [ctx.Process(target=_worker, args=(kind, endpoints if clients > 1 else endpoints[:1], n, start,
                                            duration, i, value_size, out)) for i, n in enumerate(per) if n]
    for p in ps:
        p.start()
    for _ in ps:
        if out.get(timeout=120) != "ready":
            raise RuntimeError("a load worker ended before it was ready")
    cpu0 = {n: cpu_seconds(pid) for n, pid in (pids or {}).items()}
    start["at"].value = time.time() + 0.1
    start["go"].set()
    results = [out.get(timeout=duration + 120) for _ in ps]
    cpu = {n: cpu_seconds(pid) - cpu0[n] for n, pid in (pids or {}).items()}
    for p in ps:
        p.join()
    lat = sorted(x for r in results for x in r["lat"])
    ops = sum(r["ops"] for r in results)
    res: dict[str, Any] = {
        "ops_per_s": ops / duration,
        "errors": sum(r["errors"] for r in results),
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0,
    }
    if cpu and ops:
        res["cpu_us_per_op"] = 1e6 * sum(cpu.values()) / ops
        res["cpu_s"] = cpu
    return res


def _watchers(endpoints: list[str], n: int, events: int, wid: int, ready: Any, out: Any) -> None:
    out.put(asyncio.run(_awatchers(endpoints, n, events, wid, ready)))


async def _awatchers(endpoints: list[str], n: int, events: int, wid: int, ready: Any) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    done_at: list[float] = []
    created = 0

    async def one(i: int) -> None:
        nonlocal created
        stub = rpc_pb2_grpc.WatchStub(channels[(wid + i) % len(channels)])
        req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"/bench/watch/", range_end=b"/bench/watch0"))
        call = stub.Watch(iter([req]))
        got = 0
        async for resp in call:
            if resp.created:
                created += 1
                if created == n:
                    ready.put(wid)
            got += len(resp.events)
            if got >= events:
                done_at.append(time.time())
                call.cancel()
                return

    await asyncio.gather(*(one(i) for i in range(n)))
    for ch in channels:
        await ch.close(None)
    return {"last": max(done_at), "count": len(done_at)}


def watch_run(endpoints: list[str], watchers: int, events: int, *, procs: int = 2) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Queue()
    per = [watchers // procs + (1 if i < watchers % procs else 0) for i in range(procs)]
    ps = [ctx.Process(target=_watchers, args=(endpoints, n, events, i, ready, out)) for i, n in enumerate(per)]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=120)
    first = time.time()
    asyncio.run(_write_events(endpoints, events))
    results = [out.get(timeout=300) for _ in ps]
    for p in ps:
        p.join()
    last = max(r["last"] for r in results)
    delivered = watchers * events
    return {"events_per_s": delivered / (last - first), "seconds": last - first, "watchers": watchers,
            "events": events}


async def _write_events(endpoints: list[str], events: int, concurrency: int = 16) -> None:
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    todo = list(range(events))

    async def run(t: int) -> None:
        while todo:
            i = todo.pop()
            await stubs[t % len(stubs)].Put(rpc_pb2.PutRequest(key=b"/bench/watch/%d" % i, value=b"x" * 100))

    await asyncio.gather(*(run(t) for t in range(concurrency)))
    for ch in channels:
        await ch.close(None)


async def _load_keys(endpoints: list[str], keys: int, size: int = 1024, concurrency: int = 64) -> None:
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    todo = list(range(keys))

    async def run(t: int) -> None:
        while todo:
            i = todo.pop()
            for attempt in range(5):
                try:
                    await stubs[t % len(stubs)].Put(rpc_pb2.PutRequest(key=b"/bench/mem/%08d" % i,
                                                                       value=os.urandom(size)), timeout=30)
                    break
                except grpc.RpcError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(run(t) for t in range(concurrency)))
    for ch in channels:
        await ch.close(None)


# ---------------------------------------------------------------- the run


def bench_target(t: Target, args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    eps = t.endpoints
    pids = t.pids()
    runs = {  # name -> (kind, clients, client processes)
        "put_1": ("put", 1, 1),
        "put_64": ("put", 64, 2),
        "range_64": ("range", 64, 2),
        "serializable_range_64": ("serializable", 64, 2),
    }
    if args.only:
        for name in args.only:
            kind, clients, procs = runs[name]
            res[name] = load_run(kind, eps, clients, args.duration, procs=procs, pids=pids)
            print(f"[{t.name}] {name}: {res[name]}", flush=True)
        return res
    for name, (kind, clients, procs) in runs.items():
        print(f"[{t.name}] {name} ...", flush=True)
        res[name] = load_run(kind, eps, clients, args.duration, procs=procs, pids=pids)
    print(f"[{t.name}] watch, 100 watchers ...", flush=True)
    res["watch_100"] = watch_run(eps, 100, args.watch_events)
    print(f"[{t.name}] loading {args.keys} keys of 1 KiB ...", flush=True)
    t0 = time.monotonic()
    asyncio.run(_load_keys(eps, args.keys))
    time.sleep(2.0)
    res["load_seconds"] = time.monotonic() - t0
    res["rss_mb"] = {name: rss_mb(pid) for name, pid in t.pids().items()}
    res["leader_rss_mb"] = rss_mb(t.leader_pid())
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs and 20k keys")
    p.add_argument("--skip-etcd", action="store_true")
    p.add_argument("--only", action="append", choices=["put_1", "put_64", "range_64", "serializable_range_64"],
                   help="run only this measurement (repeatable; for tuning: no result file)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--watch-events", type=int, default=1000)
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.keys, args.watch_events = 3.0, 20_000, 300
    if not args.skip_etcd and shutil.which("etcd") is None:
        sys.exit("etcd not found (Debian package etcd-server); use --skip-etcd")
    base = tempfile.mkdtemp(prefix="skiff-bench-store-", dir="/var/tmp")
    run = meta.start("store")
    results: dict[str, Any] = {"params": vars(args)}
    try:
        for start in ([start_skiff] if args.skip_etcd else [start_skiff, start_etcd]):
            t = start(base)
            try:
                results[t.name] = bench_target(t, args)
            finally:
                t.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if not args.only:
        report(results)
        print(f"\nmachine: {os.cpu_count()} cores shared by all members, the clients and other work; "
              f"results in {run.write(results)}")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def report(results: dict[str, Any]) -> None:
    sk, et = results.get("skiff", {}), results.get("etcd", {})
    rows = [
        ("put 1 client (ops/s)", "put_1", "ops_per_s"),
        ("put 1 client p50 (ms)", "put_1", "p50_ms"),
        ("put 1 client p99 (ms)", "put_1", "p99_ms"),
        ("put 64 clients (ops/s)", "put_64", "ops_per_s"),
        ("put 64 clients p50 (ms)", "put_64", "p50_ms"),
        ("put 64 clients p99 (ms)", "put_64", "p99_ms"),
        ("linearizable range 64 clients (ops/s)", "range_64", "ops_per_s"),
        ("serializable range 64 clients (ops/s)", "serializable_range_64", "ops_per_s"),
        ("put 64 clients, members' CPU per op (us)", "put_64", "cpu_us_per_op"),
        ("linearizable range 64, CPU per op (us)", "range_64", "cpu_us_per_op"),
        ("serializable range 64, CPU per op (us)", "serializable_range_64", "cpu_us_per_op"),
        ("watch events/s to 100 watchers", "watch_100", "events_per_s"),
    ]
    ratios: dict[str, float | None] = {}
    print(f"\n{'metric':42} {'skiff':>12} {'etcd':>12} {'skiff/etcd':>11}")
    for label, group, key in rows:
        a = sk.get(group, {}).get(key, 0.0)
        b = et.get(group, {}).get(key, 0.0)
        ratios[f"{group}.{key}"] = a / b if b else None
        print(f"{label:42} {a:12.1f} {b:12.1f} {_ratio(a, b):>11}")
    a, b = sk.get("leader_rss_mb", 0.0), et.get("leader_rss_mb", 0.0)
    ratios["leader_rss_mb"] = a / b if b else None
    keys = results["params"]["keys"]
    print(f"{f'leader RSS, {keys} keys x 1 KiB (MB)':42} {a:12.1f} {b:12.1f} {_ratio(a, b):>11}")
    results["ratios"] = ratios


if __name__ == "__main__":
    main()
