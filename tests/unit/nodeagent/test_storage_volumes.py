"""The node side of persistent volumes and emptyDir limits (nodeagent.volumes): which claim is
mountable, where, when a local-path directory is reclaimed, and emptyDir usage against sizeLimit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent.envs import ContainerConfigError
from nodeagent.volumes import (
    VolumeManager,
    VolumeNotReady,
    claim_volume,
    disk_usage,
    empty_dir_over_limit,
    plan_mounts,
    reclaimable,
)
from skiff import storage
from skiffpb.api.v1 import types_pb2 as t


class Claims:
    def __init__(self, claims: list[t.PersistentVolumeClaim], volumes: list[t.PersistentVolume]) -> None:
        self.claims = {(c.metadata.namespace, c.metadata.name): c for c in claims}
        self.volumes = {v.metadata.name: v for v in volumes}

    def claim(self, namespace: str, name: str) -> t.PersistentVolumeClaim | None:
        return self.claims.get((namespace, name))

    def persistent_volume(self, name: str) -> t.PersistentVolume | None:
        return self.volumes.get(name)


def pvc(name: str = "data", *, volume: str = "pv1", phase: str = "Bound",
        deleting: bool = False) -> t.PersistentVolumeClaim:
    c = t.PersistentVolumeClaim()
    c.metadata.name, c.metadata.namespace = name, "default"
    c.spec.volume_name = volume
    c.status.phase = phase
    if deleting:
        c.metadata.deletion_timestamp.FromSeconds(1)
    return c


def pv(name: str = "pv1", *, path: str = "/base/pv1_default_data", node: str = "n1", phase: str = "Bound",
       policy: str = "Delete", local_path: bool = True, nfs: bool = False) -> t.PersistentVolume:
    v = t.PersistentVolume()
    v.metadata.name = name
    if local_path:
        v.metadata.annotations[storage.PROVISIONED_BY_ANNOTATION] = storage.LOCAL_PATH_PROVISIONER
    if not nfs:
        v.spec.local.path = path
    v.spec.node_affinity.CopyFrom(storage.node_affinity_for(node))
    v.spec.persistent_volume_reclaim_policy = policy
    v.status.phase = phase
    return v


@pytest.mark.parametrize(("claims", "error"), [
    (Claims([], []), 'persistentvolumeclaim "data" not found'),
    (Claims([pvc(phase="Pending", volume="")], []), 'persistentvolumeclaim "data" is not bound yet'),
    (Claims([pvc(deleting=True)], [pv()]), 'persistentvolumeclaim "data" is being deleted'),
    (Claims([pvc()], []), 'persistentvolume "pv1" not found'),
], ids=["missing", "pending", "deleting", "volume-missing"])
def test_claim_not_ready(claims: Claims, error: str) -> None:
    with pytest.raises(VolumeNotReady, match=error):
        claim_volume("default", "data", claims)


def test_claim_of_an_unmountable_source_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError, match="only local and hostPath") as info:
        claim_volume("default", "data", Claims([pvc()], [pv(nfs=True)]))
    assert not isinstance(info.value, VolumeNotReady)


def test_local_path_directory_made_on_first_use_and_kept_with_the_pod(tmp_path: Path) -> None:
    path = tmp_path / "storage" / "pv1_default_data"
    claims = Claims([pvc()], [pv(path=str(path))])
    manager = VolumeManager(str(tmp_path / "volumes"))
    p = t.Pod()
    p.metadata.uid, p.metadata.namespace = "uid-1", "default"
    p.spec.volumes.add(name="data").persistent_volume_claim.claim_name = "data"
    c = p.spec.containers.add(name="c")
    c.volume_mounts.add(name="data", mount_path="/data")

    class NoConfig:
        def config_map(self, namespace: str, name: str) -> None:
            return None

        def secret(self, namespace: str, name: str) -> None:
            return None

    paths = manager.setup(p, NoConfig(), claims=claims)
    assert paths == {"data": str(path)}
    assert path.is_dir() and (path.stat().st_mode & 0o777) == 0o777
    (path / "file").write_text("kept")
    [mount] = plan_mounts(p, c, paths)
    assert (mount.host_path, mount.container_path, mount.readonly) == (str(path), "/data", False)
    manager.teardown("uid-1")
    assert (path / "file").read_text() == "kept", "pod teardown never touches the claim's data"


def test_read_only_claim_mounts_read_only() -> None:
    p = t.Pod()
    v = p.spec.volumes.add(name="data")
    v.persistent_volume_claim.claim_name, v.persistent_volume_claim.read_only = "data", True
    c = p.spec.containers.add(name="c")
    c.volume_mounts.add(name="data", mount_path="/data")
    assert plan_mounts(p, c, {"data": "/x"})[0].readonly


@pytest.mark.parametrize(("volume", "node", "want"), [
    (pv(phase="Released"), "n1", True),
    (pv(phase="Bound"), "n1", False),
    (pv(phase="Released"), "n2", False),
    (pv(phase="Released", policy="Retain"), "n1", False),
    (pv(phase="Released", local_path=False), "n1", False),
    (pv(phase="Released", path="/elsewhere/pv1"), "n1", False),
    (pv(phase="Released", path="/base"), "n1", False),
    (pv(phase="Released", path="/base/../etc"), "n1", False),
], ids=["released-delete-here", "still-bound", "other-node", "retain", "not-provisioned-by-us",
        "outside-the-dir", "the-dir-itself", "dot-dot-escape"])
def test_reclaimable(volume: t.PersistentVolume, node: str, want: bool) -> None:
    assert reclaimable(volume, node_name=node, local_path_dir="/base") is want


def test_reclaim_removes_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "pv1_default_data"
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "f").write_text("x")
    VolumeManager.reclaim(pv(path=str(path), phase="Released"))
    assert not path.exists()


def limited_pod(*limits: tuple[str, str, str]) -> t.Pod:
    p = t.Pod()
    for name, medium, limit in limits:
        v = p.spec.volumes.add(name=name)
        v.empty_dir.medium, v.empty_dir.size_limit = medium, limit
    return p


@pytest.mark.parametrize(("pod", "usage", "want"), [
    (limited_pod(("cache", "", "1Mi")), {"cache": 2 << 20},
     'Usage of EmptyDir volume "cache" exceeds the limit "1Mi". '),
    (limited_pod(("cache", "", "1Mi")), {"cache": 1 << 20}, ""),
    (limited_pod(("cache", "", "")), {"cache": 9 << 30}, ""),
    (limited_pod(("shm", "Memory", "1Mi")), {"shm": 2 << 20}, ""),
], ids=["over", "at-the-limit", "no-limit", "memory-medium-is-tmpfs-sized"])
def test_empty_dir_over_limit(pod: t.Pod, usage: dict[str, int], want: str) -> None:
    assert empty_dir_over_limit(pod, usage) == want


def test_disk_usage_counts_blocks_and_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(os.urandom(64 * 1024))
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "c").write_bytes(os.urandom(32 * 1024))
    os.symlink("/usr", tmp_path / "link")
    used = disk_usage(str(tmp_path))
    assert 96 * 1024 <= used < 200 * 1024
