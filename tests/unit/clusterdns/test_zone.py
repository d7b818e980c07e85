"""The cluster zone's answers, computed from cache snapshots by the pure build_zone/answer."""

from __future__ import annotations

import pytest

from clusterdns.zone import Zone, ZoneConfig, answer, build_zone
from skiffpb.api.v1 import types_pb2 as t

D = "cluster.local."


def svc(name: str, ns: str = "default", *, ip: str = "", ports: tuple[tuple[str, int, str], ...] = (("", 80, "TCP"),),
        type_: str = "ClusterIP", external: str = "") -> t.Service:
    s = t.Service(metadata=t.ObjectMeta(name=name, namespace=ns))
    s.spec.type, s.spec.cluster_ip, s.spec.external_name = type_, ip, external
    for pname, port, proto in ports:
        s.spec.ports.add(name=pname, port=port, protocol=proto)
    return s


def eps(name: str, ns: str = "default", *, addrs: tuple[tuple[str, str], ...] = (),
        ports: tuple[tuple[str, int, str], ...] = (("", 8080, "TCP"),)) -> t.Endpoints:
    e = t.Endpoints(metadata=t.ObjectMeta(name=name, namespace=ns))
    sub = e.subsets.add()
    for ip, hostname in addrs:
        sub.addresses.add(ip=ip, hostname=hostname)
    for pname, port, proto in ports:
        sub.ports.add(name=pname, port=port, protocol=proto)
    return e


def pod(name: str, ip: str, ns: str = "default", *, host_network: bool = False) -> t.Pod:
    p = t.Pod(metadata=t.ObjectMeta(name=name, namespace=ns))
    p.status.pod_ip = ip
    p.spec.host_network = host_network
    return p


@pytest.fixture(scope="module")
def zone() -> Zone:
    services = [
        svc("web-service", ip="10.96.0.20", ports=(("http", 80, "TCP"), ("dns", 53, "UDP"))),
        svc("kubernetes", ip="10.96.0.1", ports=(("https", 443, "TCP"),)),
        svc("db", "prod", ip="None", ports=(("pg", 5432, "TCP"),)),
        svc("empty", "prod", ip="None"),
        svc("ext", type_="ExternalName", external="example.com", ports=()),
        svc("alias", type_="ExternalName", external="web-service.default.svc.cluster.local", ports=()),
        svc("pending", ip=""),  # not allocated yet: no record
    ]
    endpoints = [
        eps("db", "prod", addrs=(("10.244.1.5", "db-0"), ("10.244.2.7", "")), ports=(("pg", 5432, "TCP"),)),
        eps("web-service", addrs=(("10.244.1.9", ""),)),
    ]
    pods = [pod("db-0", "10.244.1.5", "prod"), pod("db-1", "10.244.2.7", "prod"), pod("w", "10.244.1.9"),
            pod("hostnet", "10.77.0.11", host_network=True)]
    return build_zone(services, endpoints, pods,
                      ZoneConfig(domain="cluster.local", ttl=5, reverse_cidrs=("10.96.0.0/12", "10.244.0.0/16")))


