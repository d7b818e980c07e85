"""What a hollow process keeps per pod: pods created and deleted in rounds on N hollow agents.

    python -m bench.hollow_churn                        # 40 agents, 200 Services, 4 rounds of 300 pods
    python -m bench.hollow_churn --baseline /tmp/main   # the same first with the hollow process run
                                                        # from another source tree (e.g. `git archive main`)

Starts, as real processes on loopback: one etcd member, one api-server (deploy/loopback.py) and
one hollow process (`python -m nodeagent.hollow`, N agents, each over its own CRI gRPC server).
No scheduler and no controllers: the bench binds the pods itself (spec.nodeName set at create).
First `--services` Services in the pods' namespace, so each container gets their environment
variables as in the scale scenario's rolling update (8 per Service). Then `--rounds` rounds:
`--pods` pods created (spread round-robin) → every one Running → all deleted → every one gone
from the api-server and from every agent's runtime, then `--settle` seconds. The hollow
process's RSS is read (from /proc) before the first round, with each round's pods Running, and
after each round's pods are gone. Figures, per variant (`--baseline DIR` first, then this tree;
each on a fresh control plane, one after the other in this process, so they share one load):
- held per Running pod: (RSS with the first round Running - RSS before) / pods;
- left per churned pod: (RSS after the last round - RSS after the first) / the pods of the
  rounds between: what stays behind once pods are gone (the first round also fills the
  allocator's pools and the agents' one-off caches, so it is the reference).

What must hold: the baseline's hollow process runs that tree's code only (bench/hollow.py's
`start_hollow`, `python -P` with PYTHONPATH=DIR), and the control plane is this tree's for both,
so a difference is the hollow process's. Results go to bench/results/hollow_churn.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import meta
from bench.hollow import NAMESPACE, log_counts, pod, rss_mb, source_tree, start_hollow
from bench.scale import service
from deploy.loopback import control_plane
from skiff import errors
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("bench.hollow_churn")

CONCURRENCY = 32  # creates and deletes in flight


async def _limited(calls: list[Callable[[], Awaitable[Any]]]) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with sem:
            while True:
                try:
                    await call()
                    return
                except (errors.AlreadyExistsError, errors.NotFoundError):
                    return
                except (errors.TimeoutError_, errors.UnavailableError, errors.TooManyRequestsError) as exc:
                    log.warning("%s; again", exc)
                    await asyncio.sleep(1.0)

    await asyncio.gather(*(one(c) for c in calls))


async def _until(what: str, cond: Callable[[], Awaitable[bool]], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def churn(api: str, args: argparse.Namespace, hollow_pid: int, out: dict[str, Any]) -> None:
    client = Client(api)
    try:
        with contextlib.suppress(errors.AlreadyExistsError):
            ns = t.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = NAMESPACE
            await client.create(ns)
        services = [service(i, 1) for i in range(args.services)]
        for s in services:
            s.metadata.namespace = NAMESPACE
        await _limited([functools.partial(client.create, s) for s in services])
        await asyncio.sleep(args.settle)  # the agents' service informer has them all
        out["rss_before_mb"] = round(rss_mb(hollow_pid), 1)
        rounds: list[dict[str, float]] = []
        for r in range(args.rounds):
            pods = [pod(r * args.pods + i, args.nodes, "hollow-") for i in range(args.pods)]
            t0 = time.monotonic()
            await _limited([functools.partial(client.create, p) for p in pods])

            async def running() -> bool:
                listed = (await client.list(t.Pod, namespace=NAMESPACE)).items
                return sum(1 for p in listed if p.status.phase == "Running") >= args.pods

            await _until(f"round {r}: pods Running", running, args.timeout)
            running_s = time.monotonic() - t0
            rss_running = rss_mb(hollow_pid)
            await _limited([functools.partial(client.delete, t.Pod, p.metadata.name, NAMESPACE,
                                              grace_period_seconds=0) for p in pods])

            async def gone() -> bool:
                return not (await client.list(t.Pod, namespace=NAMESPACE, limit=1)).items

            await _until(f"round {r}: pods gone", gone, args.timeout)
            await asyncio.sleep(args.settle)  # the teardowns end, their Events are written
            rounds.append({"running_s": round(running_s, 1), "rss_running_mb": round(rss_running, 1),
                           "rss_after_mb": round(rss_mb(hollow_pid), 1)})
            log.info("round %d: %s", r, rounds[-1])
        out["rounds"] = rounds
        out["held_kb_per_running_pod"] = round((rounds[0]["rss_running_mb"] - out["rss_before_mb"]) * 1024
                                               / args.pods, 1)
        if len(rounds) > 1:
            out["left_kb_per_churned_pod"] = round((rounds[-1]["rss_after_mb"] - rounds[0]["rss_after_mb"]) * 1024
                                                   / (args.pods * (len(rounds) - 1)), 2)
    finally:
        await client.close()


def run_variant(label: str, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"source": str(src), "load_before": meta.loadavg()}
    with tempfile.TemporaryDirectory(prefix=f"skiff-bench-churn-{label}-") as tmp:
        workdir = Path(tmp)
        with control_plane(workdir) as cp:
            api = cp.apiserver_endpoints
            hollow = start_hollow(workdir, api, args, src)
            try:
                time.sleep(args.settle)  # the registration burst's tail
                asyncio.run(churn(api, args, hollow.pid, out))
            finally:
                hollow.stop(timeout=30)
                out["log"] = log_counts(hollow.log_path.read_text(errors="replace"))
    out["load_after"] = meta.loadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hollow_churn", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--nodes", type=int, default=40)
    p.add_argument("--pods", type=int, default=300, help="pods per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--services", type=int, default=200, help="Services in the pods' namespace")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after each phase before RSS is read")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for a round's pods to run or go")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds for the agents to register")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="first run the hollow process from this source tree (e.g. an export of main)")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    args.runtime, args.start_latency = "grpc", 0.0  # start_hollow's: each agent over its own CRI server
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = meta.start("hollow_churn")
    results: dict[str, Any] = {"params": {"nodes": args.nodes, "pods": args.pods, "rounds": args.rounds,
                                          "services": args.services}}
    variants = [("baseline", source_tree(args.baseline.resolve()))] if args.baseline else []
    variants.append(("current", meta.ROOT))
    for label, src in variants:
        log.info("variant %s: hollow process from %s", label, src)
        results[label] = run_variant(label, src, args)
        log.info("variant %s: %s", label, results[label])
    path = run.write(results, args.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
