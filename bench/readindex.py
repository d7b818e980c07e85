"""Linearizable reads through the Raft layer alone: ReadIndex against a read barrier through the log.

    python -m bench.readindex [--seconds 5] [--concurrency 64]

A 3-member group of real RaftNodes in this process (TCP on loopback, real journals with
fdatasync, no gRPC in front), so the figure is the cost of making a read linearizable, not of
serving it. For each mode, `concurrency` tasks call `linearizable_read()` in a loop for
`seconds` on the leader, then on a follower, while one task writes a key every 10 ms (reads
must wait for it); reports reads/s, p50/p99, and the log entries the reads added. Prints JSON
and writes bench/results/readindex.json (with bench/meta.py's date, machine, load, versions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from typing import Any

from bench import meta
from controlplane.store import mvcc
from controlplane.store.cluster import free_addr
from controlplane.store.raft import RaftNode


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(1000 * s[min(len(s) - 1, int(q / 100 * len(s)))], 2) if s else float("nan")


async def _leader(nodes: list[RaftNode]) -> RaftNode:
    for _ in range(300):
        for n in nodes:
            if n.is_leader() and n.is_ready():
                return n
        await asyncio.sleep(0.05)
    raise RuntimeError("no leader")


async def _measure(leader: RaftNode, node: RaftNode, seconds: float, concurrency: int) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    lat: list[float] = []
    writes = 0

    async def reader() -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            await node.linearizable_read()
            lat.append(time.perf_counter() - t0)

    async def writer() -> None:
        nonlocal writes
        while time.monotonic() < stop:
            await leader.propose(mvcc.cmd_put(mvcc.PutReq(b"k", b"%d" % writes)))
            writes += 1
            await asyncio.sleep(0.01)

    before = leader.applied_batches
    started = time.monotonic()
    await asyncio.gather(writer(), *(reader() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    entries = (leader.applied_batches - before - writes) / max(1, len(lat))
    return {"reads_per_s": round(len(lat) / elapsed), "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99),
            "log_entries_per_read": round(entries, 3)}


async def run_mode(read_index: bool, seconds: float, concurrency: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    peers = [free_addr("127.0.0.1") for _ in range(3)]
    base = tempfile.mkdtemp(prefix="skiff-readindex-", dir="/var/tmp")
    nodes = [RaftNode(self_addr=p, peers=peers, data_dir=f"{base}/{i}", password="pw", loop=loop,
                      read_index=read_index) for i, p in enumerate(peers)]
    out: dict[str, Any] = {}
    try:
        leader = await _leader(nodes)
        await leader.propose(mvcc.cmd_put(mvcc.PutReq(b"k", b"0")))
        follower = next(n for n in nodes if n is not leader)
        for name, node in (("leader", leader), ("follower", follower)):
            out[name] = await _measure(leader, node, seconds, concurrency)
    finally:
        for n in nodes:
            await asyncio.to_thread(n.destroy)
        shutil.rmtree(base, ignore_errors=True)
    return out


async def main_async(seconds: float, concurrency: int) -> dict[str, Any]:
    return {"read_index": await run_mode(True, seconds, concurrency),
            "log_barrier": await run_mode(False, seconds, concurrency)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.readindex", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args(argv)
    run = meta.start("readindex")
    results = asyncio.run(main_async(args.seconds, args.concurrency))
    results["params"] = {"seconds": args.seconds, "concurrency": args.concurrency, "members": 3,
                         "write_every_ms": 10}
    print(json.dumps(results, indent=2))
    print(f"wrote {run.write(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
