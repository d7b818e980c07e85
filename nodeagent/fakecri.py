"""An in-memory container runtime: the `Runtime` Protocol, and a CRI gRPC server around it.

For unit tests of the agent and for control-plane tests and benchmarks that simulate many
nodes (`skiff-nodeagent --fake-runtime`, or `python -m nodeagent.fakecri --listen unix:///x.sock`
for a separate fake CRI server; nodeagent/hollow.py runs many agents each over its own server).
It is NOT a test of containerd: real-containerd tests live in tests/e2e. What holds: ids are
unique, sandboxes get IPs from `pod_cidr` in order, containers start instantly (or after
`Faults.start_latency`) and run until stopped or `exit()`-ed by a test, StopPodSandbox stops
its containers, RemovePodSandbox removes them, filters match labels exactly like CRI's.

Failure injection (`Faults`): a seeded fraction of RunPodSandbox, CreateContainer and
StartContainer calls fail with a CriError before changing anything, as containerd's transient
errors do, so the agent's retry and backoff paths run at scale; the seed makes a run repeatable.
Slow sandboxes (`Faults.slow_sandboxes`): the first N RunPodSandbox calls take
`slow_sandbox_time`; like containerd, the creation goes on when its caller gives up (the gRPC
deadline, or `FakeRuntime.timeout` for in-memory callers, which then get DEADLINE_EXCEEDED), the
sandbox is not listed before it ends, and its name (name_namespace_uid_attempt) stays reserved:
asking again for the same attempt answers NameReserved. It then ends as `slow_sandbox_end` says:
"ready" (created), "notready" (killed half-made but listed, NotReady) or "gone" (killed and
removed, the name free again).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc

from nodeagent.cri import (
    DEFAULT_TIMEOUT,
    CriError,
    NameReserved,
    NotFound,
    RuntimeUnavailable,
    name_reserved_message,
    sandbox_name,
)
from skiffpb.cri.v1 import api_pb2 as cri
from skiffpb.cri.v1 import api_pb2_grpc as cri_grpc


def _now_ns() -> int:
    return time.time_ns()


@dataclass(frozen=True)
class Faults:
    """What the fake runtime does besides succeeding at once."""

    start_latency: float = 0.0  # seconds RunPodSandbox and StartContainer each take
    fail_rate: float = 0.0  # fraction of RunPodSandbox/CreateContainer/StartContainer calls that fail
    seed: int = 0
    slow_sandboxes: int = 0  # the first N RunPodSandbox calls take slow_sandbox_time (past the caller's deadline)
    slow_sandbox_time: float = 0.0
    slow_sandbox_end: str = "ready"  # ready, notready (killed, listed NotReady) or gone (killed and removed)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fail_rate < 1.0:
            raise ValueError(f"fail_rate {self.fail_rate}: expected 0 <= rate < 1")
        if self.start_latency < 0:
            raise ValueError(f"start_latency {self.start_latency}: expected >= 0")
        if self.slow_sandboxes < 0 or self.slow_sandbox_time < 0:
            raise ValueError(f"slow_sandboxes {self.slow_sandboxes}, slow_sandbox_time {self.slow_sandbox_time}: "
                             "expected >= 0")
        if self.slow_sandbox_end not in ("ready", "notready", "gone"):
            raise ValueError(f"slow_sandbox_end {self.slow_sandbox_end!r}: expected ready, notready or gone")


_FAULTY = frozenset({"RunPodSandbox", "CreateContainer", "StartContainer"})
_SLOW = frozenset({"RunPodSandbox", "StartContainer"})


@dataclass
class _Sandbox:
    id: str
    config: cri.PodSandboxConfig
    ip: str
    state: cri.PodSandboxState = cri.SANDBOX_READY
    created_at: int = field(default_factory=_now_ns)


@dataclass
class _Container:
    id: str
    sandbox_id: str
    config: cri.ContainerConfig
    image_ref: str
    log_path: str
    state: cri.ContainerState = cri.CONTAINER_CREATED
    created_at: int = field(default_factory=_now_ns)
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""


class FakeRuntime:
    """The Runtime Protocol in memory. Tests drive it with `exit()`, `down`, `images`, `exec_handler`."""

    def __init__(self, *, pod_cidr: str = "10.88.0.0/16", images: set[str] | None = None,
                 pullable: Callable[[str], bool] | None = None, faults: Faults | None = None,
                 record_calls: bool = True, keep_configs: bool = True, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._hosts = ipaddress.ip_network(pod_cidr).hosts()
        next(self._hosts)  # .1 is the bridge
        self.sandboxes: dict[str, _Sandbox] = {}
        self.containers: dict[str, _Container] = {}
        self.images: set[str] = set(images or ())
        self.pull_auths: dict[str, cri.AuthConfig | None] = {}  # image -> the credentials of its last pull
        self.pullable = pullable or (lambda image: False)
        self.down = False
        self.network_ready = True
        self.calls: list[str] = []
        self.record_calls = record_calls  # off for long runs: the list would grow without bound
        # Off for many-node runs: a container keeps only what CRI answers with (metadata, image,
        # labels, annotations), not its env, mounts or command line, which tests read and nothing
        # lists. The env alone is 8 variables per Service of the pod's namespace: with 1,000
        # Services 280 KB serialized and 0.7 MB held per container (docs/scale.md).
        self.keep_configs = keep_configs
        self.faults = faults or Faults()
        self.injected = 0  # failures injected so far
        self._random = random.Random(self.faults.seed)
        self.exec_handler: Callable[[str, list[str]], tuple[int, bytes, bytes]] = lambda cid, cmd: (0, b"", b"")
        self._ids = itertools.count(1)
        self.fake_cpu_cores = 0.01  # what each running container "uses" (list_container_stats)
        self.fake_memory = 4 << 20
        self.timeout = timeout  # the in-memory caller's deadline for RunPodSandbox (GrpcRuntime.timeout)
        self.reserved: dict[str, str] = {}  # sandbox name -> the id creating or holding it
        self._sandbox_calls = 0
        self._creating: set[asyncio.Future[str]] = set()

    # ------------------------------------------------------------ test controls

    def exit(self, container_id: str, exit_code: int = 137, reason: str = "Error") -> None:
        """Make a running container die, as if killed from outside."""
        c = self.containers[container_id]
        c.state, c.exit_code, c.reason, c.finished_at = cri.CONTAINER_EXITED, exit_code, reason, _now_ns()

    def write_log(self, container_id: str, text: str, *, stream: str = "stdout") -> None:
        """Append `text` to the container's log as the runtime would (one CRI record per line)."""
        c = self.containers[container_id]
        if c.state != cri.CONTAINER_RUNNING or not c.log_path:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        os.makedirs(os.path.dirname(c.log_path), exist_ok=True)  # as containerd makes it
        with open(c.log_path, "a") as f:
            for line in text.splitlines():
                f.write(f"{stamp} {stream} F {line}\n")

    def _check(self, call: str) -> None:
        if self.record_calls:
            self.calls.append(call)
        if self.down:
            raise RuntimeUnavailable(f"{call}: connection refused (fake runtime is down)")
        if call in _FAULTY and self.faults.fail_rate and self._random.random() < self.faults.fail_rate:
            self.injected += 1
            raise CriError(f"{call}: injected failure (fake runtime, fail rate {self.faults.fail_rate})")

    async def _slow(self, call: str) -> None:
        if self.faults.start_latency and call in _SLOW:
            await asyncio.sleep(self.faults.start_latency)

    def _new_id(self) -> str:
        return uuid.uuid4().hex + uuid.uuid4().hex

    @staticmethod
    def _norm(image: str) -> str:
        from skiff.images import normalize_ref

        return normalize_ref(image)

    # ------------------------------------------------------------ Runtime

    async def version(self) -> cri.VersionResponse:
        self._check("Version")
        return cri.VersionResponse(version="0.1.0", runtime_name="fake", runtime_version="0.0.1",
                                   runtime_api_version="v1")

    async def status(self) -> cri.StatusResponse:
        self._check("Status")
        return cri.StatusResponse(status=cri.RuntimeStatus(conditions=[
            cri.RuntimeCondition(type="RuntimeReady", status=True),
            cri.RuntimeCondition(type="NetworkReady", status=self.network_ready,
                                 reason="" if self.network_ready else "NetworkPluginNotReady",
                                 message="" if self.network_ready else "cni config uninitialized"),
        ]))

    async def run_pod_sandbox(self, config: cri.PodSandboxConfig) -> str:
        self._check("RunPodSandbox")
        name = sandbox_name(config.metadata)
        holder = self.reserved.get(name)
        if holder is not None:
            raise NameReserved(name_reserved_message(name, holder))
        sid = self._new_id()
        slow = self._sandbox_calls < self.faults.slow_sandboxes
        self._sandbox_calls += 1
        if not slow and not self.faults.start_latency:
            return self._add_sandbox(sid, name, config)
        self.reserved[name] = sid
        creation = asyncio.ensure_future(self._create_sandbox(sid, name, config, slow=slow))
        self._creating.add(creation)
        creation.add_done_callback(self._created)
        try:
            # Like containerd, the creation goes on when the caller gives up.
            return await asyncio.wait_for(asyncio.shield(creation), self.timeout)
        except TimeoutError:
            raise CriError("RunPodSandbox: context deadline exceeded",
                           code=grpc.StatusCode.DEADLINE_EXCEEDED) from None

    def _created(self, creation: asyncio.Future[str]) -> None:
        self._creating.discard(creation)
        if not creation.cancelled():
            creation.exception()  # retrieved: a caller that gave up never will

    async def _create_sandbox(self, sid: str, name: str, config: cri.PodSandboxConfig, *, slow: bool) -> str:
        try:
            await self._slow("RunPodSandbox")
            if slow:
                await asyncio.sleep(self.faults.slow_sandbox_time)
                if self.faults.slow_sandbox_end == "notready":
                    self._add_sandbox(sid, name, config)  # listed, but its shim was killed
                    self.sandboxes[sid].state = cri.SANDBOX_NOTREADY
                    raise CriError("failed to start sandbox: failed to create shim task: signal: killed")
                if self.faults.slow_sandbox_end == "gone":
                    raise CriError("failed to setup network for sandbox: plugin type=bridge: signal: killed")
        except BaseException:
            if sid not in self.sandboxes and self.reserved.get(name) == sid:
                del self.reserved[name]
            raise
        return self._add_sandbox(sid, name, config)

    def _add_sandbox(self, sid: str, name: str, config: cri.PodSandboxConfig) -> str:
        self.reserved[name] = sid
        self.sandboxes[sid] = _Sandbox(sid, cri.PodSandboxConfig(), str(next(self._hosts)))
        self.sandboxes[sid].config.CopyFrom(config)
        return sid

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._check("StopPodSandbox")
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            return
        for c in self.containers.values():
            if c.sandbox_id == sandbox_id and c.state in (cri.CONTAINER_RUNNING, cri.CONTAINER_CREATED):
                c.state, c.exit_code, c.reason, c.finished_at = cri.CONTAINER_EXITED, 137, "Error", _now_ns()
        sb.state = cri.SANDBOX_NOTREADY

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self._check("RemovePodSandbox")
        for cid in [cid for cid, c in self.containers.items() if c.sandbox_id == sandbox_id]:
            del self.containers[cid]
        sb = self.sandboxes.pop(sandbox_id, None)
        if sb is not None and self.reserved.get(sandbox_name(sb.config.metadata)) == sandbox_id:
            del self.reserved[sandbox_name(sb.config.metadata)]

    async def pod_sandbox_status(self, sandbox_id: str) -> cri.PodSandboxStatus:
        self._check("PodSandboxStatus")
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFound(f"sandbox {sandbox_id} not found", code=grpc.StatusCode.NOT_FOUND)
        return cri.PodSandboxStatus(id=sb.id, metadata=sb.config.metadata, state=sb.state, created_at=sb.created_at,
                                    network=cri.PodSandboxNetworkStatus(ip=sb.ip), labels=sb.config.labels,
                                    annotations=sb.config.annotations)

    @staticmethod
    def _match(labels: Mapping[str, str], selector: Mapping[str, str] | None) -> bool:
        return all(labels.get(k) == v for k, v in (selector or {}).items())

    async def list_pod_sandbox(self, *, labels: Mapping[str, str] | None = None) -> list[cri.PodSandbox]:
        self._check("ListPodSandbox")
        return [cri.PodSandbox(id=sb.id, metadata=sb.config.metadata, state=sb.state, created_at=sb.created_at,
                               labels=sb.config.labels, annotations=sb.config.annotations)
                for sb in self.sandboxes.values() if self._match(sb.config.labels, labels)]

    async def create_container(self, sandbox_id: str, config: cri.ContainerConfig,
                               sandbox_config: cri.PodSandboxConfig) -> str:
        self._check("CreateContainer")
        sb = self.sandboxes.get(sandbox_id)
        if sb is None or sb.state != cri.SANDBOX_READY:
            raise CriError(f"sandbox {sandbox_id} is not ready")
        image = self._norm(config.image.image)
        if image not in self.images:
            raise CriError(f'failed to create containerd container: image "{image}": not found')
        cid = self._new_id()
        c = _Container(cid, sandbox_id, cri.ContainerConfig(), "sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, image).hex,
                       f"{sb.config.log_directory}/{config.log_path}")
        if self.keep_configs:
            c.config.CopyFrom(config)
        else:
            c.config.metadata.CopyFrom(config.metadata)
            c.config.image.CopyFrom(config.image)
            c.config.labels.update(config.labels)
            c.config.annotations.update(config.annotations)
        self.containers[cid] = c
        return cid

    def _container(self, container_id: str) -> _Container:
        c = self.containers.get(container_id)
        if c is None:
            raise NotFound(f"container {container_id} not found", code=grpc.StatusCode.NOT_FOUND)
        return c

    async def start_container(self, container_id: str) -> None:
        self._check("StartContainer")
        c = self._container(container_id)
        if c.state != cri.CONTAINER_CREATED:
            raise CriError(f"container {container_id} is not in created state")
        await self._slow("StartContainer")
        if c.state != cri.CONTAINER_CREATED:  # removed or stopped while starting
            raise CriError(f"container {container_id} is not in created state")
        c.state, c.started_at = cri.CONTAINER_RUNNING, _now_ns()

    async def stop_container(self, container_id: str, timeout: int) -> None:
        self._check("StopContainer")
        c = self._container(container_id)
        if c.state == cri.CONTAINER_RUNNING:
            c.state, c.exit_code, c.reason, c.finished_at = cri.CONTAINER_EXITED, 0, "Completed", _now_ns()

    async def remove_container(self, container_id: str) -> None:
        self._check("RemoveContainer")
        self.containers.pop(container_id, None)

    async def list_containers(self, *, labels: Mapping[str, str] | None = None) -> list[cri.Container]:
        self._check("ListContainers")
        return [cri.Container(id=c.id, pod_sandbox_id=c.sandbox_id, metadata=c.config.metadata,
                              image=c.config.image, image_ref=c.image_ref, state=c.state, created_at=c.created_at,
                              labels=c.config.labels, annotations=c.config.annotations)
                for c in self.containers.values() if self._match(c.config.labels, labels)]

    async def container_status(self, container_id: str) -> cri.ContainerStatus:
        self._check("ContainerStatus")
        c = self._container(container_id)
        return cri.ContainerStatus(id=c.id, metadata=c.config.metadata, state=c.state, created_at=c.created_at,
                                   started_at=c.started_at, finished_at=c.finished_at, exit_code=c.exit_code,
                                   image=c.config.image, image_ref=c.image_ref, reason=c.reason,
                                   labels=c.config.labels, annotations=c.config.annotations, log_path=c.log_path)

    def _container_stats(self, c: _Container, now: int) -> cri.ContainerStats:
        # A running container uses FAKE_CPU_CORES and FAKE_MEMORY from its start: figures that
        # move with time, so a consumer's rates have something to measure.
        running = c.state == cri.CONTAINER_RUNNING and c.started_at
        cpu_ns = int((now - c.started_at) * self.fake_cpu_cores) if running else 0
        return cri.ContainerStats(
            attributes=cri.ContainerAttributes(id=c.id, metadata=c.config.metadata, labels=c.config.labels,
                                               annotations=c.config.annotations),
            cpu=cri.CpuUsage(timestamp=now, usage_core_nano_seconds=cri.UInt64Value(value=cpu_ns)),
            memory=cri.MemoryUsage(timestamp=now, working_set_bytes=cri.UInt64Value(
                value=self.fake_memory if running else 0)))

    async def list_container_stats(self) -> list[cri.ContainerStats]:
        self._check("ListContainerStats")
        now = _now_ns()
        return [self._container_stats(c, now) for c in self.containers.values()]

    async def list_pod_sandbox_stats(self) -> list[cri.PodSandboxStats]:
        self._check("ListPodSandboxStats")
        now = _now_ns()
        out = []
        for sb in self.sandboxes.values():
            containers = [self._container_stats(c, now) for c in self.containers.values() if c.sandbox_id == sb.id]
            linux = cri.LinuxPodSandboxStats(
                cpu=cri.CpuUsage(timestamp=now, usage_core_nano_seconds=cri.UInt64Value(
                    value=sum(c.cpu.usage_core_nano_seconds.value for c in containers))),
                memory=cri.MemoryUsage(timestamp=now, working_set_bytes=cri.UInt64Value(
                    value=sum(c.memory.working_set_bytes.value for c in containers))),
                containers=containers)
            out.append(cri.PodSandboxStats(attributes=cri.PodSandboxAttributes(
                id=sb.id, metadata=sb.config.metadata, labels=sb.config.labels), linux=linux))
        return out
    async def reopen_container_log(self, container_id: str) -> None:
        self._check("ReopenContainerLog")
        c = self._container(container_id)
        if c.state != cri.CONTAINER_RUNNING:
            raise CriError(f"container {container_id} is not running")
        if c.log_path and os.path.isdir(os.path.dirname(c.log_path)):
            open(c.log_path, "a").close()  # as containerd: the path is opened (created) afresh

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: int) -> cri.ExecSyncResponse:
        self._check("ExecSync")
        c = self._container(container_id)
        if c.state != cri.CONTAINER_RUNNING:
            raise CriError(f"container {container_id} is not running")
        code, out, err = self.exec_handler(container_id, list(cmd))
        return cri.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

    # No streaming server in memory: interactive exec, attach and port-forward need a real runtime.
    async def exec(self, request: cri.ExecRequest) -> str:
        self._check("Exec")
        raise CriError("the fake runtime has no streaming server (exec with stdin or a tty)",
                       code=grpc.StatusCode.UNIMPLEMENTED)

    async def attach(self, request: cri.AttachRequest) -> str:
        self._check("Attach")
        raise CriError("the fake runtime has no streaming server (attach)", code=grpc.StatusCode.UNIMPLEMENTED)

    async def port_forward(self, sandbox_id: str, ports: list[int]) -> str:
        self._check("PortForward")
        raise CriError("the fake runtime has no streaming server (port-forward)",
                       code=grpc.StatusCode.UNIMPLEMENTED)

    async def image_status(self, image: str) -> cri.Image | None:
        self._check("ImageStatus")
        ref = self._norm(image)
        if ref not in self.images:
            return None
        return cri.Image(id="sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, ref).hex, repo_tags=[ref], size=1)

    async def pull_image(self, image: str, *, sandbox_config: cri.PodSandboxConfig | None = None,
                         auth: cri.AuthConfig | None = None) -> str:
        self._check("PullImage")
        ref = self._norm(image)
        self.pull_auths[ref] = auth
        if not self.pullable(ref):
            raise CriError(f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": '
                           "dial tcp: lookup registry: no such host")
        self.images.add(ref)
        return "sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, ref).hex

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------- gRPC server around a FakeRuntime


def _abort_code(exc: CriError) -> grpc.StatusCode:
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, RuntimeUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    return exc.code  # UNKNOWN unless said otherwise (DEADLINE_EXCEEDED)


class _RuntimeServicer(cri_grpc.RuntimeServiceServicer):
    def __init__(self, fake: FakeRuntime) -> None:
        self.fake = fake

    async def _do(self, context: grpc.aio.ServicerContext, coro):  # type: ignore[no-untyped-def]
        try:
            return await coro
        except CriError as exc:
            await context.abort(_abort_code(exc), str(exc))

    async def Version(self, request, context):  # type: ignore[no-untyped-def]
        return await self._do(context, self.fake.version())

    async def Status(self, request, context):  # type: ignore[no-untyped-def]
        return await self._do(context, self.fake.status())

    async def RunPodSandbox(self, request, context):  # type: ignore[no-untyped-def]
        sid = await self._do(context, self.fake.run_pod_sandbox(request.config))
        return cri.RunPodSandboxResponse(pod_sandbox_id=sid)

    async def StopPodSandbox(self, request, context):  # type: ignore[no-untyped-def]
        await self._do(context, self.fake.stop_pod_sandbox(request.pod_sandbox_id))
        return cri.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request, context):  # type: ignore[no-untyped-def]
        await self._do(context, self.fake.remove_pod_sandbox(request.pod_sandbox_id))
        return cri.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request, context):  # type: ignore[no-untyped-def]
        st = await self._do(context, self.fake.pod_sandbox_status(request.pod_sandbox_id))
        return cri.PodSandboxStatusResponse(status=st)

    async def ListPodSandbox(self, request, context):  # type: ignore[no-untyped-def]
        items = await self._do(context, self.fake.list_pod_sandbox(labels=dict(request.filter.label_selector)))
        if request.filter.id:
            items = [i for i in items if i.id == request.filter.id]
        return cri.ListPodSandboxResponse(items=items)

    async def CreateContainer(self, request, context):  # type: ignore[no-untyped-def]
        cid = await self._do(context, self.fake.create_container(request.pod_sandbox_id, request.config,
                                                                 request.sandbox_config))
        return cri.CreateContainerResponse(container_id=cid)

    async def StartContainer(self, request, context):  # type: ignore[no-untyped-def]
        await self._do(context, self.fake.start_container(request.container_id))
        return cri.StartContainerResponse()

    async def StopContainer(self, request, context):  # type: ignore[no-untyped-def]
        await self._do(context, self.fake.stop_container(request.container_id, request.timeout))
        return cri.StopContainerResponse()

    async def RemoveContainer(self, request, context):  # type: ignore[no-untyped-def]
        await self._do(context, self.fake.remove_container(request.container_id))
        return cri.RemoveContainerResponse()

    async def ListContainers(self, request, context):  # type: ignore[no-untyped-def]
        items = await self._do(context, self.fake.list_containers(labels=dict(request.filter.label_selector)))
        return cri.ListContainersResponse(containers=items)

    async def ContainerStatus(self, request, context):  # type: ignore[no-untyped-def]
        st = await self._do(context, self.fake.container_status(request.container_id))
        return cri.ContainerStatusResponse(status=st)

    async def ReopenContainerLog(self, request, context):  # type: ignore[no-untyped-def]
        await self._do(context, self.fake.reopen_container_log(request.container_id))
        return cri.ReopenContainerLogResponse()

    async def ExecSync(self, request, context):  # type: ignore[no-untyped-def]
        return await self._do(context, self.fake.exec_sync(request.container_id, list(request.cmd), request.timeout))

    async def ListContainerStats(self, request, context):  # type: ignore[no-untyped-def]
        return cri.ListContainerStatsResponse(stats=await self._do(context, self.fake.list_container_stats()))

    async def ListPodSandboxStats(self, request, context):  # type: ignore[no-untyped-def]
        return cri.ListPodSandboxStatsResponse(stats=await self._do(context, self.fake.list_pod_sandbox_stats()))


