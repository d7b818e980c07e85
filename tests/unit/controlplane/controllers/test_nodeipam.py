"""Pod CIDR allocation (pure CidrSet) and the node IPAM controller."""

from __future__ import annotations

import pytest

from controlplane.controllers.cidrset import CidrError, CidrFullError, CidrSet
from controlplane.controllers.nodeipam import PROVIDED_NODE_IP, NodeIpamController, plan_addresses
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, node


def test_allocates_in_order_and_never_twice() -> None:
    cs = CidrSet("10.244.0.0/16", 24)
    assert [cs.allocate_next() for _ in range(3)] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    cs.release("10.244.1.0/24")
    # The released subnet is not reused right away: allocation moves on.
    assert cs.allocate_next() == "10.244.3.0/24"


def test_wraps_around_and_reports_full() -> None:
    cs = CidrSet("10.0.0.0/30", 31)
    a, b = cs.allocate_next(), cs.allocate_next()
    assert (a, b) == ("10.0.0.0/31", "10.0.0.2/31")
    with pytest.raises(CidrFullError, match="all 2 /31 subnets are in use"):
        cs.allocate_next()
    cs.release(a)
    assert cs.allocate_next() == a


def test_occupy_skips_subnets_in_use() -> None:
    cs = CidrSet("10.244.0.0/16", 24)
    cs.occupy("10.244.0.0/24")
    cs.occupy("10.244.2.0/23")  # covers .2 and .3
    assert [cs.allocate_next() for _ in range(2)] == ["10.244.1.0/24", "10.244.4.0/24"]
    with pytest.raises(CidrError, match="not inside the cluster CIDR"):
        cs.occupy("10.245.0.0/24")


@pytest.mark.parametrize(("cidr", "mask", "message"), [
    ("10.244.0.0/33", 24, "invalid --cluster-cidr"),
    ("10.244.0.1/16", 24, "invalid --cluster-cidr"),
    ("10.244.0.0/16", 8, "must be between"),
    ("10.0.0.0/8", 30, r"at most 2\^16"),
], ids=["bad-prefix", "host-bits", "mask-too-small", "too-many-subnets"])
def test_bad_flags_are_refused(cidr: str, mask: int, message: str) -> None:
    with pytest.raises(CidrError, match=message):
        CidrSet(cidr, mask)


def test_ipv6() -> None:
    cs = CidrSet("fd00:10::/56", 64)
    assert cs.allocate_next() == "fd00:10::/64"
    assert cs.allocate_next() == "fd00:10:0:1::/64"


def test_plan_addresses_keeps_the_provided_internal_ip_first() -> None:
    n = node("n1")
    assert plan_addresses(n) is None
    n.metadata.annotations[PROVIDED_NODE_IP] = "192.168.5.10"
    want = plan_addresses(n)
    assert want is not None and [(a.type, a.address) for a in want] == [("InternalIP", "192.168.5.10"),
                                                                        ("Hostname", "n1")]
    n.status.addresses.extend(want)
    assert plan_addresses(n) is None


async def test_controller_assigns_distinct_cidrs_rebuilds_and_releases(cluster: Cluster) -> None:
    existing = node("old")
    existing.spec.pod_cidr = "10.244.0.0/24"
    existing.spec.pod_cidrs.append("10.244.0.0/24")
    await cluster.create(existing)
    for name in ("a", "b"):
        n = node(name)
        n.metadata.annotations[PROVIDED_NODE_IP] = f"192.168.0.{ord(name)}"
        await cluster.create(n)
    ctrl = NodeIpamController(cluster.api, cluster.factory, recorder=cluster.recorder)
    await cluster.start()
    ctrl.rebuild()
    await cluster.drain(ctrl)
    cidrs = {n.metadata.name: n.spec.pod_cidr for n in cluster.api.objects(t.Node)}
    assert cidrs == {"old": "10.244.0.0/24", "a": "10.244.1.0/24", "b": "10.244.2.0/24"}
    a = await cluster.api.get(t.Node, "a")
    assert list(a.spec.pod_cidrs) == ["10.244.1.0/24"]
    assert a.status.addresses[0].type == "InternalIP" and a.status.addresses[0].address == "192.168.0.97"
    await cluster.api.delete(t.Node, "a")
    await cluster.drain(ctrl)
    assert not ctrl.cidrs.is_used("10.244.1.0/24")
    await cluster.create(node("c"))
    await cluster.drain(ctrl)
    assert (await cluster.api.get(t.Node, "c")).spec.pod_cidr == "10.244.3.0/24"
