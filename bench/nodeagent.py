"""Node agent benchmark (`make bench-nodeagent`).

1. Pod startup latency, bound -> Running and Ready, for 30 web pods on one node with REAL
   containerd/runc/CNI (a private containerd in a network namespace, as in the e2e tests; the
   agent runs in this process against the api-server's registry, in-process). Measured twice: pods bound one at a time
   (the latency of a single start) and all 30 bound at once (a burst; includes queueing on
   2 cores). Targets: p99 <= 1 s.
   Side by side, in the same run on the same containerd: the raw CRI floor — the same 30
   sandboxes and containers (the agent's own PodSandboxConfig/ContainerConfig) started directly
   through CRI, all 30 at once (RunPodSandbox, CreateContainer, StartContainer per pod, each pod
   concurrently, as the burst's 30 pod workers do). Measured with no agent running (it would
   remove sandboxes of pods it does not know), before the agent starts and after it stops; the
   floor is the mean of the two p99s. Target (#16): burst p99 <= 1.3 x the floor.
2. Agent RSS with 100 pods Running, on the FAKE runtime (in-memory CRI): real 100 pods would
   need ~100 shims (~1.3 GB) and measure containerd more than the agent. The figure is this
   whole process's RSS (agent + the in-process api-server holding the objects + fake runtime), so an upper
   bound for the agent. Target: <= 80 MB. The RSS after the real-runtime run is printed too.

Needs root and containerd (like the e2e tests). Prints a table and writes bench/results/nodeagent.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench import meta
from controlplane.apiserver.inprocess import InProcessApi
from nodeagent import metrics as na_metrics
from nodeagent.agent import AgentConfig, NodeAgent
from nodeagent.cri import GrpcRuntime
from nodeagent.fakecri import FakeRuntime
from nodeagent.netns import NodeNetwork
from nodeagent.podconfig import PodConfigSettings, container_config, sandbox_config
from skiff import conditions
from skiffpb.api.v1 import types_pb2 as t

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deploy.containerdnode import ContainerdNode, unique_prefix

PODS = 30
RSS_PODS = 100
FLOOR_TARGET = 1.3  # burst p99 <= this x the raw CRI floor's p99 (#16)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def cri_calls() -> dict[str, list[float]]:
    """CRI calls made through GrpcRuntime so far, per operation: [count, seconds] (nodeagent.metrics)."""
    out: dict[str, list[float]] = {}
    for metric in na_metrics.RUNTIME_DURATION.collect():
        for sample in metric.samples:
            op = sample.labels.get("operation_type", "")
            if sample.name.endswith("_count"):
                out.setdefault(op, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_sum"):
                out.setdefault(op, [0.0, 0.0])[1] = sample.value
    return out


def calls_between(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per operation: [calls, total seconds] made between two `cri_calls()`."""
    diff = {op: [after[op][0] - before.get(op, [0.0, 0.0])[0], after[op][1] - before.get(op, [0.0, 0.0])[1]]
            for op in after}
    return {op: [int(c), round(s, 3)] for op, (c, s) in sorted(diff.items()) if c}


def is_ready(pod: t.Pod) -> bool:
    return pod.status.phase == "Running" and conditions.is_pod_ready(pod)


def web_pod(name: str) -> t.Pod:
    pod = t.Pod()
    pod.metadata.name = name
    pod.spec.termination_grace_period_seconds = 2
    pod.spec.containers.add(name="web", image="skiff/web:1.0", image_pull_policy="IfNotPresent")
    return pod


class ReadyWatcher:
    """Records when each pod is first seen Running and Ready through a watch (as a client would)."""

    def __init__(self, api: InProcessApi) -> None:
        self.api = api
        self.ready_at: dict[str, float] = {}
        self.events: dict[str, asyncio.Event] = {}
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        async for ev in self.api.watch(t.Pod):
            name = ev.obj.metadata.name
            if ev.type != "DELETED" and is_ready(ev.obj) and name not in self.ready_at:
                self.ready_at[name] = time.monotonic()
                self.events.setdefault(name, asyncio.Event()).set()

    async def wait(self, name: str, timeout: float = 60) -> float:
        await asyncio.wait_for(self.events.setdefault(name, asyncio.Event()).wait(), timeout)
        return self.ready_at[name]


