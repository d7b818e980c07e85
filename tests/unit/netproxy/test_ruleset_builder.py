"""RulesetBuilder: successive builds equal a fresh build_ruleset, and Changes name every chain that differs.

Each case runs a sequence of cluster states through one ServicePortTable (as netproxy does, so
unchanged service ports stay the same objects) into one builder and one proxier on in-memory
iptables; after every step the incremental build, the Changes it reports and the kernel's
tables are checked against a from-scratch render.
"""

from __future__ import annotations

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.command import MemoryIptables
from netproxy.iptables.proxier import IptablesProxier
from netproxy.iptables.render import RulesetBuilder, build_ruleset
from netproxy.model import ServicePortTable
from netproxy.proxier import Snapshot
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.netproxy.objects import eps, port, subset, svc

CFG = ProxyConfig(cluster_cidr="10.244.0.0/16", large_cluster_endpoints=12)

Cluster = tuple[dict[str, t.Service], dict[str, t.Endpoints]]


def _eps(name: str, *ips: str) -> t.Endpoints:
    return eps(name, subset(list(ips), [("", 8080)]))


def _cluster() -> Cluster:
    services = {f"s{i}": svc(f"s{i}", f"10.96.1.{i}", port(80)) for i in range(4)}
    endpoints = {f"s{i}": _eps(f"s{i}", f"10.244.{i}.2", f"10.244.{i}.3") for i in range(4)}
    return services, endpoints


# (id, [(kind, name, new object or None)]) applied in order, each step one sync.
STEPS: list[tuple[str, list[tuple[str, str, object]]]] = [
    ("one-endpoint-changes", [("eps", "s1", _eps("s1", "10.244.1.2", "10.244.1.9"))]),
    ("nothing-changes", []),
    ("service-loses-its-endpoints", [("eps", "s2", None)]),  # REJECT in filter KUBE-SERVICES
    ("endpoints-come-back", [("eps", "s2", _eps("s2", "10.244.2.7"))]),
    ("service-added", [("svc", "s9", svc("s9", "10.96.1.9", port(80), port(53, name="dns", protocol="UDP"))),
                       ("eps", "s9", eps("s9", subset(["10.244.9.2"], [("", 8080), ("dns", 5353, "UDP")])))]),
    ("service-becomes-a-node-port", [("svc", "s0", svc("s0", "10.96.1.0", port(80, node_port=30080),
                                                        type="NodePort"))]),
    ("service-deleted", [("svc", "s3", None), ("eps", "s3", None)]),
    ("into-large-cluster-mode", [("eps", "s0", _eps("s0", *(f"10.244.0.{j}" for j in range(2, 12))))]),
    ("endpoint-change-in-large-mode", [("eps", "s1", _eps("s1", "10.244.1.4"))]),
    ("back-from-large-cluster-mode", [("eps", "s0", _eps("s0", "10.244.0.2"))]),
]


def _apply(cluster: Cluster, table: ServicePortTable, changes: list[tuple[str, str, object]]) -> None:
    services, endpoints = cluster
    for kind, name, obj in changes:
        objects: dict = services if kind == "svc" else endpoints
        if obj is None:
            objects.pop(name, None)
        else:
            objects[name] = obj
        table.refresh(("default", name), services.get(name), endpoints.get(name))


@pytest.mark.parametrize("last", range(len(STEPS)), ids=[s[0] for s in STEPS])
async def test_incremental_builds_equal_fresh_ones(last: int) -> None:
    cluster = _cluster()
    table = ServicePortTable()
    table.rebuild(cluster[0].values(), cluster[1].values())
    builder = RulesetBuilder(CFG)
    ipt = MemoryIptables()
    proxier = IptablesProxier(ipt, CFG)
    previous, _ = builder.build(table.ports())
    await proxier.sync(Snapshot(table.ports()), full=True)
    for _, changes in STEPS[:last + 1]:
        _apply(cluster, table, changes)
        sps = table.ports()
        built, since = builder.build(sps)
        fresh = build_ruleset(sps, CFG)
        assert built.frozen() == fresh.frozen()
        assert built.rule_count() == fresh.rule_count()
        if since is not None:
            assert since.base is previous.frozen()
            before, now = previous.frozen(), built.frozen()
            differing = {k for k in before.keys() | now.keys() if before.get(k) != now.get(k)}
            assert differing <= since.keys
            # Unchanged chains are the previous build's very tuples (the writer skips them by identity).
            assert all(now[k] is before[k] for k in now.keys() - since.keys)
        previous = built
        # A partial sync (the writer diffs only the reported chains) leaves the kernel as a full one would.
        await proxier.sync(Snapshot(sps))
        reference = MemoryIptables()
        await IptablesProxier(reference, CFG).sync(Snapshot(sps), full=True)
        assert ipt.chains == reference.chains


async def test_an_endpoint_change_writes_only_its_service_chains() -> None:
    cluster = _cluster()
    table = ServicePortTable()
    table.rebuild(cluster[0].values(), cluster[1].values())
    ipt = MemoryIptables()
    proxier = IptablesProxier(ipt, CFG)
    await proxier.sync(Snapshot(table.ports()), full=True)
    _apply(cluster, table, [("eps", "s1", _eps("s1", "10.244.1.2", "10.244.1.9"))])
    result = await proxier.sync(Snapshot(table.ports()))
    # KUBE-SVC-s1 rewritten, KUBE-SEP for .9 added and for .3 deleted; the shared chains untouched.
    assert result.restores == 1 and result.detail.startswith("2 chains written, 1 deleted")
    assert "KUBE-SERVICES" not in ipt.restored[-1]
