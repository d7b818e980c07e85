"""Garbage collector: background, foreground and orphan cascades over the in-process api-server."""

from __future__ import annotations

from controlplane.common.podutil import owner_reference
from controlplane.controllers.garbagecollector import FOREGROUND, ORPHAN, GarbageCollector
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, deployment, pod, replicaset


async def family(cluster: Cluster) -> GarbageCollector:
    """web (Deployment) -> web-1 (ReplicaSet) -> web-1-a, web-1-b (Pods)."""
    gc = GarbageCollector(cluster.api, cluster.factory)
    d = await cluster.create(deployment())
    rs = await cluster.create(replicaset("web-1", owner=d))
    for name in ("web-1-a", "web-1-b"):
        await cluster.create(pod(name, owner=rs))
    await cluster.create(pod("lonely"))
    await cluster.start()
    await cluster.drain(gc)
    return gc


def names(cluster: Cluster, cls: type) -> list[str]:
    return [o.metadata.name for o in cluster.api.objects(cls)]


async def test_live_owners_keep_their_dependents(cluster: Cluster) -> None:
    await family(cluster)
    assert cluster.writes("delete", "") == 0
    assert names(cluster, t.Pod) == ["lonely", "web-1-a", "web-1-b"]


async def test_background_deletes_dependents_of_a_deleted_owner(cluster: Cluster) -> None:
    gc = await family(cluster)
    await cluster.api.delete(t.Deployment, "web")
    await cluster.drain(gc)
    assert names(cluster, t.ReplicaSet) == []
    assert names(cluster, t.Pod) == ["lonely"]


async def test_dangling_reference_is_removed_when_another_owner_lives(cluster: Cluster) -> None:
    gc = await family(cluster)
    p = await cluster.api.get(t.Pod, "lonely")
    rs = await cluster.api.get(t.ReplicaSet, "web-1")
    p.metadata.owner_references.append(owner_reference(rs, controller=False))
    p.metadata.owner_references.add(kind="ReplicaSet", name="ghost", uid="ghost-uid", api_version="apps/v1")
    await cluster.api.update(p)
    await cluster.drain(gc)
    p = await cluster.api.get(t.Pod, "lonely")
    assert [r.name for r in p.metadata.owner_references] == ["web-1"]


async def test_foreground_deletes_dependents_before_the_owner(cluster: Cluster) -> None:
    gc = await family(cluster)
    await cluster.api.delete(t.Deployment, "web", propagation_policy="Foreground")
    await cluster.settle()
    d = await cluster.api.get(t.Deployment, "web")
    assert FOREGROUND in d.metadata.finalizers
    await cluster.drain(gc)
    assert names(cluster, t.Deployment) == []
    assert names(cluster, t.ReplicaSet) == []
    assert names(cluster, t.Pod) == ["lonely"]
    actions = [(a[0], a[1]) for a in cluster.api.actions]
    rs_deleted = actions.index(("delete", "replicasets"))
    finalizer_removed = len(actions) - 1 - actions[::-1].index(("update", "deployments"))
    assert rs_deleted < finalizer_removed, "the owner goes only after its dependents"


async def test_foreground_waits_for_blocking_dependents(cluster: Cluster) -> None:
    gc = GarbageCollector(cluster.api, cluster.factory)
    rs = await cluster.create(replicaset("web-1"))
    await cluster.create(pod("p", node="n1", owner=rs))
    await cluster.start()
    await cluster.api.delete(t.ReplicaSet, "web-1", propagation_policy="Foreground")
    await cluster.drain(gc)
    # The pod is terminating (its node agent has not confirmed): the owner must wait.
    assert names(cluster, t.ReplicaSet) == ["web-1"]
    await cluster.api.delete(t.Pod, "p", grace_period_seconds=0)
    await cluster.drain(gc)
    assert names(cluster, t.ReplicaSet) == []


async def test_orphan_keeps_dependents_without_the_reference(cluster: Cluster) -> None:
    gc = await family(cluster)
    await cluster.api.delete(t.ReplicaSet, "web-1", propagation_policy="Orphan")
    await cluster.settle()
    assert ORPHAN in (await cluster.api.get(t.ReplicaSet, "web-1")).metadata.finalizers
    await cluster.drain(gc)
    assert names(cluster, t.ReplicaSet) == []
    pods = {p.metadata.name: p for p in cluster.api.objects(t.Pod)}
    assert set(pods) == {"lonely", "web-1-a", "web-1-b"}
    assert not pods["web-1-a"].metadata.owner_references


async def test_unsynced_cache_never_deletes(cluster: Cluster) -> None:
    """A dependent whose owner the cache does not know is checked live, not deleted."""
    d = await cluster.create(deployment())
    await cluster.create(replicaset("web-1", owner=d))
    gc = GarbageCollector(cluster.api, cluster.factory)
    await cluster.start()
    gc.informers["Deployment"]._items.clear()  # the owner's cache "has not synced"
    gc.queue.add("ReplicaSet/default/web-1")
    await cluster.drain(gc)
    assert names(cluster, t.ReplicaSet) == ["web-1"]
