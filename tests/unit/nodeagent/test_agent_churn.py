"""Pods coming and going leave nothing behind in the node agent or the fake runtime.

Rounds of pods created, Running, deleted and torn down on an agent over the in-memory runtime and
the in-process api-server: after each round every per-pod map of the agent, its event
recorder's caches and the runtime's records are as empty as before the first pod. Memory that
grew with every churned pod is what a hollow process showed in the scale scenario's rolling
update (docs/scale.md); the runtime's own size per container is checked beside.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from nodeagent.agent import AgentConfig, NodeAgent
from nodeagent.cri import LABEL_POD_UID
from nodeagent.fakecri import FakeRuntime
from nodeagent.plan import PlanConfig
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri
from tests.unit.nodeagent.test_agent_fake import IMAGE, until

ROUNDS, PODS = 3, 6


@pytest.fixture
async def agent(tmp_path: Path, api: InProcessApi) -> AsyncIterator[tuple[InProcessApi, FakeRuntime, NodeAgent]]:
    fake = FakeRuntime(images={IMAGE})
    agent = NodeAgent(api, fake, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                             pod_log_dir=str(tmp_path), relist_period=0.05, status_check_period=0.05,
                                             plan=PlanConfig()))
    await agent.start()
    yield api, fake, agent
    await agent.stop()


def per_pod_state(agent: NodeAgent, fake: FakeRuntime) -> dict[str, int]:
    """Everything the agent and the runtime keep per pod (or per container, per Event), by name."""
    return {"pods_by_uid": len(agent.pods_by_uid), "workers": len(agent.workers),
            "worker_tasks": len(agent.worker_tasks), "worker_crashes": len(agent.worker_crashes),
            "restarts": len(agent._restarts), "fingerprints": len(agent._fingerprints),
            "log_paths": len(agent._log_paths), "event_caches": agent.events.cached(),
            "sandboxes": len(fake.sandboxes), "containers": len(fake.containers), "reserved": len(fake.reserved)}


async def test_churned_pods_leave_nothing_behind(agent: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    api, fake, node = agent
    empty = per_pod_state(node, fake)
    assert set(empty.values()) == {0}
    for r in range(ROUNDS):
        names = [f"r{r}-p{i}" for i in range(PODS)]
        for name in names:
            pod = t.Pod()
            pod.metadata.name = name
            pod.spec.node_name = "n1"
            pod.spec.containers.add(name="c", image="skiff/web:1.0", image_pull_policy="IfNotPresent")
            await api.create(pod)

        async def running(names: list[str] = names) -> bool:
            pods = [await api.get(t.Pod, n, "default") for n in names]
            return all(p.status.phase == "Running" for p in pods)

        await until(running, 20)
        assert per_pod_state(node, fake)["event_caches"] > 0  # the Created/Started Events were cached
        for name in names:
            await api.delete(t.Pod, name, "default", grace_period_seconds=0)

        async def settled() -> bool:
            await node.events.flush()  # the teardown's Killing events, written and forgotten
            await asyncio.sleep(0.1)  # a relist after the teardown (it prunes its fingerprints)
            return per_pod_state(node, fake) == empty

        with contextlib.suppress(AssertionError):
            await until(settled, 20)
        assert per_pod_state(node, fake) == empty, f"round {r}"  # which map kept what, if any


@pytest.mark.parametrize(("keep", "envs", "mounts"), [(True, 2, 1), (False, 0, 0)],
                         ids=["kept-for-tests", "hollow-nodes"])
async def test_fake_keeps_container_configs_only_when_asked(keep: bool, envs: int, mounts: int) -> None:
    """Without kept configs the fake answers every call as before from what it keeps."""
    fake = FakeRuntime(images={IMAGE}, keep_configs=keep)
    labels = {LABEL_POD_UID: "u1"}
    sandbox = await fake.run_pod_sandbox(cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="p", uid="u1", namespace="default"), labels=labels))
    config = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="c", attempt=2),
                                 image=cri.ImageSpec(image=IMAGE), labels=labels, annotations={"a": "b"},
                                 envs=[cri.KeyValue(key="A", value="1"), cri.KeyValue(key="B", value="2")],
                                 mounts=[cri.Mount(container_path="/data", host_path="/tmp/data")])
    cid = await fake.create_container(sandbox, config, cri.PodSandboxConfig())
    await fake.start_container(cid)
    kept = fake.containers[cid].config
    assert (len(kept.envs), len(kept.mounts)) == (envs, mounts)
    [listed] = await fake.list_containers(labels=labels)
    status = await fake.container_status(cid)
    for seen in (listed, status):
        assert (seen.metadata.name, seen.metadata.attempt, seen.image.image, dict(seen.labels),
                dict(seen.annotations)) == ("c", 2, IMAGE, labels, {"a": "b"})
    assert status.state == cri.CONTAINER_RUNNING
