"""Hollow-node helpers and the fake runtime's fault injection (nodeagent/hollow.py, fakecri.Faults)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from nodeagent.cri import CriError, Runtime
from nodeagent.fakecri import FakeRuntime, Faults
from nodeagent.hollow import AdmittedRuntime, hollow_node_name, hollow_pod_cidr
from skiffpb.cri.v1 import api_pb2 as cri


@pytest.mark.parametrize(("index", "cidr"), [
    (0, "10.128.0.0/24"),
    (1, "10.128.1.0/24"),
    (256, "10.129.0.0/24"),
    (32767, "10.255.255.0/24"),
], ids=["first", "second", "next-octet", "last"])
def test_hollow_pod_cidr(index: int, cidr: str) -> None:
    assert hollow_pod_cidr(index) == cidr


@pytest.mark.parametrize("index", [-1, 32768], ids=["negative", "past-the-range"])
def test_hollow_pod_cidr_out_of_range(index: int) -> None:
    with pytest.raises(ValueError):
        hollow_pod_cidr(index)


def test_hollow_node_name_sorts_by_index() -> None:
    names = [hollow_node_name("h-", i) for i in (2, 10, 100)]
    assert names == sorted(names) == ["h-00002", "h-00010", "h-00100"]


@pytest.mark.parametrize(("faults", "error"), [
    (dict(fail_rate=1.0), "fail_rate"),
    (dict(fail_rate=-0.1), "fail_rate"),
    (dict(start_latency=-1.0), "start_latency"),
    (dict(slow_sandboxes=-1), "slow_sandboxes"),
    (dict(slow_sandbox_end="maybe"), "slow_sandbox_end"),
], ids=["rate-1", "rate-negative", "latency-negative", "slow-negative", "slow-end-unknown"])
def test_faults_rejects(faults: dict[str, float | str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Faults(**faults)  # type: ignore[arg-type]


def _config(uid: str) -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name=uid, uid=uid, namespace="default"),
                                labels={"io.kubernetes.pod.uid": uid})


@pytest.mark.parametrize(("rate", "low", "high"), [
    (0.0, 0, 0),
    (0.2, 20, 60),
    (0.5, 70, 130),
], ids=["none", "a-fifth", "half"])
async def test_injected_failures_follow_the_rate_and_change_nothing(rate: float, low: int, high: int) -> None:
    fake = FakeRuntime(faults=Faults(fail_rate=rate, seed=1))
    failed = 0
    for i in range(200):
        try:
            await fake.run_pod_sandbox(_config(f"p{i}"))
        except CriError as exc:
            assert "injected failure" in str(exc)
            failed += 1
    assert low <= failed <= high
    assert fake.injected == failed
    assert len(fake.sandboxes) == 200 - failed  # a failed call leaves nothing behind


async def test_same_seed_same_failures() -> None:
    async def pattern() -> list[bool]:
        fake = FakeRuntime(faults=Faults(fail_rate=0.3, seed=42))
        out = []
        for i in range(50):
            try:
                await fake.run_pod_sandbox(_config(f"p{i}"))
                out.append(True)
            except CriError:
                out.append(False)
        return out

    assert await pattern() == await pattern()


async def test_start_latency_delays_sandbox_and_start_only() -> None:
    fake = FakeRuntime(images={"docker.io/library/app:1"}, faults=Faults(start_latency=0.05))
    began = time.monotonic()
    sid = await fake.run_pod_sandbox(_config("p"))
    assert time.monotonic() - began >= 0.05
    cfg = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="c"), image=cri.ImageSpec(image="app:1"))
    began = time.monotonic()
    cid = await fake.create_container(sid, cfg, _config("p"))
    assert time.monotonic() - began < 0.05
    began = time.monotonic()
    await fake.start_container(cid)
    assert time.monotonic() - began >= 0.05
    assert fake.containers[cid].state == cri.CONTAINER_RUNNING


@pytest.mark.parametrize(("flags", "expected"), [
    ([], {"relist_period": 10.0, "status_check_period": 10.0, "lease_period": 10.0, "node_status_period": 300.0,
          "stats_period": 60.0, "tick": 1.0}),
    (["--node-status-period", "1m", "--housekeeping-interval", "10s", "--lease-period", "5s", "--tick", "0"],
     {"lease_period": 5.0, "node_status_period": 60.0, "stats_period": 10.0, "tick": 0.0}),
], ids=["kubelet-report-frequency-by-default", "flags-reach-the-agents"])
def test_hollow_periods_reach_each_agents_config(flags: list[str], expected: dict[str, float],
                                                 tmp_path: Path) -> None:
    from nodeagent.hollow import HollowNodes, build_parser, config_from_args
    config = config_from_args(build_parser().parse_args(["--api-servers", "127.0.0.1:1",
                                                         "--socket-dir", str(tmp_path), *flags]))
    agent = HollowNodes(config)._agent_config("hollow-00000", 0)
    assert {k: getattr(agent, k) for k in expected} == expected



@dataclass
class _InFlight:
    now: int = 0
    peak: int = 0


class _Gauge(FakeRuntime):
    """An agent's runtime whose RunPodSandbox is slow (start latency) and counts, in `inflight`
    (shared by all agents' runtimes), how many such calls run at once."""

    def __init__(self, inflight: _InFlight) -> None:
        super().__init__(faults=Faults(start_latency=0.02))
        self.inflight = inflight

    async def run_pod_sandbox(self, config: cri.PodSandboxConfig) -> str:
        self.inflight.now += 1
        self.inflight.peak = max(self.inflight.peak, self.inflight.now)
        try:
            return await super().run_pod_sandbox(config)
        finally:
            self.inflight.now -= 1


def _distinct_sandbox(i: int) -> cri.PodSandboxConfig:
    # A runtime reserves each sandbox name, as containerd does: each call asks for its own pod.
    return cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name=f"p{i}", uid=f"u{i}", namespace="default"))


@pytest.mark.parametrize(("slots", "agents", "calls_each", "peak"), [
    (2, 3, 4, 2),
    (32, 1, 5, 5),
    (1, 2, 3, 1),
    (None, 3, 4, 12),
], ids=["bounded-across-agents", "under-the-bound-nothing-waits", "one-slot", "unwrapped-for-comparison"])
async def test_admitted_runtime_bounds_the_calls_in_flight_of_all_agents(slots: int | None, agents: int,
                                                                         calls_each: int, peak: int) -> None:
    inflight = _InFlight()
    fakes = [_Gauge(inflight) for _ in range(agents)]
    shared = asyncio.Semaphore(slots) if slots is not None else None
    held: list[Runtime] = [f if shared is None else cast(Runtime, AdmittedRuntime(f, shared)) for f in fakes]
    ids = await asyncio.gather(*(h.run_pod_sandbox(_distinct_sandbox(i)) for h in held for i in range(calls_each)))
    assert inflight.peak == peak
    assert len(set(ids)) == agents * calls_each  # every call went through, to its own agent's runtime
    assert [len(f.sandboxes) for f in fakes] == [calls_each] * agents
