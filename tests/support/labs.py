"""The one way an e2e module runs a lab for its tests.

What must hold: a missing prerequisite fails under CI=true (through `require`), the lab is
registered as the module's `LAB` while it runs (tests/e2e/conftest.py attaches its daemon logs
to a failure report), and it is torn down with nothing left behind — the teardown asserts it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

import pytest

from deploy import containerd
from deploy.lab import Lab, LabSpec
from tests.support.prereq import require, require_root


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
