"""End-to-end benchmark (`make bench-e2e`): a whole cluster of real processes, issue 8.

1. Startup: on a fresh network-namespace lab (1 control-plane host: 3 store members,
   api-servers, controllers, scheduler, and a tainted node agent and proxy; 2 workers with
   containerd, node agent, proxy), create examples/web's Deployment with 30 replicas (the
   local web image, its readiness probe) and time, per pod, create -> Ready. Times are local:
   a watch on the pods, opened before the create, stamps each pod when it is first seen
   (created, bound, Ready) with this process's clock; the zero is just before the Deployment
   create call. The Ready condition's lastTransitionTime (set by the node agent, ns
   precision, same machine clock) is reported beside it, as the Ready time without the
   status write and watch delivery. creationTimestamp is whole seconds, too coarse to use.
   Also: time to all Ready, and the pods per node. The lab then holds 30 running pods, and
   every component's RSS is read there too.
2. `make up` on a machine that already has the packages: `python -m deploy.local up
   --state-dir <tmp>` until it returns (cluster, images, examples/web applied, pods Ready,
   the ClusterIP answering), then `down`, --make-up-runs times. It refuses to start when a
   local cluster (netns skiff-node, link skiff-up, fixed names) already exists.
3. RSS at idle with the seed workload: a second fresh lab, examples/web applied unchanged,
   pods Ready and the Service's endpoints filled, --idle seconds of nothing; then VmRSS of
   every daemon recorded under `<lab>/<host>/run/*.pid` and of every containerd shim (found
   by its `-address <socket>` argument), per host.

What must hold: every lab and every local cluster this starts is torn down in `finally`
(also on Ctrl-C and SIGTERM) and checked for leftovers; the lab prefixes and LANs are unique
to this run; no traffic leaves the root namespace except to the api-servers through the lab
uplink. Needs root. Prints tables and writes bench/results/e2e.json. Issue 8 sets no
numeric target, so the exit status only says whether every measurement ran.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import meta
from deploy import containerd, netplan, procs, render
from deploy.lab import IMAGE_CACHE, Lab, LabSpec
from skiff import conditions, defaults, manifests
from skiff.client import Client
from skiff.errors import SkiffError
from skiffpb.api.v1 import types_pb2 as t

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "web"
RESULTS = meta.RESULTS_DIR / "e2e.json"
LOCAL_NETNS = "skiff-node"  # deploy/local.py's fixed names
LOCAL_LINK = "skiff-up"
LOCAL_LAN = defaults.LOCAL_LAN_CIDR


def say(text: str) -> None:
    print(f"[e2e] {text}", flush=True)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 30 values is the largest)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ready_transition(pod: t.Pod) -> float | None:
    c = conditions.pod_ready_condition(pod)
    if c is not None and c.status == conditions.TRUE and c.HasField("last_transition_time"):
        return float(c.last_transition_time.ToNanoseconds()) / 1e9
    return None


# --------------------------------------------------------------------------- labs


# The second octets of the LANs the benchmarks' labs use (tests use others).
LAN_OCTETS = range(200, 255)


@contextmanager
def running_lab(tag: str, root: Path, *, workers: int, timeout: float, taken: set[str]) -> Iterator[Lab]:
    """A fresh lab, torn down (and checked for leftovers) whatever happens."""
    prefix = f"b{os.getpid() % 10000:04d}{tag}"  # 6 characters: the most netplan allows
    lan = netplan.free_lan(LAN_OCTETS, also_taken=taken)
    taken.add(lan)
    lab = Lab(LabSpec(prefix=prefix, workers=workers, lan_cidr=lan), root)
    say(f"lab {prefix} on {lan}: starting ({workers} workers)")
    started = time.monotonic()
    lab.up(progress=lambda line: say(f"  {line}"), timeout=timeout)  # tears itself down on failure
    say(f"lab {prefix} up in {time.monotonic() - started:.1f} s")
    try:
        yield lab
    finally:
        notes = lab.down()
        left = lab.leftovers()
        say(f"lab {prefix} removed" + (f" (cleaned: {'; '.join(notes)})" if notes else ""))
        if left:
            raise RuntimeError(f"lab {prefix} left behind: {', '.join(left)}")


def web_objects() -> list[Any]:
    return [item.obj for item in manifests.load([str(EXAMPLE)])]


def web_deployment(replicas: int) -> t.Deployment:
    for obj in web_objects():
        if isinstance(obj, t.Deployment):
            obj.spec.replicas = replicas
            return obj
    raise RuntimeError(f"no Deployment in {EXAMPLE}")


# --------------------------------------------------------------------------- 1. startup


class PodTimes:
    """First time (this process's monotonic clock) each pod was seen created, bound and Ready."""

    def __init__(self) -> None:
        self.created: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.changed = asyncio.Event()

    def see(self, pod: t.Pod) -> None:
        now = time.monotonic()
        name = pod.metadata.name
        self.created.setdefault(name, now)
        if pod.spec.node_name:
            self.bound.setdefault(name, now)
        if conditions.is_pod_ready(pod) and name not in self.ready:
            self.ready[name] = now
            self.changed.set()


async def watch_pods(client: Client, times: PodTimes, selector: str, resource_version: str) -> None:
    """Stamp pods from a watch; should the stream end or fail, list again and watch on from there."""
    rv = resource_version
    while True:
        try:
            async for ev in client.watch(t.Pod, namespace="default", label_selector=selector, resource_version=rv):
                if ev.type in ("ADDED", "MODIFIED"):
                    times.see(ev.obj)
                rv = ev.obj.metadata.resource_version or rv
        except SkiffError as exc:
            say(f"pod watch interrupted ({exc}); listing and watching again")
        listed = await client.list(t.Pod, namespace="default", label_selector=selector)
        for pod in listed.items:
            times.see(pod)
        rv = listed.resource_version


def summary(values: list[float]) -> dict[str, Any]:
    # The sorted samples draw "pods Ready over time" (`python -m bench.plots`).
    return {"p50_s": round(statistics.median(values), 3), "p99_s": round(pct(values, 99), 3),
            "min_s": round(min(values), 3), "max_s": round(max(values), 3),
            "samples_s": sorted(round(v, 3) for v in values)}


async def measure_startup(lab: Lab, replicas: int, timeout: float) -> dict[str, Any]:
    deployment = web_deployment(replicas)
    selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())
    times = PodTimes()
    async with lab.client(timeout=30) as client:
        listed = await client.list(t.Pod, namespace="default", label_selector=selector)
        task = asyncio.create_task(watch_pods(client, times, selector, listed.resource_version))
        await asyncio.sleep(1.0)  # let the watch stream open, so local stamps are not late
        load_before = loadavg()
        wall0, t0 = time.time(), time.monotonic()
        await client.create(deployment)
        deadline = t0 + timeout
        while len(times.ready) < replicas:
            if task.done():
                task.result()
                raise RuntimeError("the pod watch ended")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(times.ready)}/{replicas} pods Ready after {timeout:.0f} s; "
                                   f"logs under {lab.dir}/<host>/run/")
            times.changed.clear()
            try:
                await asyncio.wait_for(times.changed.wait(), 1.0)
            except TimeoutError:
                pass
        all_ready = max(times.ready.values()) - t0
        task.cancel()
        pods = [p for p in (await client.list(t.Pod, namespace="default", label_selector=selector)).items
                if p.metadata.name in times.ready]
    ready_watch = [times.ready[n] - t0 for n in times.ready]
    transitions = [tr - wall0 for p in pods if (tr := ready_transition(p)) is not None]
    return {
        "replicas": replicas,
        "clock": "local watch stamps; zero = just before the Deployment create call",
        "create_to_ready_watch": summary(ready_watch),
        "create_to_ready_condition": summary(transitions) if transitions else {},
        "create_to_pod_created": summary([times.created[n] - t0 for n in times.ready]),
        "create_to_bound": summary([times.bound[n] - t0 for n in times.ready if n in times.bound]),
        "all_ready_s": round(all_ready, 3),
        "pods_per_node": dict(sorted(Counter(p.spec.node_name for p in pods).items())),
        "load_before": load_before, "load_after": loadavg(),
    }


