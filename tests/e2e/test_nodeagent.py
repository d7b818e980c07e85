"""The node agent against real containerd, runc and CNI, in a network namespace made by the test.

One private containerd (deploy/containerdnode.py) serves the module; each test runs a fresh
agent (in this process, its node networking entered into the node's netns) against the
api-server's registry in this process (InProcessApi, over an in-memory store). Backoffs are
shortened through PlanConfig so nothing waits 10 s. Requires root and the Debian packages: a
missing prerequisite fails the test, it is never skipped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from controlplane.apiserver.inprocess import InProcessApi
from deploy.containerdnode import ContainerdNode, http_get, in_netns, leftovers, missing_prereqs, unique_prefix
from nodeagent.agent import AgentConfig, NodeAgent
from nodeagent.cri import LABEL_POD_UID, GrpcRuntime
from nodeagent.netns import NodeNetwork
from nodeagent.plan import PlanConfig
from nodeagent.server import start_server
from skiff import errors
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import metrics_pb2
from skiffpb.api.v1 import nodeagent_pb2_grpc as na_grpc
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri
from tests.support.prereq import require

pytestmark = pytest.mark.e2e
T = TypeVar("T")
POD_CIDR = "10.244.1.0/24"
WEB = "skiff/web:1.0"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerdNode]:
    problems = missing_prereqs()
    require(not problems, "real containerd tests need: " + ", ".join(problems))
    prefix = unique_prefix("na")
    n = ContainerdNode(prefix, "n1", Path(f"/tmp/skiff-e2e/{prefix}/n1"), address="10.77.0.11/24")
    n.start()
    try:
        yield n
    finally:
        n.teardown()
        assert leftovers(n) == []


def agent_config(node: ContainerdNode, **overrides: Any) -> AgentConfig:
    base: dict[str, Any] = dict(
        node_name="n1", node_ip=node.ip, pod_log_dir=str(node.paths.pod_logs), cgroup_parent=node.cgroup_parent,
        volume_dir=str(node.paths.pod_volumes),
        cni_conf_dir=str(node.paths.cni_conf_dir), ipam_dir=str(node.paths.ipam_dir), pod_cidr=POD_CIDR,
        status_check_period=0.3, network_sync_period=1.0,
        plan=PlanConfig(backoff_base=3.0, backoff_max=6.0, image_backoff_base=2.0, image_backoff_max=4.0,
                        default_grace=5))
    base.update(overrides)
    return AgentConfig(**base)


class Harness:
    def __init__(self, node: ContainerdNode, server: InProcessApi) -> None:
        self.node = node
        self.api = server
        self.net = NodeNetwork(f"/run/netns/{node.netns}")
        self.runtime = GrpcRuntime(node.endpoint)
        self.agent: NodeAgent | None = None

    async def start_agent(self, **overrides: Any) -> NodeAgent:
        self.agent = NodeAgent(self.api, self.runtime, agent_config(self.node, **overrides), net=self.net)
        await asyncio.wait_for(self.agent.start(), 30)
        return self.agent

    async def stop_agent(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None

    async def event(self, pod: str, reason: str, *, containing: str = "") -> t.Event:
        """The Event the agent recorded about `pod` (written in the background, so polled for)."""

        async def find() -> t.Event | None:
            return next((e for e in (await self.api.list(t.Event, namespace="default")).items
                         if e.involved_object.name == pod and e.reason == reason and containing in e.message), None)

        ev = await wait_for(find, f"a {reason} event about {pod}", 10)
        assert (ev.source.component, ev.source.host) == ("skiff-nodeagent", "n1")
        return ev

    async def pod(self, name: str) -> t.Pod:
        return await self.api.get(t.Pod, name, "default")

    async def run_pod(self, name: str, *, bind: bool = True, **container: Any) -> t.Pod:
        pod = t.Pod()
        pod.metadata.name = name
        pod.spec.termination_grace_period_seconds = 5
        c = pod.spec.containers.add(name="web", image=WEB, image_pull_policy="IfNotPresent")
        for key, value in container.items():
            if isinstance(value, list):
                getattr(c, key).extend(value)
            elif hasattr(value, "CopyFrom"):
                getattr(c, key).CopyFrom(value)
            else:
                setattr(c, key, value)
        created = await self.api.create(pod)
        if bind:
            created = await self.api.bind("default", name, "n1")
        return created


async def wait_for(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except errors.NotFoundError as exc:
            last = exc
        if last is not None and last is not False and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def ready(pod: t.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def cstatus(pod: t.Pod) -> t.ContainerStatus:
    """The first container's status (empty until the agent wrote one)."""
    return pod.status.container_statuses[0] if pod.status.container_statuses else t.ContainerStatus()