CASES = [
    # (qname, qtype, rcode, answer data, forward)
    ("web-service.default.svc.cluster.local", "A", "NOERROR", ["10.96.0.20"], False),
    ("WEB-Service.Default.SVC.cluster.local.", "A", "NOERROR", ["10.96.0.20"], False),
    ("web-service.default.svc.cluster.local", "AAAA", "NOERROR", [], False),
    ("kubernetes.default.svc.cluster.local", "A", "NOERROR", ["10.96.0.1"], False),
    ("db.prod.svc.cluster.local", "A", "NOERROR", ["10.244.1.5", "10.244.2.7"], False),
    ("db-0.db.prod.svc.cluster.local", "A", "NOERROR", ["10.244.1.5"], False),
    ("10-244-2-7.db.prod.svc.cluster.local", "A", "NOERROR", ["10.244.2.7"], False),
    ("empty.prod.svc.cluster.local", "A", "NXDOMAIN", [], False),
    ("nope.default.svc.cluster.local", "A", "NXDOMAIN", [], False),
    ("web-service.default.default.svc.cluster.local", "A", "NXDOMAIN", [], False),
    ("pending.default.svc.cluster.local", "A", "NXDOMAIN", [], False),
    ("default.svc.cluster.local", "A", "NOERROR", [], False),
    ("svc.cluster.local", "A", "NOERROR", [], False),
    ("nons.svc.cluster.local", "A", "NXDOMAIN", [], False),
    ("_http._tcp.web-service.default.svc.cluster.local", "SRV", "NOERROR",
     ["0 100 80 web-service.default.svc.cluster.local."], False),
    ("_dns._udp.web-service.default.svc.cluster.local", "SRV", "NOERROR",
     ["0 100 53 web-service.default.svc.cluster.local."], False),
    ("_http._udp.web-service.default.svc.cluster.local", "SRV", "NXDOMAIN", [], False),
    ("_tcp.web-service.default.svc.cluster.local", "SRV", "NOERROR", [], False),
    ("web-service.default.svc.cluster.local", "SRV", "NOERROR",
     ["0 100 80 web-service.default.svc.cluster.local.", "0 100 53 web-service.default.svc.cluster.local."], False),
    ("_pg._tcp.db.prod.svc.cluster.local", "SRV", "NOERROR",
     ["0 50 5432 db-0.db.prod.svc.cluster.local.", "0 50 5432 10-244-2-7.db.prod.svc.cluster.local."], False),
    ("ext.default.svc.cluster.local", "A", "NOERROR", ["example.com."], False),
    ("ext.default.svc.cluster.local", "CNAME", "NOERROR", ["example.com."], False),
    ("alias.default.svc.cluster.local", "A", "NOERROR",
     ["web-service.default.svc.cluster.local.", "10.96.0.20"], False),
    ("10-244-1-5.prod.pod.cluster.local", "A", "NOERROR", ["10.244.1.5"], False),
    ("10-244-1-5.default.pod.cluster.local", "A", "NXDOMAIN", [], False),  # pods verified: wrong namespace
    ("10-77-0-11.default.pod.cluster.local", "A", "NXDOMAIN", [], False),  # host-network pods have no name
    ("20.0.96.10.in-addr.arpa", "PTR", "NOERROR", ["web-service.default.svc.cluster.local."], False),
    ("5.1.244.10.in-addr.arpa", "PTR", "NOERROR", ["db-0.db.prod.svc.cluster.local."], False),
    ("9.1.244.10.in-addr.arpa", "PTR", "NOERROR", ["10-244-1-9.default.pod.cluster.local."], False),
    ("99.9.244.10.in-addr.arpa", "PTR", "NXDOMAIN", [], False),
    ("1.1.168.192.in-addr.arpa", "PTR", "NOERROR", [], True),
    ("dns-version.cluster.local", "TXT", "NOERROR", ['"1.1.0"'], False),
    ("example.com", "A", "NOERROR", [], True),
    ("web-service", "A", "NOERROR", [], True),  # a bare name is the resolver's search list's job
    ("notcluster.local", "A", "NOERROR", [], True),
]


@pytest.mark.parametrize(("qname", "qtype", "rcode", "data", "forward"), CASES,
                         ids=[f"{c[1]}-{c[0]}" for c in CASES])
def test_answer(zone: Zone, qname: str, qtype: str, rcode: str, data: list[str], forward: bool) -> None:
    got = answer(zone, qname, qtype)
    assert (got.rcode, [r.data for r in got.answer], got.forward) == (rcode, data, forward)
    if not forward and not got.answer:
        # Negative answers carry the SOA, so resolvers cache them for the zone's TTL only.
        assert [r.rtype for r in got.authority] == ["SOA"]


@pytest.mark.parametrize(("qname", "additional"), [
    ("_pg._tcp.db.prod.svc.cluster.local", [("db-0.db.prod.svc.cluster.local.", "10.244.1.5"),
                                            ("10-244-2-7.db.prod.svc.cluster.local.", "10.244.2.7")]),
    ("_http._tcp.web-service.default.svc.cluster.local", [("web-service.default.svc.cluster.local.", "10.96.0.20")]),
], ids=["headless", "clusterip"])
def test_srv_additional_section_has_target_addresses(zone: Zone, qname: str,
                                                     additional: list[tuple[str, str]]) -> None:
    got = answer(zone, qname, "SRV")
    assert [(r.name, r.data) for r in got.additional] == additional


def test_ttl_is_the_configured_one(zone: Zone) -> None:
    got = answer(zone, "web-service.default.svc.cluster.local", "A")
    assert {r.ttl for r in got.answer} == {5}


@pytest.mark.parametrize(("change", "qname", "before", "after"), [
    ("endpoint-added", "db.prod.svc.cluster.local", ["10.244.1.5"], ["10.244.1.5", "10.244.3.3"]),
    ("service-deleted", "web-service.default.svc.cluster.local", ["10.96.0.20"], []),
], ids=["endpoint-added", "service-deleted"])
def test_zone_follows_the_snapshot(change: str, qname: str, before: list[str], after: list[str]) -> None:
    config = ZoneConfig()
    services = [svc("db", "prod", ip="None"), svc("web-service", ip="10.96.0.20")]
    endpoints = [eps("db", "prod", addrs=(("10.244.1.5", ""),))]
    z1 = build_zone(services, endpoints, [], config)
    if change == "endpoint-added":
        endpoints = [eps("db", "prod", addrs=(("10.244.1.5", ""), ("10.244.3.3", "")))]
    else:
        services = services[:1]
    z2 = build_zone(services, endpoints, [], config)
    assert [r.data for r in answer(z1, qname, "A").answer] == before
    assert [r.data for r in answer(z2, qname, "A").answer] == after
