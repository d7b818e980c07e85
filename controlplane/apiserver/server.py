"""The gRPC face of the api-server: the ApiServer service, its error interceptor, `serve()`.

What must hold:
- Every failure reaches the client as one gRPC status with a message a user can act on:
  skiff.errors exceptions carry their own code (and their reason, in trailing metadata, when
  a subclass shares its parent's code); storage failures map through
  registry.store_error; a request that is not a valid protobuf message is
  INVALID_ARGUMENT naming the message type; anything unexpected is INTERNAL and logged
  with its traceback. One bad request never affects another.
- Watch events are encoded once per event and shared by every watcher (the Watch handler
  yields bytes, passed through untouched).
- A stream (Watch, Logs, Exec) ends in the task that began it, whatever ends it (the end of its
  items, an error, the client cancelling or going away, the server stopping): the stream
  handlers are coroutines that write (`_wrap_stream`), never generators grpc may abandon.
- Authorization has one place here, `RequestAuth.admit`, run by the interceptor before any
  handler: the caller (authenticated, then impersonated if the `impersonate-user` /
  `impersonate-group` metadata asks and the caller may), the request's attributes
  (`request_attributes`; a BindBatch asks once per binding: `each_request_attributes`), the
  authorizer's verdict. A refusal is PERMISSION_DENIED naming the user, verb and resource.
- A BindBatch is its Binds: each authorized and answered (its own outcome) as Bind would be;
  one failing binding fails no other. The bindings are committed together, up to 100 in one
  store transaction (`Registry.bind_many`: one revision for the group, a conflict decided
  again one binding at a time).
- Every call passes the api-server's one `Limiter` (limits.py, shared with the REST front end)
  before its handler runs: over a limit it is RESOURCE_EXHAUSTED with the `retry-after` hint
  in its trailing metadata, and the handler never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.message import DecodeError, Message
from prometheus_client import REGISTRY

from controlplane.apiserver import authn, bootstrappolicy, caller, metrics, resourcemetrics, serviceaccount
from controlplane.apiserver.allocator import Allocator
from controlplane.apiserver.audit import DEFAULT_MAX_BACKUPS, DEFAULT_MAX_SIZE_MB, AuditLog
from controlplane.apiserver.authn import Authenticator
from controlplane.apiserver.authorizer import DEFAULT_MODES, Authorizer, kind_attributes
from controlplane.apiserver.filters import selected_name
from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.limits import Limiter, Limits, client_key, grpc_verb
from controlplane.apiserver.rbac import Attributes
from controlplane.apiserver.registry import Options, Registry, store_error
from controlplane.apiserver.resourcemetrics import ResourceMetrics
from controlplane.apiserver.rest import http as rest_http
from controlplane.apiserver.storage import Store, StoreError
from skiff import __version__, defaults, errors, grpclog, kinds, tls
from skiff import metrics as skiff_metrics
from skiff.guard import fatal_handler
from skiff.identity import UserInfo
from skiff.retry import Backoff, Delays
from skiff.tls import Credentials, ServerTLS, ServiceAccountKeys
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import metrics_pb2
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.apiserver")

SERVICE = "skiff.api.v1.ApiServer"
# Waiting at start-up for the store to answer: 0.2 s doubling to 5 s.
WAIT_FOR_STORE_BACKOFF = Backoff(initial=0.2, max=5.0, jitter=0.2)
# Room for an object just over the 1.5 MiB limit to arrive and be refused by name.
MAX_RECEIVE = 16 * 1024 * 1024
# Bindings in one BindBatch at most (a scheduler sends its binds in flight: 100 by default).
MAX_BIND_BATCH = 1000
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_RECEIVE),
    ("grpc.max_send_message_length", 512 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
)


@dataclass(frozen=True)
class BadRequest:
    """What a request deserializer returns for bytes that are not the expected message."""

    message_type: str
    detail: str


def _deserializer(cls: type[Message]) -> Callable[[bytes], Message | BadRequest]:
    def parse(data: bytes) -> Message | BadRequest:
        try:
            return cls.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            return BadRequest(cls.DESCRIPTOR.full_name, str(exc) or type(exc).__name__)

    return parse


def _serialize(msg: Message | bytes) -> bytes:
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


def to_status(exc: BaseException) -> errors.SkiffError:
    if isinstance(exc, errors.SkiffError):
        return exc
    if isinstance(exc, StoreError):
        return store_error(exc)
    log.error("unexpected error: %s", exc, exc_info=exc)
    return errors.InternalError(f"internal error: {type(exc).__name__}: {exc}")


def _check_request(request: Any) -> None:
    if isinstance(request, BadRequest):
        raise errors.InvalidError(f"the request is not a valid {request.message_type}: {request.detail}")


IMPERSONATE_USER = "impersonate-user"
IMPERSONATE_GROUP = "impersonate-group"


def _named(kind: kinds.Kind | None, resource: str, verb: str, namespace: str, name: str = "",
           subresource: str = "") -> Attributes:
    if kind is None:  # an unknown resource: the registry refuses it by name once admitted
        return Attributes(verb, resource, subresource, "", namespace, name)
    if kind.namespaced and not namespace and verb not in ("list", "watch"):
        namespace = "default"
    return kind_attributes(verb, kind, namespace, name, subresource)


def _object_attributes(verb: str, obj: t.Object, namespace: str = "", subresource: str = "") -> Attributes:
    if obj.WhichOneof("kind") is None:
        raise errors.InvalidError("object: required: the request carries no object")
    kind = kinds.kind_of_object(obj)
    meta = kinds.unwrap(obj).metadata  # type: ignore[attr-defined]
    # A create names no object, as in Kubernetes (resourceNames cannot limit creates).
    name = "" if verb == "create" else meta.name
    return _named(kind, kind.resource, verb, meta.namespace or namespace, name, subresource)


OPEN_METHODS = frozenset({"Version", "AccessReview"})  # every caller may: a question about oneself


def request_attributes(method: str, request: Any) -> Attributes | None:
    """What a gRPC request asks to do, as authorization sees it; None for OPEN_METHODS. A method
    not named here is a non-resource request for its gRPC path (only `*` URL rules allow it), so
    a new method is closed until it is given attributes."""
    if method == "Create":
        return _object_attributes("create", request.object, request.namespace)
    if method in ("Update", "UpdateStatus"):
        return _object_attributes("update", request.object, subresource="status" if method == "UpdateStatus" else "")
    if method in ("Get", "Delete"):
        return _named(kinds.by_resource(request.resource), request.resource, method.lower(), request.namespace,
                      request.name)
    if method in ("List", "Watch", "WatchBatch"):
        return _named(kinds.by_resource(request.resource), request.resource,
                      "list" if method == "List" else "watch", request.namespace, selected_name(request.field_selector))
    if method == "Bind":
        return _binding_attributes(request.binding)
    if method == "Logs":
        return _named(kinds.by_resource("pods"), "pods", "get", request.namespace, request.pod, "log")
    if method == "Exec":
        return _named(kinds.by_resource("pods"), "pods", "create", request.namespace, request.pod, "exec")
    if method in ("NodeMetrics", "PodMetrics"):  # metrics.k8s.io, as its REST paths (rest/http.py metrics_api)
        return Attributes("get" if request.name else "list", "nodes" if method == "NodeMetrics" else "pods",
                          group=resourcemetrics.GROUP, namespace=request.namespace, name=request.name)
    if method == "CreateToken":
        return _named(kinds.by_resource("serviceaccounts"), "serviceaccounts", "create", request.namespace,
                      request.name, "token")
    if method in OPEN_METHODS:
        return None
    return Attributes("call", path=f"/{SERVICE}/{method}")


def _binding_attributes(binding: t.Binding) -> Attributes:
    meta = binding.metadata
    return _named(kinds.by_resource("pods"), "pods", "create", meta.namespace, meta.name, "binding")


def each_request_attributes(method: str, request: Any) -> list[Attributes]:
    """Every question authorization must answer yes to for a gRPC request: one per binding of a
    BindBatch (each as its own Bind), else `request_attributes`' one (none for OPEN_METHODS)."""
    if method == "BindBatch":
        return [_binding_attributes(b) for b in request.bindings]
    attrs = request_attributes(method, request)
    return [] if attrs is None else [attrs]


