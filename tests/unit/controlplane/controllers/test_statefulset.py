"""StatefulSet controller: stable names, ordered and parallel management, reverse scale-down, rolling update
with partition, and sync against the in-process api-server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controlplane.controllers import history
from controlplane.controllers import statefulset as ssc
from controlplane.controllers.garbagecollector import GarbageCollector
from controlplane.controllers.statefulset import StatefulSetController
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, pod

NEW, OLD = "new", "old"


def sts(replicas: int = 3, *, parallel: bool = False, partition: int = 0, on_delete: bool = False) -> t.StatefulSet:
    s = t.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    s.metadata.name, s.metadata.namespace = "db", "default"
    s.spec.replicas = replicas
    s.spec.service_name = "db"
    s.spec.pod_management_policy = "Parallel" if parallel else "OrderedReady"
    s.spec.update_strategy.type = "OnDelete" if on_delete else "RollingUpdate"
    s.spec.update_strategy.rolling_update.partition = partition
    s.spec.selector.match_labels["app"] = "db"
    s.spec.template.metadata.labels["app"] = "db"
    s.spec.template.spec.containers.add(name="c", image="img")
    return s


def spod(i: int, *, ready: bool = True, phase: str = "Running", rev: str = NEW, deleting: bool = False) -> t.Pod:
    p = pod(f"db-{i}", node="n1", phase=phase, ready=ready, labels={"app": "db", history.REVISION_HASH: rev})
    if deleting:
        p.metadata.deletion_timestamp.FromSeconds(1)
    return p


@dataclass
class Case:
    id: str
    sts: t.StatefulSet
    pods: list[t.Pod]
    create: list[int]
    delete: list[str] = field(default_factory=list)
    current: str = OLD


CASES = [
    Case("ordered: the first pod only", sts(), [], [0]),
    Case("ordered: next once the previous is Running and Ready", sts(), [spod(0)], [1]),
    Case("ordered: waits for a pod that is not ready", sts(), [spod(0, ready=False)], []),
    Case("ordered: a gap is filled first", sts(), [spod(0), spod(2)], [1]),
    Case("parallel: all at once", sts(parallel=True), [], [0, 1, 2]),
    Case("parallel: even past a pod that is not ready", sts(parallel=True), [spod(0, ready=False)], [1, 2]),
    Case("failed pod is deleted (recreated under its name later)", sts(), [spod(0), spod(1, phase="Failed")], [],
         ["db-1"]),
    Case("scale down: highest ordinal first, one at a time", sts(1), [spod(0), spod(1), spod(2)], [], ["db-2"]),
    Case("scale down waits while one is terminating", sts(1), [spod(0), spod(1), spod(2, deleting=True)], []),
    Case("scale down waits for unhealthy pods", sts(1), [spod(0, ready=False), spod(1), spod(2)], []),
    Case("parallel scale down: all condemned at once", sts(1, parallel=True), [spod(0), spod(1), spod(2)], [],
         ["db-1", "db-2"]),
    Case("rolling update: highest stale ordinal first", sts(),
         [spod(0, rev=OLD), spod(1, rev=OLD), spod(2, rev=OLD)], [], ["db-2"]),
    Case("rolling update: waits until all are healthy", sts(),
         [spod(0, rev=OLD), spod(1, rev=OLD, ready=False), spod(2)], []),
    Case("rolling update: partition keeps lower ordinals", sts(partition=2),
         [spod(0, rev=OLD), spod(1, rev=OLD), spod(2)], []),
    Case("rolling update: partition 1 updates ordinal 1", sts(partition=1),
         [spod(0, rev=OLD), spod(1, rev=OLD), spod(2)], [], ["db-1"]),
    Case("on delete: nothing is replaced", sts(on_delete=True), [spod(0, rev=OLD), spod(1, rev=OLD), spod(2)], []),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_statefulset(case: Case) -> None:
    plan = ssc.plan_statefulset(case.sts, case.pods, update_hash=NEW, current_hash=case.current, now=100.0)
    assert [i for i, _ in plan.create] == case.create
    assert sorted(p.metadata.name for p in plan.delete) == sorted(case.delete)


@pytest.mark.parametrize(("partition", "want"), [(0, [NEW, NEW, NEW]), (2, [OLD, OLD, NEW])],
                         ids=["no-partition", "partition-2"])
def test_recreated_pods_below_the_partition_keep_the_current_revision(partition: int, want: list[str]) -> None:
    plan = ssc.plan_statefulset(sts(parallel=True, partition=partition), [], update_hash=NEW, current_hash=OLD,
                                now=100.0)
    assert [h for _, h in plan.create] == want


def test_status_revisions() -> None:
    pods = [spod(0, rev=OLD), spod(1), spod(2)]
    plan = ssc.plan_statefulset(sts(), pods, update_hash=NEW, current_hash=OLD, now=100.0)
    s = plan.status
    assert (s.replicas, s.ready_replicas, s.updated_replicas, s.current_replicas) == (3, 3, 2, 1)
    assert (s.current_revision, s.update_revision) == ("db-old", "db-new")
    done = ssc.plan_statefulset(sts(), [spod(0), spod(1), spod(2)], update_hash=NEW, current_hash=OLD, now=100.0)
    assert done.status.current_revision == "db-new" and done.status.current_replicas == 3


def test_pod_identity() -> None:
    p = ssc.pod_for(sts(), 4, sts().spec.template, NEW)
    assert p.metadata.name == "db-4" and p.spec.hostname == "db-4"
    assert p.metadata.labels[ssc.POD_NAME_LABEL] == "db-4" and p.metadata.labels[ssc.POD_INDEX_LABEL] == "4"
    assert p.metadata.labels[history.REVISION_HASH] == NEW


async def test_ordered_start_on_the_api_server(cluster: Cluster) -> None:
    ctrl = StatefulSetController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.create(sts(2))
    await cluster.start()
    await cluster.drain(ctrl)
    names = [p.metadata.name for p in (await cluster.api.list(t.Pod, namespace="default")).items]
    assert names == ["db-0"]
    p = await cluster.api.get(t.Pod, "db-0", "default")
    p.status.phase = "Running"
    p.status.conditions.add(type="Ready", status="True")
    await cluster.api.update_status(p)
    await cluster.drain(ctrl)
    names = sorted(p.metadata.name for p in (await cluster.api.list(t.Pod, namespace="default")).items)
    assert names == ["db-0", "db-1"]
    stored = await cluster.api.get(t.StatefulSet, "db", "default")
    assert stored.status.replicas == 2 and stored.status.ready_replicas == 1
    revs = (await cluster.api.list(t.ControllerRevision, namespace="default")).items
    assert [r.metadata.name for r in revs] == [stored.status.update_revision]


def with_claims(s: t.StatefulSet) -> t.StatefulSet:
    tmpl = s.spec.volume_claim_templates.add()
    tmpl.metadata.name = "data"
    tmpl.metadata.labels["tier"] = "db"
    tmpl.spec.access_modes.append("ReadWriteOnce")
    tmpl.spec.resources.requests["storage"] = "1Gi"
    s.spec.template.spec.volumes.add(name="data").empty_dir.SetInParent()  # replaced by the claim
    s.spec.template.spec.containers[0].volume_mounts.add(name="data", mount_path="/data")
    return s


def test_claims_and_pod_volumes_from_templates() -> None:
    s = with_claims(sts())
    [pvc] = ssc.claims_for(s, 2)
    assert (pvc.metadata.name, pvc.metadata.namespace) == ("data-db-2", "default")
    assert dict(pvc.metadata.labels) == {"tier": "db", "app": "db"}
    assert dict(pvc.spec.resources.requests) == {"storage": "1Gi"}
    p = ssc.pod_for(s, 2, s.spec.template, NEW)
    [vol] = p.spec.volumes
    assert vol.name == "data" and vol.persistent_volume_claim.claim_name == "data-db-2"
    assert not vol.HasField("empty_dir")


async def test_claims_created_before_pods_and_kept_on_scale_down(cluster: Cluster) -> None:
    ctrl = StatefulSetController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.create(with_claims(sts(2, parallel=True)))
    await cluster.start()
    await cluster.drain(ctrl)
    claims = sorted(c.metadata.name for c in cluster.api.objects(t.PersistentVolumeClaim))
    assert claims == ["data-db-0", "data-db-1"]
    creates = cluster.writes("create", "persistentvolumeclaims")
    stored = await cluster.api.get(t.StatefulSet, "db", "default")
    stored.spec.replicas = 1
    await cluster.api.update(stored)
    await cluster.drain(ctrl)
    assert sorted(p.metadata.name for p in cluster.api.objects(t.Pod)) == ["db-0"]
    stored = await cluster.api.get(t.StatefulSet, "db", "default")
    stored.spec.replicas = 2
    await cluster.api.update(stored)
    await cluster.drain(ctrl)
    assert sorted(c.metadata.name for c in cluster.api.objects(t.PersistentVolumeClaim)) == claims, \
        "scale-down keeps the claims (Retain)"
    assert cluster.writes("create", "persistentvolumeclaims") == creates, "the kept claim is reused, not recreated"
    assert (await cluster.api.get(t.Pod, "db-1", "default")).spec.volumes[0].persistent_volume_claim.claim_name \
        == "data-db-1"


# ------------------------------------------------------------------ persistentVolumeClaimRetentionPolicy

def retained(when_deleted: str, when_scaled: str, replicas: int = 2) -> t.StatefulSet:
    s = with_claims(sts(replicas, parallel=True))
    s.metadata.uid = "set-uid"
    s.spec.persistent_volume_claim_retention_policy.when_deleted = when_deleted
    s.spec.persistent_volume_claim_retention_policy.when_scaled = when_scaled
    return s


def owned_claim(*uids: str) -> t.PersistentVolumeClaim:
    pvc = t.PersistentVolumeClaim(metadata=t.ObjectMeta(name="data-db-1", namespace="default"))
    for uid in uids:
        pvc.metadata.owner_references.add(uid=uid, name=uid, kind="X", api_version="v1")
    return pvc


# (whenDeleted, whenScaled, the pod condemned?, the claim's current owners) -> its owners' uids.
@pytest.mark.parametrize(("when_deleted", "when_scaled", "condemned", "owners", "want"), [
    ("Retain", "Retain", False, [], []),
    ("Retain", "Retain", True, ["set-uid", "pod-uid"], []),
    ("Delete", "Retain", False, [], ["set-uid"]),
    ("Delete", "Retain", True, ["pod-uid"], ["set-uid"]),
    ("Retain", "Delete", False, ["set-uid"], []),
    ("Retain", "Delete", True, [], ["pod-uid"]),
    ("Delete", "Delete", False, [], ["set-uid"]),
    ("Delete", "Delete", True, ["set-uid"], ["pod-uid"]),
    ("Delete", "Retain", False, ["other"], ["other", "set-uid"]),
], ids=["retain-retain", "retain-retain-drops-refs", "deleted:delete", "deleted:delete-condemned",
        "scaled:delete-in-range", "scaled:delete-condemned", "delete-delete-in-range", "delete-delete-condemned",
        "other-owners-kept"])
def test_claim_owner_references(when_deleted: str, when_scaled: str, condemned: bool, owners: list[str],
                                want: list[str]) -> None:
    s = retained(when_deleted, when_scaled)
    p = spod(1)
    p.metadata.uid = "pod-uid"
    refs = ssc.claim_owner_references(s, owned_claim(*owners), p, condemned=condemned)
    assert [r.uid for r in refs] == want
    assert not any(r.controller or r.block_owner_deletion for r in refs if r.uid in ("set-uid", "pod-uid"))


@pytest.mark.parametrize(("when_deleted", "when_scaled", "after_scale_down", "after_delete"), [
    ("Retain", "Retain", ["data-db-0", "data-db-1"], ["data-db-0", "data-db-1"]),
    ("Retain", "Delete", ["data-db-0"], ["data-db-0"]),
    ("Delete", "Retain", ["data-db-0", "data-db-1"], []),
    ("Delete", "Delete", ["data-db-0"], []),
], ids=["retain", "delete-when-scaled", "delete-when-deleted", "delete-both"])
async def test_retention_policy_with_the_garbage_collector(cluster: Cluster, when_deleted: str, when_scaled: str,
                                                           after_scale_down: list[str],
                                                           after_delete: list[str]) -> None:
    ctrl = StatefulSetController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    gc = GarbageCollector(cluster.api, cluster.factory)
    s = retained(when_deleted, when_scaled)
    s.metadata.uid = ""
    await cluster.create(s)
    await cluster.start()
    await cluster.drain(ctrl)

    async def claims() -> list[str]:
        await cluster.drain(gc)
        return sorted(c.metadata.name for c in cluster.api.objects(t.PersistentVolumeClaim)
                      if not c.metadata.HasField("deletion_timestamp"))

    assert await claims() == ["data-db-0", "data-db-1"]
    stored = await cluster.api.get(t.StatefulSet, "db", "default")
    stored.spec.replicas = 1
    await cluster.api.update(stored)
    await cluster.drain(ctrl)
    assert await claims() == after_scale_down
    # The set goes; its pod db-0 (background deletion) and, with whenDeleted=Delete, the claims it owns.
    await cluster.api.delete(t.StatefulSet, "db", "default")
    await cluster.drain(ctrl)
    assert await claims() == after_delete
