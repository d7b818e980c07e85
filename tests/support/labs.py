"""The one way an e2e module runs a lab for its tests.

What must hold: a missing prerequisite fails under CI=true (through `require`), the lab is
registered as the module's `LAB` while it runs (tests/e2e/conftest.py attaches its daemon logs
to a failure report), and it is torn down with nothing left behind — the teardown asserts it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from types import ModuleType

import pytest

from deploy import containerd
from deploy.lab import Lab, LabSpec
from skiff import defaults
from tests.support.prereq import require, require_root


def _root_routes() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-o", "-4", "route", "show"], capture_output=True, text=True, check=False).stdout
    nets = []
    for line in out.splitlines():
        dst = line.split()[0] if line.split() else "default"
        if dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets


def lan(second_octets: range, third_octet: int = 0) -> str:
    """A lab LAN 10.<second>.<third>.0/24 for this test process.

    Each module passes its own band of second octets so concurrent runs of different modules
    do not collide; the pid picks within the band. Any /24 that overlaps the service or cluster
    CIDR (the lab refuses those) or a route the root namespace already has is passed over —
    a band like 100..149 includes 10.96.0.0/12's 100..111.
    """
    reserved = [ipaddress.IPv4Network(defaults.SERVICE_CIDR), ipaddress.IPv4Network(defaults.CLUSTER_CIDR)]
    taken = reserved + _root_routes()
    octets = list(second_octets)
    start = os.getpid() % len(octets)
    for second in octets[start:] + octets[:start]:
        net = ipaddress.IPv4Network(f"10.{second}.{third_octet}.0/24")
        if not any(net.overlaps(other) for other in taken):
            return str(net)
    raise RuntimeError(f"no free 10.x.{third_octet}.0/24 for x in {second_octets}")


@contextlib.contextmanager
def running(spec: LabSpec, tmp_path_factory: pytest.TempPathFactory, module: ModuleType) -> Iterator[Lab]:
    require_root()
    missing = containerd.missing_prereqs()
    require(not missing, f"missing {', '.join(missing)}")
    the_lab = Lab(spec, tmp_path_factory.mktemp("labs"))
    the_lab.up(progress=print, timeout=120)
    module.LAB = the_lab  # type: ignore[attr-defined]
    try:
        yield the_lab
    finally:
        module.LAB = None  # type: ignore[attr-defined]
        the_lab.down()
        assert the_lab.leftovers() == []
