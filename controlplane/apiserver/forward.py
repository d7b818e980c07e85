"""Forwarding `logs` and `exec` to the node agent that runs the pod (as kube-apiserver does
to the kubelet), and asking a node agent for its usage summary (metrics.k8s.io). Interactive
sessions (exec with stdin or a tty, attach, port-forward) are the node agent's Stream call:
`Forwarder.stream` opens it and hands back a `Session` to pump both ways.

The target is the pod's node: its InternalIP (else the first address) and the port it
publishes in status.daemonEndpoints.kubeletEndpoint. Every failure is a clear error naming
the pod, the node and the address: not scheduled yet, container unknown or not started,
node unknown, node agent unreachable. Node problems are FAILED_PRECONDITION, not
UNAVAILABLE: clients retry UNAVAILABLE on another api-server, which would reach the same
node (and an exec must not run twice).

With TLS the api-server presents its kubelet-client certificate and requires the agent's
certificate to carry the node's name (gRPC's target name override), so a Node whose status
points at another machine cannot receive the api-server's exec and logs requests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

import grpc
import grpc.aio
from google.protobuf.message import Message

from skiff import errors
from skiff.client import open_channel
from skiff.tls import Credentials
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import metrics_pb2, nodeagent_pb2_grpc
from skiffpb.api.v1 import nodeagent_pb2 as na
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.apiserver.forward")

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
CONNECT_TIMEOUT = 5.0


class Getter(Protocol):
    async def get(self, resource: str, namespace: str, name: str) -> Message: ...


def pick_container(pod: t.Pod, container: str) -> str:
    names = [c.name for c in pod.spec.containers]
    if not container:
        if len(names) == 1:
            return names[0]
        raise errors.InvalidError(f"a container name must be specified for pod {pod.metadata.name}, "
                                  f"choose one of: [{' '.join(names)}]")
    if container not in names:
        raise errors.InvalidError(f'container "{container}" is not valid for pod "{pod.metadata.name}" '
                                  f"(containers: {', '.join(names)})")
    return container


def node_target(node: t.Node) -> str:
    """`address:port` of a node's agent; FailedPreconditionError when the node publishes none."""
    addresses = {a.type: a.address for a in reversed(node.status.addresses)}
    address = addresses.get("InternalIP") or next(iter(addresses.values()), "")
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    if not address or not port:
        raise errors.FailedPreconditionError(f'node "{node.metadata.name}" publishes no node agent address '
                                      "(status.addresses InternalIP and status.daemonEndpoints.kubeletEndpoint.port)")
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}"


def check_started(pod: t.Pod, container: str, *, previous: bool = False) -> None:
    if previous:
        return
    for status in pod.status.container_statuses:
        if status.name == container and status.state.HasField("waiting"):
            reason = status.state.waiting.reason or "waiting"
            raise errors.FailedPreconditionError(
                f'container "{container}" in pod "{pod.metadata.name}" is waiting to start: {reason}')


