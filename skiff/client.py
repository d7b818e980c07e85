"""The async client of the Skiff api-server, used by every component and the CLI.

Typed by message class: `await client.get(t.Pod, "web-1", "default") -> t.Pod`. Errors come
back as skiff.errors exceptions. With several endpoints, a call that finds its api-server
unavailable moves on to the next one and retries with backoff until its deadline; a call
refused as too many requests (RESOURCE_EXHAUSTED with the server's `retry-after` hint) waits
at least that hint and retries, within the same deadline; streams (watch, logs) do not resume
by themselves: the informer does that from its resourceVersion.

Namespace convention: for namespaced kinds an empty namespace means "default" in
create/get/update/delete and "all namespaces" in list/watch.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from skiff import errors, kinds
from skiff.retry import Backoff, retry
from skiff.tls import Credentials
from skiff.watchbatch import split_batch
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import apiserver_pb2_grpc as api_grpc
from skiffpb.api.v1 import metrics_pb2
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.client")

M = TypeVar("M", bound=Message)

DEFAULT_NAMESPACE = "default"
# Large enough for the biggest object the api-server accepts (1.5 MiB) and big lists.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    # Keep each stream's receive window at HTTP/2's 64 KiB instead of letting BDP probing grow it
    # (to about 4 MiB measured, docs/apiserver.md): a window that large takes thousands of watch
    # events in ahead of a busy client, so the api-server's writes complete, its lag bound sees
    # nothing, and the client works through minutes of backlog it cannot be told about.
    ("grpc.http2.bdp_probe", 0),
)


# Between api-servers while they are unavailable: 50 ms doubling to 1 s, jittered so that the
# clients of a restarted api-server do not all come back in step.
UNAVAILABLE_BACKOFF = Backoff(initial=0.05, max=1.0, jitter=0.2)


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


def _retry_hint(exc: BaseException) -> float | None:
    """The server's retry-after of a call refused as too many requests (None: not one)."""
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.retry_after(exc)
    return None


def _retryable(exc: BaseException) -> bool:
    return _unavailable(exc) or _retry_hint(exc) is not None


@dataclass
class ObjectList(Generic[M]):
    items: list[M]
    resource_version: str
    continue_token: str = ""


@dataclass(frozen=True)
class WatchEvent(Generic[M]):
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    obj: M


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


class ApiClient(Protocol):
    """What components need from the api-server; Client implements it over gRPC, and
    controlplane.apiserver.inprocess.InProcessApi with the api-server's registry in-process."""

    async def create(self, obj: M, *, namespace: str = "") -> M: ...

    async def get(self, cls: type[M], name: str, namespace: str = "") -> M: ...

    async def list(self, cls: type[M], *, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "") -> ObjectList[M]: ...

    async def update(self, obj: M) -> M: ...

    async def update_status(self, obj: M) -> M: ...

    async def delete(self, cls: type[M], name: str, namespace: str = "", *,
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     preconditions: api.Preconditions | None = None) -> M: ...

    def watch(self, cls: type[M], *, namespace: str = "", label_selector: str = "", field_selector: str = "",
              resource_version: str = "", send_initial_events: bool = False, allow_bookmarks: bool = False,
              timeout_seconds: int = 0) -> AsyncIterator[WatchEvent[M]]: ...

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str = "") -> t.Pod: ...

    async def bind_batch(self, bindings: Sequence[t.Binding]) -> builtins.list[errors.SkiffError | None]:
        """Each binding as `bind` would apply it; per binding None (bound) or the error `bind` raises."""
        ...


def new_binding(namespace: str, pod: str, node: str, *, uid: str = "") -> t.Binding:
    """The Binding of `pod` to `node` (`uid`: only that pod, not a namesake created since)."""
    return t.Binding(api_version="v1", kind="Binding",
                     metadata=t.ObjectMeta(name=pod, namespace=namespace or DEFAULT_NAMESPACE, uid=uid),
                     target=t.ObjectReference(kind="Node", name=node))


def namespace_for(kind: kinds.Kind, namespace: str) -> str:
    """The namespace a single-object call addresses: "" for cluster-scoped kinds."""
    if not kind.namespaced:
        return ""
    return namespace or DEFAULT_NAMESPACE


# WatchBatch answered as bytes: each event is taken out and decoded on its own (skiff/watchbatch.py).
WATCH_BATCH_METHOD = "/skiff.api.v1.ApiServer/WatchBatch"


