"""A one-member store (the embedded default of a one-host cluster): fast commits, survives restarts."""

from __future__ import annotations

import time

import pytest

from controlplane.store.cluster import StoreCluster
from tests.integration.store.etcd_client import Client

pytestmark = pytest.mark.integration


def test_single_member_commits_promptly_and_restarts() -> None:
    with StoreCluster(1) as c:
        cl = Client(c.endpoints[0])
        t0 = time.monotonic()
        for i in range(50):
            cl.put(b"/s/%d" % i, b"v")
        # Nothing else wakes a lone leader's Raft thread: commits must not wait for its poll timeout.
        assert time.monotonic() - t0 < 2.0
        rev = cl.get(b"/s/", prefix=True).header.revision
        cl.close()
        c.kill("s1")
        c.start_member("s1")
        cl = Client(c.endpoints[0])
        resp = cl.get(b"/s/", prefix=True)
        assert resp.header.revision == rev and len(resp.kvs) == 50
        cl.close()
