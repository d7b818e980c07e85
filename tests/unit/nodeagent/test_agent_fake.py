"""The agent against the in-memory runtime and the in-process api-server; the CRI adapter against
the fake CRI server.

These are fast checks of the wiring (informer -> workers -> runtime -> status, node, lease,
orphans); the real thing is tested against containerd in tests/e2e/test_nodeagent.py.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.protobuf.message import Message

from controlplane.apiserver.inprocess import InProcessApi
from nodeagent import fakecri
from nodeagent.agent import AgentConfig, NodeAgent
from nodeagent.cri import LABEL_POD_UID, CriError, GrpcRuntime, NameReserved, NotFound
from nodeagent.fakecri import FakeRuntime, Faults
from nodeagent.plan import PlanConfig
from skiff import conditions, errors, identity
from skiff.client import ObjectList
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

T = TypeVar("T")
M = TypeVar("M", bound=Message)
IMAGE = "docker.io/skiff/web:1.0"


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met; last {value!r}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def env(tmp_path: Path, api: InProcessApi) -> AsyncIterator[tuple[InProcessApi, FakeRuntime, NodeAgent]]:
    fake = FakeRuntime(images={IMAGE})
    agent = NodeAgent(api, fake, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                             pod_log_dir=str(tmp_path), relist_period=0.05, status_check_period=0.05,
                                             plan=PlanConfig(backoff_base=0.2, backoff_max=0.4)))
    await agent.start()
    yield api, fake, agent
    await agent.stop()


async def make_pod(api: InProcessApi, name: str, **spec: str) -> t.Pod:
    pod = t.Pod()
    pod.metadata.name = name
    pod.spec.containers.add(name="c", image="skiff/web:1.0", image_pull_policy="IfNotPresent")
    for k, v in spec.items():
        setattr(pod.spec, k, v)
    await api.create(pod)
    return await api.bind("default", name, "n1")


async def test_lifecycle_restart_and_delete(env: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    api, fake, _agent = env
    await make_pod(api, "p1")

    async def phase(want: str) -> t.Pod | None:
        p = await api.get(t.Pod, "p1", "default")
        return p if p.status.phase == want and p.status.container_statuses[0].ready else None

    pod = await until(lambda: phase("Running"))
    assert pod.status.pod_ip.startswith("10.88.")
    cid = next(iter(fake.containers))
    fake.exit(cid, 1)

    async def restarts(n: int) -> t.Pod | None:
        p = await api.get(t.Pod, "p1", "default")
        return p if p.status.container_statuses[0].restart_count == n and \
            p.status.container_statuses[0].state.HasField("running") else None

    await until(lambda: restarts(1))
    running = [c for c in fake.containers.values() if c.state == cri.CONTAINER_RUNNING]
    fake.exit(running[0].id, 1)
    await until(lambda: restarts(2))
    # Nodes and leases exist; the node is Ready.
    node = await api.get(t.Node, "n1")
    assert next(c for c in node.status.conditions if c.type == "Ready").status == "True"
    assert (await api.get(t.Lease, "n1", "kube-node-lease")).spec.holder_identity == "n1"
    # Deletion: everything removed, then the object.
    await api.delete(t.Pod, "p1", "default")

    async def gone() -> bool:
        return not api.objects(t.Pod) and not fake.sandboxes

    await until(gone)
    assert not fake.containers


@pytest.mark.parametrize(("policy", "code", "phase"), [
    ("Never", 0, "Succeeded"), ("Never", 3, "Failed"), ("OnFailure", 0, "Succeeded"),
], ids=["never-ok", "never-failed", "onfailure-ok"])
async def test_finished_pod_stays_finished(env: tuple[InProcessApi, FakeRuntime, NodeAgent], policy: str,
                                           code: int, phase: str) -> None:
    """A Job's pod: it ends in a terminal phase, and stays there even when the runtime loses it all."""
    api, fake, _agent = env
    await make_pod(api, "job1", restart_policy=policy)

    async def running() -> bool:
        return any(c.state == cri.CONTAINER_RUNNING for c in fake.containers.values())

    await until(running)
    cid = next(iter(fake.containers))
    fake.exit(cid, code, "Completed" if code == 0 else "Error")

    async def finished() -> t.Pod | None:
        p = await api.get(t.Pod, "job1", "default")
        return p if p.status.phase == phase else None

    pod = await until(finished)
    assert pod.status.container_statuses[0].state.terminated.exit_code == code
    # The runtime forgets the pod (containerd restarted with a wiped state): nothing comes back.
    for sid in list(fake.sandboxes):
        await fake.remove_pod_sandbox(sid)
    for c in list(fake.containers):
        await fake.remove_container(c)
    await asyncio.sleep(0.3)  # several relist and status periods
    again = await api.get(t.Pod, "job1", "default")
    assert again.status.phase == phase
    assert again.status.container_statuses[0].state.terminated.exit_code == code
    assert not fake.sandboxes and not fake.containers