@dataclass
class _Endpoint:
    target: str
    channel: grpc.aio.Channel
    stub: api_grpc.ApiServerStub
    # False once this api-server answered WatchBatch with UNIMPLEMENTED (one older than it).
    watch_batch: bool = True

    def watch_batches(self, request: api.WatchRequest, metadata: Any) -> Any:
        return self.channel.unary_stream(WATCH_BATCH_METHOD, request_serializer=api.WatchRequest.SerializeToString,
                                         response_deserializer=None)(request, metadata=metadata)


@dataclass
class Client:
    """gRPC client with failover across api-server endpoints ("h1:6443,h2:6443").

    With `credentials` the channels are TLS and present them; without, plaintext (only an
    api-server run with `--insecure` answers that)."""

    endpoints: Sequence[str] | str
    timeout: float = 10.0
    # Act as this user (and groups) instead of oneself, when allowed to impersonate (`--as`).
    impersonate_user: str = ""
    impersonate_groups: Sequence[str] = ()
    credentials: Credentials | None = None
    _pool: list[_Endpoint] = field(default_factory=list, init=False, repr=False)
    _current: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        targets = self.endpoints.split(",") if isinstance(self.endpoints, str) else list(self.endpoints)
        targets = [t_.strip() for t_ in targets if t_.strip()]
        if not targets:
            raise errors.InvalidError("no api-server endpoint given (use --server or SKIFF_SERVER)")
        self.endpoints = targets
        self._current = random.randrange(len(targets)) if len(targets) > 1 else 0

    def _endpoint(self, index: int) -> _Endpoint:
        while len(self._pool) <= index:
            target = self.endpoints[len(self._pool)]
            channel = open_channel(target, self.credentials)
            self._pool.append(_Endpoint(target, channel, api_grpc.ApiServerStub(channel)))
        return self._pool[index]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The gRPC metadata of every call: the impersonation asked for, if any."""
        out = ([("impersonate-user", self.impersonate_user)] if self.impersonate_user else []) + \
            [("impersonate-group", g) for g in self.impersonate_groups]
        return tuple(out) or None

    @property
    def stub(self) -> api_grpc.ApiServerStub:
        """The stub of the endpoint in use (for streams and raw calls)."""
        return self._endpoint(self._current).stub

    @property
    def target(self) -> str:
        return self.endpoints[self._current]

    async def _call(self, method: str, request: Message, *, timeout: float | None = None) -> Message:
        """One unary call; UNAVAILABLE moves to the next endpoint and retries until the deadline."""
        loop = asyncio.get_running_loop()
        budget = timeout or self.timeout
        deadline = loop.time() + budget
        attempts = 0
        target = ""

        async def attempt() -> Message:
            nonlocal attempts, target
            endpoint = self._endpoint(self._current)
            attempts, target = attempts + 1, endpoint.target
            response: Message = await getattr(endpoint.stub, method)(request, metadata=self.metadata,
                                                                     timeout=max(deadline - loop.time(), 0.05))
            return response

        def next_endpoint(exc: BaseException, delay: float) -> None:
            if not _unavailable(exc):
                log.debug("api-server %s: too many requests; retrying in %.2fs as it asked", target, delay)
                return
            log.debug("api-server %s unavailable (%s); trying the next one in %.2fs", target, exc, delay)
            self._current = (self._current + 1) % len(self.endpoints)

        try:
            return await retry(attempt, retryable=_retryable, backoff=UNAVAILABLE_BACKOFF, budget=budget,
                               on_retry=next_endpoint, hint=_retry_hint, clock=loop.time)
        except grpc.aio.AioRpcError as exc:
            if _unavailable(exc):
                raise errors.UnavailableError(
                    f"api-server {target} unavailable after {attempts} attempt(s): {exc.details()}") from exc
            raise errors.from_grpc(exc) from exc

    async def create(self, obj: M, *, namespace: str = "", dry_run: bool = False) -> M:
        response = await self._call("Create", api.CreateRequest(object=kinds.wrap(obj), namespace=namespace,
                                                                dry_run=dry_run))
        return _unwrap_as(response, type(obj))  # type: ignore[arg-type]

    async def get(self, cls: type[M], name: str, namespace: str = "") -> M:
        kind = kinds.of_message(cls())
        response = await self._call("Get", api.GetRequest(resource=kind.resource, name=name,
                                                          namespace=namespace_for(kind, namespace)))
        return _unwrap_as(response, cls)  # type: ignore[arg-type]

    async def list(self, cls: type[M], *, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "") -> ObjectList[M]:
        kind = kinds.of_message(cls())
        response = await self._call("List", api.ListRequest(
            resource=kind.resource, namespace=namespace if kind.namespaced else "",
            label_selector=label_selector, field_selector=field_selector, limit=limit,
            **{"continue": continue_token}))
        assert isinstance(response, api.ListResponse)
        items = [_unwrap_as(item, cls) for item in response.items]
        return ObjectList(items, response.resource_version, getattr(response, "continue"))

    async def update(self, obj: M) -> M:
        response = await self._call("Update", api.UpdateRequest(object=kinds.wrap(obj)))
        return _unwrap_as(response, type(obj))  # type: ignore[arg-type]

    async def update_status(self, obj: M) -> M:
        response = await self._call("UpdateStatus", api.UpdateRequest(object=kinds.wrap(obj)))
        return _unwrap_as(response, type(obj))  # type: ignore[arg-type]

    async def delete(self, cls: type[M], name: str, namespace: str = "", *,
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     preconditions: api.Preconditions | None = None) -> M:
        kind = kinds.of_message(cls())
        request = api.DeleteRequest(resource=kind.resource, name=name, namespace=namespace_for(kind, namespace),
                                    propagation_policy=propagation_policy)
        if grace_period_seconds is not None:
            request.grace_period_seconds = grace_period_seconds
        if preconditions is not None:
            request.preconditions.CopyFrom(preconditions)
        response = await self._call("Delete", request)
        return _unwrap_as(response, cls)  # type: ignore[arg-type]

    async def watch(self, cls: type[M], *, namespace: str = "", label_selector: str = "",  # type: ignore[override]
                    field_selector: str = "", resource_version: str = "", send_initial_events: bool = False,
                    allow_bookmarks: bool = False, timeout_seconds: int = 0) -> AsyncIterator[WatchEvent[M]]:
        kind = kinds.of_message(cls())
        request = api.WatchRequest(resource=kind.resource, namespace=namespace if kind.namespaced else "",
                                   label_selector=label_selector, field_selector=field_selector,
                                   resource_version=resource_version, send_initial_events=send_initial_events,
                                   allow_bookmarks=allow_bookmarks, timeout_seconds=timeout_seconds)
        endpoint = self._endpoint(self._current)
        while True:
            # Several events per message when the api-server has WatchBatch (the same events).
            batched = endpoint.watch_batch
            call = (endpoint.watch_batches(request, self.metadata) if batched
                    else endpoint.stub.Watch(request, metadata=self.metadata))
            delivered = False
            try:
                if batched:
                    async for data in call:
                        for raw in split_batch(data):
                            event = api.WatchEvent.FromString(raw)
                            delivered = True
                            yield WatchEvent(event.type, _unwrap_as(event.object, cls))
                else:
                    async for event in call:
                        delivered = True
                        yield WatchEvent(event.type, _unwrap_as(event.object, cls))
                return
            except grpc.aio.AioRpcError as exc:
                if batched and not delivered and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.info("api-server %s has no WatchBatch: watching one event per message", endpoint.target)
                    endpoint.watch_batch = False
                    continue
                if _unavailable(exc):
                    # Next attempt (by the caller, e.g. an informer) goes to another endpoint.
                    self._current = (self._current + 1) % len(self.endpoints)
                raise errors.from_grpc(exc) from exc
            except ValueError as exc:  # a WatchBatch message that is not one
                raise errors.InternalError(f"api-server {endpoint.target}: {exc}") from exc
            finally:
                call.cancel()

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str = "") -> t.Pod:
        response = await self._call("Bind", api.BindRequest(binding=new_binding(namespace, pod, node, uid=uid)))
        return _unwrap_as(response, t.Pod)  # type: ignore[arg-type]

    async def bind_batch(self, bindings: Sequence[t.Binding]) -> builtins.list[errors.SkiffError | None]:
        response = await self._call("BindBatch", api.BindBatchRequest(bindings=bindings))
        assert isinstance(response, api.BindBatchResponse)
        if len(response.outcomes) != len(bindings):
            raise errors.InternalError(f"BindBatch answered {len(response.outcomes)} outcomes "
                                       f"for {len(bindings)} bindings")
        return [None if o.code == 0 else errors.from_status(errors.status_code(o.code), o.message, o.reason)
                for o in response.outcomes]

    async def logs(self, namespace: str, pod: str, *, container: str = "", follow: bool = False,
                   tail_lines: int = 0, previous: bool = False) -> AsyncIterator[bytes]:
        request = api.LogsRequest(namespace=namespace or DEFAULT_NAMESPACE, pod=pod, container=container,
                                  follow=follow, tail_lines=tail_lines, previous=previous)
        call = self.stub.Logs(request, metadata=self.metadata)
        try:
            async for chunk in call:
                yield chunk.data
        except grpc.aio.AioRpcError as exc:
            raise errors.from_grpc(exc) from exc
        finally:
            call.cancel()

    async def exec(self, namespace: str, pod: str, command: builtins.list[str], *, container: str = "",
                   timeout_seconds: int = 0) -> ExecResult:
        request = api.ExecRequest(namespace=namespace or DEFAULT_NAMESPACE, pod=pod, container=container,
                                  command=command, timeout_seconds=timeout_seconds)
        response = await self._call("Exec", request, timeout=max(self.timeout, timeout_seconds + 5.0))
        assert isinstance(response, api.ExecResponse)
        return ExecResult(response.stdout, response.stderr, response.exit_code)

    async def version(self) -> api.VersionResponse:
        response = await self._call("Version", api.VersionRequest())
        assert isinstance(response, api.VersionResponse)
        return response

    async def node_metrics(self, *, name: str = "", label_selector: str = "") -> metrics_pb2.NodeMetricsList:
        """metrics.k8s.io NodeMetrics: every node with a figure, or one by name."""
        response = await self._call("NodeMetrics", metrics_pb2.MetricsRequest(name=name,
                                                                             label_selector=label_selector))
        assert isinstance(response, metrics_pb2.NodeMetricsList)
        return response

    async def pod_metrics(self, *, namespace: str = "", name: str = "",
                          label_selector: str = "") -> metrics_pb2.PodMetricsList:
        """metrics.k8s.io PodMetrics of a namespace ("": every namespace), or one pod by name."""
        response = await self._call("PodMetrics", metrics_pb2.MetricsRequest(
            namespace=namespace, name=name, label_selector=label_selector))
        assert isinstance(response, metrics_pb2.PodMetricsList)
        return response

    async def access_review(self, verb: str, resource: str = "", *, group: str = "", subresource: str = "",
                            namespace: str = "", name: str = "", path: str = "") -> api.AccessReviewResponse:
        """May this client's user (or the one it impersonates) do this? `path`: a non-resource request."""
        response = await self._call("AccessReview", api.AccessReviewRequest(
            verb=verb, group=group, resource=resource, subresource=subresource, namespace=namespace, name=name,
            non_resource_path=path))
        assert isinstance(response, api.AccessReviewResponse)
        return response

    async def create_token(self, namespace: str, name: str, *, audiences: Sequence[str] = (),
                           expiration_seconds: int = 0, bound_pod_name: str = "",
                           bound_pod_uid: str = "") -> api.CreateTokenResponse:
        """A service-account token (TokenRequest); bound to a pod when one is named."""
        response = await self._call("CreateToken", api.CreateTokenRequest(
            namespace=namespace, name=name, audiences=list(audiences), expiration_seconds=expiration_seconds,
            bound_pod_name=bound_pod_name, bound_pod_uid=bound_pod_uid))
        assert isinstance(response, api.CreateTokenResponse)
        return response

    async def close(self) -> None:
        for endpoint in self._pool:
            await endpoint.channel.close(None)
        self._pool.clear()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_channel(target: str, credentials: Credentials | None, *,
                 options: Sequence[tuple[str, object]] = CHANNEL_OPTIONS) -> grpc.aio.Channel:
    """A channel to `target`: TLS with `credentials`, plaintext without."""
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials.channel_credentials(),
                                   options=(*options, *credentials.channel_options()))


def _unwrap_as(obj: Message, cls: type[M]) -> M:
    assert isinstance(obj, t.Object)
    inner = kinds.unwrap(obj)
    if not isinstance(inner, cls):
        raise errors.InternalError(f"api-server returned a {type(inner).__name__}, expected a {cls.__name__}")
    return inner
