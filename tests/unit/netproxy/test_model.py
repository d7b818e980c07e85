"""service_ports: which endpoints serve which port, and which Services are left out (and why)."""

from __future__ import annotations

import pytest

from netproxy.model import Endpoint, ServicePort, ServicePortTable, node_ips, sep_chain, service_ports, svc_chain
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.netproxy.objects import eps, port, subset, svc

E = Endpoint

CASES = [
    # (id, services, endpoints, expected [(key, protocol, endpoints, node_port, affinity)], problem substrings)
    ("ready-only-sorted",
     [svc("web", "10.96.0.10", port(80, name="http"))],
     [eps("web", subset(["10.244.2.2", "10.244.1.10", "10.244.1.9"], [("http", 8080)], not_ready=["10.244.1.3"]))],
     [("default/web:http", "TCP", (E("10.244.1.9", 8080), E("10.244.1.10", 8080), E("10.244.2.2", 8080)), 0, 0)],
     []),
    ("no-endpoints-object",
     [svc("web", "10.96.0.10")], [],
     [("default/web:80", "TCP", (), 0, 0)], []),
    ("named-target-port-resolved-from-endpoints",
     [svc("web", "10.96.0.10", port(80, name="http", target="web"), port(443, name="https", target="tls"))],
     [eps("web", subset(["10.244.1.2"], [("http", 8080), ("https", 8443)]),
          subset(["10.244.1.3"], [("http", 9090), ("https", 9443)]))],
     [("default/web:http", "TCP", (E("10.244.1.2", 8080), E("10.244.1.3", 9090)), 0, 0),
      ("default/web:https", "TCP", (E("10.244.1.2", 8443), E("10.244.1.3", 9443)), 0, 0)],
     []),
    ("target-port-name-when-endpoint-port-named-like-it",
     [svc("web", "10.96.0.10", port(80, name="http", target="web"))],
     [eps("web", subset(["10.244.1.2"], [("web", 8080)]))],
     [("default/web:http", "TCP", (E("10.244.1.2", 8080),), 0, 0)], []),
    ("unresolvable-named-target-port-has-no-endpoints",
     [svc("web", "10.96.0.10", port(80, name="http", target="web"))],
     [eps("web", subset(["10.244.1.2"], [("other", 8080)]))],
     [("default/web:http", "TCP", (), 0, 0)], []),
    ("subset-without-ports-uses-numeric-target",
     [svc("web", "10.96.0.10", port(80, target=8080))],
     [eps("web", subset(["10.244.1.2"], []))],
     [("default/web:80", "TCP", (E("10.244.1.2", 8080),), 0, 0)], []),
    ("protocol-must-match",
     [svc("dns", "10.96.0.53", port(53, name="dns", protocol="UDP"), port(53, name="dns-tcp", protocol="TCP"))],
     [eps("dns", subset(["10.244.1.5"], [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]))],
     [("default/dns:dns", "UDP", (E("10.244.1.5", 53),), 0, 0),
      ("default/dns:dns-tcp", "TCP", (E("10.244.1.5", 53),), 0, 0)], []),
    ("duplicate-addresses-across-subsets-once",
     [svc("web", "10.96.0.10")],
     [eps("web", subset(["10.244.1.2"], [("", 80)]), subset(["10.244.1.2"], [("", 80)]))],
     [("default/web:80", "TCP", (E("10.244.1.2", 80),), 0, 0)], []),
    ("node-port-only-for-nodeport-type",
     [svc("a", "10.96.0.1", port(80, node_port=30001)), svc("b", "10.96.0.2", port(80, node_port=30002),
                                                             type="NodePort")],
     [], [("default/a:80", "TCP", (), 0, 0), ("default/b:80", "TCP", (), 30002, 0)], []),
    ("affinity-default-and-custom-timeout",
     [svc("a", "10.96.0.1", affinity=True), svc("b", "10.96.0.2", affinity=True, affinity_timeout=60)],
     [], [("default/a:80", "TCP", (), 0, 10800), ("default/b:80", "TCP", (), 0, 60)], []),
    ("headless-and-unallocated-skipped-silently",
     [svc("h", "None"), svc("u", ""), t.Service(metadata=t.ObjectMeta(name="x", namespace="default"),
                                                spec=t.ServiceSpec(type="ExternalName"))],
     [], [], []),
    ("bad-and-ipv6-cluster-ip-reported",
     [svc("bad", "10.96.0.300"), svc("v6", "fd00::10")], [], [], ["not an IP address", "IPv6"]),
    ("unknown-protocol-reported",
     [svc("x", "10.96.0.1", port(80, protocol="ICMP"), port(81, name="ok"))], [],
     [("default/x:ok", "TCP", (), 0, 0)], ["protocol 'ICMP'"]),
    ("sorted-by-namespace-name-port",
     [svc("b", "10.96.0.2"), svc("a", "10.96.0.3", namespace="z"), svc("a", "10.96.0.1")], [],
     [("default/a:80", "TCP", (), 0, 0), ("default/b:80", "TCP", (), 0, 0), ("z/a:80", "TCP", (), 0, 0)], []),
]