async def authenticate(authenticator: Authenticator, context: grpc.aio.ServicerContext[Any, Any]) -> UserInfo:
    """The caller of a gRPC request: its verified client certificate, else its bearer token."""
    peer = authn.Peer(tls.peer_certificate_user(context.auth_context()),
                      tls.bearer_token(context.invocation_metadata()))
    return await authenticator.authenticate(peer)


def impersonation(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, list[str]]:
    """(user, groups) the request asks to act as; ("", []) when it asks for none."""
    user, groups = "", []
    for key, value in context.invocation_metadata() or ():
        text = value.decode() if isinstance(value, bytes) else value
        if key == IMPERSONATE_USER:
            user = text
        elif key == IMPERSONATE_GROUP:
            groups.append(text)
    return user, groups


@dataclass
class RequestAuth:
    """Who a gRPC request runs as (authenticated by authn.py, then impersonated when it asks and
    may), and whether it may: the one place of authentication and authorization for gRPC."""

    authenticator: Authenticator
    authorizer: Authorizer | None = None

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> UserInfo:
        user = await authenticate(self.authenticator, context)
        if self.authorizer is None:
            return user
        as_user, as_groups = impersonation(context)
        real = user
        if as_user or as_groups:
            user = self.authorizer.impersonate(user, as_user, as_groups)
        for attrs in each_request_attributes(method, request):
            self.authorizer.check(user, attrs, impersonator=real if user is not real else None)
        return user


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Admits each request (`RequestAuth`, then the `Limiter`), runs it as its caller and turns
    exceptions from any handler into gRPC statuses (see the module docstring)."""

    def __init__(self, auth: RequestAuth, limiter: Limiter | None = None) -> None:
        self.auth = auth
        self.limiter = limiter or Limiter()

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)  # type: ignore[attr-defined]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, self.auth, self.limiter, method),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, self.auth, self.limiter, method),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        return handler


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], auth: RequestAuth, limiter: Limiter,
                method: str) -> Callable[..., Awaitable[Any]]:
    """`method`: the full gRPC method name (/skiff.api.v1.ApiServer/Get)."""
    name = method.rsplit("/", 1)[-1]

    async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with metrics.track(metrics.grpc_info(method, request)) as tracked:
            try:
                _check_request(request)
                with caller.acting_as(await auth.admit(name, request, context)) as user, \
                        limiter.admit(grpc_verb(name), client_key(user, context.peer())):
                    return await behavior(request, context)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                err = to_status(exc)
                tracked.code = metrics.code_of(err)
                await context.abort(err.code, err.message, errors.trailing_metadata(err))

    return run


def _wrap_stream(behavior: Callable[..., AsyncGenerator[Any, None]], auth: RequestAuth, limiter: Limiter,
                 method: str) -> Callable[..., Awaitable[None]]:
    """A coroutine handler that writes each item (`context.write`), not an async generator.

    The caller (a context variable set by `caller.acting_as`) and the in-flight slot are held
    for the whole stream, so the stream must end in the task that began it. grpc abandons a
    generator handler suspended at its `yield` when a send fails (the client cancelled or went
    away with the stream blocked on flow control) or the server stops; the loop then closes it
    from another task, where resetting the context variable raises "Token was created in a
    different Context". A coroutine has no such second ending: whatever ends the RPC is raised
    into it, here, and `behavior`'s generator is closed here too (aclosing).
    """
    name = method.rsplit("/", 1)[-1]

    async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        with metrics.track(metrics.grpc_info(method, request)) as tracked:
            try:
                _check_request(request)
                with caller.acting_as(await auth.admit(name, request, context)) as user, \
                        limiter.admit(grpc_verb(name), client_key(user, context.peer())):
                    async with contextlib.aclosing(behavior(request, context)) as items:
                        async for item in items:
                            try:
                                await context.write(item)
                            except Exception:  # grpc's own ExecuteBatchError, UsageError, ...
                                return  # the stream cannot be written (client gone): no one to tell
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                if context.done():
                    return  # the client is gone (cancelled, disconnected): no one to tell
                err = to_status(exc)
                tracked.code = metrics.code_of(err)
                await context.abort(err.code, err.message, errors.trailing_metadata(err))

    return run


def _unwrap(obj: t.Object) -> Message:
    if obj.WhichOneof("kind") is None:
        raise errors.InvalidError("object: required: the request carries no object")
    return kinds.unwrap(obj)


class ApiServerService:
    def __init__(self, registry: Registry, forwarder: Forwarder, *, node_name: str = "",
                 authorizer: Authorizer | None = None, tokens: serviceaccount.TokenAuthority | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.forwarder = forwarder
        self.node_name = node_name
        self.resource_metrics = ResourceMetrics(registry, forwarder)
        self.authorizer = authorizer
        self.tokens = tokens
        self.clock = clock

    async def Create(self, request: api.CreateRequest, context: Any) -> t.Object:
        obj = await self.registry.create(_unwrap(request.object), namespace=request.namespace,
                                         dry_run=request.dry_run)
        return kinds.wrap(obj)

    async def Get(self, request: api.GetRequest, context: Any) -> t.Object:
        return kinds.wrap(await self.registry.get(request.resource, request.namespace, request.name))

    async def List(self, request: api.ListRequest, context: Any) -> api.ListResponse:
        items, rv, token = await self.registry.list(
            request.resource, namespace=request.namespace, label_selector=request.label_selector,
            field_selector=request.field_selector, limit=request.limit,
            continue_token=getattr(request, "continue"), resource_version=request.resource_version)
        response = api.ListResponse(resource_version=rv, items=[kinds.wrap(o) for o in items])
        setattr(response, "continue", token)
        return response

    async def Update(self, request: api.UpdateRequest, context: Any) -> t.Object:
        return kinds.wrap(await self.registry.update(_unwrap(request.object)))

    async def UpdateStatus(self, request: api.UpdateRequest, context: Any) -> t.Object:
        return kinds.wrap(await self.registry.update_status(_unwrap(request.object)))

    async def Delete(self, request: api.DeleteRequest, context: Any) -> t.Object:
        grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else None
        pre = request.preconditions if request.HasField("preconditions") else None
        obj = await self.registry.delete(request.resource, request.namespace, request.name, grace_period=grace,
                                         propagation_policy=request.propagation_policy, preconditions=pre)
        return kinds.wrap(obj)

    async def Watch(self, request: api.WatchRequest, context: Any) -> AsyncIterator[bytes]:
        async for data in self._watch(request, batched=False):
            yield data

    async def WatchBatch(self, request: api.WatchRequest, context: Any) -> AsyncIterator[bytes]:
        async for data in self._watch(request, batched=True):
            yield data

    def _watch(self, request: api.WatchRequest, *, batched: bool) -> AsyncIterator[bytes]:
        """The registry's watch for either framing (one event per message, or `WatchBatch`'s)."""
        return self.registry.watch(
            request.resource, namespace=request.namespace, label_selector=request.label_selector,
            field_selector=request.field_selector, resource_version=request.resource_version,
            send_initial_events=request.send_initial_events, allow_bookmarks=request.allow_bookmarks,
            timeout_seconds=int(request.timeout_seconds), batched=batched)

    async def Bind(self, request: api.BindRequest, context: Any) -> t.Object:
        if not request.HasField("binding"):
            raise errors.InvalidError("binding: required")
        return kinds.wrap(await self.registry.bind(request.binding))

    async def BindBatch(self, request: api.BindBatchRequest, context: Any) -> api.BindBatchResponse:
        if not request.bindings:
            raise errors.InvalidError("bindings: required: at least one")
        if len(request.bindings) > MAX_BIND_BATCH:
            raise errors.InvalidError(f"bindings: at most {MAX_BIND_BATCH} in one call, not {len(request.bindings)}")
        # Each binding was authorized on its own (the interceptor); the registry commits the
        # ones the watch cache can plan together and decides each conflicting one alone.
        results = await self.registry.bind_many(request.bindings)
        response = api.BindBatchResponse()
        for result in results:
            if isinstance(result, errors.SkiffError):
                err = to_status(result)
                response.outcomes.add(code=err.code.value[0], message=err.message, reason=err.reason)
            else:
                response.outcomes.add()
        return response

    async def Logs(self, request: api.LogsRequest, context: Any) -> AsyncIterator[api.LogChunk]:
        async for chunk in self.forwarder.logs(request):
            yield chunk

    async def Exec(self, request: api.ExecRequest, context: Any) -> api.ExecResponse:
        return await self.forwarder.exec(request)

    async def NodeMetrics(self, request: metrics_pb2.MetricsRequest, context: Any) -> metrics_pb2.NodeMetricsList:
        found = await self.resource_metrics.node_metrics(name=request.name, label_selector=request.label_selector)
        return metrics_pb2.NodeMetricsList(items=[item for _, item in found])

    async def PodMetrics(self, request: metrics_pb2.MetricsRequest, context: Any) -> metrics_pb2.PodMetricsList:
        if request.name and not request.namespace:
            raise errors.InvalidError("namespace: required with a pod name")
        found = await self.resource_metrics.pod_metrics(namespace=request.namespace, name=request.name,
                                                        label_selector=request.label_selector)
        return metrics_pb2.PodMetricsList(items=[item for _, item in found])

    async def Version(self, request: api.VersionRequest, context: Any) -> api.VersionResponse:
        return api.VersionResponse(version=__version__, store=self.registry.store.describe(),
                                   service_cidr=self.registry.allocator.network.with_prefixlen,
                                   node_name=self.node_name)

    async def AccessReview(self, request: api.AccessReviewRequest, context: Any) -> api.AccessReviewResponse:
        user = caller.current()
        if request.non_resource_path:
            attrs = Attributes(request.verb, path=request.non_resource_path)
        else:
            attrs = Attributes(request.verb, request.resource, request.subresource, request.group, request.namespace,
                               request.name)
        if self.authorizer is None:
            allowed, reason = True, "no authorizer: every request is allowed"
        else:
            decision = self.authorizer.review(user, attrs)
            allowed, reason = decision.allowed, decision.reason
        return api.AccessReviewResponse(allowed=allowed, reason=reason, user=user.name, groups=list(user.groups))


    async def CreateToken(self, request: api.CreateTokenRequest, context: Any) -> api.CreateTokenResponse:
        """TokenRequest over gRPC: the same issuing as `POST serviceaccounts/NAME/token`."""
        if self.tokens is None:
            raise errors.NotFoundError("this api-server issues no service-account tokens "
                                       "(no --service-account-signing-key-file)")
        spec = serviceaccount.TokenRequestSpec(
            tuple(request.audiences), request.expiration_seconds or serviceaccount.DEFAULT_EXPIRATION_SECONDS,
            request.bound_pod_name, request.bound_pod_uid)
        requester = caller.current()
        with caller.acting_as(authn.SELF):
            token, claims = await serviceaccount.issue_for(self.tokens, self.registry,
                                                           namespace=request.namespace or "default",
                                                           name=request.name, spec=spec, now=self.clock(),
                                                           requester=requester)
        return api.CreateTokenResponse(token=token, expiration_timestamp=claims.expires_at)


def generic_handler(service: ApiServerService) -> grpc.GenericRpcHandler:
    def unary(fn: Any, req: type[Message]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=_deserializer(req),
                                                   response_serializer=_serialize)

    def stream(fn: Any, req: type[Message]) -> grpc.RpcMethodHandler:
        return grpc.unary_stream_rpc_method_handler(fn, request_deserializer=_deserializer(req),
                                                    response_serializer=_serialize)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Create": unary(service.Create, api.CreateRequest),
        "Get": unary(service.Get, api.GetRequest),
        "List": unary(service.List, api.ListRequest),
        "Update": unary(service.Update, api.UpdateRequest),
        "UpdateStatus": unary(service.UpdateStatus, api.UpdateRequest),
        "Delete": unary(service.Delete, api.DeleteRequest),
        "Watch": stream(service.Watch, api.WatchRequest),
        "WatchBatch": stream(service.WatchBatch, api.WatchRequest),
        "Bind": unary(service.Bind, api.BindRequest),
        "BindBatch": unary(service.BindBatch, api.BindBatchRequest),
        "Logs": stream(service.Logs, api.LogsRequest),
        "Exec": unary(service.Exec, api.ExecRequest),
        "Version": unary(service.Version, api.VersionRequest),
        "NodeMetrics": unary(service.NodeMetrics, metrics_pb2.MetricsRequest),
        "PodMetrics": unary(service.PodMetrics, metrics_pb2.MetricsRequest),
        "AccessReview": unary(service.AccessReview, api.AccessReviewRequest),
        "CreateToken": unary(service.CreateToken, api.CreateTokenRequest),
    })


@dataclass
class Config:
    store_endpoints: str = f"127.0.0.1:{defaults.STORE_CLIENT_PORT}"
    listen: str = f"127.0.0.1:{defaults.API_PORT}"
    service_cidr: str = defaults.SERVICE_CIDR
    node_port_range: str = defaults.NODE_PORT_RANGE
    node_name: str = ""
    http_listen: str = ""  # "host:port" for the Kubernetes REST API (HTTPS); empty: not served
    metrics_listen: str = ""  # "host:port" for /metrics and the health checks (skiff/metrics.py); empty: not served
    options: Options = field(default_factory=Options)
    # None: --insecure (plaintext, everyone the admin). gRPC requires a client certificate from
    # the client CA; HTTPS verifies one when sent, else takes a bearer token (or, for health
    # checks, nobody).
    tls: ServerTLS | None = None
    # How it reaches the store and the node agents (None: plaintext).
    store_credentials: Credentials | None = None
    kubelet_credentials: Credentials | None = None
    authorization_modes: tuple[str, ...] = DEFAULT_MODES
    audit_log_path: str = ""  # empty: no audit log
    audit_log_max_size_mb: float = DEFAULT_MAX_SIZE_MB
    audit_log_max_backups: int = DEFAULT_MAX_BACKUPS
    # Service-account token keys (None: no tokens are issued or accepted).
    service_account: ServiceAccountKeys | None = None
    limits: Limits = field(default_factory=Limits)


def health(registry: Registry) -> skiff_metrics.Health:
    """Ready once every watch cache has been filled (kube-apiserver's informer-sync check)."""
    def caches() -> str:
        waiting = [r for r, c in registry.caches.items() if not c.ready.is_set()]
        return f"watch caches not filled yet: {', '.join(sorted(waiting))}" if waiting else ""

    return skiff_metrics.Health(ready={"informer-sync": caches})


class StartupError(Exception):
    pass


class FatalError(Exception):
    """A part the api-server cannot serve without stopped (`skiff.guard.fatal`): exit non-zero."""


def tune_gc() -> None:
    """Fewer, cheaper collections: long full collections are latency spikes for every request.

    What exists after startup (modules, caches) is frozen out of collection; the young
    generation threshold is raised so short-lived request objects rarely trigger one.
    Nothing here leaks: non-cyclic garbage is still freed at once by reference counting.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def bind(server: grpc.aio.Server, listen: str, server_tls: ServerTLS | None = None) -> int:
    """Bind the listening address now, so that "address in use" is a clear startup error."""
    try:
        port = (server.add_insecure_port(listen) if server_tls is None
                else server.add_secure_port(listen, server_tls.server_credentials()))
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {listen}: {exc} (is another process using this port?)") from exc
    if port == 0:
        raise StartupError(f"cannot listen on {listen}: the address is in use or not available")
    return port


async def wait_for_store(store: Store, *, stop: asyncio.Event | None = None) -> int:
    """Retry until the store answers; one log line per change of state. Returns its revision."""
    delays = Delays(WAIT_FOR_STORE_BACKOFF)
    failing = False
    while True:
        try:
            revision = await store.revision()
            if failing:
                log.info("store %s reachable (revision %d)", store.describe(), revision)
            return revision
        except StoreError as exc:
            if not failing:
                log.warning("store %s unreachable: %s; retrying until it answers", store.describe(), exc)
                failing = True
        if stop is not None and stop.is_set():
            raise StartupError("stopped while waiting for the store")
        await asyncio.sleep(delays.next())


def grpc_server(registry: Registry, forwarder: Forwarder, authenticator: Authenticator, *,
                authorizer: Authorizer | None = None, limiter: Limiter | None = None, node_name: str = "",
                tokens: serviceaccount.TokenAuthority | None = None) -> grpc.aio.Server:
    """The api-server's gRPC server over `registry`, not yet bound or started: every request
    admitted by `ErrorInterceptor` (authentication, `authorizer` when given, `limiter`) and
    served by `ApiServerService`. `serve` builds the daemon's with this; tests build theirs too."""
    grpclog.quiet_undelivered()  # a late answer to a client whose deadline passed: counted, not a traceback
    server = grpc.aio.server(interceptors=[ErrorInterceptor(RequestAuth(authenticator, authorizer), limiter)],
                             options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((generic_handler(ApiServerService(registry, forwarder, node_name=node_name,
                                                                      authorizer=authorizer, tokens=tokens)),))
    return server


async def serve(config: Config, *, store: Store | None = None, ready: Callable[[int], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run an api-server until `stop` is set (or SIGTERM/SIGINT when running as a process)."""
    from controlplane.apiserver.etcd import EtcdStore

    allocator = Allocator(config.service_cidr, config.node_port_range)
    if store is None:
        store = EtcdStore(config.store_endpoints, credentials=config.store_credentials)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    tokens = None
    if config.service_account is not None:
        keys = config.service_account
        try:
            tokens = serviceaccount.TokenAuthority.from_files(signing_key_file=keys.signing_key_file,
                                                              key_file=keys.key_file, issuer=keys.issuer)
        except (OSError, ValueError) as exc:
            raise StartupError(f"service-account keys: {exc}") from exc
    # Pods get a token volume only from an api-server that can issue the token (docs/security.md).
    options = dataclasses.replace(config.options,
                                  mount_service_account_tokens=tokens is not None and tokens.signing_key is not None)
    registry = Registry(store, allocator=allocator, options=options)
    forwarder = Forwarder(registry, credentials=config.kubelet_credentials)
    authenticator = Authenticator(registry, insecure=config.tls is None, service_accounts=tokens)
    if config.tls is None:
        tls.warn_insecure("api-server")
    audit = AuditLog(config.audit_log_path, max_size_mb=config.audit_log_max_size_mb,
                     max_backups=config.audit_log_max_backups) if config.audit_log_path else None
    authorizer = Authorizer.over_caches(registry.caches, modes=config.authorization_modes, audit=audit)
    if authorizer.modes == ("AlwaysAllow",):
        log.warning("authorization mode AlwaysAllow: every request is allowed (development only)")
    limiter = Limiter(config.limits)
    server = grpc_server(registry, forwarder, authenticator, authorizer=authorizer, limiter=limiter,
                         node_name=config.node_name, tokens=tokens)
    fatal_reasons: list[str] = []

    def on_fatal(reason: str) -> None:
        fatal_reasons.append(reason)
        stop.set()

    try:
        with fatal_handler(on_fatal):
            await _serve(config, store, registry, forwarder, server, limiter, authenticator, authorizer, allocator,
                         stop, ready, tokens)
    finally:
        if audit is not None:
            audit.close()
    if fatal_reasons:
        raise FatalError(fatal_reasons[0])


async def _serve(config: Config, store: Store, registry: Registry, forwarder: Forwarder, server: grpc.aio.Server,
                 limiter: Limiter, authenticator: Authenticator, authorizer: Authorizer, allocator: Allocator,
                 stop: asyncio.Event, ready: Callable[[int], None] | None,
                 tokens: serviceaccount.TokenAuthority | None) -> None:
    http_runner: web.AppRunner | None = None
    served: skiff_metrics.Served | None = None
    collector = metrics.RegistryCollector(registry)
    REGISTRY.register(collector)
    try:
        # gRPC can only require a client certificate or not ask for one (grpcio offers no "verify
        # if sent"): the gRPC port is mutual TLS; bearer tokens and anonymous health checks are
        # the HTTPS port's, which verifies a certificate when one is sent.
        port = bind(server, config.listen,
                    None if config.tls is None else dataclasses.replace(config.tls, require_client_cert=True))
        revision = await wait_for_store(store, stop=stop)
        log.info("store %s at revision %d; filling watch caches", store.describe(), revision)
        await registry.start()
        await bootstrappolicy.reconcile(registry)
        tune_gc()
        await server.start()
        if config.http_listen:
            try:
                http_runner, http_port = await rest_http.start(registry, forwarder, config.http_listen,
                                                               authenticator=authenticator, server_tls=config.tls,
                                                               authorizer=authorizer, limiter=limiter, tokens=tokens)
            except OSError as exc:
                raise StartupError(str(exc)) from exc
            log.info("Kubernetes API (HTTP%s) on %s (port %d)", "" if config.tls is None else "S", config.http_listen,
                     http_port)
        served = await skiff_metrics.serve(config.metrics_listen, health(registry), what="api-server metrics")
        log.info("api-server listening on %s (port %d), store %s, service CIDR %s", config.listen, port,
                 store.describe(), allocator.network.with_prefixlen)
        if ready is not None:
            ready(port)
        await stop.wait()
        log.info("api-server stopping")
    finally:
        REGISTRY.unregister(collector)
        if served is not None:
            await served.close()
        if http_runner is not None:
            await http_runner.cleanup()
        await server.stop(grace=1.0)
        await registry.stop()
        await forwarder.close()
        await store.close()
