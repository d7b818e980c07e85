"""The floor under any store served by Python's gRPC: the CPU a server that does nothing spends
per unary request, on this machine, now.

    python -m bench.grpc_floor [--reps 3] [--duration 4] [MODE ...]

MODE is how the server answers `KV.Range` with a constant `RangeResponse` (header only):
`asyncio` (grpc.aio on asyncio's default loop), `uvloop` (grpc.aio on uvloop, as the store
runs), `raw` (grpc.aio, a generic handler returning pre-serialized bytes: no protobuf on either
side of the handler), `sync` (grpc's thread-pool server, 8 threads). The load is bench/store.py's
own (`load_run`: 64 clients in 2 processes, serializable Range); modes alternate, `--reps`
times, and the median CPU per request (user + system of the server process, from /proc) is
printed per mode. Compare it with the members' CPU per operation in bench/results/store.json:
what a Skiff member spends beyond this floor is the store's own work. No result file: the point
is the comparison within one run (docs/store.md, "Where a member's CPU goes").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from concurrent import futures
from typing import Any

import grpc

from controlplane.store.cluster import free_addr
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc

MODES = ("asyncio", "uvloop", "raw", "sync")


def _response() -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4))


class _AsyncKV(rpc_pb2_grpc.KVServicer):
    async def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        return _response()


class _SyncKV(rpc_pb2_grpc.KVServicer):
    def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        return _response()


async def _serve_aio(addr: str, mode: str) -> None:
    server = grpc.aio.server()
    if mode == "raw":
        data = _response().SerializeToString()

        async def range_raw(_request: bytes, _context: Any) -> bytes:
            return data

        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "etcdserverpb.KV", {"Range": grpc.unary_unary_rpc_method_handler(range_raw)}),))
    else:
        rpc_pb2_grpc.add_KVServicer_to_server(_AsyncKV(), server)
    server.add_insecure_port(addr)
    await server.start()
    await server.wait_for_termination()


def serve(addr: str, mode: str) -> None:
    if mode == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(8))
        rpc_pb2_grpc.add_KVServicer_to_server(_SyncKV(), server)
        server.add_insecure_port(addr)
        server.start()
        server.wait_for_termination()
    elif mode == "uvloop":
        from skiff import eventloop

        eventloop.run(_serve_aio(addr, mode))
    else:
        asyncio.run(_serve_aio(addr, mode))


def measure(mode: str, duration: float) -> dict[str, Any]:
    from bench.store import load_run

    addr = free_addr("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--serve", addr, mode])
    try:
        with grpc.insecure_channel(addr) as ch:
            grpc.channel_ready_future(ch).result(timeout=60)  # the server imported and listens
        return load_run("serializable", [addr], 64, duration, procs=2, pids={"server": proc.pid})
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("modes", nargs="*", metavar="MODE", help=f"any of {', '.join(MODES)} (default: all)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--serve", nargs=2, metavar=("ADDR", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        p.error(f"unknown mode {bad[0]!r}: choose from {', '.join(MODES)}")
    modes = args.modes or list(MODES)
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for _ in range(args.reps):
        for mode in modes:
            r = measure(mode, args.duration)
            runs[mode].append((r.get("cpu_us_per_op", 0.0), r["ops_per_s"]))
            print(f"{mode:8} {runs[mode][-1][0]:7.0f} us/request {r['ops_per_s']:7.0f} requests/s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    print("median CPU per request (us):", ", ".join(
        f"{m} {statistics.median(c for c, _ in v):.0f}" for m, v in runs.items()))


if __name__ == "__main__":
    main()