# --------------------------------------------------------------------------- 3. RSS


def vm_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def pod_pids(cgroup_parent: str) -> set[int]:
    """Processes in the pods' cgroups (pause and the containers), any cgroup hierarchy."""
    out: set[int] = set()
    for group in containerd.cgroup_dirs(cgroup_parent.strip("/")):
        for procs_file in group.rglob("cgroup.procs"):
            try:
                out.update(int(x) for x in procs_file.read_text().split())
            except (OSError, ValueError):
                continue
    return out


def component_rss(lab: Lab) -> list[dict[str, Any]]:
    """One row per daemon and per shim of every host; pod processes summed per host."""
    rows: list[dict[str, Any]] = []
    for host in lab.net.hosts:
        for daemon in procs.recorded(lab.run_dir(host.name)):
            argv = cmdline(daemon.pid)
            if argv and Path(argv[0]).name == "nsenter":  # would be the wrapper, not the daemon
                raise RuntimeError(f"{daemon.name} on {host.name}: pid {daemon.pid} is nsenter, not the daemon")
            rows.append({"host": host.name, "component": daemon.name, "pid": daemon.pid,
                         "rss_kb": vm_rss_kb(daemon.pid)})
        config = lab.host_config(host.name)
        if render.WORKER in config.roles:
            shims = containerd.pids_with_cmdline(f"-address {config.node_paths.socket}")
            for pid in sorted(shims):
                rows.append({"host": host.name, "component": "containerd-shim", "pid": pid, "rss_kb": vm_rss_kb(pid)})
            pods = pod_pids(config.cgroup_parent) - set(shims)
            names = Counter(Path(argv[0]).name for p in pods if (argv := cmdline(p)) and argv[0])
            rows.append({"host": host.name, "component": "pod processes", "pid": None, "count": len(pods),
                         "commands": dict(sorted(names.items())), "rss_kb": sum(vm_rss_kb(p) or 0 for p in pods)})
    return rows


