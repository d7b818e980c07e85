"""The persistent volume controller: binds claims to volumes, provisions local-path volumes,
releases volumes whose claim is gone, and lifts the protection finalizers.

What must hold (Kubernetes' PV controller, pvc-protection and pv-protection controllers, and
rancher's local-path-provisioner, in one module):
- a Pending claim is bound to the best matching Available volume (skiff.storage.best_volume),
  or, when its class is WaitForFirstConsumer, only once the scheduler has chosen a node
  (annotation volume.kubernetes.io/selected-node) and then only to a volume usable there;
- a claim of a class whose provisioner is skiff.io/local-path, with a selected node and no
  matching volume, gets a new volume `pvc-<claim uid>`: the claim's size and access modes, the
  class's reclaim policy, a `local` path `<base>/<pv>_<namespace>_<claim>` on that node (base:
  the node's annotation storage.skiff.io/local-path-dir, else the class's `basePath`
  parameter, else /var/lib/skiff/storage) and node affinity to it. The node agent makes the
  directory when a pod first mounts it;
- binding writes the volume first (claimRef with the claim's uid, then phase Bound), then the
  claim (volumeName, then phase Bound with the volume's capacity and access modes), so a crash
  in between is finished by the next sync and a volume is never bound to two claims;
- a bound volume whose claim is gone (or replaced: another uid) is Released; Retain keeps it
  (and its data) until an admin deletes it; Delete: a local-path volume's node agent removes
  the directory and then the PV object, any other source is marked Failed (Skiff cannot delete
  it); a claim whose volume vanished is Lost;
- a claim being deleted keeps its finalizer while a pod that is not finished uses it; a volume
  being deleted keeps its finalizer while a claim is bound to it;
- the default StorageClass `local-path` is created when the controller starts in a cluster
  that has no StorageClass at all (a fresh cluster); one that an admin deleted is not brought
  back while other classes exist.
Decisions are the pure `plan_claim`, `plan_volume`, `provisioned_volume`; `sync` applies them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controlplane.common import podutil
from controlplane.controllers.base import QueueController
from skiff import errors, storage
from skiff.client import ApiClient
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory, split_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.persistentvolume")

CLAIM_INDEX = "claims"  # pods by "<namespace>/<claim>"
_CLAIM, _VOLUME = "claim:", "volume:"


# ------------------------------------------------------------------ pure decisions


@dataclass(frozen=True)
class ClaimPlan:
    """What to do for one claim: at most one of bind/provision; status to write; an event."""

    bind: t.PersistentVolume | None = None  # bind the claim to this (existing) volume
    provision: bool = False  # create a local-path volume on the selected node
    phase: str = ""  # the claim's phase to write ("" = leave it)
    event: tuple[str, str, str] | None = None  # (type, reason, message)


def plan_claim(pvc: t.PersistentVolumeClaim, volumes: Sequence[t.PersistentVolume],
               classes: Mapping[str, t.StorageClass], nodes: Mapping[str, t.Node]) -> ClaimPlan:
    """The next step for a claim (see the module docstring)."""
    if pvc.spec.volume_name:
        pv = next((v for v in volumes if v.metadata.name == pvc.spec.volume_name), None)
        if pv is None:
            return ClaimPlan(phase="Lost", event=(WARNING, "ClaimLost", "Bound claim has lost its PersistentVolume. "
                                                                        "Data on the volume is lost!"))
        if not pv.spec.claim_ref.name:
            return ClaimPlan(bind=pv)  # we set volumeName first (a pre-bound claim): finish on the volume
        if not storage.bound_to(pv, pvc):
            return ClaimPlan(phase="Pending", event=(WARNING, "FailedBinding",
                                                     f"volume {pv.metadata.name} already bound to a different claim."))
        return ClaimPlan(phase="Bound")
    class_name = storage.claim_class(pvc)
    sc = classes.get(class_name)
    if class_name and sc is None:
        return ClaimPlan(phase="Pending", event=(WARNING, "ProvisioningFailed",
                                                 f'storageclass.storage.k8s.io "{class_name}" not found'))
    waiting = storage.binding_mode(sc) == storage.WAIT_FOR_FIRST_CONSUMER
    selected = pvc.metadata.annotations.get(storage.SELECTED_NODE_ANNOTATION, "")
    node = nodes.get(selected) if selected else None
    if waiting and node is None:
        return ClaimPlan(phase="Pending", event=(NORMAL, "WaitForFirstConsumer",
                                                 "waiting for first consumer to be created before binding"))
    pv = storage.best_volume(pvc, volumes, node=node if waiting else None)
    if pv is not None:
        return ClaimPlan(bind=pv)
    if sc is not None and sc.provisioner == storage.LOCAL_PATH_PROVISIONER:
        if node is None:
            return ClaimPlan(phase="Pending", event=(WARNING, "ProvisioningFailed",
                                                     "the local-path provisioner needs a node: use volumeBindingMode "
                                                     "WaitForFirstConsumer"))
        return ClaimPlan(provision=True, phase="Pending")
    if sc is not None:
        return ClaimPlan(phase="Pending", event=(NORMAL, "ExternalProvisioning",
                                                 f'Waiting for a volume to be created by the external provisioner '
                                                 f'"{sc.provisioner}"'))
    return ClaimPlan(phase="Pending", event=(NORMAL, "FailedBinding",
                                             "no persistent volumes available for this claim and no storage class "
                                             "is set"))


def provisioned_volume(pvc: t.PersistentVolumeClaim, sc: t.StorageClass, node: t.Node) -> t.PersistentVolume:
    """The local-path volume for a claim on `node` (see the module docstring)."""
    pv = t.PersistentVolume(api_version="v1", kind="PersistentVolume")
    name = f"pvc-{pvc.metadata.uid}"
    pv.metadata.name = name
    pv.metadata.annotations[storage.PROVISIONED_BY_ANNOTATION] = storage.LOCAL_PATH_PROVISIONER
    base = node.metadata.annotations.get(storage.NODE_PATH_ANNOTATION) or sc.parameters.get("basePath") \
        or storage.LOCAL_PATH_BASE
    spec = pv.spec
    spec.capacity["storage"] = pvc.spec.resources.requests.get("storage", "")
    spec.access_modes.extend(pvc.spec.access_modes)
    spec.persistent_volume_reclaim_policy = storage.reclaim_policy(sc)
    spec.storage_class_name = sc.metadata.name
    spec.volume_mode = "Filesystem"
    spec.local.path = storage.local_path(base, name, pvc.metadata.namespace, pvc.metadata.name)
    spec.node_affinity.CopyFrom(storage.node_affinity_for(node.metadata.name))
    spec.mount_options.extend(sc.mount_options)
    # Pre-bound to its claim, as the external provisioners do: nobody else can take it.
    spec.claim_ref.CopyFrom(claim_ref(pvc))
    return pv


def claim_ref(pvc: t.PersistentVolumeClaim) -> t.ObjectReference:
    return t.ObjectReference(kind="PersistentVolumeClaim", api_version="v1", namespace=pvc.metadata.namespace,
                             name=pvc.metadata.name, uid=pvc.metadata.uid)


@dataclass(frozen=True)
class VolumePlan:
    phase: str
    message: str = ""
    remove_finalizer: bool = False


def plan_volume(pv: t.PersistentVolume, claim: t.PersistentVolumeClaim | None) -> VolumePlan:
    """The volume's phase from its claimRef and the claim it names (None: no such claim)."""
    ref = pv.spec.claim_ref
    deleting = pv.metadata.HasField("deletion_timestamp")
    if not ref.name:
        return VolumePlan("Available", remove_finalizer=deleting)
    if claim is not None and (not ref.uid or claim.metadata.uid == ref.uid):
        return VolumePlan("Bound")
    if not ref.uid:
        return VolumePlan("Available", remove_finalizer=deleting)  # pre-bound by an admin, the claim not there yet
    # The claim is gone: released, and what the reclaim policy says.
    if pv.spec.persistent_volume_reclaim_policy == "Delete" and not storage.provisioned_by_local_path(pv):
        return VolumePlan("Failed", "no deleter for this volume source: delete the data and the volume by hand",
                          remove_finalizer=deleting)
    return VolumePlan("Released", remove_finalizer=deleting)


