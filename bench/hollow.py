"""What a hollow node agent costs: one hollow process of N agents against a real api-server.

    python -m bench.hollow                          # 250 agents, 60 s idle, 2,500 pods
    python -m bench.hollow --baseline /tmp/main     # the same first with the hollow process run
                                                    # from another source tree (e.g. `git archive main`)

Starts, as real processes on loopback: one etcd member (Debian's etcd-server), one api-server
(deploy/loopback.py) and one hollow process (`python -m nodeagent.hollow`, N agents, each over
its own CRI gRPC server unless `--runtime inprocess`). No scheduler and no controllers: the
bench binds the pods itself (spec.nodeName set at create), so every figure is the node side's.
Per variant (`--baseline DIR` first, then this tree; each on a fresh control plane):
1. registration: hollow process start → "hollow nodes ready" (every Node registered, every pod
   informer synced);
2. idle: the hollow process's cores over `--idle` seconds once it is ready (from /proc; its
   threads included), and that per agent — what the agents' timers and tasks cost while nothing
   changes;
3. pods: `--pods` pods created (32 in flight), spread round-robin over the N nodes, → every one
   Running as a pod informer here sees it: seconds and the hollow process's CPU seconds per pod;
   then idle again with the pods on the nodes (`--idle` seconds): the polls' cost per pod held;
4. errors: lines of the hollow process's log with "Deadline Exceeded" / DEADLINE_EXCEEDED, and
   its WARNING and ERROR lines.
`--profile SECONDS` also records py-spy (bench/profile.py) over the idle phase and over the start
of the pods phase and keeps the agent split (`profile.split`). Both variants run in the same
process one after the other, so their figures share one load (recorded before and after each).

What must hold: the baseline's hollow process runs that tree's code only (`python -P` with
PYTHONPATH=DIR; the generated skiffpb/ is linked from this tree when DIR lacks it, the proto
being the same), and the control plane is this tree's for both, so a difference is the node
side's. Results go to bench/results/hollow.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import meta, profile
from bench.scale import hollow_ready
from deploy.loopback import Process, control_plane
from skiff import errors
from skiff.client import Client
from skiff.informer import Informer
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("bench.hollow")

NAMESPACE = "hollow-bench"
CREATE_CONCURRENCY = 32
DEADLINE_LINE = re.compile(r"Deadline Exceeded|DEADLINE_EXCEEDED")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def log_counts(text: str) -> dict[str, int]:
    """Deadline Exceeded lines, WARNING lines and ERROR lines of a hollow process's log."""
    lines = text.splitlines()
    return {"deadline_exceeded": sum(1 for line in lines if DEADLINE_LINE.search(line)),
            "warnings": sum(1 for line in lines if " WARNING " in line),
            "errors": sum(1 for line in lines if " ERROR " in line)}


def pod(i: int, nodes: int, prefix: str) -> t.Pod:
    p = t.Pod(api_version="v1", kind="Pod")
    p.metadata.name = f"p{i:05d}"
    p.metadata.namespace = NAMESPACE
    p.metadata.labels["app"] = "hollow-bench"
    p.spec.node_name = f"{prefix}{i % nodes:05d}"
    c = p.spec.containers.add()
    c.name = "main"
    c.image = "skiff/pause:1.0"
    return p


def source_tree(src: Path) -> Path:
    """`src` ready to run the hollow process from: generated code linked from this tree if missing."""
    if not (src / "skiffpb").exists():
        (src / "skiffpb").symlink_to(meta.ROOT / "skiffpb", target_is_directory=True)
    return src


def start_hollow(workdir: Path, api: str, args: argparse.Namespace, src: Path) -> Process:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(src))
    # -P: no script or working directory first on sys.path, so PYTHONPATH's tree is the one imported.
    argv = [sys.executable, "-P", "-m", "nodeagent.hollow", "--api-servers", api, "--nodes", str(args.nodes),
            "--socket-dir", str(workdir / "hollow"), "--runtime", args.runtime,
            "--start-latency", str(args.start_latency)]
    proc = Process("hollow", argv, workdir / "hollow.log", "127.0.0.1", 0, env=env)
    proc.ready = hollow_ready
    return proc.start(timeout=args.start_timeout)


def record_profile(pid: int, seconds: float, raw: Path) -> dict[str, Any]:
    profile.record(pid, seconds, raw, rate=50)
    lines = raw.read_text().splitlines()
    samples, rows = profile.summarize(lines, top=8)
    return {"seconds": seconds, "samples": samples,
            "split": {k: round(v, 3) for k, v in profile.split(lines).items()},
            "top_self": [{"function": r.function, "self": round(r.self_share, 3)} for r in rows]}