class _ImageServicer(cri_grpc.ImageServiceServicer):
    def __init__(self, fake: FakeRuntime) -> None:
        self.fake = fake

    async def ImageStatus(self, request, context):  # type: ignore[no-untyped-def]
        image = await self.fake.image_status(request.image.image)
        return cri.ImageStatusResponse(image=image) if image is not None else cri.ImageStatusResponse()

    async def PullImage(self, request, context):  # type: ignore[no-untyped-def]
        try:
            ref = await self.fake.pull_image(request.image.image)
        except CriError as exc:
            await context.abort(grpc.StatusCode.UNKNOWN, str(exc))
        return cri.PullImageResponse(image_ref=ref)

    async def ListImages(self, request, context):  # type: ignore[no-untyped-def]
        return cri.ListImagesResponse(images=[cri.Image(id=i, repo_tags=[i]) for i in sorted(self.fake.images)])


async def serve(fake: FakeRuntime, listen: str) -> grpc.aio.Server:
    """Serve `fake` as CRI runtime.v1 on `listen` (e.g. unix:///tmp/fake.sock); returns the started server."""
    server = grpc.aio.server()
    cri_grpc.add_RuntimeServiceServicer_to_server(_RuntimeServicer(fake), server)
    cri_grpc.add_ImageServiceServicer_to_server(_ImageServicer(fake), server)
    server.add_insecure_port(listen)
    await server.start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nodeagent.fakecri", description="An in-memory fake CRI server.")
    parser.add_argument("--listen", required=True, help="e.g. unix:///tmp/fake-cri.sock")
    parser.add_argument("--pod-cidr", default="10.88.0.0/16")
    parser.add_argument("--image", action="append", default=[], help="an image the fake already has (repeatable)")
    parser.add_argument("--start-latency", type=float, default=0.0, help="seconds RunPodSandbox/StartContainer take")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of sandbox/container calls that fail")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    async def run() -> None:
        from skiff import images

        fake = FakeRuntime(pod_cidr=args.pod_cidr, images={images.normalize_ref(i) for i in args.image},
                           faults=Faults(start_latency=args.start_latency, fail_rate=args.fail_rate, seed=args.seed),
                           record_calls=False)
        server = await serve(fake, args.listen)
        await server.wait_for_termination()

    asyncio.run(run())


if __name__ == "__main__":
    main()
