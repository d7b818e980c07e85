"""The client side of the container runtime's streaming server (CRI Exec, Attach, PortForward
answer a URL of it; containerd's serves 127.0.0.1 in the node's network namespace).

`upgrade` opens the URL and upgrades the connection to SPDY/3.1 (`X-Stream-Protocol-Version`
names the protocol spoken inside: `v4.channel.k8s.io` for exec and attach,
`portforward.k8s.io` for port-forward). A port-forward's bytes are then relayed unchanged:
kubectl's own SPDY session runs end to end between kubectl and the runtime.

`RemoteCommand` is exec's and attach's session, sans I/O: what kubectl sends on its WebSocket
channels (0 stdin, 4 resize, 255 close) becomes SPDY frames on the streams the remotecommand
protocol (v4) opens, and the runtime's frames become channels again (1 stdout, 2 stderr, 3
error: the Status with the exit code). What must hold:
- The streams are opened first, in a fixed order (error, stdin, stdout, stderr, resize), and
  only those the request asked for: the runtime waits for exactly that many before it runs
  the command; a tty has no stderr (the terminal merges it), as in Kubernetes.
- Closing stdin (channel 255 naming channel 0) is a FIN on the stdin stream, so that
  `echo hi | kubectl exec -i POD -- cat` ends.
- The session is over when the error stream is finished (the runtime wrote the Status) and
  stdout and stderr are finished too, or when the runtime goes away.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nodeagent import spdy

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5.channel.k8s.io: data[0] is the channel the client closes

REMOTECOMMAND_PROTOCOL = "v4.channel.k8s.io"
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
UPGRADE_TIMEOUT = 10.0
MAX_RESPONSE_HEAD = 64 * 1024


class StreamingError(Exception):
    """The runtime's streaming server refused or broke the session."""


async def upgrade(url: str, protocol: str, *, timeout: float = UPGRADE_TIMEOUT,
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An HTTP connection to `url` upgraded to SPDY/3.1 speaking `protocol`; bytes the server
    sent right after its 101 stay in the reader."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise StreamingError(f"unsupported streaming URL {url!r} (expected http://HOST:PORT/...; "
                             "TLS streaming is not enabled on Skiff nodes)")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout)
    try:
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
                      f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n"
                      "Content-Length: 0\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or fields[1] != "101":
            body = b""
            try:
                body = await asyncio.wait_for(reader.read(MAX_RESPONSE_HEAD), 2)
            except TimeoutError:
                pass
            raise StreamingError(f"the runtime's streaming server answered {status_line.strip()}: "
                                 f"{body.decode(errors='replace').strip()}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        if headers.get("x-stream-protocol-version", protocol) != protocol:
            raise StreamingError(f"the runtime's streaming server chose {headers['x-stream-protocol-version']}, "
                                 f"not {protocol}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


@dataclass
class RemoteCommand:
    """One exec or attach session over SPDY (remotecommand v4), without I/O."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    framer: spdy.Framer = field(default_factory=spdy.Framer)
    streams: dict[int, int] = field(default_factory=dict)  # channel -> SPDY stream id
    finished: set[int] = field(default_factory=set)  # channels the runtime finished (FIN or RST)
    gone: bool = False  # the runtime sent GOAWAY

    def __post_init__(self) -> None:
        if self.tty:
            self.stderr = False
        wanted = [(ERROR, "error", True), (STDIN, "stdin", self.stdin), (STDOUT, "stdout", self.stdout),
                  (STDERR, "stderr", self.stderr), (RESIZE, "resize", self.tty)]
        next_id = 1
        self._types: list[tuple[int, str]] = []
        for channel, name, on in wanted:
            if on:
                self.streams[channel] = next_id
                self._types.append((channel, name))
                next_id += 2  # a client's streams are odd

    def opening(self) -> bytes:
        """The SYN_STREAMs that open the session (the runtime starts the command once it has them all)."""
        return b"".join(self.framer.encode(spdy.SynStream(self.streams[channel], (("streamtype", name),)))
                        for channel, name in self._types)

    def from_client(self, channel: int, data: bytes) -> bytes:
        """What to send the runtime for one message of kubectl's WebSocket."""
        if channel == CLOSE:
            closed = data[0] if data else STDIN
            sid = self.streams.get(closed)
            return self.framer.encode(spdy.DataFrame(sid, b"", fin=True)) if sid is not None and closed == STDIN \
                else b""
        if channel == RESIZE and RESIZE in self.streams:
            # The runtime decodes the resize stream as a run of JSON objects: one broken object
            # would end its resizing for good, so only whole ones pass.
            try:
                json.loads(data)
            except ValueError:
                return b""
            return self.framer.encode(spdy.DataFrame(self.streams[RESIZE], data))
        if channel == STDIN and STDIN in self.streams and data:
            return self.framer.encode(spdy.DataFrame(self.streams[STDIN], data))
        return b""

    def from_runtime(self, data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
        """The channel messages for kubectl in bytes the runtime sent, and the replies owed to
        the runtime (answers to its PINGs)."""
        by_stream = {sid: channel for channel, sid in self.streams.items()}
        out: list[tuple[int, bytes]] = []
        replies = b""
        for frame in self.framer.feed(data):
            if isinstance(frame, spdy.DataFrame):
                channel = by_stream.get(frame.stream_id)
                if channel in (STDOUT, STDERR, ERROR) and frame.data:
                    out.append((channel, frame.data))
                if frame.fin and channel is not None:
                    self.finished.add(channel)
            elif isinstance(frame, (spdy.SynReply, spdy.HeadersFrame)):
                if frame.fin and frame.stream_id in by_stream:
                    self.finished.add(by_stream[frame.stream_id])
            elif isinstance(frame, spdy.RstStream):
                if frame.stream_id in by_stream:
                    self.finished.add(by_stream[frame.stream_id])
            elif isinstance(frame, spdy.Ping):
                replies += self.framer.encode(frame)
            elif isinstance(frame, spdy.GoAway):
                self.gone = True
        return out, replies

    @property
    def status_done(self) -> bool:
        return ERROR in self.finished

    @property
    def done(self) -> bool:
        """The Status is in and stdout/stderr are finished."""
        outputs = {c for c in (STDOUT, STDERR) if c in self.streams}
        return self.status_done and outputs <= self.finished