async def pods_phase(api: str, args: argparse.Namespace, hollow_pid: int, out: dict[str, Any]) -> None:
    client = Client(api)
    informer: Informer[t.Pod] = Informer(client, t.Pod, namespace=NAMESPACE)
    task = asyncio.create_task(informer.run())
    try:
        with contextlib.suppress(errors.AlreadyExistsError):
            ns = t.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = NAMESPACE
            await client.create(ns)
        await informer.wait_synced(60)

        def running() -> int:
            return sum(1 for p in informer.list() if p.status.phase == "Running")

        sem = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def create(i: int) -> None:
            async with sem:
                while True:
                    try:
                        await client.create(pod(i, args.nodes, "hollow-"))
                        return
                    except errors.AlreadyExistsError:
                        return
                    except (errors.TimeoutError_, errors.UnavailableError, errors.TooManyRequestsError) as exc:
                        log.warning("create p%05d: %s; again", i, exc)
                        await asyncio.sleep(1.0)

        cpu0, t0 = cpu_s(hollow_pid), time.monotonic()
        await asyncio.gather(*(create(i) for i in range(args.pods)))
        out["create_s"] = round(time.monotonic() - t0, 2)
        halfway: float | None = None
        while running() < args.pods and time.monotonic() - t0 < args.timeout:
            if halfway is None and running() >= args.pods // 2:
                halfway = time.monotonic() - t0
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - t0
        cpu = cpu_s(hollow_pid) - cpu0
        n = running()
        out.update({"running": n, "all_running": n >= args.pods, "half_running_s": round(halfway or elapsed, 2),
                    "all_running_s": round(elapsed, 2), "hollow_cpu_s": round(cpu, 1),
                    "hollow_cores": round(cpu / elapsed, 3), "hollow_cpu_ms_per_pod": round(cpu * 1000 / max(1, n), 2),
                    "pods_per_s": round(n / elapsed, 1)})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


def run_variant(label: str, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"source": str(src), "load_before": meta.loadavg()}
    with tempfile.TemporaryDirectory(prefix=f"skiff-bench-hollow-{label}-") as tmp:
        workdir = Path(tmp)
        with control_plane(workdir) as cp:
            api = cp.apiserver_endpoints
            t0 = time.monotonic()
            hollow = start_hollow(workdir, api, args, src)
            try:
                out["registered_s"] = round(time.monotonic() - t0, 1)
                out["rss_idle_mb"] = 0.0
                time.sleep(args.settle)  # the registration burst's tail (first Lease, status writes) ends
                cpu0, i0 = cpu_s(hollow.pid), time.monotonic()
                if args.profile:
                    out["idle_profile"] = record_profile(hollow.pid, min(args.profile, args.idle),
                                                         workdir / "idle.txt")
                time.sleep(max(0.0, args.idle - (time.monotonic() - i0)))
                idle_cores = (cpu_s(hollow.pid) - cpu0) / (time.monotonic() - i0)
                out["idle_cores"] = round(idle_cores, 4)
                out["idle_millicores_per_agent"] = round(idle_cores * 1000 / args.nodes, 3)
                out["rss_idle_mb"] = round(rss_mb(hollow.pid), 1)
                pods: dict[str, Any] = {}
                if args.pods:
                    prof: subprocess.Popen[bytes] | None = None
                    if args.profile:
                        prof = subprocess.Popen([sys.executable, "-c", (
                            "import sys; from pathlib import Path; from bench import profile; "
                            f"profile.record({hollow.pid}, {args.profile}, Path(sys.argv[1]), rate=50)"),
                            str(workdir / "pods.txt")], cwd=meta.ROOT)
                    asyncio.run(pods_phase(api, args, hollow.pid, pods))
                    if prof is not None:
                        prof.wait()
                        lines = (workdir / "pods.txt").read_text().splitlines()
                        pods["profile_split"] = {k: round(v, 3) for k, v in profile.split(lines).items()}
                    pods["rss_mb"] = round(rss_mb(hollow.pid), 1)
                    if pods.get("all_running"):
                        # The agents carrying their pods, nothing changing: what the polls cost per pod.
                        time.sleep(args.settle)
                        cpu0, i0 = cpu_s(hollow.pid), time.monotonic()
                        time.sleep(args.idle)
                        cores = (cpu_s(hollow.pid) - cpu0) / (time.monotonic() - i0)
                        pods["idle_cores"] = round(cores, 4)
                        pods["idle_millicores_per_agent"] = round(cores * 1000 / args.nodes, 3)
                out["pods"] = pods
            finally:
                hollow.stop(timeout=30)
                out["log"] = log_counts(hollow.log_path.read_text(errors="replace"))
                if args.keep:
                    keep = Path(args.keep) / label
                    keep.mkdir(parents=True, exist_ok=True)
                    for f in workdir.glob("*.txt"):
                        f.replace(keep / f.name)
                    (keep / "hollow.log").write_bytes(hollow.log_path.read_bytes())
    out["load_after"] = meta.loadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hollow", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--nodes", type=int, default=250)
    p.add_argument("--pods", type=int, default=2500)
    p.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measurement")
    p.add_argument("--settle", type=float, default=15.0, help="seconds after ready before the idle measurement")
    p.add_argument("--runtime", choices=("grpc", "inprocess"), default="grpc")
    p.add_argument("--start-latency", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the pods to be Running")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds for the agents to register")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="first run the hollow process from this source tree (e.g. an export of main)")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS", help="py-spy the hollow process")
    p.add_argument("--keep", default="", help="keep logs and profiles under this directory")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = meta.start("hollow")
    results: dict[str, Any] = {"params": {"nodes": args.nodes, "pods": args.pods, "idle_s": args.idle,
                                          "runtime": args.runtime, "start_latency": args.start_latency}}
    variants = [("baseline", source_tree(args.baseline.resolve()))] if args.baseline else []
    variants.append(("current", meta.ROOT))
    for label, src in variants:
        log.info("variant %s: hollow process from %s", label, src)
        results[label] = run_variant(label, src, args)
        log.info("variant %s: %s", label, {k: v for k, v in results[label].items() if k != "idle_profile"})
    path = run.write(results, args.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
