"""Benchmark: scheduler and controller throughput (`make bench-scheduler`).

1. Scheduler: 10,000 pods (from 10 owners, 100m cpu / 128Mi each) created onto 1,000 simulated
   nodes (32 cpu / 64Gi / 110 pods); reports the create -> all-bound time and pods/s, plus the
   pure decision rate (filters + scores, no I/O). Events are recorded as in production.
2. Controllers: a 1,000-replica Deployment, from create to 1,000 pods created (deployment and
   replicaset controllers with their default workers), and to the ReplicaSet's status showing them.

By default both run against the api-server's registry in this process, over its in-memory
store (controlplane.apiserver.inprocess.InProcessApi: defaults, validation and the watch cache
as served, without gRPC or a replicated store), so the numbers measure the scheduler and
controllers themselves plus the api-server's own work; the scheduler part is then run twice, with pods
streaming in and with all pods waiting before the scheduler starts (a backlog).
`--api-servers HOST:PORT` runs against a real, freshly started api-server instead
(`--backlog` picks the backlog scenario there). `--target` fails the run when the scheduler
is slower than that many pods/s. Results go to bench/results/scheduler.json (with
`--api-servers`: scheduler-apiserver.json), with bench/meta.py's date, machine, load and versions.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import meta, profile
from bench.scale import Cluster, Component, start_apiservers, start_store
from controlplane.apiserver.inprocess import InProcessApi
from controlplane.common.podutil import owner_reference
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.scheduler.framework import FitError
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.scheduler import BindBatching, Scheduler, new_recorder
from skiff.client import Client
from skiff.events import EventRecorder
from skiff.guard import guard
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t


def make_node(i: int) -> t.Node:
    n = t.Node(api_version="v1", kind="Node")
    n.metadata.name = f"node-{i:04d}"
    n.metadata.labels["kubernetes.io/hostname"] = n.metadata.name
    n.status.allocatable.update({"cpu": "32", "memory": "64Gi", "pods": "110"})
    n.status.capacity.update({"cpu": "32", "memory": "64Gi", "pods": "110"})
    n.status.conditions.add(type="Ready", status="True")
    return n


def make_pod(i: int, owner: t.ReplicaSet) -> t.Pod:
    p = t.Pod(api_version="v1", kind="Pod")
    p.metadata.name = f"{owner.metadata.name}-{i:05d}"
    p.metadata.namespace = "default"
    p.metadata.labels["app"] = owner.metadata.name
    p.metadata.owner_references.append(owner_reference(owner))
    c = p.spec.containers.add(name="app", image="registry.local/app:1")
    c.resources.requests.update({"cpu": "100m", "memory": "128Mi"})
    return p


async def bench_scheduler(num_nodes: int, num_pods: int, owners: int, *, api_servers: str = "",
                          creators: int = 16, backlog: bool = False, components: Sequence[Component] = (),
                          profile_dir: Path | None = None, profile_seconds: float = 0.0,
                          bind_batching: BindBatching | None = None) -> dict[str, Any]:
    """Create the nodes, start a scheduler, create the pods, and time until all are bound.

    backlog: the pods exist before the scheduler starts (measures scheduling and binding alone,
    not the api-server's create rate). components: processes (api-server, store members) whose
    CPU seconds while the scheduler works are recorded, with this process's as "scheduler".
    profile_seconds: py-spy (bench/profile.py) samples them and this process meanwhile.
    bind_batching: when the scheduler sends its BindBatch calls (default: the scheduler's).
    """
    api: Any = Client(api_servers) if api_servers else InProcessApi()
    sem = asyncio.Semaphore(creators)

    async def create(obj: Any) -> Any:
        async with sem:
            return await api.create(obj)

    await asyncio.gather(*(create(make_node(i)) for i in range(num_nodes)))
    owner_sets = []
    for j in range(owners):
        rs = t.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
        rs.metadata.name, rs.metadata.namespace = f"app{j}", "default"
        rs.spec.selector.match_labels["app"] = rs.metadata.name
        rs.spec.template.metadata.labels["app"] = rs.metadata.name
        rs.spec.template.spec.containers.add(name="app", image="registry.local/app:1")
        # As many replicas as it owns pods here: a replicaset controller run later (the controllers
        # part, on the same api-server) finds nothing to do for these sets.
        rs.spec.replicas = len(range(j, num_pods, owners))
        owner_sets.append(await api.create(rs))
    pods = [make_pod(i, owner_sets[i % owners]) for i in range(num_pods)]
    if backlog:
        await asyncio.gather(*(create(p) for p in pods))

    factory = InformerFactory(api)
    recorder = new_recorder(api)  # as the scheduler daemon records its events
    sched = Scheduler(api, factory, recorder=recorder, rng=random.Random(42), bind_batching=bind_batching)
    sync_start = time.perf_counter()
    await factory.start()
    await factory.wait_synced(120)
    synced = time.perf_counter() - sync_start
    me = Component("scheduler", os.getpid())
    watched = [me, *components]
    cpu_before = {c.name: c.cpu_s() for c in watched}
    profiling = (asyncio.ensure_future(asyncio.to_thread(_profile, watched, profile_dir, profile_seconds))
                 if profile_dir is not None and profile_seconds > 0 else None)
    tasks = [guard(sched.run(), "bench-scheduler"), guard(recorder.run(), "bench-events")]

    gc.collect()
    gc.freeze()
    start = time.perf_counter()
    first_bind = 0.0
    polls = 0
    if backlog:
        creating = None
    elif api_servers:
        creating = asyncio.ensure_future(asyncio.gather(*(create(p) for p in pods)))
    else:
        for i, p in enumerate(pods):
            await api.create(p)
            if i % 50 == 49:
                await asyncio.sleep(0)  # a client creating pods does not starve everyone else
        creating = None
    created = time.perf_counter() if creating is None else 0.0
    while sched.scheduled < num_pods:
        if creating is not None and not created and creating.done():
            creating.result()
            created = time.perf_counter()
        if not first_bind and sched.scheduled:
            first_bind = time.perf_counter()
        await asyncio.sleep(0.005)
        polls += 1
        gone = [c.name for c in components if not _alive(c.pid)] if polls % 100 == 0 else []  # about 2/s
        if gone:
            raise RuntimeError(f"{', '.join(gone)} exited after {sched.scheduled}/{num_pods} pods bound")
        if time.perf_counter() - start > 900:
            raise RuntimeError(f"only {sched.scheduled}/{num_pods} pods bound after 900 s")
    done = time.perf_counter()
    first_bind = first_bind or done
    cpu = {c.name: c.cpu_s() - cpu_before[c.name] for c in watched}
    if creating is not None:
        await creating
        created = created or done
    gc.unfreeze()
    await recorder.flush()
    for task in tasks:
        task.cancel()
    sched.shutdown()
    recorder.shutdown()
    await factory.stop()

    for _ in range(100):  # a list may be served from a watch cache a moment behind the last bind
        per_node = Counter(p.spec.node_name for p in (await api.list(t.Pod, namespace="default")).items)
        if "" not in per_node:
            break
        await asyncio.sleep(0.1)
    events = len((await api.list(t.Event, namespace="default")).items)
    await api.close()
    profiled = await profiling if profiling is not None else None
    if sum(per_node.values()) != num_pods or "" in per_node:
        raise RuntimeError(f"after the run the api-server lists {sum(per_node.values())} pods, "
                           f"{per_node.get('', 0)} of them unbound (expected {num_pods}, all bound)")
    out: dict[str, Any] = {
        "nodes": num_nodes,
        "pods": num_pods,
        "create_seconds": round(created - start, 2),
        "create_to_all_bound_seconds": round(done - start, 2),
        "pods_per_second": round(num_pods / (done - start), 1),
        "pods_per_node_min_max": [min(per_node.values()), max(per_node.values())],
        "bind_failures": sched.bind_failures,
        "events_written": events,
        "bind_batching": {"max_calls": sched.bind_batching.max_calls, "max_batch": sched.bind_batching.max_batch,
                          "min_batch": sched.bind_batching.min_batch},
        "bind_calls": sched.bind_calls,
        "pods_per_bind_call": round(num_pods / max(sched.bind_calls, 1), 1),
    }
    if backlog:
        # The figure: the first bind -> the last, with every pod waiting from the start.
        out |= {"informer_sync_seconds": round(synced, 2),
                "start_to_first_bind_seconds": round(first_bind - start, 3),
                "first_bind_to_all_bound_seconds": round(done - first_bind, 2),
                "pods_per_second_from_first_bind": round((num_pods - 1) / max(done - first_bind, 1e-9), 1),
                # What each process spent per pod (load-independent, unlike the rate) and the share
                # of a core it got: under load, processes get what the machine leaves them.
                "cpu_ms_per_pod": {k: round(v * 1000 / num_pods, 2) for k, v in cpu.items()},
                "cores": {k: round(v / (done - start), 2) for k, v in cpu.items()}}
    if profiled is not None:
        out["profile"] = profiled
    return out


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a child that died but was not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _profile(components: list[Component], directory: Path | None, seconds: float) -> dict[str, Any]:
    """py-spy on each process at once for `seconds`: the top functions by self share of its samples."""
    import concurrent.futures

    assert directory is not None

    def one(c: Component) -> tuple[str, Any]:
        raw = directory / f"profile-{c.name}.txt"
        try:
            profile.record(c.pid, seconds, raw, rate=50)
        except (OSError, subprocess.CalledProcessError) as exc:
            return c.name, {"error": str(exc)[:200]}
        samples, rows = profile.summarize(raw.read_text().splitlines(), top=8)
        return c.name, {"samples": samples,
                        "top": [[r.function, round(r.self_share, 3), round(r.total_share, 3)] for r in rows]}

    targets = [c for c in components if not c.name.startswith("etcd")]  # etcd is Go: py-spy cannot read it
    with concurrent.futures.ThreadPoolExecutor(len(targets) or 1) as pool:
        return dict(pool.map(one, targets))


def bench_stream(store: str, num_nodes: int, num_pods: int, owners: int, *, members: int,
                 profile_seconds: float = 0.0, keep: bool = False,
                 bind_batching: BindBatching | None = None) -> dict[str, Any]:
    """The issue's streaming figure on one store: a fresh store (`members` of Skiff's or etcd) and
    one api-server as real processes, every pod created and waiting before the scheduler (in this
    process, over gRPC) starts; first bind -> all bound."""
    workdir = Path(tempfile.mkdtemp(prefix=f"skiff-bench-sched-{store}-"))
    c = Cluster(workdir, store)
    try:
        start_store(c, members=members)
        start_apiservers(c, 1)
        result = asyncio.run(bench_scheduler(num_nodes, num_pods, owners, api_servers=c.api_endpoints, creators=64,
                                             backlog=True, components=list(c.components), profile_dir=workdir,
                                             profile_seconds=profile_seconds, bind_batching=bind_batching))
        c.sample()
        result["store"] = store
        result["store_members"] = members
        result["peak_rss_mb"] = {comp.name: round(comp.peak_rss_mb, 1) for comp in c.components}
        return result
    finally:
        c.stop()
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def bench_decisions(num_nodes: int, num_pods: int) -> dict[str, Any]:
    """Decision rate alone: assume each decision, no api-server, no informers."""
    api = InProcessApi()  # never started: the scheduler is built with it but makes no call
    factory = InformerFactory(api)
    sched = Scheduler(api, factory, recorder=EventRecorder(api, "x"), rng=random.Random(1))
    for i in range(num_nodes):
        sched.cache.add_node(make_node(i))
    owner = t.ReplicaSet(kind="ReplicaSet", api_version="apps/v1", metadata=t.ObjectMeta(name="app", uid="u"))
    infos = []
    for i in range(num_pods):
        p = make_pod(i, owner)
        p.metadata.uid = f"pod-{i}"
        infos.append(PodInfo.of(p))
    start = time.perf_counter()
    for info in infos:
        try:
            sched.cache.assume(info, sched.schedule(info))
        except FitError:
            pass
    elapsed = time.perf_counter() - start
    return {"decisions_per_second": round(num_pods / elapsed, 1), "pods": num_pods, "nodes": num_nodes}


async def bench_controllers(replicas: int, *, api_servers: str = "") -> dict[str, Any]:
    api: Any = Client(api_servers) if api_servers else InProcessApi()
    created = 0

    def count_pod(pod: t.Pod) -> None:
        nonlocal created
        if pod.metadata.labels.get("app") == "big":
            created += 1

    factory = InformerFactory(api)
    recorder = EventRecorder(api, "controller-manager")
    dc = DeploymentController(api, factory, recorder=recorder)
    rc = ReplicaSetController(api, factory, recorder=recorder)
    factory.informer(t.Pod).add_handler(on_add=count_pod)
    await factory.start()
    await factory.wait_synced(30)
    tasks = [guard(dc.run(workers=5), "bench-deployment"), guard(rc.run(workers=5), "bench-replicaset"),
             guard(recorder.run(), "bench-cm-events")]
    d = t.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = "big", "default"
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = "big"
    d.spec.template.metadata.labels["app"] = "big"
    d.spec.template.spec.containers.add(name="app", image="registry.local/app:1")
    start = time.perf_counter()
    await api.create(d)
    pods_at = status_at = None
    while status_at is None:
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        if pods_at is None and created >= replicas:
            pods_at = now
        if pods_at is not None:
            rss = [rs for rs in factory.informer(t.ReplicaSet).list("default") if rs.metadata.name.startswith("big-")]
            if rss and rss[0].status.replicas == replicas:
                status_at = now
        if now - start > 300:
            raise RuntimeError(f"only {created}/{replicas} pods after 300 s")
    for task in tasks:
        task.cancel()
    dc.shutdown()
    rc.shutdown()
    recorder.shutdown()
    rss = [rs for rs in factory.informer(t.ReplicaSet).list("default") if rs.metadata.name.startswith("big-")]
    await factory.stop()
    await api.close()
    assert pods_at is not None
    return {
        "replicas": replicas,
        "create_to_pods_created_seconds": round(pods_at - start, 2),
        "create_to_replicaset_status_seconds": round(status_at - start, 2),
        "pods_per_second": round(replicas / (pods_at - start), 1),
        "pods_seen": created,
        "replicasets": len(rss),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--owners", type=int, default=10)
    p.add_argument("--replicas", type=int, default=1000)
    p.add_argument("--target", type=float, default=0.0, help="fail if scheduling is slower than this (pods/s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--backlog", action="store_true",
                   help="with --api-servers: create the pods before the scheduler starts")
    p.add_argument("--api-servers", default="",
                   help="run against this (empty, fresh) api-server instead of one in this process")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON results (default bench/results/scheduler.json, or scheduler-apiserver.json "
                        "with --api-servers)")
    p.add_argument("--stream", action="store_true",
                   help="the streaming figure: on a fresh store and api-server (processes), every pod waiting "
                        "before the scheduler starts, first bind -> all bound; to scheduler-stream.json")
    p.add_argument("--store", choices=("skiff", "etcd", "both"), default="both", help="with --stream")
    p.add_argument("--store-members", type=int, default=1, help="with --stream (default %(default)s)")
    p.add_argument("--profile", type=float, default=0.0,
                   help="with --stream: py-spy the api-server, the store and this process for so many seconds "
                        "once the scheduler starts")
    p.add_argument("--keep", action="store_true", help="with --stream: keep the processes' logs and data")
    defaults = BindBatching()
    p.add_argument("--bind-calls", type=int, default=defaults.max_calls,
                   help="BindBatch calls in flight at once (default %(default)s)")
    p.add_argument("--bind-min-batch", type=int, default=defaults.min_batch,
                   help="pods waiting before a further BindBatch call goes out (default %(default)s)")
    p.add_argument("--bind-batch", type=int, default=defaults.max_batch,
                   help="pods per BindBatch call at most (default %(default)s)")
    args = p.parse_args(argv)
    args.bind_batching = BindBatching(max_calls=args.bind_calls, max_batch=args.bind_batch,
                                      min_batch=args.bind_min_batch)
    logging.basicConfig(level=logging.WARNING)
    if args.stream:
        return stream_main(args)
    run = meta.start("scheduler")
    backend = (f"api-server at {args.api_servers}" if args.api_servers
               else "api-server registry in this process (InProcessApi, in-memory store)")
    results: dict[str, Any] = {"backend": backend, "decisions": bench_decisions(args.nodes, args.pods)}
    results["scheduler"] = asyncio.run(bench_scheduler(args.nodes, args.pods, args.owners,
                                                       api_servers=args.api_servers, backlog=args.backlog))
    if not args.api_servers:
        # An api-server holds one run's nodes; in memory, the backlog run gets a fresh one.
        results["scheduler_backlog"] = asyncio.run(bench_scheduler(args.nodes, args.pods, args.owners, backlog=True))
    results["controllers"] = asyncio.run(bench_controllers(args.replicas, api_servers=args.api_servers))
    default = meta.RESULTS_DIR / ("scheduler-apiserver.json" if args.api_servers else "scheduler.json")
    written = run.write(results, args.output or default)
    if args.json:
        print(json.dumps(results))
    else:
        s, c, dec = results["scheduler"], results["controllers"], results["decisions"]
        b = results.get("scheduler_backlog")
        print(f"backend: {results['backend']}")
        print(f"scheduler decisions only: {dec['decisions_per_second']} pods/s "
              f"({dec['pods']} pods, {dec['nodes']} nodes, no I/O)")
        print(f"scheduler: {s['pods']} pods onto {s['nodes']} nodes: create -> all bound "
              f"{s['create_to_all_bound_seconds']} s = {s['pods_per_second']} pods/s "
              f"(creating took {s['create_seconds']} s; pods per node {s['pods_per_node_min_max']}; "
              f"{s['events_written']} events; {s['bind_failures']} bind failures)")
        if b is not None:
            print(f"scheduler, pods created before it starts: all {b['pods']} bound after "
                  f"{b['create_to_all_bound_seconds']} s = {b['pods_per_second']} pods/s")
        print(f"controllers: Deployment of {c['replicas']} replicas: create -> {c['pods_seen']} pods created "
              f"{c['create_to_pods_created_seconds']} s ({c['pods_per_second']} pods/s); "
              f"ReplicaSet status shows them after {c['create_to_replicaset_status_seconds']} s")
        print(f"results: {written}")
    if args.target and results["scheduler"]["pods_per_second"] < args.target:
        print(f"FAIL: scheduler below target {args.target} pods/s", file=sys.stderr)
        return 1
    return 0


def stream_main(args: argparse.Namespace) -> int:
    run = meta.start("scheduler")
    stores = ["skiff", "etcd"] if args.store == "both" else [args.store]
    # 2,000 decisions tell the machine's speed as well as 10,000 (minutes under load).
    results: dict[str, Any] = {"decisions": bench_decisions(args.nodes, min(args.pods, 2000)),
                               "target_pods_per_second": 1000,
                               "kube_scheduler_pods_per_second": 680}
    for store in stores:
        results[store] = bench_stream(store, args.nodes, args.pods, args.owners, members=args.store_members,
                                      profile_seconds=args.profile, keep=args.keep,
                                      bind_batching=args.bind_batching)
    written = run.write(results, args.output or meta.RESULTS_DIR / "scheduler-stream.json")
    if args.json:
        print(json.dumps(results))
    else:
        print(f"scheduler decisions only: {results['decisions']['decisions_per_second']} pods/s")
        for store in stores:
            r = results[store]
            print(f"{store} ({r['store_members']} member(s)) + 1 api-server: {r['pods']} waiting pods onto "
                  f"{r['nodes']} nodes: first bind -> all bound {r['first_bind_to_all_bound_seconds']} s = "
                  f"{r['pods_per_second_from_first_bind']} pods/s (informer sync {r['informer_sync_seconds']} s; "
                  f"{r['events_written']} events; {r['bind_failures']} bind failures; "
                  f"{r['pods_per_bind_call']} pods per BindBatch call; cores {r['cores']}; "
                  f"CPU ms per pod {r['cpu_ms_per_pod']})")
            for name, prof in r.get("profile", {}).items():
                print(f"  {name}: " + "; ".join(f"{f} {s:.0%}" for f, s, _ in prof.get("top", [])[:6]))
        print(f"results: {written}")
    worst = min(results[s]["pods_per_second_from_first_bind"] for s in stores)
    if args.target and worst < args.target:
        print(f"FAIL: scheduler below target {args.target} pods/s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
