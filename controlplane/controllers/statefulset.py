"""The statefulset controller: pods with stable names `<set>-<ordinal>`, in order.

What must hold (Kubernetes' apps/v1 StatefulSet):
- the set's pods are `<set>-0` .. `<set>-(replicas-1)`, each with hostname = its name and the
  labels statefulset.kubernetes.io/pod-name and apps.kubernetes.io/pod-index; a pod whose
  ordinal is at or past replicas is condemned;
- OrderedReady: a pod is created only when every lower ordinal is Running and Ready, one at a
  time; condemned pods are deleted one at a time, highest ordinal first, and only while every
  other pod is Running and Ready; Parallel: all creations and deletions at once;
- a Failed pod is deleted and created again under the same name;
- RollingUpdate: pods with ordinal >= partition are brought to the update revision by deleting
  them one at a time, highest ordinal first, each only when all pods are Running and Ready; pods
  below the partition (and ones that get recreated there) keep the current revision's template;
  currentRevision becomes updateRevision once every pod runs it. OnDelete: only pods deleted by
  someone else get the new template;
- templates are kept as ControllerRevisions (controlplane.controllers.history);
- volumeClaimTemplates: before pod `<set>-<i>` is created, each template's claim
  `<template>-<set>-<i>` exists (created from the template, labelled with the set's selector
  labels), and the pod's volume of the template's name uses it; the controller never deletes
  a claim itself: with persistentVolumeClaimRetentionPolicy Retain (Kubernetes' default) a pod
  created again, or the same ordinal after a scale-down and up, gets its old data back;
- retention policy (`claim_owner_references`, upstream's claimOwnerMatchesSetAndPod): the
  garbage collector deletes what the claims' ownerReferences say. whenDeleted=Delete: every
  claim of a pod in range is owned by the set (it goes with the set); whenScaled=Delete: the
  claims of a condemned pod (ordinal ≥ replicas) are owned by that pod and not by the set (they
  go with the pod), before the pod is deleted; Retain removes the reference it would have added.
  References are never controller references and never block their owner's deletion (a
  claim protected while its pod runs must not hold the pod back); other owners are kept;
- the decision is the pure `plan_statefulset(...)`; `sync` applies it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.common import podutil
from controlplane.controllers import history
from controlplane.controllers.base import QueueController, claim, claim_candidates, selector_or_event, write_status
from controlplane.controllers.rollout import pod_template_hash
from skiff import conditions, errors, storage
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory, split_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.statefulset")

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


# ------------------------------------------------------------------ pure helpers


def ordinal(sts_name: str, pod: t.Pod) -> int | None:
    match = re.fullmatch(rf"{re.escape(sts_name)}-(\d+)", pod.metadata.name)
    return int(match.group(1)) if match else None


def healthy(pod: t.Pod) -> bool:
    return (pod.status.phase == "Running" and conditions.is_pod_ready(pod)
            and not pod.metadata.HasField("deletion_timestamp"))


@dataclass(frozen=True)
class SetPlan:
    status: t.StatefulSetStatus
    create: tuple[tuple[int, str], ...] = ()  # (ordinal, revision hash whose template to use)
    delete: tuple[t.Pod, ...] = ()


def plan_statefulset(sts: t.StatefulSet, pods: Sequence[t.Pod], *, update_hash: str, current_hash: str,
                     now: float) -> SetPlan:
    """Which ordinals to create (with which revision) and which pods to delete, and the status."""
    spec = sts.spec
    replicas = spec.replicas if spec.HasField("replicas") else 1
    parallel = spec.pod_management_policy == "Parallel"
    by_ord: dict[int, t.Pod] = {}
    for p in pods:
        i = ordinal(sts.metadata.name, p)
        if i is not None:
            by_ord[i] = p
    partition = spec.update_strategy.rolling_update.partition if spec.update_strategy.HasField("rolling_update") \
        else 0
    rolling = spec.update_strategy.type in ("", "RollingUpdate")

    def revision_for(i: int) -> str:
        return update_hash if (i >= partition or current_hash == "") else current_hash

    create: list[tuple[int, str]] = []
    delete: list[t.Pod] = []
    blocked = False  # OrderedReady: a lower ordinal is not Running and Ready yet
    for i in range(replicas):
        pod = by_ord.get(i)
        if pod is None:
            if not blocked or parallel:
                create.append((i, revision_for(i)))
            blocked = True
            continue
        if pod.status.phase == "Failed" and not pod.metadata.HasField("deletion_timestamp"):
            delete.append(pod)  # recreated under the same name once it is gone
            blocked = True
            continue
        if not healthy(pod):
            blocked = True
    condemned = sorted((i for i in by_ord if i >= replicas), reverse=True)
    all_healthy = all(healthy(p) for i, p in by_ord.items())
    for i in condemned:
        pod = by_ord[i]
        if pod.metadata.HasField("deletion_timestamp"):
            if not parallel:
                break
            continue
        if parallel:
            delete.append(pod)
        elif all(healthy(p) for j, p in by_ord.items() if j != i) and not create:
            delete.append(pod)
            break
        else:
            break
    if rolling and not create and not condemned and all_healthy:
        stale = [i for i in sorted(by_ord, reverse=True)
                 if i < replicas and i >= partition
                 and by_ord[i].metadata.labels.get(history.REVISION_HASH) != update_hash]
        if stale:
            delete.append(by_ord[stale[0]])
    live = [p for i, p in by_ord.items() if not p.metadata.HasField("deletion_timestamp")]
    updated = sum(1 for p in live if p.metadata.labels.get(history.REVISION_HASH) == update_hash)
    current = sum(1 for p in live if p.metadata.labels.get(history.REVISION_HASH) == (current_hash or update_hash))
    status = t.StatefulSetStatus(
        observed_generation=sts.metadata.generation, replicas=len(live),
        ready_replicas=sum(1 for p in live if conditions.is_pod_ready(p)),
        available_replicas=sum(1 for p in live if podutil.is_available(p, spec.min_ready_seconds, now)),
        current_replicas=current, updated_replicas=updated, update_revision=f"{sts.metadata.name}-{update_hash}",
        current_revision=f"{sts.metadata.name}-{current_hash or update_hash}")
    if updated == replicas and len(live) == replicas:
        status.current_revision = status.update_revision
        status.current_replicas = updated
    if sts.status.HasField("collision_count"):
        status.collision_count = sts.status.collision_count
    status.conditions.extend(sts.status.conditions)
    return SetPlan(status, tuple(create), tuple(delete))


def claims_for(sts: t.StatefulSet, index: int) -> list[t.PersistentVolumeClaim]:
    """The claims pod `<set>-<index>` uses, made from the volumeClaimTemplates."""
    out = []
    for tmpl in sts.spec.volume_claim_templates:
        pvc = t.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
        pvc.metadata.name = storage.claim_name_for(tmpl.metadata.name, sts.metadata.name, index)
        pvc.metadata.namespace = sts.metadata.namespace
        pvc.metadata.labels.update(tmpl.metadata.labels)
        pvc.metadata.labels.update(sts.spec.selector.match_labels)
        pvc.metadata.annotations.update(tmpl.metadata.annotations)
        pvc.spec.CopyFrom(tmpl.spec)
        pvc.metadata.owner_references.extend(claim_owner_references(sts, pvc, None, condemned=False))
        out.append(pvc)
    return out


def _retains(policy: str) -> bool:
    return policy != "Delete"


def claim_owner_references(sts: t.StatefulSet, claim: t.PersistentVolumeClaim, pod: t.Pod | None,
                           condemned: bool) -> list[t.OwnerReference]:
    """The ownerReferences `claim` should have under the set's retention policy (see the module
    docstring); `pod`: the claim's pod (None: it has none now), `condemned`: its ordinal is ≥ replicas."""
    policy = sts.spec.persistent_volume_claim_retention_policy
    delete_with_set = not _retains(policy.when_deleted) and not (condemned and not _retains(policy.when_scaled))
    delete_with_pod = pod is not None and condemned and not _retains(policy.when_scaled)
    refs = [r for r in claim.metadata.owner_references
            if r.uid != sts.metadata.uid and (pod is None or r.uid != pod.metadata.uid)]
    if delete_with_set:
        refs.append(podutil.owner_reference(sts, controller=False, block=False))
    if delete_with_pod:
        assert pod is not None
        refs.append(podutil.owner_reference(pod, controller=False, block=False))
    return refs