@pytest.fixture
async def h(node: ContainerdNode) -> AsyncIterator[Harness]:
    harness = Harness(node, InProcessApi())
    await harness.start_agent()
    try:
        yield harness
    finally:
        # Delete every pod through the API and let the agent clean the node before the next test.
        if harness.agent is None:
            await harness.start_agent()
        for pod in harness.api.objects(t.Pod):
            await harness.api.delete(t.Pod, pod.metadata.name, pod.metadata.namespace, grace_period_seconds=1)

        async def clean() -> bool:
            return not harness.node.sandboxes() and not harness.api.objects(t.Pod)

        await wait_for(clean, "node without sandboxes", 60)
        await harness.stop_agent()
        await harness.runtime.close()
        harness.net.close()
        await harness.api.close()


async def running_ready(h: Harness, name: str, timeout: float = 30.0) -> t.Pod:
    async def check() -> t.Pod | None:
        pod = await h.pod(name)
        return pod if pod.status.phase == "Running" and ready(pod) else None

    return await wait_for(check, f"pod {name} Running and Ready", timeout)


async def test_pod_runs_serves_and_node_is_registered(h: Harness) -> None:
    probe = t.Probe(http_get=t.HTTPGetAction(path="/", port=t.IntOrString(int_val=80)), period_seconds=1)
    await h.run_pod("web1", readiness_probe=probe, env=[t.EnvVar(name="GREETING", value="hi")])
    pod = await running_ready(h, "web1")
    assert pod.status.pod_ip.startswith("10.244.1.")
    assert pod.status.host_ip == "10.77.0.11"
    assert pod.status.HasField("start_time")
    assert {c.type for c in pod.status.conditions} == {"PodScheduled", "Initialized", "ContainersReady", "Ready"}
    st = cstatus(pod)
    assert st.ready and st.restart_count == 0 and st.state.HasField("running")
    assert st.container_id.startswith("containerd://")
    # The web server answers from the node's netns, naming its pod.
    assert http_get(h.node.netns, f"http://{pod.status.pod_ip}/") == "hello from web1\n"

    # Node registration, Lease, networking.
    async def node_ready() -> t.Node | None:
        n = await h.api.get(t.Node, "n1")
        return n if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) else None

    node = await wait_for(node_ready, "node Ready")
    assert (node.status.addresses[0].type, node.status.addresses[0].address) == ("InternalIP", "10.77.0.11")
    assert node.status.capacity["pods"] == "110" and int(node.status.capacity["cpu"]) >= 1
    assert node.status.node_info.container_runtime_version.startswith("containerd://1.")
    assert node.status.node_info.kernel_version == os.uname().release
    ready_cond = next(c for c in node.status.conditions if c.type == "Ready")
    assert (ready_cond.status, ready_cond.reason) == ("True", "KubeletReady")
    lease = await h.api.get(t.Lease, "n1", "kube-node-lease")
    assert lease.spec.holder_identity == "n1"
    assert in_netns(h.node.netns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    conflist = (h.node.paths.cni_conf_dir / "10-skiff-bridge.conflist").read_text()
    assert POD_CIDR in conflist and '"hairpinMode": true' in conflist

    # host-gw: a route to another node's podCIDR via its InternalIP, removed when the node goes.
    other = t.Node()
    other.metadata.name = "n2"
    other.spec.pod_cidr = "10.244.2.0/24"
    other.status.addresses.add(type="InternalIP", address="10.77.0.12")
    await h.api.create(other)

    async def route(present: bool) -> bool:
        out = in_netns(h.node.netns, "ip", "route", "show", "10.244.2.0/24").stdout
        return ("via 10.77.0.12" in out) == present

    await wait_for(lambda: route(True), "route to n2's podCIDR")
    await h.api.delete(t.Node, "n2")
    await wait_for(lambda: route(False), "route to n2 removed")

    # logs and exec through the agent's gRPC service (what the api-server forwards).
    assert h.agent is not None
    server, port = await start_server(h.agent, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = na_grpc.NodeAgentStub(ch)
            out = await stub.Exec(api.ExecRequest(namespace="default", pod="web1", command=["sh", "-c",
                                                  "echo $GREETING; cat /www/name; echo oops >&2; exit 3"]))
            assert (out.stdout, out.stderr, out.exit_code) == (b"hi\nweb1\n", b"oops\n", 3)
            to_pid1 = "echo line1 > /proc/1/fd/1; echo line2 > /proc/1/fd/1"
            await stub.Exec(api.ExecRequest(namespace="default", pod="web1", command=["sh", "-c", to_pid1]))

            async def logged() -> bytes | None:
                chunks = [c.data async for c in stub.ContainerLogs(api.LogsRequest(namespace="default", pod="web1"))]
                data = b"".join(chunks)
                return data if b"line2\n" in data else None

            assert (await wait_for(logged, "log lines")).endswith(b"line1\nline2\n")
            tail = [c.data async for c in stub.ContainerLogs(api.LogsRequest(namespace="default", pod="web1",
                                                                             tail_lines=1))]
            assert b"".join(tail) == b"line2\n"
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Exec(api.ExecRequest(namespace="default", pod="nope", command=["true"]))
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(0)


async def test_killed_container_restarts_then_backs_off(h: Harness) -> None:
    await h.run_pod("crash1")
    pod = await running_ready(h, "crash1")
    first = cstatus(pod).container_id.split("//")[1]
    os.kill(h.node.container_pid(first), signal.SIGKILL)

    async def restarted(count: int) -> t.Pod | None:
        p = await h.pod("crash1")
        st = cstatus(p)
        return p if st.restart_count == count and st.state.HasField("running") else None

    pod = await wait_for(lambda: restarted(1), "restartCount 1", 15)
    st = cstatus(pod)
    assert st.last_state.terminated.exit_code == 137
    assert st.container_id.split("//")[1] != first
    # A second crash within the backoff window waits in CrashLoopBackOff before restarting.
    os.kill(h.node.container_pid(st.container_id.split("//")[1]), signal.SIGKILL)

    async def backing_off() -> t.Pod | None:
        p = await h.pod("crash1")
        return p if cstatus(p).state.waiting.reason == "CrashLoopBackOff" else None

    pod = await wait_for(backing_off, "CrashLoopBackOff", 10)
    assert pod.status.phase == "Running" and not ready(pod)
    assert cstatus(pod).last_state.terminated.exit_code == 137
    t0 = time.monotonic()
    await wait_for(lambda: restarted(2), "restartCount 2", 20)
    assert time.monotonic() - t0 > 1.0  # it really waited (backoff 3 s from the exit)
    await h.event("crash1", "BackOff")


async def test_liveness_failure_restarts_container(h: Harness) -> None:
    probe = t.Probe(http_get=t.HTTPGetAction(path="/healthz", port=t.IntOrString(int_val=80)), period_seconds=1,
                    failure_threshold=2)
    await h.run_pod("live1", liveness_probe=probe)

    async def restarted() -> t.Pod | None:
        p = await h.pod("live1")
        return p if cstatus(p).restart_count >= 1 else None

    pod = await wait_for(restarted, "liveness restart", 30)
    assert cstatus(pod).last_state.terminated.finished_at.seconds > 0
    await h.event("live1", "Killing", containing="liveness")
    await h.event("live1", "Unhealthy")


async def test_readiness_gates_ready_and_back(h: Harness) -> None:
    probe = t.Probe(http_get=t.HTTPGetAction(path="/ready", port=t.IntOrString(int_val=80)), period_seconds=1)
    await h.run_pod("ready1", readiness_probe=probe)

    async def state(want_ready: bool) -> t.Pod | None:
        p = await h.pod("ready1")
        return p if p.status.phase == "Running" and ready(p) == want_ready and \
            cstatus(p).state.HasField("running") else None

    pod = await wait_for(lambda: state(False), "running but not ready")
    cid = cstatus(pod).container_id.split("//")[1]
    await h.runtime.exec_sync(cid, ["touch", "/www/ready"], 5)
    await wait_for(lambda: state(True), "ready after /ready exists")
    await h.runtime.exec_sync(cid, ["rm", "/www/ready"], 5)
    pod = await wait_for(lambda: state(False), "not ready again")
    assert cstatus(pod).restart_count == 0
    cond = next(c for c in pod.status.conditions if c.type == "Ready")
    assert cond.reason == "ContainersNotReady"


async def test_image_pull_failure_reports_backoff(h: Harness) -> None:
    # A registry address that refuses at once (inside the node netns): no registry is reachable here.
    await h.run_pod("img1", image="127.0.0.1:1/nothere:1.0", image_pull_policy="Always")

    async def waiting(reason: str) -> t.Pod | None:
        p = await h.pod("img1")
        return p if p.status.container_statuses and cstatus(p).state.waiting.reason == reason else None

    pod = await wait_for(lambda: waiting("ImagePullBackOff"), "ImagePullBackOff", 30)
    assert pod.status.phase == "Pending"
    await h.event("img1", "Failed", containing="nothere")
    await wait_for(lambda: waiting("ErrImagePull"), "ErrImagePull on retry", 30)


async def test_delete_removes_sandbox_then_object(h: Harness) -> None:
    pod = await h.run_pod("del1")
    pod = await running_ready(h, "del1")
    uid = pod.metadata.uid
    assert any(s.labels[LABEL_POD_UID] == uid for s in h.node.sandboxes())
    t0 = time.monotonic()
    await h.api.delete(t.Pod, "del1", "default")  # graceful: the agent finishes the deletion

    async def gone() -> bool:
        try:
            await h.pod("del1")
            return False
        except errors.NotFoundError:
            return True

    await wait_for(gone, "pod object removed", 30)
    assert time.monotonic() - t0 < 10  # the web image stops on SIGTERM, well within the 5 s grace
    assert not [s for s in h.node.sandboxes() if s.labels.get(LABEL_POD_UID) == uid]
    assert not [c for c in h.node.containers() if c.labels.get(LABEL_POD_UID) == uid]
    deletes = [a for a in h.api.actions if a[0] == "delete" and a[3] == "del1"]
    assert len(deletes) == 2  # the user's, then the agent's final grace-0 delete


async def test_agent_restart_adopts_running_pods(h: Harness) -> None:
    await h.run_pod("keep1")
    pod = await running_ready(h, "keep1")
    uid = pod.metadata.uid

    def in_containerd() -> tuple[list[str], list[tuple[str, int, int]]]:
        """containerd's own lists (CRI ListPodSandbox/ListContainers), not what an agent wrote."""
        sandboxes = sorted(s.id for s in h.node.sandboxes() if s.labels.get(LABEL_POD_UID) == uid)
        containers = sorted((c.id, c.state, c.metadata.attempt) for c in h.node.containers()
                            if c.labels.get(LABEL_POD_UID) == uid)
        return sandboxes, containers

    before = in_containerd()
    [(cid, state, _)] = before[1]
    assert state == cri.CONTAINER_RUNNING and cstatus(pod).container_id.endswith(cid)
    pid = h.node.container_pid(cid)
    await h.stop_agent()
    # A sandbox of a pod the API does not know: the restarted agent removes it.
    stray = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="stray", uid="stray-uid", namespace="default"),
                                 hostname="stray", labels={LABEL_POD_UID: "stray-uid"},
                                 log_directory=str(h.node.paths.pod_logs / "stray"))
    stray.linux.cgroup_parent = h.node.cgroup_parent
    await h.runtime.run_pod_sandbox(stray)
    writes_before = h.api.count("update_status", "pods")
    agent = await h.start_agent()

    async def stray_gone() -> bool:
        return not [s for s in h.node.sandboxes() if s.labels.get(LABEL_POD_UID) == "stray-uid"]

    await wait_for(stray_gone, "stray sandbox removed", 20)
    pod = await running_ready(h, "keep1")
    worker = agent.workers[uid]
    assert worker.syncs >= 1
    # The same sandbox and container, still running the same process: adopted, not restarted.
    assert in_containerd() == before
    assert h.node.container_pid(cid) == pid
    assert cstatus(pod).restart_count == 0
    # Nothing was restarted, so the status did not change and was not rewritten.
    assert h.api.count("update_status", "pods") == writes_before


