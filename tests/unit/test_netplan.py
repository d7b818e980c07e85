"""The lab network plan: names, addresses and commands, before anything runs."""

from __future__ import annotations

import ipaddress

import pytest

from deploy import netplan
from deploy.lab import LabError, LabSpec
from skiff import defaults


def test_standard_lab_hosts() -> None:
    lab = netplan.make_lab("t1", workers=3)
    assert [(h.name, h.ip, h.roles) for h in lab.hosts] == [
        ("cp", "10.77.0.10", ("control-plane",)),
        ("n1", "10.77.0.11", ("worker",)),
        ("n2", "10.77.0.12", ("worker",)),
        ("n3", "10.77.0.13", ("worker",)),
    ]
    assert lab.uplink_ip == "10.77.0.1" and lab.uplink_name == "t1-up"
    assert [h.name for h in lab.with_role("worker")] == ["n1", "n2", "n3"]


def test_combined_host_and_routes() -> None:
    lab = netplan.make_lab("loc", combined=True, lan_cidr="10.78.0.0/24", host_routes=True)
    assert [(h.name, h.ip) for h in lab.hosts] == [("node", "10.78.0.10")]
    up = netplan.plan_up(lab)
    assert ("ip", "route", "replace", defaults.SERVICE_CIDR, "via", "10.78.0.10", "dev", "loc-up") in up
    assert ("ip", "route", "del", defaults.SERVICE_CIDR, "dev", "loc-up") in netplan.plan_down(lab)


@pytest.mark.parametrize(("lan", "problem"), [
    (defaults.LAB_LAN_CIDR, ""),
    (defaults.LOCAL_LAN_CIDR, ""),
    ("10.99.0.0/24", "lab LAN 10.99.0.0/24 overlaps service CIDR 10.96.0.0/12"),
    ("10.244.200.0/24", "lab LAN 10.244.200.0/24 overlaps cluster CIDR 10.244.0.0/16"),
], ids=["lab-default", "make-up-default", "old-make-up-lan-in-services", "lan-in-pods"])
def test_lab_refuses_a_lan_overlapping_the_cluster_ranges(lan: str, problem: str) -> None:
    spec = LabSpec(prefix="t", lan_cidr=lan)
    if not problem:
        spec.check_ranges()
        return
    with pytest.raises(LabError, match=problem):
        spec.check_ranges()


def test_plan_up_wires_each_host_to_the_bridge_once() -> None:
    lab = netplan.make_lab("t2", workers=2, uplink=False)
    up = netplan.plan_up(lab)
    assert up[0] == ("ip", "netns", "add", "t2-lan")
    adds = [c for c in up if c[:3] == ("ip", "netns", "add")]
    assert [c[3] for c in adds] == ["t2-lan", "t2-cp", "t2-n1", "t2-n2"]
    assert ("ip", "-n", "t2-n2", "addr", "add", "10.77.0.12/24", "dev", "eth0") in up
    assert not any("t2-up" in c for c in up)
    assert netplan.plan_down(lab) == [("ip", "netns", "del", n) for n in ("t2-cp", "t2-n1", "t2-n2", "t2-lan")]


@pytest.mark.parametrize(
    ("prefix", "cidr", "error"),
    [("toolongname", "10.77.0.0/24", "1-6 letters"), ("1ab", "10.77.0.0/24", "starting with a letter"),
     ("ok", "10.77.0.0/28", "too small")],
    ids=["long", "digit-first", "small-lan"],
)
def test_bad_labs(prefix: str, cidr: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        netplan.make_lab(prefix, lan_cidr=cidr)


_SERVICES = ipaddress.IPv4Network(defaults.SERVICE_CIDR)  # 10.96.0.0/12: second octets 96..111
_PODS = ipaddress.IPv4Network(defaults.CLUSTER_CIDR)  # 10.244.0.0/16


@pytest.mark.parametrize(("octets", "third", "start", "taken", "want"), [
    (range(100, 150), 0, 0, [_SERVICES, _PODS], "10.112.0.0/24"),
    (range(100, 150), 0, 20, [_SERVICES, _PODS], "10.120.0.0/24"),
    (range(240, 250), 3, 4, [_SERVICES, _PODS], "10.245.3.0/24"),
    (range(150, 152), 1, 0, [ipaddress.IPv4Network("10.150.1.0/24")], "10.151.1.0/24"),
    (range(150, 152), 1, 1, [ipaddress.IPv4Network("10.150.0.0/16")], "10.151.1.0/24"),
    (range(150, 152), 0, 0, [ipaddress.IPv4Network("10.150.0.0/15")], None),
    (range(100, 112), 0, 5, [_SERVICES], None),
], ids=["service-cidr-passed-over", "start-within-band", "cluster-cidr-passed-over", "taken-route",
        "wraps-round", "all-taken", "band-inside-service-cidr"])
def test_pick_lan(octets: range, third: int, start: int, taken: list[ipaddress.IPv4Network],
                  want: str | None) -> None:
    assert netplan.pick_lan(octets, third, start, taken) == want
