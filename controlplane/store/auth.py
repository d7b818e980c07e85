"""Who may use a store member's client port, and for what.

The client port is mutual TLS (etcd's `--client-cert-auth`): the handshake already refused
anyone without a certificate from the cluster CA. This module decides among those who
passed, per call, from the certificate's subject (skiff.identity's reading):

- only the api-server (`kube-apiserver-kubelet-client`, its client identity) and admins
  (group `system:masters`, e.g. `kubernetes-admin`, what `etcdctl --cert` presents) may call
  anything at all; a node's or a component's certificate is refused;
- membership changes (MemberAdd/Remove/Update/Promote), Defragment, MoveLeader, Snapshot and
  disarming an alarm are the admin's alone;
- Compact is the admin's and the api-server's (the api-server owns compaction).

`decide` is pure (table-tested); `AuthInterceptor` applies it to every handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from skiff import identity, tls
from skiff.identity import UserInfo
from skiffpb.etcd import rpc_pb2

ADMIN_ONLY = frozenset({
    "/etcdserverpb.Cluster/MemberAdd", "/etcdserverpb.Cluster/MemberRemove", "/etcdserverpb.Cluster/MemberUpdate",
    "/etcdserverpb.Cluster/MemberPromote", "/etcdserverpb.Maintenance/Defragment",
    "/etcdserverpb.Maintenance/MoveLeader", "/etcdserverpb.Maintenance/Snapshot",
})
COMPACT = "/etcdserverpb.KV/Compact"
ALARM = "/etcdserverpb.Maintenance/Alarm"


def _is_admin(user: UserInfo) -> bool:
    return user.in_group(identity.MASTERS)


def decide(method: str, user: UserInfo | None, request: object = None) -> tuple[grpc.StatusCode, str] | None:
    """None when `user` may call `method` with `request`; else (code, message)."""
    if user is None:
        return grpc.StatusCode.UNAUTHENTICATED, "a client certificate from the cluster CA is required"
    admin = _is_admin(user)
    if not admin and user.name != identity.APISERVER_CLIENT:
        return (grpc.StatusCode.PERMISSION_DENIED,
                f'user "{user.name}" may not use the store (only the api-server and admins)')
    if admin:
        return None
    if method in ADMIN_ONLY:
        return grpc.StatusCode.PERMISSION_DENIED, f'{method.rsplit("/", 1)[1]} is for admins only'
    if method == ALARM and isinstance(request, rpc_pb2.AlarmRequest) and \
            request.action == rpc_pb2.AlarmRequest.DEACTIVATE:
        return grpc.StatusCode.PERMISSION_DENIED, "disarming alarms is for admins only"
    return None


def _peer(context: grpc.aio.ServicerContext[Any, Any]) -> UserInfo | None:
    return tls.peer_certificate_user(context.auth_context())  # type: ignore[arg-type]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Applies `decide` to every call before its handler runs."""

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method  # type: ignore[attr-defined]

        async def check(context: grpc.aio.ServicerContext[Any, Any], request: object = None) -> None:
            verdict = decide(method, _peer(context), request)
            if verdict is not None:
                await context.abort(*verdict)

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await check(context, request)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await check(context, request)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                        handler.response_serializer)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await check(context)
                async for item in inner_ss(requests, context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(stream_stream, handler.request_deserializer,
                                                         handler.response_serializer)
        return handler
