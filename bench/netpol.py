"""NetworkPolicy benchmark (`make bench-netpol`).

The cluster: 100 namespaces x 50 pods (5,000 pods; 10 apps of 5 pods per namespace, each
pod with a named port) spread over 20 nodes, and 1,000 policies, 10 per namespace: a default
deny of ingress, eight "app-k from app-k+1 on port http" (podSelector peers, a named port),
one with ingress from another namespace's app-0 (namespaceSelector + podSelector) and egress
to an ipBlock with an except on 443 plus DNS. The issue's figure (#14): the rules of 1,000
policies over 5,000 pods.

1. Plan + apply on one node of the 20 (250 local pods) and on a node holding all 5,000 pods:
   plan (policies, pods, namespaces -> ruleset) in this process; apply = the writer's first,
   full sync into an empty throwaway network namespace (read the tables, put the jumps first,
   iptables-restore); both iptables backends; median of --repeat runs, each in a fresh namespace.
2. Latency of a policy change to rules in place, with that cluster: the enforcer in this
   process on the api-server's registry (InProcessApi), real iptables in a namespace,
   --min-sync-period 0; each change updates one policy's port and the time runs from before
   the update call to the end of the iptables-restore that applied it (each change is to a
   policy selecting a pod of the node).

3. The cost of one change to the planner alone, on the node holding all 5,000 pods: the
   incremental PolicyBuilder (a policy's port updated; a pod relabelled) against a fresh plan of
   the same cluster, in this process (median of --changes).

`--baseline FILE`: the results of another build of netproxy (main's, run from an export in the
same lock hold), kept in the output under "baseline" so before and after share the load.

Needs root. Prints a table and writes bench/results/netpol.json.
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
from collections.abc import Iterator

from bench import meta
from controlplane.apiserver.inprocess import InProcessApi
from netproxy.iptables.command import IptablesCmd
from netproxy.iptables.writer import RulesetWriter
from netproxy.netpol.builder import PolicyBuilder
from netproxy.netpol.enforcer import NetpolEnforcer
from netproxy.netpol.plan import HOOKS, PREFIXES, plan, pod_info
from skiff.convert import from_data
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t

NAMESPACES, PODS_PER_NS, APPS, NODES = 100, 50, 10, 20


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def cluster(*, one_node: bool = False) -> tuple[list[t.NetworkPolicy], list[t.Pod], list[t.Namespace]]:
    namespaces = [t.Namespace(metadata=t.ObjectMeta(name=f"ns-{i}", labels={
        "kubernetes.io/metadata.name": f"ns-{i}", "team": f"t{i % 10}"})) for i in range(NAMESPACES)]
    pods: list[t.Pod] = []
    rng = random.Random(7)  # pods land on nodes at random, as a scheduler spreads them
    for i in range(NAMESPACES):
        for j in range(PODS_PER_NS):
            n = i * PODS_PER_NS + j
            p = t.Pod(metadata=t.ObjectMeta(name=f"p-{j}", namespace=f"ns-{i}", labels={"app": f"app-{j % APPS}"}))
            p.spec.containers.add(name="c", image="img").ports.add(name="http", container_port=8080)
            p.spec.node_name = "n0" if one_node else f"n{rng.randrange(NODES)}"
            p.status.pod_ip = f"10.{244 + n // 65536}.{n // 256 % 256}.{n % 256 or 1}"
            p.status.phase = "Running"
            pods.append(p)
    policies: list[t.NetworkPolicy] = []
    for i in range(NAMESPACES):
        ns = f"ns-{i}"

        def add(name: str, spec: dict[str, object], ns: str = ns) -> None:
            policies.append(from_data({"metadata": {"name": name, "namespace": ns}, "spec": spec}, t.NetworkPolicy))

        add("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
        for k in range(8):
            add(f"app-{k}", {"podSelector": {"matchLabels": {"app": f"app-{k}"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": f"app-{k + 1}"}}}], "ports": [{"port": "http"}]}]})
        add("app-9", {"podSelector": {"matchLabels": {"app": "app-9"}}, "policyTypes": ["Ingress", "Egress"],
                      "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                          "kubernetes.io/metadata.name": f"ns-{(i + 1) % NAMESPACES}"}},
                          "podSelector": {"matchLabels": {"app": "app-0"}}}], "ports": [{"port": 8080}]}],
                      "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}],
                                  "ports": [{"port": 443}]},
                                 {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]})
    return policies, pods, namespaces


@contextlib.contextmanager
def netns(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def bench_apply(backend: str, prefix: str, *, one_node: bool, repeat: int) -> dict[str, object]:
    policies, pods, namespaces = cluster(one_node=one_node)
    plans: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        rs = plan(policies, pods, namespaces, "n0")
        plans.append(time.perf_counter() - start)
    firsts: list[float] = []
    resyncs: list[float] = []
    for k in range(repeat):
        with netns(f"{prefix}-a{backend[0]}{k}") as name:
            writer = RulesetWriter(IptablesCmd(backend, netns=name), max_chains=None, hooks=HOOKS, prefixes=PREFIXES,
                                   hooks_first=True)
            start = time.perf_counter()
            result = await writer.write(rs, full=True)
            firsts.append(time.perf_counter() - start)
            start = time.perf_counter()
            await writer.write(rs, full=True)
            resyncs.append(time.perf_counter() - start)
    local = sum(1 for p in pods if p.spec.node_name == "n0")
    return {"policies": len(policies), "pods": len(pods), "local_pods": local, "chains": len(rs.chains),
            "rules": sum(rs.rule_count().values()), "plan_s": statistics.median(plans),
            "first_apply_s": statistics.median(firsts), "first_apply_min_s": min(firsts),
            "restores": result.restores, "full_resync_s": statistics.median(resyncs), "repeat": repeat}


async def bench_latency(backend: str, prefix: str, *, changes: int) -> dict[str, object]:
    policies, pods, namespaces = cluster()
    start = time.perf_counter()
    async with InProcessApi() as api:
        for ns in namespaces:
            await api.create(ns)
        for p in pods:
            status = t.PodStatus()
            status.CopyFrom(p.status)
            p.ClearField("status")
            created = await api.create(p)
            created.status.CopyFrom(status)
            await api.update_status(created)
        for np in policies:
            await api.create(np)
        print(f"latency ({backend}): cluster created in {time.perf_counter() - start:.0f} s", flush=True)
        with netns(f"{prefix}-l{backend[0]}") as name:
            factory = InformerFactory(api)
            enforcer = NetpolEnforcer(factory, IptablesCmd(backend, netns=name), node_name="n0", min_sync_period=0.0,
                                      sync_period=0.0)
            enforcer.wire()
            await factory.start()
            task = asyncio.ensure_future(enforcer.run(factory))
            try:
                await asyncio.wait_for(enforcer.synced.wait(), 300)
                rng = random.Random(1)
                samples: list[float] = []
                # Policies selecting a pod of this node (the others make no rules here).
                local = sorted({(p.metadata.namespace, p.metadata.labels["app"]) for p in pods
                                if p.spec.node_name == "n0" and p.metadata.labels["app"] in
                                {f"app-{k}" for k in range(8)}})
                for k in range(changes):
                    ns_name, app = rng.choice(local)
                    np = await api.get(t.NetworkPolicy, app, ns_name)
                    np.spec.ingress[0].ports[0].port.int_val = 8081 + k
                    before = enforcer.applied
                    start = time.perf_counter()
                    await api.update(np)
                    async with asyncio.timeout(60):
                        while enforcer.applied == before:
                            await asyncio.sleep(0.001)
                    samples.append(time.perf_counter() - start)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await factory.stop()
    return {"changes": changes, "p50_ms": pct(samples, 50) * 1000, "p99_ms": pct(samples, 99) * 1000,
            "max_ms": max(samples) * 1000, "rules": enforcer.last_rules}


def bench_incremental(*, changes: int) -> dict[str, object]:
    """Planner cost per change on the node holding every pod: PolicyBuilder vs a fresh plan."""
    policies, pods, namespaces = cluster(one_node=True)
    infos = [pod_info(p) for p in pods]
    start = time.perf_counter()
    fresh = plan(policies, infos, namespaces, "n0")
    plan_s = time.perf_counter() - start
    builder = PolicyBuilder("n0")
    start = time.perf_counter()
    builder.rebuild(policies, infos, namespaces)
    built, _ = builder.build()
    rebuild_s = time.perf_counter() - start
    assert built.frozen() == fresh.frozen(), "the builder disagrees with plan"
    rng = random.Random(3)
    policy_s: list[float] = []
    pod_s: list[float] = []
    keys: list[int] = []
    for k in range(changes):
        np = t.NetworkPolicy()
        np.CopyFrom(rng.choice([p for p in policies if p.metadata.name.startswith("app-") and
                                p.metadata.name != "app-9"]))
        np.spec.ingress[0].ports[0].port.int_val = 9000 + k
        start = time.perf_counter()
        builder.set_policy((np.metadata.namespace, np.metadata.name), np)
        _, since = builder.build()
        policy_s.append(time.perf_counter() - start)
        keys.append(len(since.keys) if since is not None else -1)
        pod = t.Pod()
        pod.CopyFrom(rng.choice(pods))
        pod.metadata.labels["app"] = f"app-{rng.randrange(APPS)}"
        info = pod_info(pod)
        start = time.perf_counter()
        builder.set_pod((pod.metadata.namespace, pod.metadata.name), info)
        builder.build()
        pod_s.append(time.perf_counter() - start)
    return {"chains": len(fresh.chains), "full_plan_s": plan_s, "builder_rebuild_s": rebuild_s,
            "policy_update_ms": statistics.median(policy_s) * 1000, "pod_relabel_ms": statistics.median(pod_s) * 1000,
            "chains_changed_per_policy_update": statistics.median(keys), "changes": changes}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    prefix = f"bnp{os.getpid() % 1000}"
    out: dict[str, object] = {"apply": {}, "latency": {}}
    out["incremental"] = bench_incremental(changes=args.changes)
    print(json.dumps({"incremental": out["incremental"]}, indent=1), flush=True)
    for backend in ("nft", "legacy"):
        print(f"apply ({backend})", flush=True)
        out["apply"][backend] = {  # type: ignore[index]
            "one_of_20_nodes": await bench_apply(backend, prefix, one_node=False, repeat=args.repeat),
            "all_pods_on_the_node": await bench_apply(backend, prefix, one_node=True, repeat=args.repeat),
        }
        out["latency"][backend] = await bench_latency(backend, prefix, changes=args.changes)  # type: ignore[index]
        print(json.dumps({backend: {"apply": out["apply"][backend], "latency": out["latency"][backend]}},  # type: ignore[index]
                         indent=1), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--changes", type=int, default=50)
    p.add_argument("--baseline", help="another build's netpol.json (same lock hold), kept under 'baseline'")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench.netpol needs root (network namespaces)", file=sys.stderr)
        return 1
    run = meta.start("netpol")
    results = asyncio.run(main_async(args))
    if args.baseline:
        with open(args.baseline) as f:
            base = json.load(f)
        results["baseline"] = {"skiff": base["meta"]["versions"].get("skiff"), "date": base["meta"]["date"],
                               "load_before": base["meta"]["load_before"], "load_after": base["meta"]["load_after"],
                               **base["results"]}
    print(f"wrote {run.write(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
