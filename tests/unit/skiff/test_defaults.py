"""skiff.defaults: the cluster's default ranges are disjoint, and overlaps are named."""

from __future__ import annotations

import ipaddress

import pytest

from skiff import defaults
from skiffpb.api.v1 import types_pb2 as t


def test_default_ranges_are_disjoint_and_hold_the_lab_lans() -> None:
    ranges = [("service", defaults.SERVICE_CIDR), ("cluster", defaults.CLUSTER_CIDR),
              ("lab", defaults.LAB_LAN_CIDR), ("local", defaults.LOCAL_LAN_CIDR)]
    assert defaults.overlaps(ranges) == []
    low, high = (int(x) for x in defaults.NODE_PORT_RANGE.split("-"))
    assert (low, high) == (defaults.NODE_PORT_MIN, defaults.NODE_PORT_MAX) and 1024 < low < high <= 65535
    assert ipaddress.ip_network(defaults.CLUSTER_CIDR).prefixlen < defaults.NODE_CIDR_MASK_SIZE


@pytest.mark.parametrize(("ranges", "others", "want"), [
    ([("service CIDR", "10.96.0.0/12"), ("LAN", "10.99.0.0/24")], [],
     [("service CIDR 10.96.0.0/12", "LAN 10.99.0.0/24")]),
    ([("service CIDR", "10.96.0.0/12"), ("LAN", "10.112.0.0/24")], [], []),
    ([("service CIDR", "10.96.0.0/12")], [("eth0", "10.100.3.4/16"), ("lo", "127.0.0.1/8")],
     [("service CIDR 10.96.0.0/12", "eth0 10.100.0.0/16")]),
    ([("service CIDR", "10.96.0.0/12")], [("a", "192.0.2.0/24"), ("b", "192.0.2.0/25")], []),
    ([("cluster", "10.244.0.0/16")], [("node cp", "10.244.7.9")], [("cluster 10.244.0.0/16", "node cp 10.244.7.9/32")]),
    ([("service CIDR", "10.96.0.0/12")], [("v6", "fd00::/8")], []),
    ([("a", "10.0.0.0/8"), ("b", "10.1.0.0/16"), ("c", "10.2.0.0/16")], [],
     [("a 10.0.0.0/8", "b 10.1.0.0/16"), ("a 10.0.0.0/8", "c 10.2.0.0/16")]),
], ids=["make-up-bug", "just-outside", "host-network", "others-not-among-themselves", "address", "other-family",
        "every-pair"])
def test_overlaps(ranges: list[tuple[str, str]], others: list[tuple[str, str]], want: list[tuple[str, str]]) -> None:
    assert defaults.overlaps(ranges, others) == want


def test_check_disjoint_names_both_ranges() -> None:
    with pytest.raises(ValueError, match=r"service CIDR 10\.96\.0\.0/12 overlaps LAN 10\.99\.0\.0/24"):
        defaults.check_disjoint([("service CIDR", "10.96.0.0/12"), ("LAN", "10.99.0.0/24")])
    defaults.check_disjoint([("service CIDR", "10.96.0.0/12"), ("LAN", defaults.LOCAL_LAN_CIDR)])


@pytest.mark.parametrize(("spec", "want"), [
    (t.DeploymentSpec(), defaults.REPLICAS),
    (t.DeploymentSpec(replicas=0), 0),
    (t.ReplicaSetSpec(replicas=3), 3),
    (t.ReplicaSetSpec(), 1),
], ids=["deployment-unset", "deployment-zero-is-zero", "replicaset-set", "replicaset-unset"])
def test_replicas(spec: t.DeploymentSpec | t.ReplicaSetSpec, want: int) -> None:
    assert defaults.replicas(spec) == want
