"""nodeagent/streaming.py: exec's and attach's session as SPDY streams (the runtime's side is
played by a second Framer, the way the runtime's spdystream decodes), and the HTTP upgrade
against a real socket."""

from __future__ import annotations

import asyncio
import json

import pytest

from nodeagent import spdy, streaming
from nodeagent.streaming import CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT


def opened(session: streaming.RemoteCommand) -> list[tuple[int, str]]:
    runtime = spdy.Framer()
    return [(f.stream_id, dict(f.headers)["streamtype"]) for f in runtime.feed(session.opening())
            if isinstance(f, spdy.SynStream)]


@pytest.mark.parametrize("stdin, stdout, stderr, tty, streams", [
    (False, True, True, False, [(1, "error"), (3, "stdout"), (5, "stderr")]),
    (True, True, True, False, [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")]),
    (True, True, True, True, [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")]),
    (True, False, False, False, [(1, "error"), (3, "stdin")]),
], ids=["output-only", "stdin", "tty-drops-stderr", "stdin-only"])
def test_the_session_opens_exactly_the_streams_asked_for(stdin, stdout, stderr, tty, streams):
    assert opened(streaming.RemoteCommand(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)) == streams


def session_and_runtime(*, tty: bool = False) -> tuple[streaming.RemoteCommand, spdy.Framer, spdy.Framer]:
    session = streaming.RemoteCommand(stdin=True, stdout=True, stderr=not tty, tty=tty)
    from_session, to_session = spdy.Framer(), spdy.Framer()
    from_session.feed(session.opening())
    return session, from_session, to_session


@pytest.mark.parametrize("channel, data, frames", [
    (STDIN, b"hi\n", [spdy.DataFrame(3, b"hi\n")]),
    (STDIN, b"", []),
    (CLOSE, bytes([STDIN]), [spdy.DataFrame(3, b"", fin=True)]),
    (CLOSE, bytes([STDOUT]), []),
    (RESIZE, b'{"Width":80,"Height":24}', [spdy.DataFrame(7, b'{"Width":80,"Height":24}')]),
    (STDOUT, b"ignored", []),
], ids=["stdin", "stdin-empty", "close-stdin", "close-other", "resize", "not-from-client"])
def test_client_channels_become_frames(channel, data, frames):
    session, from_session, _ = session_and_runtime(tty=True)
    assert from_session.feed(session.from_client(channel, data)) == frames


def test_resize_without_a_tty_is_dropped_and_a_broken_resize_refused():
    session, _, _ = session_and_runtime(tty=False)
    assert session.from_client(RESIZE, b'{"Width":1,"Height":1}') == b""
    tty_session, from_tty_session, _ = session_and_runtime(tty=True)
    assert tty_session.from_client(RESIZE, b'{"Width":') == b""
    assert from_tty_session.feed(tty_session.from_client(RESIZE, b'{"Width":2,"Height":3}')) == [
        spdy.DataFrame(7, b'{"Width":2,"Height":3}')]


def test_runtime_frames_become_channels_and_the_end_is_seen():
    session, _, runtime = session_and_runtime()
    ids = session.streams
    status = json.dumps({"metadata": {}, "status": "Success"}).encode()
    wire = b"".join(runtime.encode(f) for f in [
        spdy.SynReply(ids[ERROR], ()), spdy.SynReply(ids[STDOUT], ()),
        spdy.DataFrame(ids[STDOUT], b"hi\n"), spdy.DataFrame(ids[STDERR], b"warn\n"),
        spdy.Ping(2),
        spdy.DataFrame(ids[ERROR], status, fin=True),
    ])
    messages, replies = session.from_runtime(wire)
    assert messages == [(STDOUT, b"hi\n"), (STDERR, b"warn\n"), (ERROR, status)]
    assert spdy.Framer().feed(replies) == [spdy.Ping(2)]  # a ping is answered with its own id
    assert session.status_done and not session.done  # stdout and stderr have not finished yet
    more, _ = session.from_runtime(runtime.encode(spdy.DataFrame(ids[STDOUT], b"", fin=True))
                                   + runtime.encode(spdy.RstStream(ids[STDERR], spdy.RST_CANCEL)))
    assert more == [] and session.done


async def serve_once(answer: bytes) -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_upgrade_keeps_the_bytes_after_the_101():
    server, port, seen = await serve_once(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n" + spdy.Framer().encode(spdy.Ping(2)))
    async with server:
        reader, writer = await streaming.upgrade(f"http://127.0.0.1:{port}/portforward/tok", "portforward.k8s.io")
        assert spdy.Framer().feed(await reader.read(100)) == [spdy.Ping(2)]
        writer.close()
    request = seen[0].decode()
    assert request.startswith("POST /portforward/tok HTTP/1.1\r\n")
    assert "Upgrade: SPDY/3.1\r\n" in request and "X-Stream-Protocol-Version: portforward.k8s.io\r\n" in request


@pytest.mark.parametrize("answer, url, problem", [
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\n\r\ntoken not found", None, "404 Not Found: token not found"),
    (b"HTTP/1.1 101 Switching Protocols\r\nX-Stream-Protocol-Version: v1.channel.k8s.io\r\n\r\n", None,
     "chose v1.channel.k8s.io"),
    (b"", "https://127.0.0.1:1/exec/x", "unsupported streaming URL"),
], ids=["refused", "other-protocol", "tls-url"])
async def test_upgrade_failures_say_what_the_runtime_said(answer, url, problem):
    server, port, _ = await serve_once(answer)
    async with server:
        with pytest.raises(streaming.StreamingError, match=problem):
            await streaming.upgrade(url or f"http://127.0.0.1:{port}/exec/tok", "v4.channel.k8s.io")
