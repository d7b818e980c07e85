"""The container runtime as the node agent sees it: a small Protocol over CRI runtime.v1.

`Runtime` is what pod workers, the relister and the logs/exec service call. Two
implementations: `GrpcRuntime` speaks CRI over containerd's unix socket (grpc.aio), and
nodeagent.fakecri.FakeRuntime keeps everything in memory (unit tests, many simulated nodes).
Messages are the CRI messages themselves (skiffpb.cri.v1), so nothing is translated twice.

Errors: every failure surfaces as CriError; `RuntimeUnavailable` (a subclass) means the
runtime cannot be reached at all (containerd down), which the agent reports on its Node.
`NameReserved` means the runtime is still working on (or cleaning up) an earlier call for the
same sandbox or container name (containerd's "name ... is reserved for ..."): typically a
RunPodSandbox whose caller's deadline passed while containerd went on creating.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

import grpc

from nodeagent import metrics
from skiffpb.cri.v1 import api_pb2 as cri
from skiffpb.cri.v1 import api_pb2_grpc as cri_grpc

# Labels put on every sandbox and container (the kubelet's names, so crictl shows them).
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_MANAGED = "skiff.io/managed"

DEFAULT_TIMEOUT = 120.0


class CriError(Exception):
    def __init__(self, message: str, *, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(message)
        self.code = code


class RuntimeUnavailable(CriError):
    """The runtime's socket does not answer (containerd is down or restarting)."""


class NotFound(CriError):
    pass


class NameReserved(CriError):
    """The name (sandbox: name_namespace_uid_attempt) is taken by a creation still under way or
    not yet cleaned up; asking again succeeds only once the runtime has finished with it."""


# containerd's CRI: `failed to reserve sandbox name "...": name "..." is reserved for "<id>"`.
_RESERVED = "is reserved for"


class Runtime(Protocol):
    async def version(self) -> cri.VersionResponse: ...
    async def status(self) -> cri.StatusResponse: ...
    async def run_pod_sandbox(self, config: cri.PodSandboxConfig) -> str: ...
    async def stop_pod_sandbox(self, sandbox_id: str) -> None: ...
    async def remove_pod_sandbox(self, sandbox_id: str) -> None: ...
    async def pod_sandbox_status(self, sandbox_id: str) -> cri.PodSandboxStatus: ...
    async def list_pod_sandbox(self, *, labels: Mapping[str, str] | None = None) -> list[cri.PodSandbox]: ...
    async def create_container(self, sandbox_id: str, config: cri.ContainerConfig,
                               sandbox_config: cri.PodSandboxConfig) -> str: ...
    async def start_container(self, container_id: str) -> None: ...
    async def stop_container(self, container_id: str, timeout: int) -> None: ...
    async def remove_container(self, container_id: str) -> None: ...
    async def list_containers(self, *, labels: Mapping[str, str] | None = None) -> list[cri.Container]: ...
    async def container_status(self, container_id: str) -> cri.ContainerStatus: ...
    async def exec_sync(self, container_id: str, cmd: list[str], timeout: int) -> cri.ExecSyncResponse: ...
    # The streaming calls answer a URL of the runtime's streaming server (nodeagent/streaming.py).
    async def exec(self, request: cri.ExecRequest) -> str: ...
    async def attach(self, request: cri.AttachRequest) -> str: ...
    async def port_forward(self, sandbox_id: str, ports: list[int]) -> str: ...
    async def list_container_stats(self) -> list[cri.ContainerStats]: ...
    async def list_pod_sandbox_stats(self) -> list[cri.PodSandboxStats]: ...
    async def reopen_container_log(self, container_id: str) -> None: ...
    async def image_status(self, image: str) -> cri.Image | None: ...
    async def pull_image(self, image: str, *, sandbox_config: cri.PodSandboxConfig | None = None,
                         auth: cri.AuthConfig | None = None) -> str: ...
    async def close(self) -> None: ...


