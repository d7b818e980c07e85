"""The node agent's gRPC service (the kubelet's port): container logs and exec for the api-server.

ContainerLogs streams a container's log file (decoded from the CRI log format) in chunks, never
reading it whole (`logs.stream`), optionally only the last `tail_lines`, the previous instance's
(`previous`), and following new output while the container runs, across rotations. Exec
runs a command through CRI ExecSync. Summary answers the node's and its pods' resource usage
(nodeagent/stats.py). Pods are found in the agent's own pod cache (only pods bound to this
node); errors are Skiff errors with gRPC codes.

With TLS (the default) the service requires a client certificate from the cluster CA and
serves only the api-server's kubelet-client identity (skiff.identity.APISERVER_CLIENT):
anyone else, a node's own credentials included, is refused with PERMISSION_DENIED before the
request is looked at. `--insecure` serves everyone (development only).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import grpc

from nodeagent import logs
from nodeagent.agent import NodeAgent
from nodeagent.cri import LABEL_CONTAINER_NAME, LABEL_POD_UID, CriError
from nodeagent.podconfig import container_log_path, pod_log_dir
from skiff import errors, identity, tls
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import metrics_pb2
from skiffpb.api.v1 import nodeagent_pb2_grpc as na_grpc
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

CHUNK = 32 * 1024


# The only callers a node agent serves (kube-apiserver's kubelet client).
ALLOWED_USERS = frozenset({identity.APISERVER_CLIENT})


def check_caller(user: identity.UserInfo | None) -> None:
    """Refuse everyone but the api-server's kubelet-client identity."""
    if user is None:
        raise errors.UnauthenticatedError("a client certificate is required")
    if user.name not in ALLOWED_USERS:
        raise errors.ForbiddenError(f'user "{user.name}" may not use the node agent\'s logs or exec '
                                    f"(only {', '.join(sorted(ALLOWED_USERS))})")


class NodeAgentService(na_grpc.NodeAgentServicer):
    def __init__(self, agent: NodeAgent, *, secure: bool = True) -> None:
        self.agent = agent
        self.secure = secure

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if self.secure:
            check_caller(tls.peer_certificate_user(context.auth_context()))  # type: ignore[arg-type]

    def _pod_and_container(self, namespace: str, name: str, container: str) -> tuple[t.Pod, t.Container]:
        pod = self.agent.find_pod(namespace, name)
        if pod is None:
            raise errors.NotFoundError(f'pod "{name}" not found on node {self.agent.config.node_name}')
        if not container:
            if len(pod.spec.containers) != 1:
                names = " ".join(c.name for c in pod.spec.containers)
                raise errors.InvalidError(f"a container name must be specified for pod {name}, choose one of: "
                                          f"[{names}]")
            return pod, pod.spec.containers[0]
        for c in (*pod.spec.containers, *pod.spec.init_containers):  # logs of init containers too, as kubectl -c
            if c.name == container:
                return pod, c
        raise errors.InvalidError(f"container {container} is not valid for pod {name}")

    async def _instances(self, pod: t.Pod, container: str) -> list[cri.Container]:
        items = await self.agent.runtime.list_containers(labels={LABEL_POD_UID: pod.metadata.uid,
                                                                 LABEL_CONTAINER_NAME: container})
        return sorted(items, key=lambda c: (c.metadata.attempt, c.created_at))

    async def _logs(self, request: api.LogsRequest) -> AsyncIterator[api.LogChunk]:
        pod, spec = self._pod_and_container(request.namespace, request.pod, request.container)
        instances = await self._instances(pod, spec.name)
        if not instances:
            raise errors.InvalidError(f'container "{spec.name}" in pod "{pod.metadata.name}" is waiting to start')
        latest = instances[-1]
        attempt = latest.metadata.attempt
        if request.previous:
            if attempt == 0:
                raise errors.InvalidError(f'previous terminated container "{spec.name}" in pod '
                                          f'"{pod.metadata.name}" not found')
            attempt -= 1
        base = pod_log_dir(self.agent.config.pod_log_dir, pod.metadata.namespace, pod.metadata.name,
                           pod.metadata.uid)
        path = os.path.join(base, container_log_path(spec.name, attempt))
        cid = latest.id

        async def still_running() -> bool:
            try:
                st = await self.agent.runtime.container_status(cid)
            except CriError:
                return False
            return bool(st.state == cri.CONTAINER_RUNNING)

        async for data in logs.stream(path, tail_lines=int(request.tail_lines),
                                      follow=request.follow and not request.previous, still_running=still_running):
            for i in range(0, len(data), CHUNK):
                yield api.LogChunk(data=data[i:i + CHUNK])

    async def ContainerLogs(self, request: api.LogsRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[api.LogChunk]:
        try:
            self._authorize(context)
            async for chunk in self._logs(request):
                yield chunk
        except errors.SkiffError as exc:
            await context.abort(exc.code, exc.message)
        except CriError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def Exec(self, request: api.ExecRequest, context: grpc.aio.ServicerContext) -> api.ExecResponse:
        try:
            self._authorize(context)
            pod, spec = self._pod_and_container(request.namespace, request.pod, request.container)
            instances = [c for c in await self._instances(pod, spec.name) if c.state == cri.CONTAINER_RUNNING]
            if not instances:
                raise errors.FailedPreconditionError(f'container "{spec.name}" in pod "{pod.metadata.name}" is '
                                                     "not running")
            if not request.command:
                raise errors.InvalidError("command: at least one argument is required")
            resp = await self.agent.runtime.exec_sync(instances[-1].id, list(request.command),
                                                      int(request.timeout_seconds))
            return api.ExecResponse(stdout=resp.stdout, stderr=resp.stderr, exit_code=resp.exit_code)
        except errors.SkiffError as exc:
            await context.abort(exc.code, exc.message)
        except CriError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE if exc.code == grpc.StatusCode.UNAVAILABLE
                                else grpc.StatusCode.INTERNAL, str(exc))
        raise AssertionError("unreachable")

    async def Summary(self, request: metrics_pb2.SummaryRequest,
                      context: grpc.aio.ServicerContext) -> metrics_pb2.UsageSummary:
        """The node's and its pods' usage over the last two samples (nodeagent/stats.py)."""
        try:
            self._authorize(context)
        except errors.SkiffError as exc:
            await context.abort(exc.code, exc.message)
        return self.agent.sampler.summary()


async def start_server(agent: NodeAgent, listen: str, server_tls: tls.ServerTLS | None = None,
                       ) -> tuple[grpc.aio.Server, int]:
    """Serve the NodeAgent service on `listen` ("127.0.0.1:0" picks a port); returns (server, port).
    `server_tls` None: plaintext, everyone served (--insecure)."""
    server = grpc.aio.server()
    na_grpc.add_NodeAgentServicer_to_server(NodeAgentService(agent, secure=server_tls is not None), server)
    port = (server.add_insecure_port(listen) if server_tls is None
            else server.add_secure_port(listen, server_tls.server_credentials()))
    if port == 0 and not listen.startswith("unix:"):
        raise OSError(f"--listen {listen}: cannot bind")
    await server.start()
    return server, port


__all__ = ["NodeAgentService", "start_server"]
