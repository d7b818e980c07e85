"""SPDY/3.1 framing: the frames that Kubernetes' streaming protocols use (the SPDY draft 3.1,
as github.com/moby/spdystream speaks it), encoded and decoded without any I/O.

What must hold:
- A `Framer` belongs to one end of one connection: SPDY compresses every header block of a
  direction with one zlib stream (seeded with the SPDY/3 dictionary, flushed with SYNC_FLUSH
  after each block), so blocks must be encoded and decoded in the order they are sent, and
  every received block must be inflated, even one whose headers are not wanted.
- Header names are lowercase on the wire (spdystream refuses others as a protocol error).
- `Framer.feed` accepts any split of the byte stream (a frame may arrive in pieces, several
  in one piece) and returns only whole frames; what is left waits for more bytes.
- Frames the codec does not model come back as `UnknownFrame`, never as an exception:
  SPDY says a receiver ignores control frames of types it does not know.
- No flow control: spdystream neither sends nor honours WINDOW_UPDATE, so neither do we;
  WINDOW_UPDATE and SETTINGS are decoded so that they can be ignored.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

VERSION = 3
FLAG_FIN = 0x01
MAX_LENGTH = 0xFFFFFF  # 24 bits

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

# RST_STREAM status codes (draft 3.1, 2.6.3) used here.
RST_PROTOCOL_ERROR = 1
RST_CANCEL = 5

Headers = tuple[tuple[str, str], ...]

# The SPDY/3 header dictionary (draft 3.1, 2.6.10.1): each word with its 32-bit length, then
# a run of bare text. Written out word by word so that it can be read; its zlib id (Adler-32)
# is checked by the unit tests and, on every real connection, by the peer's zlib.
_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location",
    "content-md5", "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host",
    "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified",
    "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via",
    "warning", "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public",
    "set-cookie", "keep-alive", "origin",
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class ProtocolError(Exception):
    """The peer sent bytes that are not SPDY/3.1 (or a header block that does not inflate)."""


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    fin: bool = False
    associated_to: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...]  # (flags, id, value)
    flags: int = 0


@dataclass(frozen=True)
class Ping:
    id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = 0


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownFrame:
    type: int
    flags: int
    data: bytes


Frame = (DataFrame | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate
         | UnknownFrame)


def header(headers: Headers, name: str) -> str | None:
    """The first value of `name` (case-insensitive), as http.Header.Get answers."""
    name = name.lower()
    return next((v for k, v in headers if k == name), None)


def encode_header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """The uncompressed name/value block: a 32-bit count, then each name and value with its
    32-bit length. Repeated names are joined with NUL, as SPDY/3 requires."""
    joined: dict[str, list[str]] = {}
    for name, value in headers:
        if name != name.lower():
            raise ValueError(f"SPDY header names are lowercase: {name!r}")
        joined.setdefault(name, []).append(value)
    out = [struct.pack(">I", len(joined))]
    for name, values in joined.items():
        n, v = name.encode(), "\0".join(values).encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        pos, pairs = 4, []
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (m,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4:pos + 4 + m].decode()
            pos += 4 + m
            if pos > len(block):
                raise ProtocolError("header block shorter than its lengths say")
            pairs += [(name, v) for v in value.split("\0")]
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed header block: {exc}") from exc
    return tuple(pairs)


class Framer:
    """One end of one SPDY/3.1 connection: `encode` what we send, `feed` what we receive."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._inflate = zlib.decompressobj(15, DICTIONARY)
        self._buffer = bytearray()

    # ------------------------------------------------------------------ sending

    def _block(self, headers: Headers) -> bytes:
        return self._deflate.compress(encode_header_block(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(type_: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_LENGTH:
            raise ValueError(f"SPDY frame payload of {len(payload)} bytes exceeds 24 bits")
        return struct.pack(">HHI", 0x8000 | VERSION, type_, (flags << 24) | len(payload)) + payload

    def encode(self, frame: Frame) -> bytes:
        fin = FLAG_FIN if getattr(frame, "fin", False) else 0
        if isinstance(frame, DataFrame):
            out = []
            # A data frame's length has 24 bits: split larger writes, FIN on the last piece only.
            chunks = [frame.data[i:i + MAX_LENGTH] for i in range(0, len(frame.data), MAX_LENGTH)] or [b""]
            for i, chunk in enumerate(chunks):
                flags = fin if i == len(chunks) - 1 else 0
                out.append(struct.pack(">II", frame.stream_id & 0x7FFFFFFF, (flags << 24) | len(chunk)) + chunk)
            return b"".join(out)
        if isinstance(frame, SynStream):
            payload = struct.pack(">IIBB", frame.stream_id & 0x7FFFFFFF, frame.associated_to & 0x7FFFFFFF,
                                  (frame.priority & 0x7) << 5, 0) + self._block(frame.headers)
            return self._control(SYN_STREAM, fin, payload)
        if isinstance(frame, SynReply):
            return self._control(SYN_REPLY, fin, struct.pack(">I", frame.stream_id) + self._block(frame.headers))
        if isinstance(frame, HeadersFrame):
            return self._control(HEADERS, fin, struct.pack(">I", frame.stream_id) + self._block(frame.headers))
        if isinstance(frame, RstStream):
            return self._control(RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            payload = struct.pack(">I", len(frame.entries)) + b"".join(
                struct.pack(">II", (flags << 24) | id_, value) for flags, id_, value in frame.entries)
            return self._control(SETTINGS, frame.flags, payload)
        if isinstance(frame, Ping):
            return self._control(PING, 0, struct.pack(">I", frame.id))
        if isinstance(frame, GoAway):
            return self._control(GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return self._control(WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        return self._control(frame.type, frame.flags, frame.data)

    # ------------------------------------------------------------------ receiving

    def _headers(self, data: bytes) -> Headers:
        try:
            block = self._inflate.decompress(data)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not inflate with the SPDY/3 dictionary: {exc}") from exc
        return decode_header_block(block)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer, 0)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            flags = second >> 24
            if first & 0x80000000:
                frames.append(self._control_frame(first, flags, payload))
            else:
                frames.append(DataFrame(first & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN)))
        return frames

    def _control_frame(self, first: int, flags: int, payload: bytes) -> Frame:
        version, type_ = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} (only {VERSION} is spoken)")
        fin = bool(flags & FLAG_FIN)
        try:
            if type_ == SYN_STREAM:
                sid, assoc, prio, _slot = struct.unpack_from(">IIBB", payload, 0)
                return SynStream(sid & 0x7FFFFFFF, self._headers(payload[10:]), fin, assoc & 0x7FFFFFFF, prio >> 5)
            if type_ in (SYN_REPLY, HEADERS):
                (sid,) = struct.unpack_from(">I", payload, 0)
                cls = SynReply if type_ == SYN_REPLY else HeadersFrame
                return cls(sid & 0x7FFFFFFF, self._headers(payload[4:]), fin)
            if type_ == RST_STREAM:
                sid, status = struct.unpack_from(">II", payload, 0)
                return RstStream(sid & 0x7FFFFFFF, status)
            if type_ == SETTINGS:
                (count,) = struct.unpack_from(">I", payload, 0)
                entries = []
                for i in range(count):
                    head, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                    entries.append((head >> 24, head & 0xFFFFFF, value))
                return Settings(tuple(entries), flags)
            if type_ == PING:
                return Ping(struct.unpack_from(">I", payload, 0)[0])
            if type_ == GOAWAY:
                last, status = struct.unpack_from(">II", payload, 0) if len(payload) >= 8 else (
                    struct.unpack_from(">I", payload, 0)[0], 0)
                return GoAway(last & 0x7FFFFFFF, status)
            if type_ == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", payload, 0)
                return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error as exc:
            raise ProtocolError(f"SPDY control frame type {type_} too short ({len(payload)} bytes)") from exc
        return UnknownFrame(type_, flags, payload)