async def run_batch(api: InProcessApi, watcher: ReadyWatcher, prefix: str, *, burst: bool) -> list[float]:
    names = [f"{prefix}-{i:02d}" for i in range(PODS)]
    for n in names:
        await api.create(web_pod(n))
    bound: dict[str, float] = {}
    lat = []
    if burst:
        for n in names:
            await api.bind("default", n, "n1")
            bound[n] = time.monotonic()
        for n in names:
            lat.append(await watcher.wait(n) - bound[n])
    else:
        for n in names:
            await api.bind("default", n, "n1")
            bound[n] = time.monotonic()
            lat.append(await watcher.wait(n) - bound[n])
    return lat


async def cri_floor(runtime: GrpcRuntime, settings: PodConfigSettings, prefix: str, n: int = PODS) -> list[float]:
    """Start `n` web pods directly through CRI, all at once; per pod the seconds until StartContainer returned.

    The same configs the agent builds (nodeagent.podconfig), so the runtime does the same work:
    the gap between this and the agent's burst is the agent's own overhead.
    """
    pods = []
    for i in range(n):
        pod = web_pod(f"{prefix}-{i:02d}")
        pod.metadata.namespace, pod.metadata.uid = "default", f"floor-{prefix}-{i:02d}"
        pods.append(pod)

    async def start(pod: t.Pod, t0: float) -> float:
        sb_cfg = sandbox_config(pod, 0, settings)
        sandbox_id = await runtime.run_pod_sandbox(sb_cfg)
        cid = await runtime.create_container(sandbox_id, container_config(pod, pod.spec.containers[0], 0), sb_cfg)
        await runtime.start_container(cid)
        return time.monotonic() - t0

    t0 = time.monotonic()
    lat = await asyncio.gather(*(start(p, t0) for p in pods))
    await remove_sandboxes(runtime)
    return list(lat)


async def remove_sandboxes(runtime: GrpcRuntime) -> None:
    """Stop and remove every sandbox (and so its containers) in the runtime, concurrently."""
    async def remove(sandbox_id: str) -> None:
        await runtime.stop_pod_sandbox(sandbox_id)
        await runtime.remove_pod_sandbox(sandbox_id)

    await asyncio.gather(*(remove(s.id) for s in await runtime.list_pod_sandbox()))


