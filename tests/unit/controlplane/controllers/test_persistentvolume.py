"""Persistent volume controller: claim and volume decisions as tables, and the whole local-path
flow (default class, WaitForFirstConsumer, scheduler's selected node, provisioning, binding,
protection, release) on the in-process api-server with the real scheduler."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controlplane.controllers import persistentvolume as pvc_ctrl
from controlplane.controllers.persistentvolume import PersistentVolumeController, plan_claim, plan_volume
from controlplane.scheduler.scheduler import Scheduler
from skiff import errors, storage
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, node, pod


def claim(name: str = "data", *, cls: str | None = "local-path", size: str = "1Gi", modes: tuple[str, ...] = (
        "ReadWriteOnce",), volume: str = "", selected: str = "", uid: str = "u-1") -> t.PersistentVolumeClaim:
    c = t.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    c.metadata.name, c.metadata.namespace, c.metadata.uid = name, "default", uid
    if cls is not None:
        c.spec.storage_class_name = cls
    c.spec.resources.requests["storage"] = size
    c.spec.access_modes.extend(modes)
    c.spec.volume_name = volume
    if selected:
        c.metadata.annotations[storage.SELECTED_NODE_ANNOTATION] = selected
    return c


def volume(name: str, *, cls: str = "manual", size: str = "2Gi", modes: tuple[str, ...] = ("ReadWriteOnce",),
           claim_ref: tuple[str, str] | None = None, node_name: str = "", phase: str = "Available",
           policy: str = "Retain", local_path: bool = False) -> t.PersistentVolume:
    pv = t.PersistentVolume(api_version="v1", kind="PersistentVolume")
    pv.metadata.name = name
    pv.spec.storage_class_name = cls
    pv.spec.capacity["storage"] = size
    pv.spec.access_modes.extend(modes)
    pv.spec.persistent_volume_reclaim_policy = policy
    pv.spec.host_path.path = f"/srv/{name}"
    if claim_ref is not None:
        pv.spec.claim_ref.name, pv.spec.claim_ref.uid = claim_ref
        pv.spec.claim_ref.namespace = "default"
    if node_name:
        pv.spec.node_affinity.CopyFrom(storage.node_affinity_for(node_name))
    if local_path:
        pv.metadata.annotations[storage.PROVISIONED_BY_ANNOTATION] = storage.LOCAL_PATH_PROVISIONER
    pv.status.phase = phase
    return pv


def sc(name: str, *, mode: str = "Immediate", provisioner: str = "example.com/nfs") -> t.StorageClass:
    out = t.StorageClass(provisioner=provisioner, volume_binding_mode=mode, reclaim_policy="Delete")
    out.metadata.name = name
    return out


CLASSES = {"local-path": sc("local-path", mode="WaitForFirstConsumer", provisioner=storage.LOCAL_PATH_PROVISIONER),
           "manual": sc("manual"), "nfs": sc("nfs")}
NODES = {"n1": node("n1", labels={"kubernetes.io/hostname": "n1"}),
         "n2": node("n2", labels={"kubernetes.io/hostname": "n2"})}


@dataclass
class ClaimCase:
    id: str
    pvc: t.PersistentVolumeClaim
    volumes: list[t.PersistentVolume]
    bind: str = ""
    provision: bool = False
    phase: str = ""
    event: str = ""


CLAIM_CASES = [
    ClaimCase("WaitForFirstConsumer without a node: waits", claim(), [], phase="Pending",
              event="WaitForFirstConsumer"),
    ClaimCase("selected node, no volume: local-path provisions", claim(selected="n1"), [], provision=True,
              phase="Pending"),
    ClaimCase("selected node: a matching volume there is bound instead",
              claim(selected="n1"), [volume("on-n2", cls="local-path", node_name="n2"),
                                     volume("on-n1", cls="local-path", node_name="n1")], bind="on-n1"),
    ClaimCase("Immediate: the smallest matching volume", claim(cls="manual"),
              [volume("big", size="10Gi"), volume("small", size="1Gi"), volume("tiny", size="500Mi")], bind="small"),
    ClaimCase("access modes must be offered", claim(cls="manual", modes=("ReadWriteMany",)), [volume("rwo")],
              phase="Pending", event="ExternalProvisioning"),
    ClaimCase("a volume bound to another claim is not taken", claim(cls="manual"),
              [volume("taken", claim_ref=("other", "u-9"), phase="Bound")], phase="Pending",
              event="ExternalProvisioning"),
    ClaimCase("a volume pre-bound to this claim is taken", claim(cls="manual"),
              [volume("big", size="10Gi", claim_ref=("data", "")), volume("small")], bind="big"),
    ClaimCase("unknown class: Pending with a reason", claim(cls="gold"), [], phase="Pending",
              event="ProvisioningFailed"),
    ClaimCase("no class: only volumes without class", claim(cls=""), [volume("classless", cls="")],
              bind="classless"),
    ClaimCase("bound and its volume agrees: Bound", claim(volume="v1"),
              [volume("v1", cls="local-path", claim_ref=("data", "u-1"), phase="Bound")], phase="Bound"),
    ClaimCase("bound volume vanished: Lost", claim(volume="gone"), [], phase="Lost", event="ClaimLost"),
    ClaimCase("volumeName set by the user, volume free: bind it", claim(cls="manual", volume="v1"), [volume("v1")],
              bind="v1"),
]


@pytest.mark.parametrize("case", CLAIM_CASES, ids=[c.id for c in CLAIM_CASES])
def test_plan_claim(case: ClaimCase) -> None:
    plan = plan_claim(case.pvc, case.volumes, CLASSES, NODES)
    assert (plan.bind.metadata.name if plan.bind is not None else "") == case.bind
    assert plan.provision is case.provision
    assert plan.phase == case.phase
    assert (plan.event[1] if plan.event else "") == case.event


@pytest.mark.parametrize(("pv", "claim_exists", "phase"), [
    (volume("free"), False, "Available"),
    (volume("bound", claim_ref=("data", "u-1"), phase="Bound"), True, "Bound"),
    (volume("released", claim_ref=("data", "u-1"), phase="Bound"), False, "Released"),
    (volume("deleted-claim", claim_ref=("data", "u-1"), phase="Bound", policy="Delete", local_path=True), False,
     "Released"),
    (volume("no-deleter", claim_ref=("data", "u-1"), phase="Bound", policy="Delete"), False, "Failed"),
    (volume("prebound", claim_ref=("data", "")), False, "Available"),
], ids=["no-claim-ref", "claim-present", "claim-gone-retain", "claim-gone-local-path-delete",
        "claim-gone-delete-without-deleter", "prebound-waiting"])
def test_plan_volume(pv: t.PersistentVolume, claim_exists: bool, phase: str) -> None:
    assert plan_volume(pv, claim() if claim_exists else None).phase == phase


def test_provisioned_volume_lives_on_the_node_under_its_path() -> None:
    n1 = node("n1")
    n1.metadata.annotations[storage.NODE_PATH_ANNOTATION] = "/var/lib/skiff/lab/n1/storage"
    pv = pvc_ctrl.provisioned_volume(claim(size="3Gi"), CLASSES["local-path"], n1)
    assert pv.metadata.name == "pvc-u-1"
    assert pv.spec.local.path == "/var/lib/skiff/lab/n1/storage/pvc-u-1_default_data"
    assert storage.volume_node(pv) == "n1"
    assert dict(pv.spec.capacity) == {"storage": "3Gi"}
    assert pv.spec.persistent_volume_reclaim_policy == "Delete"
    assert (pv.spec.claim_ref.name, pv.spec.claim_ref.uid) == ("data", "u-1")
    assert storage.provisioned_by_local_path(pv)


def storage_pod(name: str, claim_name: str = "data") -> t.Pod:
    p = pod(name)
    p.spec.volumes.add(name="data").persistent_volume_claim.claim_name = claim_name
    return p


async def test_local_path_flow(cluster: Cluster) -> None:
    for name in ("n1", "n2"):
        n = node(name, labels={"kubernetes.io/hostname": name})
        n.metadata.annotations[storage.NODE_PATH_ANNOTATION] = f"/state/{name}/storage"
        await cluster.create(n)
    ctrl = PersistentVolumeController(cluster.api, cluster.factory, recorder=cluster.recorder)
    sched = Scheduler(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.start()
    await ctrl.ensure_default()
    await cluster.settle()
    assert [c.metadata.name for c in cluster.api.objects(t.StorageClass)] == ["local-path"]

    created = await cluster.api.create(claim(cls=None))
    assert created.spec.storage_class_name == "local-path", "DefaultStorageClass admission"
    assert storage.PVC_PROTECTION in created.metadata.finalizers
    await cluster.drain(ctrl)
    assert (await cluster.api.get(t.PersistentVolumeClaim, "data", "default")).status.phase == "Pending"
    assert not cluster.api.objects(t.PersistentVolume), "WaitForFirstConsumer: nothing before a pod"

    await cluster.api.create(storage_pod("p1"))
    await cluster.settle()
    qp = await sched.queue.pop()
    assert qp is not None
    await sched.schedule_one(qp)
    await sched.wait_binds()
    await cluster.settle()
    p1 = await cluster.api.get(t.Pod, "p1", "default")
    chosen = p1.spec.node_name
    assert chosen in ("n1", "n2")
    pvc = await cluster.api.get(t.PersistentVolumeClaim, "data", "default")
    assert pvc.metadata.annotations[storage.SELECTED_NODE_ANNOTATION] == chosen

    await cluster.drain(ctrl)
    pvc = await cluster.api.get(t.PersistentVolumeClaim, "data", "default")
    pv = await cluster.api.get(t.PersistentVolume, f"pvc-{pvc.metadata.uid}")
    assert (pvc.status.phase, pvc.spec.volume_name, pv.status.phase) == ("Bound", pv.metadata.name, "Bound")
    assert dict(pvc.status.capacity) == {"storage": "1Gi"}
    assert pv.spec.local.path == f"/state/{chosen}/storage/{pv.metadata.name}_default_data"
    assert storage.volume_node(pv) == chosen

    # A second pod of the same claim goes where the data is, whichever node would score better.
    await cluster.api.create(storage_pod("p2"))
    await cluster.settle()
    qp = await sched.queue.pop()
    assert qp is not None
    await sched.schedule_one(qp)
    await sched.wait_binds()
    await cluster.settle()
    assert (await cluster.api.get(t.Pod, "p2", "default")).spec.node_name == chosen

    # Deleting the claim waits for its pods (pvc-protection), then the volume is Released.
    await cluster.api.delete(t.PersistentVolumeClaim, "data", "default")
    await cluster.drain(ctrl)
    assert (await cluster.api.get(t.PersistentVolumeClaim, "data", "default")).metadata.HasField(
        "deletion_timestamp")
    for name in ("p1", "p2"):
        await cluster.api.delete(t.Pod, name, "default", grace_period_seconds=0)
    await cluster.drain(ctrl)
    with pytest.raises(errors.NotFoundError):
        await cluster.api.get(t.PersistentVolumeClaim, "data", "default")
    await cluster.drain(ctrl)
    assert (await cluster.api.get(t.PersistentVolume, pv.metadata.name)).status.phase == "Released"


async def test_pod_of_a_missing_or_immediate_unbound_claim_is_unschedulable(cluster: Cluster) -> None:
    await cluster.create(node("n1", labels={"kubernetes.io/hostname": "n1"}))
    await cluster.create(sc("nfs"))
    sched = Scheduler(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.start()
    await cluster.api.create(storage_pod("nope", "missing"))
    await cluster.api.create(claim("slow", cls="nfs"))
    await cluster.api.create(storage_pod("waits", "slow"))
    await cluster.settle()
    for _ in range(2):
        qp = await sched.queue.pop()
        assert qp is not None
        await sched.schedule_one(qp)
    await cluster.settle()
    await cluster.recorder.flush()
    messages = sorted(e.message for e in cluster.api.objects(t.Event) if e.reason == "FailedScheduling")
    assert messages == ['0/1 nodes are available: 1 persistentvolumeclaim "missing" not found.',
                        "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims."]
