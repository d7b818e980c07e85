"""The interactive subresources of pods over WebSocket: `exec` with stdin or a tty, `attach`
and `portforward`, relayed to the node agent's Stream (controlplane/apiserver/forward.py).

exec and attach speak `v5.channel.k8s.io` (or v4): each binary message is one channel byte
and its data (0 stdin, 1 stdout, 2 stderr, 3 error: the Status, 4 resize: `{"Width",
"Height"}`, 255 close: data[0] is the channel the client closes, v5 only). Messages pass
through unchanged in both directions; the node agent turns them into the runtime's SPDY
streams.

portforward speaks `SPDY/3.1+portforward.k8s.io`: the WebSocket tunnels kubectl's SPDY session
(binary messages carrying its bytes, split anywhere), which the node agent relays unchanged to
the runtime's streaming server, so port-forward's streams (a data and an error stream per
connection, with `port` and `requestID` headers) run end to end between kubectl and the runtime.
kubectl (1.31+) tries this first; when it is refused it falls back to SPDY over a plain HTTP
upgrade, which is not served: the fallback gets the same error as the WebSocket did, or a 400
saying what is served.

What must hold: every refusal that can be known before the upgrade (the pod, its node, its
container, the runtime's streaming server, the protocol) is an HTTP error with a Status, so
kubectl prints it: the node agent's session is open before kubectl's connection is upgraded.
After the upgrade a failure is a Status on the error channel (exec, attach) or the end of the
tunnel (portforward). Either side ending ends the session: kubectl leaving cancels the node agent's
stream, and the node agent ending closes the WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web

from controlplane.apiserver.forward import Forwarder, Session
from controlplane.apiserver.rest import status as st
from skiff import errors
from skiffpb.api.v1 import nodeagent_pb2 as na

log = logging.getLogger("skiff.apiserver.streams")

# What kubectl offers, newest first; v5 adds the close channel (stdin's end).
CHANNEL_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("SPDY/3.1+portforward.k8s.io",)
ERROR = 3


def _bool(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def stream_open(kind: str, namespace: str, pod: str, query: dict[str, list[str]]) -> na.StreamOpen:
    """The node agent's StreamOpen for a request's query (Kubernetes' PodExecOptions,
    PodAttachOptions, PodPortForwardOptions). A tty has no stderr, as in Kubernetes."""
    def one(name: str) -> str:
        values = query.get(name) or [""]
        return values[0]

    if kind == "portforward":
        ports = []
        for value in query.get("ports", []):
            for part in value.split(","):
                if not part.strip().isdigit() or not 0 < int(part) < 65536:
                    raise errors.InvalidError(f"ports: {part!r} is not a port number (1-65535)")
                ports.append(int(part))
        return na.StreamOpen(kind=kind, namespace=namespace, pod=pod, ports=ports)
    tty = _bool(one("tty"))
    stdin, stdout, stderr = _bool(one("stdin")), _bool(one("stdout")), _bool(one("stderr")) and not tty
    if not (stdin or stdout or stderr):
        raise errors.InvalidError("you must specify at least 1 of stdin, stdout, stderr")
    command = query.get("command", []) if kind == "exec" else []
    if kind == "exec" and not command:
        raise errors.InvalidError("command: required: what to run in the container")
    return na.StreamOpen(kind=kind, namespace=namespace, pod=pod, container=one("container"), command=command,
                         stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)


async def _relay(ws: web.WebSocketResponse, session: Session,
                 to_node: Callable[[bytes], na.StreamFrame | None],
                 to_client: Callable[[na.StreamFrame], bytes]) -> None:
    """Pump both ways until either side ends; the node agent's failure is raised."""
    async def from_client() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                frame = to_node(msg.data)
                if frame is not None:
                    await session.write(frame)
            elif msg.type == WSMsgType.ERROR:
                break

    async def from_node() -> None:
        while (frame := await session.read()) is not None:
            await ws.send_bytes(to_client(frame))

    tasks = [asyncio.create_task(from_client()), asyncio.create_task(from_node())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        session.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def remote_command(request: web.Request, kind: str, namespace: str, pod: str,
                         forwarder: Forwarder) -> web.WebSocketResponse:
    """exec (with stdin or a tty) and attach: kubectl's channels to the node agent and back."""
    open_ = stream_open(kind, namespace, pod, {k: request.query.getall(k) for k in request.query})
    ws = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS)
    ready = ws.can_prepare(request)
    # Opened before the protocol check, so that kubectl's SPDY fallback shows the same error.
    session = await forwarder.stream(open_)
    if not ready.ok or ready.protocol is None:
        session.cancel()
        raise st.BadRequest(f"pods/{kind} is served over WebSocket with the subprotocol v5.channel.k8s.io or "
                            "v4.channel.k8s.io (SPDY is not served)")
    await ws.prepare(request)

    def to_node(data: bytes) -> na.StreamFrame | None:
        return na.StreamFrame(channel=data[0], data=data[1:]) if data else None

    try:
        await _relay(ws, session, to_node, lambda f: bytes([f.channel]) + f.data)
    except errors.SkiffError as exc:
        _, outcome = st.status(exc, resource="pods", name=pod)
        if not ws.closed:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(outcome).encode())
    await ws.close()
    return ws


async def port_forward(request: web.Request, namespace: str, pod: str,
                       forwarder: Forwarder) -> web.WebSocketResponse:
    """portforward: kubectl's SPDY bytes to the node agent and back, unchanged."""
    open_ = stream_open("portforward", namespace, pod, {k: request.query.getall(k) for k in request.query})
    ws = web.WebSocketResponse(protocols=PORTFORWARD_PROTOCOLS)
    ready = ws.can_prepare(request)
    # Opened before the protocol check, so that kubectl's SPDY fallback shows the same error.
    session = await forwarder.stream(open_)
    if not ready.ok or ready.protocol is None:
        session.cancel()
        raise st.BadRequest("pods/portforward is served over WebSocket with the subprotocol "
                            "SPDY/3.1+portforward.k8s.io (kubectl 1.31 or newer); SPDY over a plain HTTP upgrade "
                            "is not served")
    await ws.prepare(request)
    try:
        await _relay(ws, session, lambda data: na.StreamFrame(data=data), lambda f: f.data)
    except errors.SkiffError as exc:
        log.info("port-forward to pod %s/%s ended: %s", namespace, pod, exc)
    await ws.close()
    return ws


__all__ = ["CHANNEL_PROTOCOLS", "PORTFORWARD_PROTOCOLS", "port_forward", "remote_command", "stream_open"]
