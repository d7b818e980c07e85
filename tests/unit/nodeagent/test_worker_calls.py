"""What a pod worker asks the runtime (nodeagent/worker.py): the CRI calls of one pod's start, and
that the observation narrowed to what an action made shows what a full listing shows.

The worker is driven directly (`PodWorker.sync`), over the in-memory runtime and the in-process
api-server, with no relist or log rotation running: the recorded calls are the worker's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from nodeagent.agent import AgentConfig, NodeAgent
from nodeagent.fakecri import FakeRuntime
from nodeagent.worker import Made, PodWorker
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

IMAGE = "docker.io/skiff/web:1.0"


async def _bound_pod(api: InProcessApi, name: str) -> t.Pod:
    pod = t.Pod()
    pod.metadata.name = name
    pod.spec.containers.add(name="c", image="skiff/web:1.0", image_pull_policy="IfNotPresent")
    await api.create(pod)
    return await api.bind("default", name, "n1")


def _agent(api: InProcessApi, fake: FakeRuntime, tmp_path: Path) -> NodeAgent:
    """An agent that is never started: only its workers' context is used."""
    return NodeAgent(api, fake, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                            pod_log_dir=str(tmp_path)))


@dataclass(frozen=True)
class StartCase:
    image_present: bool
    calls: list[str]  # the first pass's CRI calls, in order


START_CASES = [
    pytest.param(StartCase(True, [
        "ListPodSandbox", "ListContainers", "ImageStatus",  # the pass starts with a listing
        "RunPodSandbox", "PodSandboxStatus",  # its IP, and that it is Ready: no listing again
        "CreateContainer", "ContainerStatus",  # the image found present above is not asked again
        "StartContainer", "ContainerStatus"]), id="image-present"),
    pytest.param(StartCase(False, [
        "ListPodSandbox", "ListContainers", "ImageStatus",
        "RunPodSandbox", "PodSandboxStatus",
        "PullImage", "ListPodSandbox", "ListContainers", "ImageStatus",  # a pull is followed by a listing
        "CreateContainer", "ContainerStatus",
        "StartContainer", "ContainerStatus"]), id="image-pulled"),
]


@pytest.mark.parametrize("case", START_CASES)
async def test_a_pod_start_asks_about_what_each_step_made(api: InProcessApi, tmp_path: Path,
                                                         case: StartCase) -> None:
    fake = FakeRuntime(images={IMAGE} if case.image_present else set(), pullable=lambda image: True)
    agent = _agent(api, fake, tmp_path)
    pod = await _bound_pod(api, "p1")
    agent.pods_by_uid[pod.metadata.uid] = pod
    worker = PodWorker(agent.ctx, pod.metadata.uid)
    fake.calls.clear()

    assert await worker.sync() is False
    assert fake.calls == case.calls
    written = await api.get(t.Pod, "p1", "default")
    assert written.status.phase == "Running"
    assert written.status.container_statuses[0].state.HasField("running")
    assert written.status.pod_ip.startswith("10.88.")
    assert api.count("update_status", "pods") == 1
    # What the runtime lists now is what the worker last saw: the relist does not kick it.
    listed = [*((s.id, s.state) for s in await fake.list_pod_sandbox()),
              *((c.id, c.state) for c in await fake.list_containers())]
    assert worker.observed == tuple(sorted(listed))

    # A pass that lists everything again finds the status written from the narrowed observation
    # to be exactly what a full listing gives: nothing to write.
    agent.pods_by_uid[pod.metadata.uid] = written
    fake.calls.clear()
    assert await worker.sync() is False
    assert fake.calls == ["ListPodSandbox", "ListContainers"]  # the running container's status is known
    assert api.count("update_status", "pods") == 1


@dataclass(frozen=True)
class MadeCase:
    what: str  # what happens to the object between the action and the observation
    narrowed: bool  # the observation is narrowed (else None: the worker lists everything again)


MADE_CASES = [
    pytest.param(MadeCase("sandbox ready", True), id="sandbox-ready"),
    pytest.param(MadeCase("sandbox stopped", False), id="sandbox-not-ready"),
    pytest.param(MadeCase("sandbox removed", False), id="sandbox-gone"),
    pytest.param(MadeCase("container created", True), id="container-created"),
    pytest.param(MadeCase("container running", True), id="container-running"),
    pytest.param(MadeCase("container exited", False), id="container-exited"),
    pytest.param(MadeCase("container removed", False), id="container-gone"),
]


@pytest.mark.parametrize("case", MADE_CASES)
async def test_observe_made_falls_back_unless_the_object_is_as_made(api: InProcessApi, tmp_path: Path,
                                                                   case: MadeCase) -> None:
    fake = FakeRuntime(images={IMAGE})
    agent = _agent(api, fake, tmp_path)
    pod = await _bound_pod(api, "p1")
    agent.pods_by_uid[pod.metadata.uid] = pod
    worker = PodWorker(agent.ctx, pod.metadata.uid)
    await worker.sync()  # sandbox and container made and running
    sandbox_id = next(iter(fake.sandboxes))
    container_id = next(iter(fake.containers))
    obs = await worker.observe(pod)
    made = Made(sandbox_id, sandbox=True) if case.what.startswith("sandbox") else \
        Made(container_id, sandbox_id=sandbox_id)
    if case.what == "sandbox stopped":
        await fake.stop_pod_sandbox(sandbox_id)
    elif case.what == "sandbox removed":
        await fake.remove_pod_sandbox(sandbox_id)
    elif case.what == "container created":
        made_only = fake.containers[container_id]  # as just after CreateContainer: never started
        made_only.state, made_only.started_at = cri.CONTAINER_CREATED, 0
    elif case.what == "container exited":
        fake.exit(container_id, 1)
    elif case.what == "container removed":
        await fake.remove_container(container_id)

    narrowed = await worker.observe_made(made, obs)
    if not case.narrowed:
        assert narrowed is None
        return
    assert narrowed is not None
    full = await worker.observe(pod)
    assert sorted(narrowed.sandboxes, key=lambda s: s.id) == sorted(full.sandboxes, key=lambda s: s.id)
    assert sorted(narrowed.containers, key=lambda c: c.id) == sorted(full.containers, key=lambda c: c.id)
