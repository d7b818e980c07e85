"""The DNS wire adapter: UDP and TCP listeners that turn packets into `zone.answer` calls.

All packet parsing and building is dnspython's; this module only maps a question to the pure
answer and back. What must hold:
- a reply is sent for every well-formed query, and quickly: names of the zone come from the
  in-memory Zone (no await on the way); names that are not ours go to the upstreams with a
  bounded timeout, and with no upstream (or none answering) the reply is SERVFAIL at once,
  never silence that makes a resolver wait for its timeout;
- before the first complete snapshot (`zone` is None) names of the zone are SERVFAIL, not
  NXDOMAIN: a resolver retries a failure but caches a denial;
- a UDP reply that does not fit the client's size (512 bytes, or its EDNS payload size) is
  sent truncated (TC set, no records) so the client retries over TCP;
- malformed packets are dropped; unsupported opcodes get NOTIMP, several questions FORMERR.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from clusterdns import metrics
from clusterdns.zone import Answer, Record, Zone, ZoneConfig, answer, build_zone

log = logging.getLogger("clusterdns.server")

UDP_DEFAULT_SIZE = 512
UDP_MAX_SIZE = 4096  # never more than this over UDP, whatever EDNS offers (fragmentation)
TCP_IDLE_TIMEOUT = 10.0


@functools.lru_cache(maxsize=65536)
def _rrset(records: tuple[Record, ...]) -> dns.rrset.RRset:
    first = records[0]
    return dns.rrset.from_text_list(first.name, first.ttl, dns.rdataclass.IN, first.rtype,
                                    [r.data for r in records])


def _rrsets(records: Sequence[Record]) -> list[dns.rrset.RRset]:
    """Records grouped into RRsets by (name, type), in order of first appearance."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for rec in records:
        groups.setdefault((rec.name, rec.rtype), []).append(rec)
    return [_rrset(tuple(g)) for g in groups.values()]


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int = 53