async def delete_all(api: InProcessApi, node: ContainerdNode | None, fake: FakeRuntime | None = None) -> None:
    for pod in api.objects(t.Pod):
        await api.delete(t.Pod, pod.metadata.name, pod.metadata.namespace, grace_period_seconds=1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = node.sandboxes() if node is not None else list(fake.sandboxes) if fake is not None else []
        if not left and not api.objects(t.Pod):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("pods were not cleaned up in 120 s")


async def real_runtime() -> dict[str, object]:
    prefix = unique_prefix("bn")
    node = ContainerdNode(prefix, "n1", Path(f"/tmp/skiff-bench/{prefix}/n1"), address="10.77.0.11/24")
    node.start()
    try:
        api = InProcessApi()
        net = NodeNetwork(f"/run/netns/{node.netns}")
        runtime = GrpcRuntime(node.endpoint)
        settings = PodConfigSettings(pod_log_dir=str(node.paths.pod_logs), cgroup_parent=node.cgroup_parent)
        # The floor's own warm-up (the first sandbox creates cni0), then the floor before the agent.
        await cri_floor(runtime, settings, "fw", 1)
        calls = cri_calls()
        floor_before = await cri_floor(runtime, settings, "fa")
        floor_calls = calls_between(calls, cri_calls())
        agent = NodeAgent(api, runtime, AgentConfig(
            node_name="n1", node_ip=node.ip, pod_log_dir=str(node.paths.pod_logs), cgroup_parent=node.cgroup_parent,
            cni_conf_dir=str(node.paths.cni_conf_dir), ipam_dir=str(node.paths.ipam_dir),
            pod_cidr="10.244.1.0/24"), net=net)
        await agent.start()
        watcher = ReadyWatcher(api)
        # Warm-up (first sandbox creates cni0, first image unpack): not measured.
        await api.create(web_pod("warmup"))
        await api.bind("default", "warmup", "n1")
        await watcher.wait("warmup")
        await delete_all(api, node)
        sequential = await run_batch(api, watcher, "seq", burst=False)
        rss_real = rss_mb()
        await delete_all(api, node)
        calls, cpu = cri_calls(), time.process_time()
        burst = await run_batch(api, watcher, "burst", burst=True)
        # This process's CPU time during the burst (agent, in-process api-server, watcher: an upper
        # bound for the agent's own), and every CRI call the agent made (the floor makes 3 per pod).
        burst_cpu = time.process_time() - cpu
        burst_calls = calls_between(calls, cri_calls())
        await delete_all(api, node)
        watcher.task.cancel()
        await agent.stop()
        floor_after = await cri_floor(runtime, settings, "fb")
        await api.close()
        await runtime.close()
        net.close()
        return {"sequential": sequential, "burst": burst, "rss_mb_after_30_real_pods": round(rss_real, 1),
                "floor_before": floor_before, "floor_after": floor_after,
                "burst_cri_calls": burst_calls, "floor_cri_calls": floor_calls, "burst_cpu_s": round(burst_cpu, 2)}
    finally:
        node.teardown()
        shutil.rmtree(Path(f"/tmp/skiff-bench/{prefix}"), ignore_errors=True)  # teardown removes n1/ only


async def fake_runtime_rss() -> dict[str, object]:
    gc.collect()
    before = rss_mb()
    api = InProcessApi()
    fake = FakeRuntime(pod_cidr="10.88.0.0/16", images={"docker.io/skiff/web:1.0"})
    agent = NodeAgent(api, fake, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                             pod_log_dir="/tmp/skiff-bench/fake-logs"))
    await agent.start()
    watcher = ReadyWatcher(api)
    t0 = time.monotonic()
    for i in range(RSS_PODS):
        await api.create(web_pod(f"r-{i:03d}"))
        await api.bind("default", f"r-{i:03d}", "n1")
    for i in range(RSS_PODS):
        await watcher.wait(f"r-{i:03d}")
    all_ready = time.monotonic() - t0
    await asyncio.sleep(3)  # a few relists and status checks with 100 pods
    gc.collect()
    rss = rss_mb()
    watcher.task.cancel()
    await delete_all(api, None, fake)
    await agent.stop()
    await api.close()
    return {"rss_mb_100_pods_fake_runtime": round(rss, 1), "rss_mb_process_before_agent": round(before, 1),
            "all_100_ready_s": round(all_ready, 2)}


