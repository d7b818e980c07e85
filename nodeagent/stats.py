"""Resource usage of the node and its pods (the kubelet's summary API, in short): CRI container
and pod sandbox stats, and the host's CPU and memory from /proc.

What must hold:
- CPU is a rate, nanocores between two cumulative samples of the same thing (container,
  sandbox, host) taken at different times; something sampled once has no CPU figure yet and
  is left out (as metrics-server leaves out what it cannot rate), never reported as 0;
- memory is the working set the runtime reports (the host: MemTotal - MemAvailable);
- `summarize` is pure: two sets of samples in, a UsageSummary out. `Sampler` is the adapter
  that reads CRI and /proc and keeps the previous samples;
- ListPodSandboxStats is used when the runtime serves it (containerd 1.6 on Linux does; the
  answer is checked on the wire); an UNIMPLEMENTED answer is remembered and the pods' totals
  are then the sums of their containers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from nodeagent import cri as rt
from skiffpb.api.v1 import metrics_pb2 as m
from skiffpb.cri.v1 import api_pb2 as cri

log = logging.getLogger("nodeagent.stats")

USER_HZ = 100  # /proc/stat's unit (sysconf(_SC_CLK_TCK) on Linux)


@dataclass(frozen=True)
class Sample:
    """One reading: cumulative CPU time (ns) and memory working set (bytes), at `at` (unix ns)."""

    at: int
    cpu_ns: int | None
    memory: int | None


@dataclass(frozen=True)
class ContainerKey:
    namespace: str
    pod: str
    uid: str
    container: str


@dataclass
class Samples:
    """Everything read in one pass: the host, each pod sandbox (when reported) and each container."""

    at: float  # unix seconds
    host: Sample | None = None
    pods: dict[tuple[str, str, str], Sample] = field(default_factory=dict)  # (namespace, pod, uid)
    containers: dict[ContainerKey, Sample] = field(default_factory=dict)


def cpu_rate(prev: Sample | None, cur: Sample) -> int | None:
    """Nanocores used between two samples; None when it cannot be told (one sample, a restart
    that reset the counter, no time between them)."""
    if prev is None or prev.cpu_ns is None or cur.cpu_ns is None or cur.at <= prev.at or cur.cpu_ns < prev.cpu_ns:
        return None
    return (cur.cpu_ns - prev.cpu_ns) * 1_000_000_000 // (cur.at - prev.at)


def summarize(node_name: str, prev: Samples | None, cur: Samples) -> m.UsageSummary:
    """The summary of `cur` against `prev` (see the module docstring)."""
    out = m.UsageSummary(node_name=node_name, timestamp=cur.at,
                         window_seconds=max(0.0, cur.at - prev.at) if prev is not None else 0.0)
    if prev is None:
        return out
    if cur.host is not None:
        cpu = cpu_rate(prev.host, cur.host)
        if cpu is not None:
            out.node.cpu_nano_cores = cpu
            out.node.memory_working_set_bytes = cur.host.memory or 0
    pods: dict[tuple[str, str, str], m.PodUsage] = {}
    for key in sorted(cur.containers, key=lambda k: (k.namespace, k.pod, k.container)):
        sample = cur.containers[key]
        cpu = cpu_rate(prev.containers.get(key), sample)
        if cpu is None:
            continue
        pod = pods.get((key.namespace, key.pod, key.uid))
        if pod is None:
            pod = pods[(key.namespace, key.pod, key.uid)] = m.PodUsage(namespace=key.namespace, name=key.pod,
                                                                        uid=key.uid)
        pod.containers.add(name=key.container, cpu_nano_cores=cpu, memory_working_set_bytes=sample.memory or 0)
    for pod_key, pod in pods.items():
        sandbox = cur.pods.get(pod_key)
        cpu = cpu_rate(prev.pods.get(pod_key), sandbox) if sandbox is not None else None
        if sandbox is not None and cpu is not None:
            pod.total.cpu_nano_cores, pod.total.memory_working_set_bytes = cpu, sandbox.memory or 0
        else:
            pod.total.cpu_nano_cores = sum(c.cpu_nano_cores for c in pod.containers)
            pod.total.memory_working_set_bytes = sum(c.memory_working_set_bytes for c in pod.containers)
        out.pods.append(pod)
    return out


def parse_proc(stat: str, meminfo: str, at: int) -> Sample:
    """The host's sample from /proc/stat and /proc/meminfo: busy CPU time (all but idle and
    iowait) and MemTotal - MemAvailable."""
    fields = stat.splitlines()[0].split()
    assert fields[0] == "cpu", "the first line of /proc/stat is the cpu total"
    ticks = [int(x) for x in fields[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    mem = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in meminfo.splitlines() if ":" in line}
    working = mem.get("MemTotal", 0) - mem.get("MemAvailable", mem.get("MemFree", 0))
    return Sample(at=at, cpu_ns=busy * 1_000_000_000 // USER_HZ, memory=max(0, working))


def _value(v: cri.UInt64Value, present: bool) -> int | None:
    return int(v.value) if present else None


def _sample(cpu: cri.CpuUsage, memory: cri.MemoryUsage, fallback_at: int) -> Sample:
    return Sample(at=cpu.timestamp or fallback_at,
                  cpu_ns=_value(cpu.usage_core_nano_seconds, cpu.HasField("usage_core_nano_seconds")),
                  memory=_value(memory.working_set_bytes, memory.HasField("working_set_bytes")))


def container_key(labels: Mapping[str, str], name: str) -> ContainerKey | None:
    uid = labels.get(rt.LABEL_POD_UID, "")
    if not uid:
        return None  # not a pod's container
    return ContainerKey(labels.get(rt.LABEL_POD_NAMESPACE, ""), labels.get(rt.LABEL_POD_NAME, ""), uid,
                        labels.get(rt.LABEL_CONTAINER_NAME, "") or name)


class Sampler:
    """Reads the samples (CRI and /proc) and keeps the last two passes."""

    def __init__(self, runtime: rt.Runtime, *, node_name: str, proc: Path = Path("/proc"),
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.proc = proc
        self.clock = clock
        self.sandbox_stats = True  # until the runtime says UNIMPLEMENTED
        self.previous: Samples | None = None
        self.current: Samples | None = None

    async def sample(self) -> None:
        now = self.clock()
        at = int(now * 1e9)
        out = Samples(at=now)
        try:
            out.host = parse_proc((self.proc / "stat").read_text(), (self.proc / "meminfo").read_text(), at)
        except (OSError, ValueError, AssertionError) as exc:
            log.debug("host usage unavailable: %s", exc)
        for s in await self.runtime.list_container_stats():
            key = container_key(s.attributes.labels, s.attributes.metadata.name)
            if key is not None:
                out.containers[key] = _sample(s.cpu, s.memory, at)
        if self.sandbox_stats:
            try:
                for ps in await self.runtime.list_pod_sandbox_stats():
                    meta = ps.attributes.metadata
                    if meta.uid:
                        out.pods[(meta.namespace, meta.name, meta.uid)] = _sample(ps.linux.cpu, ps.linux.memory, at)
            except rt.CriError as exc:
                if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                log.info("the runtime does not serve ListPodSandboxStats; pod totals are their containers' sums")
                self.sandbox_stats = False
        self.previous, self.current = self.current, out

    def summary(self) -> m.UsageSummary:
        if self.current is None:
            return m.UsageSummary(node_name=self.node_name)
        return summarize(self.node_name, self.previous, self.current)