@pytest.mark.parametrize(("services", "endpoints", "expected", "problems"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_service_ports(services: list[t.Service], endpoints: list[t.Endpoints], expected: list[tuple],
                       problems: list[str]) -> None:
    sps, found = service_ports(services, endpoints)
    assert [(sp.key, sp.protocol, sp.endpoints, sp.node_port, sp.affinity_timeout) for sp in sps] == expected
    assert len(found) == len(problems)
    for want, got in zip(problems, found, strict=True):
        assert want in got


def test_chain_names_are_short_stable_and_distinct() -> None:
    a = ServicePort("default", "web", "http", "TCP", "10.96.0.10", 80)
    b = ServicePort("default", "web", "http", "UDP", "10.96.0.10", 80)
    assert svc_chain(a) == svc_chain(ServicePort("default", "web", "http", "TCP", "10.96.0.99", 81))
    assert svc_chain(a) != svc_chain(b)
    names = {svc_chain(a), sep_chain(a, E("10.0.0.1", 80)), sep_chain(a, E("10.0.0.1", 81)),
             sep_chain(b, E("10.0.0.1", 80))}
    assert len(names) == 4
    assert all(len(n) <= 28 for n in names)
    assert svc_chain(a) == "KUBE-SVC-TL6HGMALSKADNKEV"  # pinned: a rename would orphan chains on upgrade


def test_node_ips() -> None:
    node = t.Node(status=t.NodeStatus(addresses=[
        t.NodeAddress(type="Hostname", address="n1"), t.NodeAddress(type="InternalIP", address="10.77.0.11"),
        t.NodeAddress(type="ExternalIP", address="192.0.2.5"), t.NodeAddress(type="InternalIP", address="fd00::1")]))
    assert node_ips(node) == ("10.77.0.11", "192.0.2.5")
    assert node_ips(None) == ()


# Steps applied to a cluster of Services "a", "b", "c" (with Endpoints) one after another: after each,
# the incrementally kept table must equal service_ports() over the same objects.
def _eps_of(name: str, *ips: str) -> t.Endpoints:
    return eps(name, subset(list(ips), [("", 80)]))


TABLE_STEPS = [
    ("endpoints-change", [("eps", "b", _eps_of("b", "10.244.9.9", "10.244.1.1"))]),
    ("endpoints-gone", [("eps", "a", None)]),
    ("service-gone", [("svc", "c", None)]),
    ("service-added-first-in-order", [("svc", "0new", svc("0new", "10.96.0.9", port(81), port(80, name="a"))),
                                      ("eps", "0new", _eps_of("0new", "10.244.3.3"))]),
    ("service-becomes-headless", [("svc", "b", svc("b", "None"))]),
    ("service-with-a-problem", [("svc", "a", svc("a", "fd00::1"))]),
    ("service-back", [("svc", "c", svc("c", "10.96.0.3")), ("eps", "c", _eps_of("c", "10.244.4.4"))]),
    ("endpoints-without-service", [("eps", "zz", _eps_of("zz", "10.244.5.5"))]),
]


def _cluster() -> tuple[dict[str, t.Service], dict[str, t.Endpoints]]:
    services = {n: svc(n, f"10.96.0.{i + 1}") for i, n in enumerate("abc")}
    endpoints = {n: _eps_of(n, f"10.244.1.{i + 1}") for i, n in enumerate("abc")}
    return services, endpoints


@pytest.mark.parametrize("last", range(len(TABLE_STEPS)), ids=[s[0] for s in TABLE_STEPS])
def test_table_refreshed_per_service_equals_a_full_computation(last: int) -> None:
    services, endpoints = _cluster()
    table = ServicePortTable()
    table.rebuild(services.values(), endpoints.values())
    for _, changes in TABLE_STEPS[:last + 1]:
        for kind, name, obj in changes:
            objects: dict = services if kind == "svc" else endpoints
            if obj is None:
                objects.pop(name)
            else:
                objects[name] = obj
            table.refresh(("default", name), services.get(name), endpoints.get(name))
        expected, problems = service_ports(services.values(), endpoints.values())
        assert list(table.ports()) == expected
        assert sorted(table.problems()) == sorted(problems)


def test_table_keeps_the_objects_of_unchanged_services() -> None:
    """Renderers cache per ServicePort and the writer skips chains by identity: unchanged stays the same object."""
    services, endpoints = _cluster()
    table = ServicePortTable()
    table.rebuild(services.values(), endpoints.values())
    first = table.ports()
    table.refresh(("default", "b"), services["b"], _eps_of("b", "10.244.9.9"))
    second = table.ports()
    assert second[0] is first[0] and second[2] is first[2]
    assert second[1].endpoints == (Endpoint("10.244.9.9", 80),)
    table.refresh(("default", "a"), services["a"], endpoints["a"])  # an equal recomputation
    assert table.ports() is second
    table.rebuild(services.values(), [endpoints["a"], _eps_of("b", "10.244.9.9"), endpoints["c"]])
    assert all(x is y for x, y in zip(table.ports(), second, strict=True))


def test_ipv4_key_does_not_depend_on_inet_ntop(monkeypatch: pytest.MonkeyPatch) -> None:
    """pysyncobj replaces socket.inet_ntop on import; endpoints must parse all the same."""
    import socket

    from netproxy.model import ipv4_key

    def broken(*_: object) -> str:
        raise TypeError("not_windows")

    monkeypatch.setattr(socket, "inet_ntop", broken)
    ipv4_key.cache_clear()
    assert ipv4_key("10.244.1.2") == bytes([10, 244, 1, 2])
    assert ipv4_key("010.244.1.2") is None and ipv4_key("fd00::1") is None and ipv4_key("x") is None