async def test_events_aggregate_like_the_controllers(env: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    api, fake, _agent = env
    pod = await make_pod(api, "ev1")

    async def restarts(n: int) -> t.Pod | None:
        p = await api.get(t.Pod, "ev1", "default")
        st = p.status.container_statuses
        return p if st and st[0].restart_count == n and st[0].state.HasField("running") else None

    await until(lambda: restarts(0))
    for n in (1, 2):
        running = [c for c in fake.containers.values() if c.state == cri.CONTAINER_RUNNING]
        fake.exit(running[0].id, 1)
        await until(functools.partial(restarts, n))

    async def started_three_times() -> list[t.Event]:
        found = [e for e in api.objects(t.Event) if e.reason == "Started"]
        return found if found and found[0].count == 3 else []

    # Three starts of the same container are one Event with count 3, not three Events.
    [ev] = await until(started_three_times)
    assert ev.type == "Normal" and ev.message == "Started container c"
    assert (ev.source.component, ev.source.host, ev.reporting_component) == ("skiff-nodeagent", "n1", "skiff-nodeagent")
    assert (ev.involved_object.kind, ev.involved_object.name, ev.involved_object.uid) == ("Pod", "ev1",
                                                                                          pod.metadata.uid)
    assert ev.last_timestamp.ToNanoseconds() > ev.first_timestamp.ToNanoseconds()
    backoff = [e for e in api.objects(t.Event) if e.reason == "BackOff"]
    assert backoff and backoff[0].type == "Warning"


class StuckEventsApi(InProcessApi):
    """An api whose Event writes never return (an api-server hanging on them); counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck_events: list[str] = []

    async def create(self, obj: M, *, namespace: str = "", dry_run: bool = False) -> M:
        if isinstance(obj, t.Event):
            self.stuck_events.append(obj.reason)
            await asyncio.Event().wait()
        return await super().create(obj, namespace=namespace, dry_run=dry_run)


async def test_stuck_event_writes_never_hold_up_a_pod(tmp_path: Path) -> None:
    api = StuckEventsApi()
    agent = NodeAgent(api, FakeRuntime(images={IMAGE}),
                      AgentConfig(node_name="n1", manage_network=False, pod_log_dir=str(tmp_path), relist_period=0.05,
                                  status_check_period=0.05))
    await agent.start()
    try:
        await make_pod(api, "p1")

        async def running() -> t.Pod | None:
            p = await api.get(t.Pod, "p1", "default")
            return p if p.status.phase == "Running" else None

        await until(running)

        async def stuck() -> list[str]:
            return api.stuck_events

        # The agent did try to record events, and they hang: the pod got going without them. (The
        # recorder writes in the background: its first write may come after the pod is Running.)
        assert await until(stuck), "no Event write was attempted, so nothing was stuck"
        pod = await api.get(t.Pod, "p1", "default")
        assert pod.status.phase == "Running"
    finally:
        await agent.stop()
        await api.close()


async def test_status_written_only_on_change(env: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    api, _fake, _agent = env
    await make_pod(api, "quiet")

    async def ready() -> bool:
        p = await api.get(t.Pod, "quiet", "default")
        return bool(p.status.container_statuses) and p.status.container_statuses[0].ready

    await until(ready)
    writes = api.count("update_status", "pods")
    await asyncio.sleep(0.5)  # ten relists, a few status checks: nothing changed
    assert api.count("update_status", "pods") == writes


@pytest.mark.parametrize("pods", [1, 10], ids=["one-pod", "ten-pods-at-once"])
async def test_a_start_takes_one_sync_pass(env: tuple[InProcessApi, FakeRuntime, NodeAgent], pods: int) -> None:
    """A pod that starts cleanly is started and its status written in the pass its binding
    kicked: the echoes of its own status writes and relists that list what the worker itself
    observed already kick nothing (each was one more pass, a few CRI calls, per pod)."""
    api, _fake, agent = env
    await agent.started.wait()
    await until(lambda: _async(agent.ready is not None and agent.ready.status == "True"))
    await asyncio.sleep(0.2)  # the node turning Ready kicks every worker: let that pass first
    for i in range(pods):
        await make_pod(api, f"once-{i}")

    async def all_ready() -> bool:
        return all(p.status.container_statuses and p.status.container_statuses[0].ready
                   for p in [await api.get(t.Pod, f"once-{i}", "default") for i in range(pods)])

    await until(all_ready)
    await asyncio.sleep(0.3)  # six relists (every 0.05 s here) and the echoes of the writes
    assert sorted(w.syncs for w in agent.workers.values()) == [1] * pods


async def test_active_deadline_fails_a_pod_with_no_other_event(tmp_path: Path, api: InProcessApi) -> None:
    """The deadline is counted from status.startTime, which the worker's own first write sets; the
    echo of that write kicks nothing (and no relist or status check comes in time here), so the
    worker must wake for the deadline by itself."""
    agent = NodeAgent(api, FakeRuntime(images={IMAGE}), AgentConfig(
        node_name="n1", node_ip="10.0.0.1", manage_network=False, pod_log_dir=str(tmp_path), relist_period=30,
        status_check_period=30))
    await agent.start()
    try:
        await _fails_by_its_deadline(api, agent)
    finally:
        await agent.stop()


async def _fails_by_its_deadline(api: InProcessApi, agent: NodeAgent) -> None:
    await agent.started.wait()
    pod = t.Pod()
    pod.metadata.name = "deadline"
    pod.spec.containers.add(name="c", image="skiff/web:1.0", image_pull_policy="IfNotPresent")
    pod.spec.active_deadline_seconds = 1
    await api.create(pod)
    await api.bind("default", "deadline", "n1")

    async def failed() -> t.Pod | None:
        p = await api.get(t.Pod, "deadline", "default")
        return p if p.status.phase == "Failed" else None

    done = await until(failed, timeout=8.0)
    assert done.status.reason == "DeadlineExceeded"


async def test_image_never_and_pull_failure(env: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    api, fake, _agent = env
    pod = t.Pod()
    pod.metadata.name = "nopull"
    pod.spec.containers.add(name="c", image="skiff/absent:1.0", image_pull_policy="Never")
    await api.create(pod)
    await api.bind("default", "nopull", "n1")

    async def reason() -> str:
        p = await api.get(t.Pod, "nopull", "default")
        return p.status.container_statuses[0].state.waiting.reason if p.status.container_statuses else ""

    assert await until(lambda: _eq(reason(), "ErrImageNeverPull")) is True
    assert "PullImage" not in fake.calls


async def _eq(value: Awaitable[str], want: str) -> bool:
    return await value == want


class HeldPodListApi(InProcessApi):
    """The first pod List waits until released (a slow api-server); it is logged in `order`."""

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order
        self.release = asyncio.Event()

    async def list(self, cls: type[M], **kw: str) -> ObjectList[M]:  # type: ignore[override]
        if cls is t.Pod:
            await self.release.wait()
            self.order.append("pods listed")
        return await super().list(cls, **kw)


async def test_orphans_removed_only_after_sync(tmp_path: Path) -> None:
    """A sandbox whose pod the agent does not know is removed, but only once the pod list is in:
    before that, every sandbox may belong to a pod the agent is about to learn of."""
    fake = FakeRuntime(images={IMAGE})
    api = HeldPodListApi(fake.calls)  # one log of API lists and CRI calls, in order
    ghost = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="x", uid="ghost"),
                                 labels={LABEL_POD_UID: "ghost"})
    await fake.run_pod_sandbox(ghost)
    agent = NodeAgent(api, fake, AgentConfig(node_name="n1", manage_network=False, pod_log_dir=str(tmp_path),
                                             relist_period=0.05))
    starting = asyncio.ensure_future(agent.start())
    try:
        await asyncio.sleep(0.5)  # ten relist periods with the pod list still outstanding
        assert len(fake.sandboxes) == 1
        assert "StopPodSandbox" not in fake.calls and "RemovePodSandbox" not in fake.calls
        api.release.set()
        await asyncio.wait_for(starting, 5)

        async def empty() -> bool:
            return not fake.sandboxes

        await until(empty)
        assert fake.calls.index("pods listed") < fake.calls.index("StopPodSandbox")
    finally:
        if not starting.done():
            starting.cancel()
        await agent.stop()


async def test_runtime_down_marks_node_not_ready(env: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    api, fake, _agent = env
    fake.down = True

    async def ready(status: str) -> t.NodeCondition | None:
        n = await api.get(t.Node, "n1")
        c = next(c for c in n.status.conditions if c.type == "Ready")
        return c if c.status == status else None

    cond = await until(lambda: ready("False"))
    assert cond.reason == "ContainerRuntimeDown"
    fake.down = False
    await until(lambda: ready("True"))


async def test_agent_posts_ready_again_over_the_lifecycle_controllers_unknown(
        env: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    """The lifecycle controller only sets Unknown; the agent sees it and writes Ready=True back
    (long before its periodic node status write), with a new transition time."""
    api, _fake, _agent = env

    async def ready(status: str) -> t.NodeCondition | None:
        cond = conditions.node_ready_condition(await api.get(t.Node, "n1"))
        return cond if cond is not None and cond.status == status else None

    first = await until(lambda: ready("True"))
    # A status write of the agent's that was already on its way (its writes carry no
    # resourceVersion) can land just after ours and put back the Ready=True it had computed
    # before seeing Unknown, with the old transition time: the race any kubelet has with the
    # lifecycle controller. Only then is the Unknown written again; the agent must answer it.
    back = first
    for _ in range(3):
        node = await api.get(t.Node, "n1")
        lost = t.NodeCondition(type="Ready", status="Unknown", reason="NodeStatusUnknown",
                               message="Kubelet stopped posting node status.")
        lost.last_heartbeat_time.CopyFrom(first.last_heartbeat_time)
        lost.last_transition_time.FromSeconds(first.last_transition_time.seconds + 1)
        conditions.replace_condition(node.status.conditions, lost)
        try:
            await api.update_status(node)
        except errors.ConflictError:
            continue  # the agent wrote between our read and our write: read again
        back = await until(lambda: ready("True"))
        if back.last_transition_time.ToNanoseconds() != first.last_transition_time.ToNanoseconds():
            break
    assert back.reason == "KubeletReady"
    assert back.last_transition_time.ToNanoseconds() > first.last_transition_time.ToNanoseconds()


async def test_grpc_runtime_against_fake_cri_server(tmp_path: Path) -> None:
    """The hand-written proto round-trips through a real gRPC server and the real adapter."""
    fake = FakeRuntime(images={IMAGE})
    sock = f"unix://{tmp_path}/cri.sock"
    server = await fakecri.serve(fake, sock)
    runtime = GrpcRuntime(sock)
    try:
        assert (await runtime.version()).runtime_name == "fake"
        cfg = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="p", uid="u"), labels={LABEL_POD_UID: "u"})
        sid = await runtime.run_pod_sandbox(cfg)
        assert (await runtime.pod_sandbox_status(sid)).network.ip == "10.88.0.2"
        cc = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="c", attempt=2), image=cri.ImageSpec(image=IMAGE),
                                 labels={LABEL_POD_UID: "u"})
        cid = await runtime.create_container(sid, cc, cfg)
        await runtime.start_container(cid)
        [c] = await runtime.list_containers(labels={LABEL_POD_UID: "u"})
        assert (c.id, c.metadata.attempt, c.state) == (cid, 2, cri.CONTAINER_RUNNING)
        assert await runtime.list_containers(labels={LABEL_POD_UID: "other"}) == []
        assert (await runtime.image_status("skiff/web:1.0")) is not None
        assert (await runtime.image_status("skiff/nothere:1")) is None
        with pytest.raises(NotFound):
            await runtime.container_status("nope")
        await runtime.stop_pod_sandbox(sid)
        await runtime.remove_pod_sandbox(sid)
        assert await runtime.list_pod_sandbox() == []
    finally:
        await runtime.close()
        await server.stop(0)


async def test_image_pull_secret_reaches_the_runtime(env: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    api, fake, _agent = env
    fake.pullable = lambda image: True
    config = b'{"auths": {"registry.example.com:5000": {"auth": "dXNlcjpwYXNz"}}}'
    await api.create(t.Secret(metadata=t.ObjectMeta(name="regcred"), type="kubernetes.io/dockerconfigjson",
                              data={".dockerconfigjson": config}))
    pod = t.Pod(metadata=t.ObjectMeta(name="private"))
    pod.spec.containers.add(name="c", image="registry.example.com:5000/team/app:1", image_pull_policy="Always")
    pod.spec.image_pull_secrets.add(name="regcred")
    await api.create(pod)
    await api.bind("default", "private", "n1")
    ref = "registry.example.com:5000/team/app:1"
    auth = await until(lambda: _found(fake.pull_auths.get(ref)))
    assert (auth.username, auth.password, auth.server_address) == ("user", "pass", "registry.example.com:5000")


async def _found(value: T | None) -> T | None:
    return value


async def test_lifecycle_hooks(env: tuple[InProcessApi, FakeRuntime, NodeAgent]) -> None:
    api, fake, _agent = env
    calls: list[list[str]] = []

    def handler(cid: str, cmd: list[str]) -> tuple[int, bytes, bytes]:
        calls.append(cmd)
        return (1 if cmd[0] == "fail" else 0), b"", b""

    fake.exec_handler = handler
    pod = t.Pod(metadata=t.ObjectMeta(name="hooked"))
    pod.spec.termination_grace_period_seconds = 5
    c = pod.spec.containers.add(name="c", image="skiff/web:1.0", image_pull_policy="IfNotPresent")
    c.lifecycle.post_start.exec.command.extend(["started"])
    c.lifecycle.pre_stop.exec.command.extend(["drain"])
    bad = pod.spec.containers.add(name="bad", image="skiff/web:1.0", image_pull_policy="IfNotPresent")
    bad.lifecycle.post_start.exec.command.extend(["fail"])
    await api.create(pod)
    await api.bind("default", "hooked", "n1")

    async def failed_hook() -> t.Event | None:
        return next((e for e in api.objects(t.Event) if e.reason == "FailedPostStartHook"), None)

    event = await until(failed_hook)
    assert "PostStartHook failed" in event.message and ["started"] in calls
    await api.delete(t.Pod, "hooked", "default")
    await until(lambda: _found(["drain"] in calls or None))


class CrashingRuntime(FakeRuntime):
    """A runtime whose RunPodSandbox raises an unexpected error (a bug, not a CRI error) `crashes`
    times, recording when each call came."""

    def __init__(self, crashes: int) -> None:
        super().__init__(images={IMAGE})
        self.crashes = crashes
        self.attempts: list[float] = []

    async def run_pod_sandbox(self, config: cri.PodSandboxConfig) -> str:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.crashes:
            raise ValueError("injected: a bug in the worker's path")
        return await super().run_pod_sandbox(config)


async def test_a_crashing_pod_worker_comes_back_with_backoff(tmp_path: Path, api: InProcessApi) -> None:
    fake = CrashingRuntime(crashes=2)
    agent = NodeAgent(api, fake, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                             pod_log_dir=str(tmp_path), relist_period=0.05,
                                             status_check_period=0.05))
    await agent.start()
    try:
        await make_pod(api, "p1")

        async def running() -> t.Pod | None:
            p = await api.get(t.Pod, "p1", "default")
            return p if p.status.phase == "Running" else None

        await until(running, timeout=15)
        gaps = [b - a for a, b in zip(fake.attempts, fake.attempts[1:], strict=False)]
        assert len(fake.attempts) == 3, f"one attempt per worker start: {gaps}"
        # 1 s, then 2 s (20% jitter at most), although the relist kicks the pod every 50 ms.
        assert 0.95 <= gaps[0] <= 1.5 and 1.9 <= gaps[1] <= 2.9, gaps
    finally:
        await agent.stop()


async def test_grpc_runtime_sees_a_sandbox_outlive_its_deadline(tmp_path: Path) -> None:
    """Over gRPC, as with containerd: the deadline passes, the creation goes on, the same attempt
    answers "name is reserved" (NameReserved) until the sandbox is listed."""
    fake = FakeRuntime(faults=Faults(slow_sandboxes=1, slow_sandbox_time=0.6))
    sock = f"unix://{tmp_path}/cri.sock"
    server = await fakecri.serve(fake, sock)
    runtime = GrpcRuntime(sock, timeout=0.2)
    cfg = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="p", namespace="default", uid="u"),
                               labels={LABEL_POD_UID: "u"})
    try:
        with pytest.raises(CriError) as first:
            await runtime.run_pod_sandbox(cfg)
        assert first.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(NameReserved, match='name "p_default_u_0" is reserved for'):
            await runtime.run_pod_sandbox(cfg)
        assert await runtime.list_pod_sandbox() == []  # not listed while in the making

        async def listed() -> list[cri.PodSandbox]:
            return await runtime.list_pod_sandbox(labels={LABEL_POD_UID: "u"})

        [sb] = await until(listed)
        assert (sb.metadata.attempt, sb.state) == (0, cri.SANDBOX_READY)
    finally:
        await runtime.close()
        await server.stop(0)


@pytest.mark.parametrize(("end", "attempt"), [
    ("ready", 0),  # containerd finished: the sandbox is adopted, not created again
    ("notready", 1),  # containerd killed it half-made: removed, the next attempt runs
    ("gone", 0),  # killed and cleaned up: the same attempt's name is free again
], ids=["adopted", "notready-replaced", "gone-retried"])
async def test_a_sandbox_that_outlives_the_cri_deadline(tmp_path: Path, api: InProcessApi, end: str,
                                                        attempt: int) -> None:
    fake = FakeRuntime(images={IMAGE}, timeout=0.2,
                       faults=Faults(slow_sandboxes=1, slow_sandbox_time=1.0, slow_sandbox_end=end))
    agent = NodeAgent(api, fake, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                             pod_log_dir=str(tmp_path), relist_period=0.05, status_check_period=0.05,
                                             plan=PlanConfig(sandbox_retry_base=0.3, sandbox_retry_max=0.6)))
    await agent.start()
    try:
        pod = await make_pod(api, "p1")
        kicking = True

        async def kick() -> None:  # pod events keep coming meanwhile; none may bring a retry sooner
            while kicking:
                agent.ensure_worker(pod.metadata.uid)
                await asyncio.sleep(0.02)

        kicker = asyncio.get_running_loop().create_task(kick())

        async def running() -> t.Pod | None:
            p = await api.get(t.Pod, "p1", "default")
            return p if p.status.phase == "Running" else None

        try:
            await until(running, timeout=10)
        finally:
            kicking = False
            await kicker
        calls = fake.calls.count("RunPodSandbox")
        assert calls <= 3, f"{calls} RunPodSandbox calls while the first was in the making"
        [sb] = fake.sandboxes.values()  # a stale NotReady one was removed
        assert (sb.config.metadata.attempt, sb.state) == (attempt, cri.SANDBOX_READY)
        if end == "ready":
            assert calls <= 2 and sb.id in fake.reserved.values()
        events = (await api.list(t.Event, namespace="default")).items
        assert [e.reason for e in events if e.reason == "FailedCreatePodSandBox"] == ["FailedCreatePodSandBox"]
    finally:
        await agent.stop()


class NoReopenRuntime(FakeRuntime):
    """A runtime that cannot reopen logs (an older containerd)."""

    async def reopen_container_log(self, container_id: str) -> None:
        from nodeagent.cri import CriError

        raise CriError("ReopenContainerLog: unimplemented")


@pytest.mark.parametrize(("runtime", "rotations", "rotated_files"), [
    (FakeRuntime, 4, 2),  # 4 rotations, but max_files 3 keeps the live file and 2 rotated
    (NoReopenRuntime, 0, 0),  # renamed back: the runtime still writes to the same path
], ids=["rotates-and-keeps-max-files", "renamed-back-when-the-runtime-cannot-reopen"])
async def test_log_rotation_pass(tmp_path: Path, api: InProcessApi, runtime: type[FakeRuntime], rotations: int,
                                 rotated_files: int) -> None:
    fake = runtime(images={IMAGE})
    now = [1_700_000_000.0]
    agent = NodeAgent(api, fake, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                             pod_log_dir=str(tmp_path), relist_period=0.05,
                                             status_check_period=0.05, container_log_max_size=1024,
                                             container_log_max_files=3, log_rotation_period=3600),
                      clock=lambda: now[0])
    await agent.start()
    try:
        await make_pod(api, "p1")
        cid = await until(lambda: _async(next((c.id for c in fake.containers.values()
                                               if c.state == cri.CONTAINER_RUNNING), None)))
        done = 0
        for i in range(4):
            fake.write_log(cid, "\n".join(f"line {i}-{n} {'x' * 40}" for n in range(40)))
            now[0] += 1
            done += await agent.rotate_logs()
        assert done == rotations
        path = Path(fake.containers[cid].log_path)
        assert len(list(path.parent.glob("0.log.*"))) == rotated_files
        assert path.exists()
    finally:
        await agent.stop()


@pytest.mark.parametrize(("given_listing", "list_calls"), [
    (True, 0),  # the relist's listing: no call of its own
    (False, 3),  # no listing at hand: one ListContainers per pass
], ids=["relist-listing", "own-listing"])
async def test_log_rotation_asks_each_log_path_once(tmp_path: Path, api: InProcessApi, given_listing: bool,
                                                    list_calls: int) -> None:
    """At hundreds of agents per process a pass was a ContainerStatus per running container every 10 s."""
    fake = FakeRuntime(images={IMAGE})
    agent = NodeAgent(api, fake, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                             pod_log_dir=str(tmp_path), relist_period=3600,
                                             status_check_period=3600, log_rotation_period=3600))
    await agent.start()
    try:
        for name in ("p1", "p2"):
            await make_pod(api, name)

        async def both_running() -> list[str]:
            ids = [c.id for c in fake.containers.values() if c.state == cri.CONTAINER_RUNNING]
            return ids if len(ids) == 2 else []

        await until(both_running)
        listing = await fake.list_containers() if given_listing else None
        before = len(fake.calls)
        for _ in range(3):
            assert await agent.rotate_logs(listing) == 0
        calls = fake.calls[before:]
        assert calls.count("ListContainers") == list_calls
        assert calls.count("ContainerStatus") == 2, calls
    finally:
        await agent.stop()


async def _async(value: T) -> T:
    return value


class CountingApi(InProcessApi):
    """Counts Lease reads and writes."""

    def __init__(self) -> None:
        super().__init__()
        self.lease_calls: list[str] = []

    async def get(self, cls: type[M], name: str, namespace: str = "") -> M:
        if cls is t.Lease:
            self.lease_calls.append("get")
        return await super().get(cls, name, namespace)

    async def update(self, obj: M) -> M:
        if isinstance(obj, t.Lease):
            self.lease_calls.append("update")
        return await super().update(obj)


async def test_lease_renewal_writes_without_reading_and_recovers_from_a_conflict(tmp_path: Path) -> None:
    api = CountingApi()
    agent = NodeAgent(api, FakeRuntime(images={IMAGE}),
                      AgentConfig(node_name="n1", manage_network=False, pod_log_dir=str(tmp_path)))
    await agent.renew_lease()  # creates it (one read: it may exist from before a restart)
    for _ in range(3):
        await agent.renew_lease()
    assert api.lease_calls == ["get", "update", "update", "update"]
    first = (await api.get(t.Lease, "n1", "kube-node-lease")).spec.renew_time
    # Someone else changes the Lease: the next renewal conflicts, reads it again and writes.
    other = await api.get(t.Lease, "n1", "kube-node-lease")
    other.spec.lease_duration_seconds = 99
    await api.update(other)
    api.lease_calls.clear()
    await agent.renew_lease()
    assert api.lease_calls == ["update", "get", "update"]
    lease = await api.get(t.Lease, "n1", "kube-node-lease")
    assert lease.spec.holder_identity == "n1" and lease.spec.lease_duration_seconds != 99
    assert (lease.spec.renew_time.seconds, lease.spec.renew_time.nanos) >= (first.seconds, first.nanos)


async def test_the_agent_watches_only_what_its_pods_refer_to_with_its_node_credentials(
        tmp_path: Path, api: InProcessApi) -> None:
    """As the kubelet's Watch strategy, under the Node authorizer: the agent acting as
    system:node:n1 fetches and watches each ConfigMap and Secret its pods refer to, one by name,
    starts a container only once they are fetched, and stops watching with the last pod."""
    await api.create(t.ConfigMap(metadata=t.ObjectMeta(name="used"), data={"k": "from-cm"}))
    await api.create(t.ConfigMap(metadata=t.ObjectMeta(name="unused"), data={"k": "x"}))
    await api.create(t.Secret(metadata=t.ObjectMeta(name="sec"), string_data={"k": "from-secret"}))
    await api.create(t.Secret(metadata=t.ObjectMeta(name="other"), string_data={"k": "x"}))
    fake = FakeRuntime(images={IMAGE})
    agent = NodeAgent(api.as_user(identity.node_user("n1")), fake,
                      AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False, pod_log_dir=str(tmp_path),
                                  relist_period=0.05, status_check_period=0.05))
    await agent.start()
    try:
        pod = t.Pod(metadata=t.ObjectMeta(name="p"))
        c = pod.spec.containers.add(name="c", image="skiff/web:1.0", image_pull_policy="IfNotPresent")
        c.env.add(name="CM", value_from=t.EnvVarSource(config_map_key_ref=t.ConfigMapKeySelector(name="used", key="k")))
        c.env.add(name="SEC", value_from=t.EnvVarSource(secret_key_ref=t.SecretKeySelector(name="sec", key="k")))
        await api.create(pod)
        await api.bind("default", "p", "n1")

        async def env_of_container() -> dict[str, str] | None:
            for ctr in fake.containers.values():
                return {e.key: e.value for e in ctr.config.envs}
            return None

        env = await until(env_of_container)
        assert (env["CM"], env["SEC"]) == ("from-cm", "from-secret")
        assert agent.config_refs.watched() == {("configmaps", "default", "used"), ("secrets", "default", "sec")}
        with pytest.raises(errors.ForbiddenError, match='node "n1" may not get secret "default/other"'):
            await agent.client.get(t.Secret, "other", "default")
        await api.delete(t.Pod, "p", "default", grace_period_seconds=0)

        async def nothing_watched() -> bool:
            return not agent.config_refs.watched()

        await until(nothing_watched)
    finally:
        await agent.stop()


async def _bound_claim(api: InProcessApi, name: str, volume: str, path: str) -> None:
    await api.create(t.PersistentVolume(metadata=t.ObjectMeta(name=volume), spec=t.PersistentVolumeSpec(
        capacity={"storage": "1Gi"}, access_modes=["ReadWriteOnce"], host_path=t.HostPathVolumeSource(path=path))))
    await api.create(t.PersistentVolumeClaim(metadata=t.ObjectMeta(name=name), spec=t.PersistentVolumeClaimSpec(
        access_modes=["ReadWriteOnce"], resources=t.VolumeResourceRequirements(requests={"storage": "1Gi"}),
        volume_name=volume)))
    claim = await api.get(t.PersistentVolumeClaim, name, "default")
    claim.status.phase = "Bound"
    await api.update_status(claim)


async def test_the_agent_reads_only_its_pods_claims_and_their_volumes_with_its_node_credentials(
        tmp_path: Path, api: InProcessApi) -> None:
    """Under the Node authorizer: the agent acting as system:node:n1 watches the claim its pod
    uses and the volume bound to it, one by name each (no cluster-wide claim or volume watch),
    mounts it, may read no other claim or volume, and stops watching with the last pod."""
    await _bound_claim(api, "data", "pv-data", str(tmp_path / "pv-data"))
    await _bound_claim(api, "spare", "pv-spare", str(tmp_path / "pv-spare"))
    fake = FakeRuntime(images={IMAGE})
    agent = NodeAgent(api.as_user(identity.node_user("n1")), fake,
                      AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False, pod_log_dir=str(tmp_path),
                                  volume_dir=str(tmp_path / "volumes"), relist_period=0.05,
                                  status_check_period=0.05))
    await agent.start()
    try:
        pod = t.Pod(metadata=t.ObjectMeta(name="p"))
        pod.spec.containers.add(name="c", image="skiff/web:1.0", image_pull_policy="IfNotPresent",
                                volume_mounts=[t.VolumeMount(name="data", mount_path="/data")])
        pod.spec.volumes.add(name="data", persistent_volume_claim=t.PersistentVolumeClaimVolumeSource(
            claim_name="data"))
        await api.create(pod)
        await api.bind("default", "p", "n1")

        async def mounts_of_container() -> dict[str, str] | None:
            for ctr in fake.containers.values():
                return {m.container_path: m.host_path for m in ctr.config.mounts}
            return None

        mounts = await until(mounts_of_container)
        assert mounts["/data"] == str(tmp_path / "pv-data")
        assert agent.config_refs.watched() == {("persistentvolumeclaims", "default", "data"),
                                               ("persistentvolumes", "", "pv-data")}
        with pytest.raises(errors.ForbiddenError,
                           match='node "n1" may not get persistentvolumeclaim "default/spare": no pod bound'):
            await agent.client.get(t.PersistentVolumeClaim, "spare", "default")
        with pytest.raises(errors.ForbiddenError, match='node "n1" may not get persistentvolume "pv-spare"'):
            await agent.client.get(t.PersistentVolume, "pv-spare")
        with pytest.raises(errors.ForbiddenError, match="may list only the persistentvolumes"):
            await agent.client.list(t.PersistentVolume)
        await api.delete(t.Pod, "p", "default", grace_period_seconds=0)

        async def nothing_watched() -> bool:
            return not agent.config_refs.watched()

        await until(nothing_watched)
    finally:
        await agent.stop()
