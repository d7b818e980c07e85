"""Resource usage: the pure rate and summary (nodeagent/stats.py), /proc parsing, and the sampler
over the in-memory runtime served through its CRI gRPC server (the GrpcRuntime adapter's path)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from nodeagent import cri as rt
from nodeagent import fakecri
from nodeagent.fakecri import FakeRuntime
from nodeagent.stats import ContainerKey, Sample, Sampler, Samples, cpu_rate, parse_proc, summarize
from skiffpb.cri.v1 import api_pb2 as cri

S = 1_000_000_000  # a second in ns


@pytest.mark.parametrize(("prev", "cur", "rate"), [
    (Sample(0, 0, 1), Sample(S, S // 2, 1), S // 2),  # half a core
    (Sample(0, 0, 1), Sample(2 * S, 4 * S, 1), 2 * S),  # two cores
    (None, Sample(S, S, 1), None),  # sampled once
    (Sample(S, 5 * S, 1), Sample(2 * S, S, 1), None),  # the counter went back: a restarted container
    (Sample(S, 0, 1), Sample(S, S, 1), None),  # no time between the samples
    (Sample(0, None, 1), Sample(S, S, 1), None),  # the runtime gave no CPU figure
], ids=["half-core", "two-cores", "one-sample", "counter-reset", "same-instant", "no-cpu"])
def test_cpu_rate(prev: Sample | None, cur: Sample, rate: int | None) -> None:
    assert cpu_rate(prev, cur) == rate


STAT = "cpu  100 0 50 1000 30 0 20 0 0 0\ncpu0 50 0 25 500 15 0 10 0 0 0\n"
MEMINFO = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n"


def test_parse_proc_counts_busy_time_and_memory_in_use() -> None:
    s = parse_proc(STAT, MEMINFO, at=7)
    # busy = user + nice + system + irq + softirq + steal = 170 ticks of 10 ms
    assert s == Sample(at=7, cpu_ns=170 * S // 100, memory=600 * 1024)


def key(pod: str, container: str) -> ContainerKey:
    return ContainerKey("default", pod, f"uid-{pod}", container)


@pytest.mark.parametrize(("sandboxes", "web_total"), [
    ({}, (S // 4 + S // 10, 3 << 20)),  # no sandbox stats: the containers' sum
    ({("default", "web", "uid-web"): (S // 2, 9 << 20)}, (S // 2, 9 << 20)),  # the sandbox rate, 2 s window
], ids=["containers-sum", "sandbox-cgroup"])
def test_summarize_rates_each_container_and_leaves_out_the_new(
        sandboxes: dict[tuple[str, str, str], tuple[int, int]], web_total: tuple[int, int]) -> None:
    prev = Samples(at=10.0, host=Sample(10 * S, 0, 0), containers={
        key("web", "app"): Sample(10 * S, 0, 0), key("web", "side"): Sample(10 * S, 0, 0)},
        pods={k: Sample(10 * S, 0, 0) for k in sandboxes})
    cur = Samples(at=12.0, host=Sample(12 * S, 3 * S, 5 << 30), containers={
        key("web", "app"): Sample(12 * S, S // 2, 2 << 20), key("web", "side"): Sample(12 * S, S // 5, 1 << 20),
        key("new", "app"): Sample(12 * S, S, 1 << 20)},  # first seen now: no rate
        pods={k: Sample(12 * S, cpu * 2, mem) for k, (cpu, mem) in sandboxes.items()})
    out = summarize("n1", prev, cur)
    assert (out.node_name, out.window_seconds) == ("n1", 2.0)
    assert (out.node.cpu_nano_cores, out.node.memory_working_set_bytes) == (3 * S // 2, 5 << 30)
    assert [p.name for p in out.pods] == ["web"]
    web = out.pods[0]
    assert [(c.name, c.cpu_nano_cores, c.memory_working_set_bytes) for c in web.containers] == [
        ("app", S // 4, 2 << 20), ("side", S // 10, 1 << 20)]
    assert (web.total.cpu_nano_cores, web.total.memory_working_set_bytes) == web_total


def test_summarize_without_a_previous_pass_has_no_figures() -> None:
    out = summarize("n1", None, Samples(at=5.0, host=Sample(5 * S, S, 1)))
    assert out.window_seconds == 0 and not out.HasField("node") and not out.pods


async def test_sampler_reads_the_runtime_over_cri_grpc(tmp_path: Path) -> None:
    fake = FakeRuntime(images={"docker.io/library/x:latest"})
    fake.fake_cpu_cores = 0.5
    config = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="web", uid="u1", namespace="default"),
                                  labels={rt.LABEL_POD_UID: "u1", rt.LABEL_POD_NAME: "web",
                                          rt.LABEL_POD_NAMESPACE: "default"})
    sandbox = await fake.run_pod_sandbox(config)
    cid = await fake.create_container(sandbox, cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="app"), image=cri.ImageSpec(image="x"),
        labels={**config.labels, rt.LABEL_CONTAINER_NAME: "app"}), config)
    await fake.start_container(cid)
    before = REGISTRY.get_sample_value("kubelet_runtime_operations_total",
                                       {"operation_type": "list_container_stats"}) or 0
    sock = f"unix://{tmp_path}/cri.sock"
    server = await fakecri.serve(fake, sock)
    runtime = rt.GrpcRuntime(sock)
    sampler = Sampler(runtime, node_name="n1")
    try:
        await sampler.sample()
        await asyncio.sleep(0.3)
        await sampler.sample()
    finally:
        await runtime.close()
        await server.stop(None)
    after = REGISTRY.get_sample_value("kubelet_runtime_operations_total", {"operation_type": "list_container_stats"})
    assert after == before + 2
    summary = sampler.summary()
    assert [p.name for p in summary.pods] == ["web"]
    usage = summary.pods[0].containers[0]
    # Half a core for as long as it ran between the two real reads (the fake's clock is real time).
    assert usage.name == "app" and usage.cpu_nano_cores == pytest.approx(S // 2, rel=0.01)
    assert usage.memory_working_set_bytes == fake.fake_memory
    assert sampler.sandbox_stats  # the fake serves ListPodSandboxStats, as containerd 1.6 does
    assert summary.pods[0].total.cpu_nano_cores == pytest.approx(S // 2, rel=0.01)