def pod_for(sts: t.StatefulSet, index: int, template: t.PodTemplateSpec, hash_: str) -> t.Pod:
    pod = t.Pod(api_version="v1", kind="Pod")
    name = f"{sts.metadata.name}-{index}"
    pod.metadata.name = name
    pod.metadata.namespace = sts.metadata.namespace
    pod.metadata.labels.update(template.metadata.labels)
    pod.metadata.labels.update({history.REVISION_HASH: hash_, POD_NAME_LABEL: name, POD_INDEX_LABEL: str(index)})
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.metadata.owner_references.append(podutil.owner_reference(sts))
    pod.spec.CopyFrom(template.spec)
    if not pod.spec.hostname:
        pod.spec.hostname = name[:63]
    for tmpl in sts.spec.volume_claim_templates:
        # The claim replaces a template volume of the same name, as Kubernetes does.
        kept = [v for v in pod.spec.volumes if v.name != tmpl.metadata.name]
        del pod.spec.volumes[:]
        pod.spec.volumes.extend(kept)
        pod.spec.volumes.add(name=tmpl.metadata.name).persistent_volume_claim.claim_name = \
            storage.claim_name_for(tmpl.metadata.name, sts.metadata.name, index)
    return pod


def current_hash_of(sts: t.StatefulSet) -> str:
    """The hash part of status.currentRevision (`<set>-<hash>`); empty before the first rollout."""
    prefix = f"{sts.metadata.name}-"
    rev = sts.status.current_revision
    return rev[len(prefix):] if rev.startswith(prefix) else ""