def rss_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    daemons = [r for r in rows if r["component"] != "pod processes"]
    by_kind: dict[str, list[int]] = {}
    for r in daemons:
        kind = r["component"].split("-")[0] if r["component"].startswith(("store-", "apiserver-")) else r["component"]
        by_kind.setdefault(kind, []).append(r["rss_kb"] or 0)
    return {
        "total_mb": round(sum(r["rss_kb"] or 0 for r in daemons) / 1024, 1),
        "per_host_mb": {h: round(sum(r["rss_kb"] or 0 for r in daemons if r["host"] == h) / 1024, 1)
                        for h in dict.fromkeys(r["host"] for r in rows)},
        "per_component_mb": {k: {"count": len(v), "each_mean": round(statistics.mean(v) / 1024, 1),
                                 "each_max": round(max(v) / 1024, 1), "sum": round(sum(v) / 1024, 1)}
                             for k, v in by_kind.items()},
        "pod_processes_mb": round(sum(r["rss_kb"] for r in rows if r["component"] == "pod processes") / 1024, 1),
    }


async def apply_seed(lab: Lab, timeout: float) -> dict[str, Any]:
    """examples/web as it is; wait for its pods Ready and the Service's endpoints."""
    objs = web_objects()
    deployment = next(o for o in objs if isinstance(o, t.Deployment))
    service = next(o for o in objs if isinstance(o, t.Service))
    want = deployment.spec.replicas
    selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())
    async with lab.client(timeout=30) as client:
        for obj in objs:
            await client.create(obj)
        deadline = time.monotonic() + timeout
        while True:
            pods = [p for p in (await client.list(t.Pod, namespace="default", label_selector=selector)).items
                    if conditions.is_pod_ready(p) and not p.metadata.HasField("deletion_timestamp")]
            try:
                ep = await client.get(t.Endpoints, service.metadata.name, "default")
                addresses = sum(len(s.addresses) for s in ep.subsets)
            except Exception:
                addresses = 0
            if len(pods) >= want and addresses >= want:
                return {"pods": {p.metadata.name: p.spec.node_name for p in pods}, "endpoints": addresses}
            if time.monotonic() > deadline:
                raise RuntimeError(f"seed workload: {len(pods)}/{want} pods Ready, {addresses} endpoints "
                                   f"after {timeout:.0f} s")
            await asyncio.sleep(0.5)


def print_rss(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'host':<6} {'component':<18} {'pid':>8} {'VmRSS MB':>9}")
    for r in rows:
        extra = f"  ({r['count']}: {r['commands']})" if r["component"] == "pod processes" else ""
        print(f"  {r['host']:<6} {r['component']:<18} {r['pid'] or '-':>8} {(r['rss_kb'] or 0) / 1024:>9.1f}{extra}")
    s = rss_summary(rows)
    for kind, v in s["per_component_mb"].items():
        print(f"  {kind:<26} x{v['count']:<3} mean {v['each_mean']:>6.1f} MB  max {v['each_max']:>6.1f}  "
              f"sum {v['sum']:>7.1f}")
    print(f"  all components: {s['total_mb']} MB  ({', '.join(f'{h} {m}' for h, m in s['per_host_mb'].items())});"
          f" pod processes {s['pod_processes_mb']} MB")


# --------------------------------------------------------------------------- 2. make up


