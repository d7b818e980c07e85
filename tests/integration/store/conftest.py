"""Fixtures for store integration tests: real 3-member clusters of `python -m controlplane.store`."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from controlplane.store.cluster import StoreCluster
from tests.support.cluster import running_store
from tests.support.prereq import require

pytestmark = pytest.mark.integration


def etcdctl_path() -> str:
    path = shutil.which("etcdctl")
    require(path is not None, "etcdctl not installed (Debian package etcd-client)")
    assert path is not None
    return path


class Etcdctl:
    def __init__(self, endpoints: str) -> None:
        self.bin = etcdctl_path()
        self.endpoints = endpoints

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 20.0, endpoints: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ETCDCTL_API="3")
        cmd = [self.bin, f"--endpoints={endpoints or self.endpoints}", "--command-timeout=10s", *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res


@pytest.fixture(scope="module")
def cluster() -> Iterator[StoreCluster]:
    with running_store(3) as c:
        yield c