def parse_upstreams(text: str) -> tuple[Upstream, ...]:
    """`10.0.0.2,10.0.0.3:5353` -> upstreams; empty text -> none."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        host, sep, port = part.rpartition(":")
        if sep and port.isdigit() and "." in host:
            out.append(Upstream(host, int(port)))
        else:
            out.append(Upstream(part))
    return tuple(out)


@dataclass
class Stats:
    queries: int = 0
    by_rcode: dict[str, int] = field(default_factory=dict)
    forwarded: int = 0

    def count(self, rcode: str) -> None:
        self.queries += 1
        self.by_rcode[rcode] = self.by_rcode.get(rcode, 0) + 1


def _qtype(query: dns.message.Message) -> str:
    """CoreDNS's `type` label: the question's type ("other" when there is no single question)."""
    if len(query.question) != 1:
        return "other"
    return dns.rdatatype.to_text(query.question[0].rdtype)


class DnsServer:
    """Answers queries from `self.zone` (swapped whole by the caller on every change)."""

    def __init__(self, config: ZoneConfig, *, upstreams: Sequence[Upstream] = (),
                 forward_timeout: float = 2.0) -> None:
        self.config = config
        self.zone: Zone | None = None
        self._empty = build_zone((), (), (), config)
        self.upstreams = tuple(upstreams)
        self.forward_timeout = forward_timeout
        self.stats = Stats()
        self.server_label = "dns://:53"  # CoreDNS's `server` label, set by start()
        self._transports: list[asyncio.BaseTransport] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ pure-ish: one message

    def respond(self, query: dns.message.Message) -> dns.message.Message | None:
        """The reply to `query` when it can be made locally; None when it must be forwarded."""
        if query.opcode() != dns.opcode.QUERY:
            return self._error(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return self._error(query, dns.rcode.FORMERR)
        q = query.question[0]
        zone = self.zone
        result = answer(zone or self._empty, q.name.to_text(), dns.rdatatype.to_text(q.rdtype))
        if result.forward:
            if self.upstreams:
                return None
            return self._error(query, dns.rcode.SERVFAIL)
        if zone is None:
            return self._error(query, dns.rcode.SERVFAIL)
        return self._build(query, result)

    def _build(self, query: dns.message.Message, result: Answer) -> dns.message.Message:
        resp = dns.message.make_response(query)
        if result.authoritative:
            resp.flags |= dns.flags.AA
        if self.upstreams:
            resp.flags |= dns.flags.RA
        resp.set_rcode(dns.rcode.from_text(result.rcode))
        resp.answer.extend(_rrsets(result.answer))
        resp.authority.extend(_rrsets(result.authority))
        resp.additional.extend(_rrsets(result.additional))
        self.stats.count(result.rcode)
        return resp

    def _error(self, query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
        resp = dns.message.make_response(query)
        if self.upstreams:
            resp.flags |= dns.flags.RA
        resp.set_rcode(rcode)
        self.stats.count(dns.rcode.to_text(rcode))
        return resp

    async def forward(self, query: dns.message.Message, *, tcp: bool) -> dns.message.Message:
        """Ask each upstream in turn (bounded time each); SERVFAIL when none answers."""
        self.stats.forwarded += 1
        for up in self.upstreams:
            metrics.FORWARDS.labels(f"{up.host}:{up.port}").inc()
            try:
                if tcp:
                    reply = await dns.asyncquery.tcp(query, up.host, port=up.port, timeout=self.forward_timeout)
                else:
                    reply = await dns.asyncquery.udp(query, up.host, port=up.port, timeout=self.forward_timeout,
                                                     ignore_unexpected=True)
            except (dns.exception.DNSException, OSError) as exc:
                log.debug("upstream %s:%d failed: %s", up.host, up.port, exc)
                continue
            self.stats.count(dns.rcode.to_text(reply.rcode()))
            reply.flags |= dns.flags.RA  # we recursed for the client, through the upstream
            return reply
        return self._error(query, dns.rcode.SERVFAIL)

    # ------------------------------------------------------------------ wire

    @staticmethod
    def _udp_limit(query: dns.message.Message) -> int:
        if query.edns >= 0:
            return min(max(query.payload, UDP_DEFAULT_SIZE), UDP_MAX_SIZE)
        return UDP_DEFAULT_SIZE

    @staticmethod
    def to_wire(query: dns.message.Message, resp: dns.message.Message, *, limit: int) -> bytes:
        try:
            return resp.to_wire(max_size=limit)
        except dns.exception.TooBig:
            short = dns.message.make_response(query)
            short.flags = resp.flags | dns.flags.TC
            short.set_rcode(resp.rcode())
            return short.to_wire(max_size=limit)

    def handle_udp(self, data: bytes, reply: _Reply) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        if query.flags & dns.flags.QR:
            return
        started = self._received(query, "udp")
        resp = self.respond(query)
        limit = self._udp_limit(query)
        if resp is not None:
            reply(self.to_wire(query, resp, limit=limit))
            self._answered(query, resp, started)
            return
        task = asyncio.ensure_future(self._forward_udp(query, reply, limit, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_udp(self, query: dns.message.Message, reply: _Reply, limit: int, started: float) -> None:
        resp = await self.forward(query, tcp=False)
        reply(self.to_wire(query, resp, limit=limit))
        self._answered(query, resp, started)

    def _received(self, query: dns.message.Message, proto: str) -> float:
        metrics.REQUESTS.labels(self.server_label, metrics.ZONE, proto, "1", _qtype(query)).inc()
        return time.perf_counter()

    def _answered(self, query: dns.message.Message, resp: dns.message.Message, started: float) -> None:
        metrics.RESPONSES.labels(self.server_label, metrics.ZONE, dns.rcode.to_text(resp.rcode()), "").inc()
        metrics.DURATION.labels(self.server_label, metrics.ZONE, _qtype(query)).observe(time.perf_counter() - started)

    async def handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                (size,) = struct.unpack("!H", head)
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_TIMEOUT)
                try:
                    query = dns.message.from_wire(data)
                except dns.exception.DNSException:
                    return
                started = self._received(query, "tcp")
                resp = self.respond(query)
                if resp is None:
                    resp = await self.forward(query, tcp=True)
                wire = resp.to_wire(max_size=65535)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
                self._answered(query, resp, started)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, dns.exception.DNSException):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start(self, host: str, port: int) -> int:
        """Listen on UDP and TCP `host:port` (port 0: pick one, the same for both); the port."""
        loop = asyncio.get_running_loop()
        tcp = await asyncio.start_server(self.handle_tcp, host, port, reuse_address=True)
        self._servers.append(tcp)
        bound = tcp.sockets[0].getsockname()[1]
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=(host, bound))
        self._transports.append(transport)
        self.server_label = f"dns://{host}:{bound}"
        log.info("serving DNS for %s on %s:%d (udp, tcp)", self.config.origin, host, bound)
        return int(bound)

    async def close(self) -> None:
        for tr in self._transports:
            tr.close()
        for srv in self._servers:
            srv.close()
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        self._transports.clear()
        self._servers.clear()


class _Reply:
    def __init__(self, transport: asyncio.DatagramTransport, addr: tuple[str, int]) -> None:
        self.transport = transport
        self.addr = addr

    def __call__(self, wire: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(wire, self.addr)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport, but is one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            self.server.handle_udp(data, _Reply(self.transport, addr))
        except Exception:
            # One bad packet must never stop the listener.
            log.exception("query from %s failed", addr)