class Forwarder:
    """`credentials`: the api-server's client identity towards node agents; each agent's
    certificate must then name its node (checked as the TLS server name), whatever address
    the Node's status claims. None: plaintext (--insecure)."""

    def __init__(self, registry: Getter, *, credentials: Credentials | None = None) -> None:
        self.registry = registry
        self.credentials = credentials
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}

    async def _resolve(self, namespace: str, pod_name: str, container: str,
                       *, previous: bool = False) -> tuple[str, str, str]:
        """(node agent address, node name, container name)."""
        pod = await self.registry.get("pods", namespace, pod_name)
        assert isinstance(pod, t.Pod)
        chosen = pick_container(pod, container)
        if not pod.spec.node_name:
            raise errors.FailedPreconditionError(f'pod "{pod_name}" is not scheduled to a node yet')
        check_started(pod, chosen, previous=previous)
        target, node = await self._node_of(pod)
        return target, node, chosen

    async def _node_of(self, pod: t.Pod) -> tuple[str, str]:
        """(node agent address, node name) of a scheduled pod."""
        pod_name = pod.metadata.name
        if not pod.spec.node_name:
            raise errors.FailedPreconditionError(f'pod "{pod_name}" is not scheduled to a node yet')
        try:
            node = await self.registry.get("nodes", "", pod.spec.node_name)
        except errors.NotFoundError:
            raise errors.FailedPreconditionError(f'node "{pod.spec.node_name}" of pod "{pod_name}" is not registered') \
                from None
        assert isinstance(node, t.Node)
        return node_target(node), node.metadata.name

    def _stub(self, target: str, node: str) -> nodeagent_pb2_grpc.NodeAgentStub:
        channel = self._channels.get((target, node))
        if channel is None:
            creds = self.credentials.with_server_name(node) if self.credentials is not None else None
            channel = self._channels[(target, node)] = open_channel(target, creds, options=CHANNEL_OPTIONS)
        return nodeagent_pb2_grpc.NodeAgentStub(channel)

    @staticmethod
    def _error(exc: grpc.aio.AioRpcError, node: str, target: str) -> errors.SkiffError:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            out: errors.SkiffError = errors.FailedPreconditionError(
                f'cannot reach the node agent of node "{node}" at {target}: {exc.details()}')
        else:
            out = errors.from_grpc(exc)
        return out

    async def logs(self, request: api.LogsRequest) -> AsyncIterator[api.LogChunk]:
        target, node, container = await self._resolve(request.namespace or "default", request.pod,
                                                      request.container, previous=request.previous)
        forwarded = api.LogsRequest()
        forwarded.CopyFrom(request)
        forwarded.namespace = request.namespace or "default"
        forwarded.container = container
        call = self._stub(target, node).ContainerLogs(forwarded, wait_for_ready=False)
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, node, target) from exc
        finally:
            call.cancel()

    async def exec(self, request: api.ExecRequest) -> api.ExecResponse:
        if not request.command:
            raise errors.InvalidError("command: required: what to run in the container")
        target, node, container = await self._resolve(request.namespace or "default", request.pod,
                                                      request.container)
        forwarded = api.ExecRequest()
        forwarded.CopyFrom(request)
        forwarded.namespace = request.namespace or "default"
        forwarded.container = container
        timeout = request.timeout_seconds + CONNECT_TIMEOUT if request.timeout_seconds > 0 else None
        try:
            response: api.ExecResponse = await self._stub(target, node).Exec(forwarded, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, node, target) from exc
        return response

    async def stream(self, open_: na.StreamOpen) -> Session:
        """The node agent's Stream for `open_` (exec, attach or portforward), open: its container
        is chosen here (the pod's only one when none is named), and every refusal (here or the
        node agent's, before the runtime's session is open) is raised before this returns."""
        opened = na.StreamOpen()
        opened.CopyFrom(open_)
        opened.namespace = open_.namespace or "default"
        if open_.kind == "portforward":
            pod = await self.registry.get("pods", opened.namespace, open_.pod)
            assert isinstance(pod, t.Pod)
            if pod.status.phase not in ("", "Pending", "Running"):
                raise errors.FailedPreconditionError(f'cannot forward ports to pod "{open_.pod}": it is '
                                                     f"{pod.status.phase}")
            target, node = await self._node_of(pod)
        else:
            target, node, opened.container = await self._resolve(opened.namespace, open_.pod, open_.container)
        call = self._stub(target, node).Stream(wait_for_ready=False)
        session = Session(call, node=node, target=target)
        try:
            await session.write(na.StreamFrame(open=opened))
            first = await session.read()
        except BaseException:
            session.cancel()
            raise
        if first is None or not first.opened:
            session.cancel()
            raise errors.FailedPreconditionError(f'the node agent of node "{node}" ended the {open_.kind} session '
                                                 "before it was open")
        return session

    async def summary(self, node: t.Node) -> metrics_pb2.UsageSummary:
        """The node agent's usage summary (metrics.k8s.io, controlplane/apiserver/resourcemetrics.py)."""
        target = node_target(node)
        try:
            response: metrics_pb2.UsageSummary = await self._stub(target, node.metadata.name).Summary(
                metrics_pb2.SummaryRequest(), timeout=CONNECT_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, node.metadata.name, target) from exc
        return response

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()


class Session:
    """One open Stream to a node agent: `write` frames towards the runtime, `read` what comes
    back (None at the end); the agent's failures surface as Skiff errors naming the node."""

    def __init__(self, call: grpc.aio.StreamStreamCall, *, node: str, target: str) -> None:
        self.call = call
        self.node = node
        self.target = target

    async def write(self, frame: na.StreamFrame) -> None:
        if self.call.done():
            return  # the node agent ended the session: what kubectl still sends has nowhere to go
        try:
            await self.call.write(frame)
        except grpc.aio.AioRpcError as exc:
            raise Forwarder._error(exc, self.node, self.target) from exc

    async def done_writing(self) -> None:
        try:
            await self.call.done_writing()
        except grpc.aio.AioRpcError as exc:
            raise Forwarder._error(exc, self.node, self.target) from exc

    async def read(self) -> na.StreamFrame | None:
        try:
            frame = await self.call.read()
        except grpc.aio.AioRpcError as exc:
            raise Forwarder._error(exc, self.node, self.target) from exc
        if frame is grpc.aio.EOF:  # type: ignore[attr-defined]
            return None
        assert isinstance(frame, na.StreamFrame)
        return frame

    def cancel(self) -> None:
        self.call.cancel()
