"""The node agent's gRPC service (the kubelet's port): container logs and exec for the api-server.

ContainerLogs streams a container's log file (decoded from the CRI log format) in chunks, never
reading it whole (`logs.stream`), optionally only the last `tail_lines`, the previous instance's
(`previous`), and following new output while the container runs, across rotations. Exec
runs a command through CRI ExecSync. Stream carries the interactive sessions (exec with stdin
or a tty, attach, port-forward): CRI Exec/Attach/PortForward give a URL of the runtime's
streaming server, and nodeagent/streaming.py speaks SPDY to it; the api-server's side of the
stream is kubectl's WebSocket channels (or, for port-forward, kubectl's own SPDY bytes).
Summary answers the node's and its pods' resource usage
(nodeagent/stats.py). Pods are found in the agent's own pod cache (only pods bound to this
node); errors are Skiff errors with gRPC codes.

With TLS (the default) the service requires a client certificate from the cluster CA and
serves only the api-server's kubelet-client identity (skiff.identity.APISERVER_CLIENT):
anyone else, a node's own credentials included, is refused with PERMISSION_DENIED before the
request is looked at. `--insecure` serves everyone (development only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import grpc

from nodeagent import logs, streaming
from nodeagent.agent import NodeAgent
from nodeagent.cri import LABEL_CONTAINER_NAME, LABEL_POD_UID, CriError
from nodeagent.podconfig import container_log_path, pod_log_dir
from skiff import errors, identity, tls
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import metrics_pb2
from skiffpb.api.v1 import nodeagent_pb2 as na
from skiffpb.api.v1 import nodeagent_pb2_grpc as na_grpc
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

CHUNK = 32 * 1024
# After the runtime wrote an exec's Status: how long its stdout and stderr may take to finish.
OUTPUT_GRACE = 2.0


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

    async def _running(self, pod: t.Pod, spec: t.Container) -> cri.Container:
        instances = [c for c in await self._instances(pod, spec.name) if c.state == cri.CONTAINER_RUNNING]
        if not instances:
            raise errors.FailedPreconditionError(f'container "{spec.name}" in pod "{pod.metadata.name}" is '
                                                 "not running")
        return instances[-1]

    async def _stream_url(self, open_: na.StreamOpen) -> tuple[str, str]:
        """The runtime's streaming URL for `open_` and the protocol to speak there."""
        if open_.kind == "portforward":
            pod = self.agent.find_pod(open_.namespace, open_.pod)
            if pod is None:
                raise errors.NotFoundError(f'pod "{open_.pod}" not found on node {self.agent.config.node_name}')
            sandboxes = [s for s in await self.agent.runtime.list_pod_sandbox(labels={LABEL_POD_UID: pod.metadata.uid})
                         if s.state == cri.SANDBOX_READY]
            if not sandboxes:
                raise errors.FailedPreconditionError(f'pod "{open_.pod}" has no running sandbox on node '
                                                     f"{self.agent.config.node_name}")
            latest = max(sandboxes, key=lambda s: s.created_at)
            url = await self.agent.runtime.port_forward(latest.id, [int(p) for p in open_.ports])
            return url, streaming.PORTFORWARD_PROTOCOL
        if open_.kind not in ("exec", "attach"):
            raise errors.InvalidError(f"stream kind {open_.kind!r}: expected exec, attach or portforward")
        pod, spec = self._pod_and_container(open_.namespace, open_.pod, open_.container)
        container = await self._running(pod, spec)
        stderr = open_.stderr and not open_.tty  # a terminal has no separate stderr
        if open_.kind == "exec":
            if not open_.command:
                raise errors.InvalidError("command: at least one argument is required")
            url = await self.agent.runtime.exec(cri.ExecRequest(
                container_id=container.id, cmd=list(open_.command), tty=open_.tty, stdin=open_.stdin,
                stdout=open_.stdout, stderr=stderr))
        else:
            if open_.stdin and not spec.stdin:
                raise errors.InvalidError(f'container "{spec.name}" in pod "{pod.metadata.name}" was not '
                                          "started with stdin: true, so there is no stdin to attach to")
            url = await self.agent.runtime.attach(cri.AttachRequest(
                container_id=container.id, stdin=open_.stdin, tty=open_.tty and spec.tty, stdout=open_.stdout,
                stderr=stderr))
        return url, streaming.REMOTECOMMAND_PROTOCOL

    async def Stream(self, request_iterator: AsyncIterator[na.StreamFrame],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[na.StreamFrame]:
        try:
            self._authorize(context)
            first = await anext(aiter(request_iterator), None)
            if first is None or not first.HasField("open"):
                raise errors.InvalidError("the first frame of a stream must carry `open`")
            open_ = first.open
            url, protocol = await self._stream_url(open_)
            reader, writer = await streaming.upgrade(url, protocol)
        except errors.SkiffError as exc:
            await context.abort(exc.code, exc.message)
        except CriError as exc:
            passed = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
            await context.abort(exc.code if exc.code in passed else grpc.StatusCode.INTERNAL, str(exc))
        except (streaming.StreamingError, OSError, TimeoutError) as exc:
            await context.abort(grpc.StatusCode.INTERNAL, f"the runtime's streaming server: {exc}")
        yield na.StreamFrame(opened=True)
        session = None if open_.kind == "portforward" else streaming.RemoteCommand(
            stdin=open_.stdin, stdout=open_.stdout, stderr=open_.stderr, tty=open_.tty)

        async def to_runtime() -> None:
            # kubectl -> runtime; when the api-server's side ends (kubectl left), so does the session.
            if session is not None:
                writer.write(session.opening())
            async for frame in request_iterator:
                writer.write(frame.data if session is None else session.from_client(frame.channel, frame.data))
                await writer.drain()
            writer.close()

        pump = asyncio.create_task(to_runtime())
        try:
            while True:
                grace = OUTPUT_GRACE if session is not None and session.status_done else None
                try:
                    data = await asyncio.wait_for(reader.read(CHUNK), grace)
                except TimeoutError:
                    break
                if not data:
                    break
                if session is None:
                    yield na.StreamFrame(data=data)
                    continue
                messages, replies = session.from_runtime(data)
                if replies:
                    writer.write(replies)
                for channel, payload in messages:
                    yield na.StreamFrame(channel=channel, data=payload)
                if session.done:
                    break
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            writer.close()

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