async def test_containerd_down_makes_node_not_ready_and_recovers(h: Harness) -> None:
    await h.run_pod("survive1")
    pod = await running_ready(h, "survive1")

    async def node_ready(status: str) -> t.Node | None:
        n = await h.api.get(t.Node, "n1")
        c = next(c for c in n.status.conditions if c.type == "Ready")
        return n if c.status == status else None

    h.node.stop_containerd()
    try:
        node = await wait_for(lambda: node_ready("False"), "node NotReady", 20)
        cond = next(c for c in node.status.conditions if c.type == "Ready")
        assert cond.reason == "ContainerRuntimeDown" and "down" in cond.message
    finally:
        h.node.start_containerd()
    await wait_for(lambda: node_ready("True"), "node Ready again", 30)
    pod = await running_ready(h, "survive1")
    assert cstatus(pod).restart_count == 0  # the pod ran on through the containerd restart
    assert http_get(h.node.netns, f"http://{pod.status.pod_ip}/") == "hello from survive1\n"


WRITER = ('i=0; while true; do echo "line $i 0123456789abcdefghijklmnopqrstuvwxyz"; i=$((i+1)); '
          'if [ $((i % 500)) -eq 0 ]; then usleep 20000; fi; done')


async def test_container_logs_rotate_and_a_follower_loses_nothing(h: Harness) -> None:
    """A container writing fast (~1 MB/s): its log is rotated by size through the real containerd
    (ReopenContainerLog), at most max_files files stay, and `logs --follow` streams across the
    rotations without losing or repeating a line."""
    await h.stop_agent()
    agent = await h.start_agent(container_log_max_size=64 * 1024, container_log_max_files=3,
                                log_rotation_period=0.3)
    await h.run_pod("chatty", command=["/bin/sh", "-c", WRITER])
    pod = await running_ready(h, "chatty")
    log_dir = Path(agent.config.pod_log_dir) / f"default_chatty_{pod.metadata.uid}" / "web"
    server, port = await start_server(agent, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = na_grpc.NodeAgentStub(ch)
            call = stub.ContainerLogs(api.LogsRequest(namespace="default", pod="chatty", follow=True))
            data = b""
            seen_rotated: set[str] = set()
            started = time.monotonic()
            async for chunk in call:
                data += chunk.data
                seen_rotated |= {p.name for p in log_dir.glob("0.log.*")}
                files = list(log_dir.iterdir())
                assert len(files) <= 3 + 1, f"at most 3 files (one more only mid-rotation): {sorted(files)}"
                if (len(seen_rotated) >= 4 and len(data) > 1_000_000) or time.monotonic() - started > 40:
                    break
            call.cancel()
    finally:
        await server.stop(0)
    assert len(seen_rotated) >= 4, f"rotated files seen: {sorted(seen_rotated)}"
    lines = data.decode().splitlines()
    numbers = [int(line.split()[1]) for line in lines[:-1]]  # the last may be cut mid-chunk
    # The stream starts at the live file's first line (earlier ones may already sit in a rotated
    # file, which `logs` does not read, as the kubelet's does not); from there, nothing is lost.
    first = numbers[0]
    assert numbers == list(range(first, first + len(numbers))), "every line once, in order, across the rotations"
    for rotated in log_dir.glob("0.log.*"):
        assert rotated.stat().st_size >= 64 * 1024


async def test_new_pod_cidr_replaces_the_bridge_address(h: Harness) -> None:
    """A node that comes back with another podCIDR (deleted and re-registered, IPAM handed out a new
    range): the agent writes the new CNI config, and the bridge's old gateway address must not
    keep new sandboxes from starting (the bridge plugin's forceAddress)."""
    import subprocess

    await h.run_pod("before")
    pod = await running_ready(h, "before")
    assert pod.status.pod_ip.startswith("10.244.1.")
    await h.api.delete(t.Pod, "before", "default", grace_period_seconds=1)

    async def clean() -> bool:
        return not h.node.sandboxes() and not h.api.objects(t.Pod)

    await wait_for(clean, "node without sandboxes", 60)
    await h.stop_agent()
    await h.start_agent(pod_cidr="10.244.7.0/24")
    await h.run_pod("after")
    pod = await running_ready(h, "after", timeout=60)
    assert pod.status.pod_ip.startswith("10.244.7.")
    addrs = subprocess.run(["ip", "-n", h.node.netns, "-4", "-o", "addr", "show", "dev", "cni0"],
                           capture_output=True, text=True, check=True).stdout
    assert "10.244.7.1/24" in addrs and "10.244.1.1/24" not in addrs


async def test_usage_of_a_container_burning_cpu(h: Harness) -> None:
    """CRI stats from real containerd: a busy loop shows about a core, the node shows usage too."""
    await h.stop_agent()
    agent = await h.start_agent(stats_period=1.0)
    await h.run_pod("burn", command=["sh", "-c", "while :; do :; done"])
    await wait_for(lambda: _running(h, "burn"), "pod burn Running")
    server, port = await start_server(agent, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = na_grpc.NodeAgentStub(ch)

            async def busy() -> metrics_pb2.UsageSummary | None:
                s = await stub.Summary(metrics_pb2.SummaryRequest())
                pods = [p for p in s.pods if p.name == "burn"]
                return s if pods and pods[0].containers[0].cpu_nano_cores > 200_000_000 else None

            summary = await wait_for(busy, "the burning container above 200m", 60)
    finally:
        await server.stop(None)
    burn = next(p for p in summary.pods if p.name == "burn")
    assert burn.namespace == "default" and burn.uid == (await h.pod("burn")).metadata.uid
    web = burn.containers[0]
    # One busy loop can use at most one core (plus measurement slack) and some memory.
    assert web.name == "web" and web.cpu_nano_cores < 1_300_000_000 and web.memory_working_set_bytes > 0
    assert burn.total.cpu_nano_cores >= 200_000_000 and burn.total.memory_working_set_bytes > 0
    assert summary.node.cpu_nano_cores >= web.cpu_nano_cores * 0.8 and summary.node.memory_working_set_bytes > 0
    assert 0.5 <= summary.window_seconds <= 5
    # containerd 1.6 serves ListPodSandboxStats (checked on the wire, not assumed).
    sandbox_stats = await h.runtime.list_pod_sandbox_stats()
    assert agent.sampler.sandbox_stats and any(s.attributes.metadata.name == "burn" for s in sandbox_stats)


async def _running(h: Harness, name: str) -> bool:
    return (await h.pod(name)).status.phase == "Running"
