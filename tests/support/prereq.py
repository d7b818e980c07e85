"""Prerequisites of real-system tests: in CI a missing one fails the test, elsewhere it skips.

CI sets CI=true; there every e2e prerequisite (root, binaries, kernel features) is required,
so a broken machine shows up as a failure, never as a quiet skip. A kernel without IP_VS is no
reason to skip either: the IPVS test then runs in a QEMU guest (deploy/vm/), which needs QEMU.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, reason: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"missing prerequisite (required in CI): {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root")


def require_binaries(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    require(not missing, f"needs {', '.join(missing)} on PATH (make setup installs them)")


# "lab" (default): e2e tests build their own network-namespace lab on this machine.
# "vagrant": they run against the Vagrant lab's cluster (deploy/vagrant/run-e2e.sh sets this and
# SKIFF_SERVER, SKIFF_E2E_HOSTS, SKIFF_E2E_SSH, SKIFF_E2E_PROXY_MODE; see deploy/vagrant/README.md).
E2E_TARGET = os.environ.get("SKIFF_E2E_TARGET", "lab")


def ipvs_available() -> bool:
    """The kernel serves IPVS: netproxy's own check (docs/containerd.md, "IPVS")."""
    from netproxy.ipvs.kernel import ipvs_available as check

    return check()[0]

