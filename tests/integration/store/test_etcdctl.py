"""Debian's etcdctl (v3 API) against a 3-member Skiff store: the etcd protocol as a real client speaks it."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from controlplane.store.cluster import StoreCluster
from tests.integration.store.conftest import Etcdctl, etcdctl_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ctl(cluster: StoreCluster) -> Etcdctl:
    return Etcdctl(cluster.endpoints_str)


def _rev(ctl: Etcdctl, key: str = "x") -> int:
    return int(json.loads(ctl("get", key, "-w", "json").stdout)["header"]["revision"])


def test_put_get_prefix_rev_del(ctl: Etcdctl, cluster: StoreCluster) -> None:
    ctl("put", "/t1/a", "1")
    first = _rev(ctl)
    ctl("put", "/t1/b", "2")
    ctl("put", "/t1/a", "3")
    assert ctl("get", "/t1/", "--prefix").stdout.split() == ["/t1/a", "3", "/t1/b", "2"]
    assert ctl("get", "/t1/", "--prefix", f"--rev={first}").stdout.split() == ["/t1/a", "1"]
    kvs = json.loads(ctl("get", "/t1/a", "-w", "json").stdout)["kvs"]
    assert (kvs[0]["version"], kvs[0]["create_revision"]) == (2, first)
    assert ctl("del", "/t1/", "--prefix").stdout.strip() == "2"
    assert ctl("get", "/t1/", "--prefix").stdout == ""
    # Linearizable reads on every member, followers included, see the delete.
    for ep in cluster.endpoints:
        assert ctl("get", "/t1/", "--prefix", endpoints=ep).stdout == ""


def test_txn_compare_and_swap(ctl: Etcdctl) -> None:
    ctl("put", "/t2/k", "v1")
    mod = json.loads(ctl("get", "/t2/k", "-w", "json").stdout)["kvs"][0]["mod_revision"]
    ok = ctl("txn", input=f'mod("/t2/k") = "{mod}"\n\nput /t2/k v2\n\nget /t2/k\n\n')
    assert ok.stdout.split()[:2] == ["SUCCESS", "OK"]
    stale = ctl("txn", input=f'mod("/t2/k") = "{mod}"\n\nput /t2/k v3\n\nget /t2/k\n\n')
    assert stale.stdout.split() == ["FAILURE", "/t2/k", "v2"]


def test_watch_from_past_revision_replays(ctl: Etcdctl) -> None:
    ctl("put", "/t3/a", "1")
    start = _rev(ctl)
    ctl("put", "/t3/b", "2")
    ctl("del", "/t3/a")
    out, _ = _watch_for(ctl, ["watch", "/t3/", "--prefix", f"--rev={start}"], seconds=2.5)
    assert out.split() == ["PUT", "/t3/a", "1", "PUT", "/t3/b", "2", "DELETE", "/t3/a"]


def _watch_for(ctl: Etcdctl, args: list[str], seconds: float) -> tuple[str, str]:
    """What a watch printed in `seconds` (stdout, stderr), then it is stopped."""
    import os

    p = subprocess.Popen([etcdctl_path(), f"--endpoints={ctl.endpoints}", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, ETCDCTL_API="3"))
    time.sleep(seconds)
    p.terminate()
    out, err = p.communicate(timeout=10)
    return out, err


def test_compacted_revision_error(ctl: Etcdctl) -> None:
    ctl("put", "/t4/a", "1")
    old = _rev(ctl)
    ctl("put", "/t4/a", "2")
    now = _rev(ctl)
    ctl("compact", str(now))
    res = ctl("get", "/t4/a", f"--rev={old}", check=False)
    assert res.returncode != 0
    assert "etcdserver: mvcc: required revision has been compacted" in res.stderr
    # The watch is cancelled with the compaction error (silence would pass a "no PUT" check).
    out, err = _watch_for(ctl, ["watch", "/t4/a", f"--rev={old}"], seconds=2.0)
    assert "PUT" not in out
    assert "etcdserver: mvcc: required revision has been compacted" in out + err
    assert ctl("get", "/t4/a", f"--rev={now}").stdout.split() == ["/t4/a", "2"]


def test_lease_grant_keepalive_revoke(ctl: Etcdctl) -> None:
    lease = ctl("lease", "grant", "30").stdout.split()[1]
    ctl("put", "/t5/a", "1", f"--lease={lease}")
    ctl("put", "/t5/b", "1", f"--lease={lease}")
    ttl = ctl("lease", "timetolive", lease, "--keys").stdout
    assert "attached keys([/t5/a /t5/b])" in ttl or "attached keys([/t5/b /t5/a])" in ttl
    assert lease in ctl("lease", "list").stdout
    assert f"lease {lease} keepalived with TTL(30)" in ctl("lease", "keep-alive", "--once", lease).stdout
    ctl("lease", "revoke", lease)
    assert ctl("get", "/t5/", "--prefix").stdout == ""
    assert "already expired" in ctl("lease", "timetolive", lease).stdout
    missing = ctl("put", "/t5/c", "1", f"--lease={lease}", check=False)
    assert "etcdserver: requested lease not found" in missing.stderr


def test_lease_expiry_deletes_keys_with_events(ctl: Etcdctl) -> None:
    lease = ctl("lease", "grant", "2").stdout.split()[1]
    ctl("put", "/t6/a", "1", f"--lease={lease}")
    start = _rev(ctl)
    deadline = time.monotonic() + 15
    while ctl("get", "/t6/a").stdout and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ctl("get", "/t6/a").stdout == ""
    out, _ = _watch_for(ctl, ["watch", "/t6/", "--prefix", f"--rev={start}"], seconds=2.0)
    assert out.split() == ["PUT", "/t6/a", "1", "DELETE", "/t6/a"]


def test_member_list_and_endpoint_status(ctl: Etcdctl, cluster: StoreCluster) -> None:
    lines = ctl("member", "list").stdout.strip().splitlines()
    assert len(lines) == 3
    names = sorted(line.split(", ")[2] for line in lines)
    assert names == ["s1", "s2", "s3"]
    assert all(", started, " in line for line in lines)
    for m in cluster.members.values():
        assert any(f"http://{m.client}" in line and f"http://{m.peer}" in line for line in lines)
    status = json.loads(ctl("endpoint", "status", "-w", "json").stdout)
    assert len(status) == 3
    leaders = {s["Status"]["leader"] for s in status}
    assert len(leaders) == 1 and leaders.pop() in {s["Status"]["header"]["member_id"] for s in status}
    assert {s["Status"]["header"]["cluster_id"] for s in status} == {status[0]["Status"]["header"]["cluster_id"]}
    health = ctl("endpoint", "health")
    assert (health.stdout + health.stderr).count("is healthy") == 3
