"""Benchmark: scheduler and controller throughput (`make bench-scheduler`).

1. Scheduler: 10,000 pods (from 10 owners, 100m cpu / 128Mi each) created onto 1,000 simulated
   nodes (32 cpu / 64Gi / 110 pods); reports the create -> all-bound time and pods/s, plus the
   pure decision rate (filters + scores, no I/O). Events are recorded as in production.
2. Controllers: a 1,000-replica Deployment, from create to 1,000 pods created (deployment and
   replicaset controllers with their default workers), and to the ReplicaSet's status showing them.

Both run against the in-memory api-server (skiff.memapi.MemoryApi) in this process, so the
numbers measure the scheduler and controllers themselves (plus informer and event handling),
not gRPC or the store. `--target` makes the run fail when the scheduler is slower than it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import random
import sys
import time
from collections import Counter
from typing import Any

from controlplane.common.events import EventRecorder
from controlplane.common.podutil import owner_reference
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.scheduler.framework import FitError
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.scheduler import Scheduler
from skiff.guard import guard
from skiff.informer import InformerFactory
from skiff.memapi import MemoryApi
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


async def bench_scheduler(num_nodes: int, num_pods: int, owners: int) -> dict[str, Any]:
    api = MemoryApi()
    for i in range(num_nodes):
        await api.create(make_node(i))
    owner_sets = []
    for j in range(owners):
        rs = t.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
        rs.metadata.name, rs.metadata.namespace = f"app{j}", "default"
        owner_sets.append(await api.create(rs))
    pods = [make_pod(i, owner_sets[i % owners]) for i in range(num_pods)]

    factory = InformerFactory(api)
    recorder = EventRecorder(api, "default-scheduler")
    sched = Scheduler(api, factory, recorder=recorder, rng=random.Random(42))
    await factory.start()
    await factory.wait_synced(30)
    tasks = [guard(sched.run(), "bench-scheduler"), guard(recorder.run(), "bench-events")]

    gc.collect()
    gc.freeze()
    start = time.perf_counter()
    first_bind = None
    for i, p in enumerate(pods):
        await api.create(p)
        if i % 50 == 49:
            await asyncio.sleep(0)  # a client creating pods does not starve everyone else
    created = time.perf_counter()
    while sched.scheduled < num_pods:
        if first_bind is None and sched.scheduled:
            first_bind = time.perf_counter()
        await asyncio.sleep(0.005)
        if time.perf_counter() - start > 600:
            raise RuntimeError(f"only {sched.scheduled}/{num_pods} pods bound after 600 s")
    done = time.perf_counter()
    gc.unfreeze()
    for task in tasks:
        task.cancel()
    sched.shutdown()
    recorder.shutdown()
    await factory.stop()

    per_node = Counter(p.spec.node_name for p in api.objects(t.Pod))
    assert sum(per_node.values()) == num_pods and "" not in per_node
    return {
        "nodes": num_nodes,
        "pods": num_pods,
        "create_seconds": round(created - start, 2),
        "create_to_all_bound_seconds": round(done - start, 2),
        "pods_per_second": round(num_pods / (done - start), 1),
        "pods_per_node_min_max": [min(per_node.values()), max(per_node.values())],
        "bind_failures": sched.bind_failures,
        "events_written": api.count("create", "events"),
    }


def bench_decisions(num_nodes: int, num_pods: int) -> dict[str, Any]:
    """Decision rate alone: assume each decision, no api-server, no informers."""
    api = MemoryApi()
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


async def bench_controllers(replicas: int) -> dict[str, Any]:
    api = MemoryApi()
    factory = InformerFactory(api)
    recorder = EventRecorder(api, "controller-manager")
    dc = DeploymentController(api, factory, recorder=recorder)
    rc = ReplicaSetController(api, factory, recorder=recorder)
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
        if pods_at is None and api.count("create", "pods") >= replicas:
            pods_at = now
        if pods_at is not None:
            rss = api.objects(t.ReplicaSet)
            if rss and rss[0].status.replicas == replicas:
                status_at = now
        if now - start > 300:
            raise RuntimeError(f"only {api.count('create', 'pods')}/{replicas} pods after 300 s")
    for task in tasks:
        task.cancel()
    dc.shutdown()
    rc.shutdown()
    recorder.shutdown()
    await factory.stop()
    assert pods_at is not None
    return {
        "replicas": replicas,
        "create_to_pods_created_seconds": round(pods_at - start, 2),
        "create_to_replicaset_status_seconds": round(status_at - start, 2),
        "pods_per_second": round(replicas / (pods_at - start), 1),
        "pod_creates": api.count("create", "pods"),
        "replicasets": len(api.objects(t.ReplicaSet)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--owners", type=int, default=10)
    p.add_argument("--replicas", type=int, default=1000)
    p.add_argument("--target", type=float, default=0.0, help="fail if scheduling is slower than this (pods/s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {
        "backend": "in-memory api-server (skiff.memapi.MemoryApi), same process",
        "decisions": bench_decisions(args.nodes, args.pods),
        "scheduler": asyncio.run(bench_scheduler(args.nodes, args.pods, args.owners)),
        "controllers": asyncio.run(bench_controllers(args.replicas)),
    }
    if args.json:
        print(json.dumps(results))
    else:
        s, c, dec = results["scheduler"], results["controllers"], results["decisions"]
        print(f"backend: {results['backend']}")
        print(f"scheduler decisions only: {dec['decisions_per_second']} pods/s "
              f"({dec['pods']} pods, {dec['nodes']} nodes, no I/O)")
        print(f"scheduler: {s['pods']} pods onto {s['nodes']} nodes: create -> all bound "
              f"{s['create_to_all_bound_seconds']} s = {s['pods_per_second']} pods/s "
              f"(creating took {s['create_seconds']} s; pods per node {s['pods_per_node_min_max']}; "
              f"{s['events_written']} events; {s['bind_failures']} bind failures)")
        print(f"controllers: Deployment of {c['replicas']} replicas: create -> {c['pod_creates']} pods created "
              f"{c['create_to_pods_created_seconds']} s ({c['pods_per_second']} pods/s); "
              f"ReplicaSet status shows them after {c['create_to_replicaset_status_seconds']} s")
    if args.target and results["scheduler"]["pods_per_second"] < args.target:
        print(f"FAIL: scheduler below target {args.target} pods/s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