# ------------------------------------------------------------------ the controller


class StatefulSetController(QueueController):
    name = "statefulset"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.sets = factory.informer(t.StatefulSet)
        self.pods = factory.informer(t.Pod)
        self.revisions = factory.informer(t.ControllerRevision)
        self.claims = factory.informer(t.PersistentVolumeClaim)
        self.pods.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.pods.add_indexer(podutil.ORPHAN_INDEX, podutil.index_orphans)
        self.revisions.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.sets.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                              on_delete=lambda s: None)
        self.enqueue_controllers_of(self.pods, "StatefulSet")

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        sts = self.sets.get(name, namespace)
        if sts is None or sts.metadata.HasField("deletion_timestamp"):
            return
        selector = selector_or_event(sts, self.recorder)
        if selector is None:
            return
        pods = await claim(self.client, sts, claim_candidates(self.pods, sts), selector)
        update_hash = pod_template_hash(sts.spec.template)
        current_hash = current_hash_of(sts)
        revisions = list(self.revisions.by_index(podutil.CONTROLLER_UID_INDEX, sts.metadata.uid))
        in_use = {p.metadata.labels.get(history.REVISION_HASH, "") for p in pods} | {current_hash, update_hash}
        create_rev, renumber, drop = history.plan_revisions(sts, sts.spec.template, revisions, update_hash, in_use)
        await history.apply(self.client, create_rev, renumber, drop, namespace)
        templates: Mapping[str, t.PodTemplateSpec] = {
            r.metadata.labels.get(history.REVISION_HASH, ""): r.data.spec.template for r in revisions}
        plan = plan_statefulset(sts, pods, update_hash=update_hash, current_hash=current_hash,
                                now=self.clock.now())
        await self._claim_owners(sts, pods)  # before a condemned pod goes: its claims may go with it
        for pod in plan.delete:
            try:
                await self.client.delete(t.Pod, pod.metadata.name, pod.metadata.namespace)
                self.recorder.event(sts, NORMAL, "SuccessfulDelete",
                                    f"delete Pod {pod.metadata.name} in StatefulSet {name} successful")
            except errors.NotFoundError:
                pass
        for index, hash_ in plan.create:
            template = templates.get(hash_, sts.spec.template) if hash_ != update_hash else sts.spec.template
            await self._ensure_claims(sts, index)
            try:
                await self.client.create(pod_for(sts, index, template, hash_))
                self.recorder.event(sts, NORMAL, "SuccessfulCreate",
                                    f"create Pod {name}-{index} in StatefulSet {name} successful")
            except errors.AlreadyExistsError:
                pass  # the old one is still terminating: look again when it is gone
            except errors.SkiffError as exc:
                self.recorder.event(sts, WARNING, "FailedCreate", f"create Pod {name}-{index} failed: {exc}")
                raise
        if plan.status != sts.status:
            await write_status(self.client, sts, plan.status)

    async def _claim_owners(self, sts: t.StatefulSet, pods: Sequence[t.Pod]) -> None:
        """Give the claims of the set's pods the ownerReferences its retention policy asks for."""
        if not sts.spec.volume_claim_templates:
            return
        replicas = sts.spec.replicas if sts.spec.HasField("replicas") else 1
        for pod in pods:
            index = ordinal(sts.metadata.name, pod)
            if index is None:
                continue
            for wanted in claims_for(sts, index):
                current = self.claims.get(wanted.metadata.name, wanted.metadata.namespace)
                if current is None or current.metadata.HasField("deletion_timestamp"):
                    continue
                refs = claim_owner_references(sts, current, pod, condemned=index >= replicas)
                if list(current.metadata.owner_references) == refs:
                    continue
                updated = podutil.copy(current)
                del updated.metadata.owner_references[:]
                updated.metadata.owner_references.extend(refs)
                try:
                    await self.client.update(updated)
                except errors.NotFoundError:
                    continue

    async def _ensure_claims(self, sts: t.StatefulSet, index: int) -> None:
        for pvc in claims_for(sts, index):
            if self.claims.get(pvc.metadata.name, pvc.metadata.namespace) is not None:
                continue
            try:
                await self.client.create(pvc)
                self.recorder.event(sts, NORMAL, "SuccessfulCreate",
                                    f"create Claim {pvc.metadata.name} Pod {sts.metadata.name}-{index} in StatefulSet "
                                    f"{sts.metadata.name} success")
            except errors.AlreadyExistsError:
                pass  # kept from an earlier pod of this ordinal: its data is reused
            except errors.SkiffError as exc:
                self.recorder.event(sts, WARNING, "FailedCreate",
                                    f"create Claim {pvc.metadata.name} for Pod {sts.metadata.name}-{index} failed: "
                                    f"{exc}")
                raise