def claim_in_use(pods: Iterable[t.Pod]) -> bool:
    """A pod that is not finished (nor gone) still uses the claim."""
    return any(not podutil.is_terminal(p) for p in pods)


def index_pod_claims(pod: t.Pod) -> list[str]:
    return [f"{pod.metadata.namespace}/{name}" for name in storage.pod_claims(pod.spec)]


# ------------------------------------------------------------------ the controller


class PersistentVolumeController(QueueController):
    name = "persistentvolume"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 ensure_default_class: bool = True) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.ensure_default_class = ensure_default_class
        self.claims = factory.informer(t.PersistentVolumeClaim)
        self.volumes = factory.informer(t.PersistentVolume)
        self.classes = factory.informer(t.StorageClass)
        self.nodes = factory.informer(t.Node)
        self.pods = factory.informer(t.Pod)
        self.pods.add_indexer(CLAIM_INDEX, index_pod_claims)
        self.claims.add_handler(on_add=self._claim, on_update=lambda old, new: self._claim(new),
                                on_delete=self._claim_deleted)
        self.volumes.add_handler(on_add=self._volume, on_update=lambda old, new: self._volume(new),
                                 on_delete=self._volume_deleted)
        self.classes.add_handler(on_add=lambda sc: self._all_pending(), on_update=lambda old, new: None)
        self.pods.add_handler(on_add=self._pod, on_update=lambda old, new: self._pod(new), on_delete=self._pod)
        self._events: set[tuple[str, str]] = set()  # (claim uid, reason) already reported

    # handlers: keys only
    def _claim(self, pvc: t.PersistentVolumeClaim) -> None:
        self.queue.add(f"{_CLAIM}{pvc.metadata.namespace}/{pvc.metadata.name}")

    def _claim_deleted(self, pvc: t.PersistentVolumeClaim) -> None:
        self._events = {e for e in self._events if e[0] != pvc.metadata.uid}
        self._claim(pvc)
        if pvc.spec.volume_name:
            self.queue.add(f"{_VOLUME}{pvc.spec.volume_name}")

    def _volume(self, pv: t.PersistentVolume) -> None:
        self.queue.add(f"{_VOLUME}{pv.metadata.name}")
        ref = pv.spec.claim_ref
        if ref.name:
            self.queue.add(f"{_CLAIM}{ref.namespace}/{ref.name}")
        else:
            self._all_pending()  # a new Available volume may satisfy a waiting claim

    def _volume_deleted(self, pv: t.PersistentVolume) -> None:
        ref = pv.spec.claim_ref
        if ref.name:
            self.queue.add(f"{_CLAIM}{ref.namespace}/{ref.name}")

    def _all_pending(self) -> None:
        for pvc in self.claims.list():
            if not pvc.spec.volume_name:
                self._claim(pvc)

    def _pod(self, pod: t.Pod) -> None:
        for key in index_pod_claims(pod):
            self.queue.add(f"{_CLAIM}{key}")

    async def run(self, *, workers: int = 1) -> None:
        if self.ensure_default_class:
            await self.ensure_default()
        await super().run(workers=workers)

    async def ensure_default(self) -> None:
        """Create the `local-path` StorageClass in a cluster that has no StorageClass at all."""
        if self.classes.list():
            return
        try:
            await self.client.create(storage.default_storage_class())
            log.info("created the default StorageClass %s", storage.DEFAULT_CLASS_NAME)
        except errors.AlreadyExistsError:
            pass

    async def sync(self, key: str) -> None:
        if key.startswith(_VOLUME):
            await self._sync_volume(key[len(_VOLUME):])
        elif key.startswith(_CLAIM):
            await self._sync_claim(*split_key(key[len(_CLAIM):]))

    # ------------------------------------------------------------ volumes

    async def _sync_volume(self, name: str) -> None:
        pv = self.volumes.get(name)
        if pv is None:
            return
        ref = pv.spec.claim_ref
        claim = self.claims.get(ref.name, ref.namespace) if ref.name else None
        if claim is not None and ref.uid and claim.metadata.uid != ref.uid:
            claim = None  # a new claim of the same name is not ours
        plan = plan_volume(pv, claim)
        if plan.remove_finalizer and storage.PV_PROTECTION in pv.metadata.finalizers:
            new = podutil.copy(pv)
            kept = [f for f in new.metadata.finalizers if f != storage.PV_PROTECTION]
            del new.metadata.finalizers[:]
            new.metadata.finalizers.extend(kept)
            try:
                await self.client.update(new)
            except errors.NotFoundError:
                return
            return
        if pv.status.phase != plan.phase or pv.status.message != plan.message:
            new = podutil.copy(pv)
            new.status.phase, new.status.message = plan.phase, plan.message
            new.status.reason = ""
            try:
                await self.client.update_status(new)
            except errors.NotFoundError:
                return
            if plan.phase == "Released":
                log.info("volume %s released (claim %s/%s is gone)", name, ref.namespace, ref.name)

    # ------------------------------------------------------------ claims

    async def _sync_claim(self, namespace: str, name: str) -> None:
        pvc = self.claims.get(name, namespace)
        if pvc is None:
            return
        if pvc.metadata.HasField("deletion_timestamp"):
            await self._unprotect(pvc)
            return
        classes = {sc.metadata.name: sc for sc in self.classes.list()}
        nodes = {n.metadata.name: n for n in self.nodes.list()}
        plan = plan_claim(pvc, self.volumes.list(), classes, nodes)
        if plan.event is not None and (pvc.metadata.uid, plan.event[1]) not in self._events:
            self._events.add((pvc.metadata.uid, plan.event[1]))
            self.recorder.event(pvc, *plan.event)
        if plan.provision:
            await self._provision(pvc, classes[storage.claim_class(pvc)],
                                  nodes[pvc.metadata.annotations[storage.SELECTED_NODE_ANNOTATION]])
            return
        if plan.bind is not None:
            await self._bind(pvc, plan.bind)
            return
        if plan.phase and plan.phase != pvc.status.phase:
            await self._claim_status(pvc, plan.phase, self.volumes.get(pvc.spec.volume_name)
                                     if plan.phase == "Bound" else None)

    async def _unprotect(self, pvc: t.PersistentVolumeClaim) -> None:
        if storage.PVC_PROTECTION not in pvc.metadata.finalizers:
            return
        if claim_in_use(self.pods.by_index(CLAIM_INDEX, f"{pvc.metadata.namespace}/{pvc.metadata.name}")):
            return  # a pod event looks again
        new = podutil.copy(pvc)
        kept = [f for f in new.metadata.finalizers if f != storage.PVC_PROTECTION]
        del new.metadata.finalizers[:]
        new.metadata.finalizers.extend(kept)
        try:
            await self.client.update(new)
        except errors.NotFoundError:
            pass

    async def _provision(self, pvc: t.PersistentVolumeClaim, sc: t.StorageClass, node: t.Node) -> None:
        pv = provisioned_volume(pvc, sc, node)
        try:
            created = await self.client.create(pv)
        except errors.AlreadyExistsError:
            return  # our earlier create: its event binds the claim
        self.recorder.event(pvc, NORMAL, "ProvisioningSucceeded",
                            f"Successfully provisioned volume {pv.metadata.name} on node {node.metadata.name}")
        log.info("provisioned %s for %s/%s on %s", pv.metadata.name, pvc.metadata.namespace, pvc.metadata.name,
                 node.metadata.name)
        await self._bind(pvc, created)

    async def _bind(self, pvc: t.PersistentVolumeClaim, pv: t.PersistentVolume) -> None:
        """Volume first (claimRef, Bound), then the claim (volumeName, Bound)."""
        if not pv.spec.claim_ref.uid or not pv.spec.claim_ref.name:
            new = podutil.copy(pv)
            new.spec.claim_ref.CopyFrom(claim_ref(pvc))
            new.metadata.annotations[storage.BOUND_BY_CONTROLLER_ANNOTATION] = "yes"
            pv = await self.client.update(new)
        if pv.status.phase != "Bound":
            new = podutil.copy(pv)
            new.status.phase = "Bound"
            pv = await self.client.update_status(new)
        if pvc.spec.volume_name != pv.metadata.name:
            new_claim = podutil.copy(pvc)
            new_claim.spec.volume_name = pv.metadata.name
            new_claim.metadata.annotations[storage.BIND_COMPLETED_ANNOTATION] = "yes"
            new_claim.metadata.annotations[storage.BOUND_BY_CONTROLLER_ANNOTATION] = "yes"
            pvc = await self.client.update(new_claim)
        await self._claim_status(pvc, "Bound", pv)

    async def _claim_status(self, pvc: t.PersistentVolumeClaim, phase: str, pv: t.PersistentVolume | None) -> None:
        new = podutil.copy(pvc)
        new.status.phase = phase
        del new.status.access_modes[:]
        new.status.capacity.clear()
        if pv is not None and phase == "Bound":
            new.status.access_modes.extend(pv.spec.access_modes)
            new.status.capacity.update(pv.spec.capacity)
        if new.status == pvc.status:
            return
        try:
            await self.client.update_status(new)
        except errors.NotFoundError:
            pass