def local_cluster_present() -> str:
    """Why a local cluster (fixed names) seems to exist; "" when none does."""
    if LOCAL_NETNS in netplan.existing_netns():
        return f"netns {LOCAL_NETNS} exists"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    if f" {LOCAL_LINK}@" in links or f" {LOCAL_LINK}:" in links:
        return f"link {LOCAL_LINK} exists"
    status = subprocess.run([sys.executable, "-m", "deploy.local", "status"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if status.returncode == 0:
        return "`python -m deploy.local status` reports a running cluster under /var/lib/skiff/local"
    routes = subprocess.run(["ip", "-4", "-o", "route"], capture_output=True, text=True, check=False).stdout
    lan = ipaddress.ip_network(LOCAL_LAN)
    for line in routes.splitlines():
        word = line.split()[0]
        if word != "default" and ipaddress.ip_network(word, strict=False).overlaps(lan):
            return f"a route for {word} overlaps {LOCAL_LAN}"
    return ""


def timed_local(action: str, state_dir: Path, env: dict[str, str], log: Path,
                timeout: float) -> tuple[float, int, list[tuple[float, str]]]:
    """Run `python -m deploy.local ACTION`; its elapsed time, exit code and stamped output lines."""
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"--- {action}\n")
        proc = subprocess.Popen([sys.executable, "-m", "deploy.local", action, "--state-dir", str(state_dir)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append((round(time.monotonic() - started, 2), line.rstrip()))
                out.write(line)
                if time.monotonic() - started > timeout:
                    proc.kill()
            rc = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return time.monotonic() - started, rc, lines


def first_stamp(lines: list[tuple[float, str]], fragment: str) -> float | None:
    return next((s for s, line in lines if fragment in line), None)


def measure_make_up(runs: int, timeout: float) -> list[dict[str, Any]]:
    present = local_cluster_present()
    if present:
        raise RuntimeError(f"a local cluster seems to be running ({present}); `make down` it first, "
                           "or use --skip make-up")
    state_dir = Path(tempfile.mkdtemp(prefix="skiff-bench-up-"))
    env = dict(os.environ, SKIFF_CONFIG=str(state_dir / "cli-config"))  # leave the user's CLI config alone
    log = Path(tempfile.mkstemp(prefix="skiff-bench-up-", suffix=".log")[1])
    results = []
    try:
        for i in range(1, runs + 1):
            cache_warm = IMAGE_CACHE.is_dir() and any(IMAGE_CACHE.iterdir())
            load_before = loadavg()
            say(f"make up, run {i}/{runs}: python -m deploy.local up --state-dir {state_dir}")
            try:
                up_s, up_rc, lines = timed_local("up", state_dir, env, log, timeout)
            finally:
                down_s, down_rc, _ = timed_local("down", state_dir, env, log, timeout)
            left = local_cluster_present()
            if up_rc != 0 or down_rc != 0 or left:
                raise RuntimeError(f"make up run {i}: up exit {up_rc}, down exit {down_rc}"
                                   f"{', still there: ' + left if left else ''}; output in {log}")
            results.append({
                "run": i, "up_s": round(up_s, 2), "down_s": round(down_s, 2), "image_cache_warm": cache_warm,
                "workers_ready_at_s": first_stamp(lines, "workers:"),
                "pods_ready_at_s": first_stamp(lines, "pods Ready: 2/2"),
                "load_before": load_before, "load_after": loadavg(),
            })
            say(f"  up {up_s:.1f} s (node Ready at {results[-1]['workers_ready_at_s']} s, pods Ready at "
                f"{results[-1]['pods_ready_at_s']} s), down {down_s:.1f} s")
    finally:
        if (state_dir / "skiff" / "lab.json").exists():  # a failure above before down ran
            subprocess.run([sys.executable, "-m", "deploy.local", "down", "--state-dir", str(state_dir)], cwd=ROOT,
                           env=env, capture_output=True, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
    log.unlink(missing_ok=True)
    return results


# --------------------------------------------------------------------------- main


def run_phase(name: str, results: dict[str, Any], fn: Callable[[], Any]) -> bool:
    started = time.monotonic()
    try:
        results[name] = fn()
        return True
    except Exception as exc:  # one failed phase must not hide the others' figures
        say(f"{name} FAILED: {exc}")
        results[name] = {"error": str(exc)}
        return False
    finally:
        say(f"{name}: {time.monotonic() - started:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` tears its lab down."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=doc.split("\n\n")[0],
                                epilog="\n\n".join(doc.split("\n\n")[1:3]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=30, help="pods in the startup run (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="worker hosts per lab (default %(default)s)")
    p.add_argument("--make-up-runs", type=int, default=2, help="times to run make up + down (default %(default)s)")
    p.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading RSS (default %(default)s)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for any one wait (default %(default)s)")
    p.add_argument("--skip", action="append", default=[], choices=("startup", "make-up", "rss"),
                   help="leave a part out (repeatable)")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default %(default)s)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.e2e needs root (network namespaces, containerd, iptables)", file=sys.stderr)
        return 1
    missing = containerd.missing_prereqs()
    if missing:
        print(f"bench.e2e: missing {', '.join(missing)} (run `make setup`)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)

    run = meta.start("e2e")
    results: dict[str, Any] = {}
    lab_root = Path(tempfile.mkdtemp(prefix="skiff-bench-e2e-"))
    taken: set[str] = set()
    ok = True
    try:
        if "startup" not in args.skip:
            def startup() -> dict[str, Any]:
                with running_lab("s", lab_root, workers=args.workers, timeout=args.timeout, taken=taken) as lab:
                    out = asyncio.run(measure_startup(lab, args.replicas, args.timeout))
                    time.sleep(args.idle)
                    rows = component_rss(lab)
                    print_rss(f"RSS with {args.replicas} web pods running (after {args.idle:.0f} s):", rows)
                    out["rss_with_pods"] = {"rows": rows, **rss_summary(rows)}
                    return out
            ok &= run_phase("startup", results, startup)
        if "make-up" not in args.skip:
            ok &= run_phase("make_up", results, lambda: measure_make_up(args.make_up_runs, args.timeout))
        if "rss" not in args.skip:
            def rss() -> dict[str, Any]:
                with running_lab("r", lab_root, workers=args.workers, timeout=args.timeout, taken=taken) as lab:
                    seed = asyncio.run(apply_seed(lab, args.timeout))
                    time.sleep(args.idle)
                    rows = component_rss(lab)
                    print_rss(f"RSS at idle with examples/web ({len(seed['pods'])} pods, {args.idle:.0f} s idle):",
                              rows)
                    return {"seed": seed, "idle_s": args.idle, "rows": rows, **rss_summary(rows),
                            "load": loadavg()}
            ok &= run_phase("rss_idle", results, rss)
    finally:
        shutil.rmtree(lab_root, ignore_errors=True)
    report(results, run)
    say(f"results in {run.write(results, args.output)}")
    return 0 if ok else 1


def report(results: dict[str, Any], bench_run: meta.Run) -> None:
    m = meta.machine()
    print(f"\nmachine: {m['cpus']} CPUs, kernel {m['kernel']}, Python {meta.versions()['python']}, "
          f"load {bench_run.load_before} -> {meta.loadavg()}")
    s = results.get("startup")
    if s and "error" not in s:
        w, c = s["create_to_ready_watch"], s["create_to_ready_condition"]
        print(f"startup, {s['replicas']} pods (Deployment create -> pod Ready, local clock):")
        print(f"  seen Ready by a watch:      p50 {w['p50_s']:.2f} s  p99 {w['p99_s']:.2f} s  (min {w['min_s']:.2f})")
        if c:
            print(f"  Ready lastTransitionTime:   p50 {c['p50_s']:.2f} s  p99 {c['p99_s']:.2f} s")
        print(f"  pod created p50 {s['create_to_pod_created']['p50_s']:.2f} s, bound p50 "
              f"{s['create_to_bound']['p50_s']:.2f} s (last {s['create_to_bound']['max_s']:.2f} s)")
        print(f"  all Ready after {s['all_ready_s']:.2f} s; pods per node {s['pods_per_node']}; "
              f"load {s['load_before']} -> {s['load_after']}")
    for run in results.get("make_up") or []:
        if isinstance(run, dict) and "run" in run:
            print(f"make up run {run['run']}: up {run['up_s']:.1f} s (images cached: {run['image_cache_warm']}), "
                  f"down {run['down_s']:.1f} s; load {run['load_before']} -> {run['load_after']}")
    r = results.get("rss_idle")
    if r and "error" not in r:
        print(f"RSS at idle with the seed workload: all components {r['total_mb']} MB "
              f"({', '.join(f'{h} {v}' for h, v in r['per_host_mb'].items())})")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:  # the labs are down by now: every one is torn down in `finally`
        sys.exit(f"bench.e2e interrupted ({exc or 'Ctrl-C'}); nothing left running")
