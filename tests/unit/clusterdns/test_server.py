"""The wire adapter over real UDP and TCP sockets on loopback, queried with dnspython's client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from clusterdns.server import DnsServer, Upstream, parse_upstreams
from clusterdns.zone import ZoneConfig, build_zone
from skiffpb.api.v1 import types_pb2 as t

CONFIG = ZoneConfig(domain="cluster.local", reverse_cidrs=("10.96.0.0/12",))


def headless_with(n: int) -> tuple[t.Service, t.Endpoints]:
    s = t.Service(metadata=t.ObjectMeta(name="many", namespace="default"))
    s.spec.cluster_ip = "None"
    e = t.Endpoints(metadata=t.ObjectMeta(name="many", namespace="default"))
    sub = e.subsets.add()
    for i in range(n):
        sub.addresses.add(ip=f"10.244.{i // 250}.{i % 250 + 1}")
    return s, e


def web() -> t.Service:
    s = t.Service(metadata=t.ObjectMeta(name="web-service", namespace="default"))
    s.spec.cluster_ip = "10.96.0.20"
    s.spec.ports.add(name="http", port=80, protocol="TCP")
    return s


async def start(server: DnsServer) -> int:
    return await server.start("127.0.0.1", 0)


@pytest.fixture
async def served() -> AsyncIterator[tuple[DnsServer, int]]:
    server = DnsServer(CONFIG)
    many, many_eps = headless_with(200)
    server.zone = build_zone([web(), many], [many_eps], [], CONFIG)
    port = await start(server)
    yield server, port
    await server.close()


async def udp(port: int, name: str, rdtype: str = "A", *, payload: int | None = None) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=payload is not None, payload=payload or 512)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)


@pytest.mark.parametrize(("name", "rdtype", "rcode", "count"), [
    ("web-service.default.svc.cluster.local.", "A", "NOERROR", 1),
    ("_http._tcp.web-service.default.svc.cluster.local.", "SRV", "NOERROR", 1),
    ("missing.default.svc.cluster.local.", "A", "NXDOMAIN", 0),
    ("20.0.96.10.in-addr.arpa.", "PTR", "NOERROR", 1),
    ("example.com.", "A", "SERVFAIL", 0),  # no upstream configured
], ids=["a", "srv", "nxdomain", "ptr", "no-upstream"])
async def test_udp_answers(served: tuple[DnsServer, int], name: str, rdtype: str, rcode: str, count: int) -> None:
    _, port = served
    resp = await udp(port, name, rdtype)
    assert dns.rcode.to_text(resp.rcode()) == rcode
    assert sum(len(rrset) for rrset in resp.answer) == count
    if rcode != "SERVFAIL":
        assert resp.flags & dns.flags.AA


async def test_big_udp_answer_is_truncated_and_complete_over_tcp(served: tuple[DnsServer, int]) -> None:
    _, port = served
    resp = await udp(port, "many.default.svc.cluster.local.")
    assert resp.flags & dns.flags.TC and not resp.answer
    q = dns.message.make_query("many.default.svc.cluster.local.", "A")
    full = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=2)
    assert sum(len(r) for r in full.answer) == 200 and not full.flags & dns.flags.TC


async def test_edns_payload_size_is_honoured(served: tuple[DnsServer, int]) -> None:
    _, port = served
    small = await udp(port, "many.default.svc.cluster.local.", payload=512)
    assert small.flags & dns.flags.TC
    big = await udp(port, "many.default.svc.cluster.local.", payload=4096)
    assert not big.flags & dns.flags.TC and sum(len(r) for r in big.answer) == 200


async def test_before_the_first_snapshot_zone_names_fail_instead_of_nxdomain() -> None:
    server = DnsServer(CONFIG)
    port = await start(server)
    try:
        resp = await udp(port, "web-service.default.svc.cluster.local.")
        assert dns.rcode.to_text(resp.rcode()) == "SERVFAIL"
        server.zone = build_zone([web()], [], [], CONFIG)
        resp = await udp(port, "web-service.default.svc.cluster.local.")
        assert [r.to_text() for rrset in resp.answer for r in rrset] == ["10.96.0.20"]
    finally:
        await server.close()


async def test_other_names_go_to_the_upstream() -> None:
    # The upstream is another real server on loopback, authoritative for "upstream.test".
    up_config = ZoneConfig(domain="upstream.test")
    upstream = DnsServer(up_config)
    upstream.zone = build_zone([], [], [], up_config)
    up_port = await start(upstream)
    server = DnsServer(CONFIG, upstreams=[Upstream("127.0.0.1", 1), Upstream("127.0.0.1", up_port)],
                       forward_timeout=0.5)
    server.zone = build_zone([web()], [], [], CONFIG)
    port = await start(server)
    try:
        resp = await udp(port, "dns-version.upstream.test.", "TXT")
        assert [r.to_text() for rrset in resp.answer for r in rrset] == ['"1.1.0"']
        assert resp.flags & dns.flags.RA
        q = dns.message.make_query("nothing.upstream.test.", "A")
        resp = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
        assert dns.rcode.to_text(resp.rcode()) == "NXDOMAIN"
        assert server.stats.forwarded == 2
    finally:
        await server.close()
        await upstream.close()


async def test_no_upstream_is_servfail_at_once(served: tuple[DnsServer, int]) -> None:
    _, port = served
    started = time.monotonic()
    resp = await udp(port, "example.com.")
    assert dns.rcode.to_text(resp.rcode()) == "SERVFAIL"
    assert time.monotonic() - started < 0.5


async def test_garbage_is_dropped_and_the_server_keeps_answering(served: tuple[DnsServer, int]) -> None:
    import socket

    _, port = served
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00\x01garbage", ("127.0.0.1", port))
    resp = await udp(port, "web-service.default.svc.cluster.local.")
    assert dns.rcode.to_text(resp.rcode()) == "NOERROR"


@pytest.mark.parametrize(("text", "want"), [
    ("", ()),
    ("10.0.0.2", (Upstream("10.0.0.2", 53),)),
    ("10.0.0.2:5353, 10.0.0.3", (Upstream("10.0.0.2", 5353), Upstream("10.0.0.3", 53))),
], ids=["none", "one", "two-with-port"])
def test_parse_upstreams(text: str, want: tuple[Upstream, ...]) -> None:
    assert parse_upstreams(text) == want


def test_rdatatype_names_match_the_zone() -> None:
    # The zone keys records by these mnemonics; the adapter passes dnspython's text for the type.
    assert [dns.rdatatype.to_text(dns.rdatatype.from_text(x)) for x in ("A", "SRV", "PTR", "CNAME", "TXT")] == \
        ["A", "SRV", "PTR", "CNAME", "TXT"]