def summarize(real: dict[str, object]) -> dict[str, object]:
    """One real-runtime run's figures; the burst and its floor come from the same containerd."""
    seq, burst = real["sequential"], real["burst"]
    floor_a, floor_b = real["floor_before"], real["floor_after"]
    assert isinstance(seq, list) and isinstance(burst, list)
    assert isinstance(floor_a, list) and isinstance(floor_b, list)
    floor_p99 = (pct(floor_a, 99) + pct(floor_b, 99)) / 2
    return {
        "sequential_p50_s": round(statistics.median(seq), 3), "sequential_p99_s": round(pct(seq, 99), 3),
        "burst_p50_s": round(statistics.median(burst), 3), "burst_p99_s": round(pct(burst, 99), 3),
        "cri_floor_p50_s": round(statistics.median(floor_a + floor_b), 3), "cri_floor_p99_s": round(floor_p99, 3),
        "cri_floor_p99_before_after_s": [round(pct(floor_a, 99), 3), round(pct(floor_b, 99), 3)],
        "burst_over_floor_p99": round(pct(burst, 99) / floor_p99, 2),
        "rss_mb_after_30_real_pods": real["rss_mb_after_30_real_pods"],
        # operation -> [calls, seconds summed over the concurrent calls]
        "burst_cri_calls": real["burst_cri_calls"], "floor_cri_calls": real["floor_cri_calls"],
        "burst_process_cpu_s": real["burst_cpu_s"],
    }


async def main(runs: int) -> int:
    run = meta.start("nodeagent")
    fake = await fake_runtime_rss()
    reals = []
    for i in range(runs):
        reals.append(await real_runtime())
        print(f"run {i + 1}: {summarize(reals[-1])}", flush=True)
    per_run = [summarize(r) for r in reals]

    def median(key: str) -> float:
        return round(statistics.median(float(r[key]) for r in per_run), 3)  # type: ignore[arg-type]

    result = {
        "pods": PODS, "runs": runs,
        # Each figure is the median over the runs (each run: a fresh containerd, floor, agent, floor).
        **{k: median(k) for k in ("sequential_p50_s", "sequential_p99_s", "burst_p50_s", "burst_p99_s",
                                  "cri_floor_p50_s", "cri_floor_p99_s", "burst_over_floor_p99",
                                  "rss_mb_after_30_real_pods")},
        "per_run": per_run, **fake,
        "targets": {"p99_s": 1.0, "rss_mb": 80, "burst_over_floor_p99": FLOOR_TARGET},
        # Every pod's startup, every run, for `python -m bench.plots`.
        "sequential_samples_s": [round(v, 3) for r in reals for v in r["sequential"]],  # type: ignore[attr-defined]
        "burst_samples_s": [round(v, 3) for r in reals for v in r["burst"]],  # type: ignore[attr-defined]
        "cri_floor_samples_s": [round(v, 3) for r in reals for k in ("floor_before", "floor_after")
                                for v in r[k]],  # type: ignore[attr-defined]
    }
    written = run.write(result)
    print(f"pod startup (bound -> Running+Ready), {PODS} pods, real containerd, median of {runs} runs:")
    print(f"  one at a time: p50 {result['sequential_p50_s']:.3f} s  p99 {result['sequential_p99_s']:.3f} s")
    print(f"  all at once:   p50 {result['burst_p50_s']:.3f} s  p99 {result['burst_p99_s']:.3f} s")
    print(f"  raw CRI floor, all at once: p50 {result['cri_floor_p50_s']:.3f} s  "
          f"p99 {result['cri_floor_p99_s']:.3f} s; "
          f"burst / floor {result['burst_over_floor_p99']:.2f} (target <= {FLOOR_TARGET}; per run "
          f"{[r['burst_over_floor_p99'] for r in per_run]})")
    print(f"RSS with {RSS_PODS} pods (fake runtime, whole process): {result['rss_mb_100_pods_fake_runtime']} MB "
          f"(process before the agent: {result['rss_mb_process_before_agent']} MB)")
    print(f"RSS after {PODS} real pods (whole process): {result['rss_mb_after_30_real_pods']} MB")
    ok = result["sequential_p99_s"] <= 1.0 and result["rss_mb_100_pods_fake_runtime"] <= 80  # type: ignore[operator]
    print("targets met" if ok else "TARGETS MISSED", f"(results: {written})")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.nodeagent", description=(__doc__ or "").split("\n\n")[0],
                            epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="real-runtime runs (each: floor, agent, floor); medians")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.nodeagent needs root (it starts containerd)")
    sys.exit(asyncio.run(main(args.runs)))