def _error(exc: grpc.aio.AioRpcError, what: str) -> CriError:
    code = exc.code()
    msg = f"{what}: {exc.details()}"
    if code == grpc.StatusCode.UNAVAILABLE:
        return RuntimeUnavailable(msg, code=code)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(msg, code=code)
    if _RESERVED in (exc.details() or ""):
        return NameReserved(msg, code=code)
    return CriError(msg, code=code)


def name_reserved_message(name: str, holder: str) -> str:
    """containerd's words for a name conflict (the fake runtime answers the same)."""
    return f'failed to reserve sandbox name "{name}": name "{name}" {_RESERVED} "{holder}"'


def sandbox_name(meta: cri.PodSandboxMetadata) -> str:
    """The name a runtime reserves for a sandbox (containerd's makeSandboxName): one per attempt."""
    return "_".join((meta.name, meta.namespace, meta.uid, str(meta.attempt)))


class GrpcRuntime:
    """CRI over gRPC, e.g. `unix:///run/containerd/containerd.sock`."""

    def __init__(self, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not endpoint.startswith(("unix://", "unix:")) and "://" in endpoint:
            raise ValueError(f"--container-runtime-endpoint {endpoint!r}: expected unix:///path/to/socket")
        self.endpoint = endpoint if endpoint.startswith("unix:") else f"unix://{endpoint}"
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(self.endpoint, options=[
            ("grpc.max_receive_message_length", 64 << 20),
            # Reconnect quickly once containerd is back.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ])
        self._rt = cri_grpc.RuntimeServiceStub(self._channel)
        self._img = cri_grpc.ImageServiceStub(self._channel)

    async def _call(self, stub: object, method: str, request: object, *, what: str, timeout: float | None = None):  # type: ignore[no-untyped-def]
        operations, duration, failures = metrics.runtime_children(method)
        operations.inc()
        started = time.perf_counter()
        try:
            return await getattr(stub, method)(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            failures.inc()
            raise _error(exc, what) from exc
        finally:
            duration.observe(time.perf_counter() - started)

    async def version(self) -> cri.VersionResponse:
        resp: cri.VersionResponse = await self._call(self._rt, "Version", cri.VersionRequest(version="v1"),
                                                     what="Version", timeout=5)
        return resp

    async def status(self) -> cri.StatusResponse:
        resp: cri.StatusResponse = await self._call(self._rt, "Status", cri.StatusRequest(), what="Status",
                                                    timeout=5)
        return resp

    async def run_pod_sandbox(self, config: cri.PodSandboxConfig) -> str:
        resp = await self._call(self._rt, "RunPodSandbox", cri.RunPodSandboxRequest(config=config),
                                what="RunPodSandbox")
        return str(resp.pod_sandbox_id)

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call(self._rt, "StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id),
                         what=f"StopPodSandbox {sandbox_id[:12]}")

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call(self._rt, "RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                         what=f"RemovePodSandbox {sandbox_id[:12]}")

    async def pod_sandbox_status(self, sandbox_id: str) -> cri.PodSandboxStatus:
        resp = await self._call(self._rt, "PodSandboxStatus", cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
                                what=f"PodSandboxStatus {sandbox_id[:12]}", timeout=10)
        status: cri.PodSandboxStatus = resp.status
        return status

    async def list_pod_sandbox(self, *, labels: Mapping[str, str] | None = None) -> list[cri.PodSandbox]:
        req = cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector=dict(labels or {})))
        resp = await self._call(self._rt, "ListPodSandbox", req, what="ListPodSandbox", timeout=10)
        return list(resp.items)

    async def create_container(self, sandbox_id: str, config: cri.ContainerConfig,
                               sandbox_config: cri.PodSandboxConfig) -> str:
        req = cri.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config)
        resp = await self._call(self._rt, "CreateContainer", req, what=f"CreateContainer {config.metadata.name}")
        return str(resp.container_id)

    async def start_container(self, container_id: str) -> None:
        await self._call(self._rt, "StartContainer", cri.StartContainerRequest(container_id=container_id),
                         what=f"StartContainer {container_id[:12]}")

    async def stop_container(self, container_id: str, timeout: int) -> None:
        await self._call(self._rt, "StopContainer", cri.StopContainerRequest(container_id=container_id,
                                                                              timeout=timeout),
                         what=f"StopContainer {container_id[:12]}", timeout=timeout + self.timeout)

    async def remove_container(self, container_id: str) -> None:
        await self._call(self._rt, "RemoveContainer", cri.RemoveContainerRequest(container_id=container_id),
                         what=f"RemoveContainer {container_id[:12]}")

    async def list_containers(self, *, labels: Mapping[str, str] | None = None) -> list[cri.Container]:
        req = cri.ListContainersRequest(filter=cri.ContainerFilter(label_selector=dict(labels or {})))
        resp = await self._call(self._rt, "ListContainers", req, what="ListContainers", timeout=10)
        return list(resp.containers)

    async def container_status(self, container_id: str) -> cri.ContainerStatus:
        resp = await self._call(self._rt, "ContainerStatus", cri.ContainerStatusRequest(container_id=container_id),
                                what=f"ContainerStatus {container_id[:12]}", timeout=10)
        status: cri.ContainerStatus = resp.status
        return status

    async def reopen_container_log(self, container_id: str) -> None:
        """Make the runtime close the container's log file and open its path again (after a rename)."""
        await self._call(self._rt, "ReopenContainerLog", cri.ReopenContainerLogRequest(container_id=container_id),
                         what=f"ReopenContainerLog {container_id[:12]}", timeout=10)

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: int) -> cri.ExecSyncResponse:
        req = cri.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        resp: cri.ExecSyncResponse = await self._call(self._rt, "ExecSync", req, what="ExecSync",
                                                      timeout=(timeout or 60) + 10)
        return resp

    async def exec(self, request: cri.ExecRequest) -> str:
        resp = await self._call(self._rt, "Exec", request, what=f"Exec {request.container_id[:12]}", timeout=10)
        return str(resp.url)

    async def attach(self, request: cri.AttachRequest) -> str:
        resp = await self._call(self._rt, "Attach", request, what=f"Attach {request.container_id[:12]}", timeout=10)
        return str(resp.url)

    async def port_forward(self, sandbox_id: str, ports: list[int]) -> str:
        resp = await self._call(self._rt, "PortForward", cri.PortForwardRequest(pod_sandbox_id=sandbox_id, port=ports),
                                what=f"PortForward {sandbox_id[:12]}", timeout=10)
        return str(resp.url)

    async def list_container_stats(self) -> list[cri.ContainerStats]:
        resp = await self._call(self._rt, "ListContainerStats", cri.ListContainerStatsRequest(),
                                what="ListContainerStats", timeout=10)
        return list(resp.stats)

    async def list_pod_sandbox_stats(self) -> list[cri.PodSandboxStats]:
        resp = await self._call(self._rt, "ListPodSandboxStats", cri.ListPodSandboxStatsRequest(),
                                what="ListPodSandboxStats", timeout=10)
        return list(resp.stats)

    async def image_status(self, image: str) -> cri.Image | None:
        resp = await self._call(self._img, "ImageStatus", cri.ImageStatusRequest(image=cri.ImageSpec(image=image)),
                                what=f"ImageStatus {image}", timeout=10)
        return resp.image if resp.HasField("image") and resp.image.id else None

    async def pull_image(self, image: str, *, sandbox_config: cri.PodSandboxConfig | None = None,
                         auth: cri.AuthConfig | None = None) -> str:
        req = cri.PullImageRequest(image=cri.ImageSpec(image=image))
        if sandbox_config is not None:
            req.sandbox_config.CopyFrom(sandbox_config)
        if auth is not None:
            req.auth.CopyFrom(auth)
        resp = await self._call(self._img, "PullImage", req, what=f"PullImage {image}", timeout=600)
        return str(resp.image_ref)

    async def close(self) -> None:
        await self._channel.close(None)
