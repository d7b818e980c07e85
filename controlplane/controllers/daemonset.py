"""The daemonset controller: one pod of a DaemonSet on every node that should run one.

What must hold:
- a node should run the DaemonSet's pod when its labels match the template's nodeSelector and
  every NoSchedule/NoExecute taint is tolerated by the template's tolerations plus the ones
  Kubernetes adds to every daemon pod (not-ready, unreachable, unschedulable, disk/memory/pid
  pressure); an unschedulable node still runs daemon pods;
- the controller places pods itself (spec.nodeName set at creation), so a new node gets its pod
  as soon as the controller sees the node, without waiting for the scheduler;
- on a node that should run it there is exactly one active pod: a missing one is created, a
  Failed one is deleted (and replaced on the next sync), extras are deleted (the oldest stays);
  on a node that should not, every pod of the set is deleted;
- updates (RollingUpdate): pods carry `controller-revision-hash`; a pod with another hash is
  old. Old pods are deleted so that at most maxUnavailable desired nodes lack an available
  pod; with maxSurge, a new pod starts beside the old one on up to maxSurge nodes and the old
  one goes once the new one is available. OnDelete replaces only pods deleted by someone else;
- each template is kept as a ControllerRevision (`<set>-<hash>`, revision numbers increasing,
  the current one re-numbered when a rollback returns to it); beyond revisionHistoryLimit the
  oldest revisions no pod uses are deleted;
- the decision is the pure `plan_daemonset(...)`; `sync` applies it with expectations.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.common import podutil
from controlplane.controllers import history
from controlplane.controllers.base import (
    ExpectingPodHandlers,
    QueueController,
    claim,
    claim_candidates,
    live_controller,
    selector_or_event,
    write_status,
)
from controlplane.controllers.replicaset import Expectations
from controlplane.controllers.rollout import int_or_string, pod_template_hash, scaled_value
from skiff import conditions, errors, taints
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory, object_key, split_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.daemonset")

REVISION_HASH = history.REVISION_HASH
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

# Kubernetes' daemon pods tolerate the node conditions a daemon (a CNI agent, a log shipper)
# must survive: they are never evicted for them and are placed despite them.
DAEMON_TOLERATIONS = (
    t.Toleration(key=taints.NOT_READY, operator="Exists", effect=taints.NO_EXECUTE),
    t.Toleration(key=taints.UNREACHABLE, operator="Exists", effect=taints.NO_EXECUTE),
    t.Toleration(key="node.kubernetes.io/disk-pressure", operator="Exists", effect=taints.NO_SCHEDULE),
    t.Toleration(key="node.kubernetes.io/memory-pressure", operator="Exists", effect=taints.NO_SCHEDULE),
    t.Toleration(key="node.kubernetes.io/pid-pressure", operator="Exists", effect=taints.NO_SCHEDULE),
    t.Toleration(key=taints.UNSCHEDULABLE, operator="Exists", effect=taints.NO_SCHEDULE),
)


# ------------------------------------------------------------------ pure helpers


def pod_template(ds: t.DaemonSet) -> t.PodTemplateSpec:
    """The template daemon pods are made from: the user's plus the daemon tolerations."""
    out = t.PodTemplateSpec()
    out.CopyFrom(ds.spec.template)
    for tol in DAEMON_TOLERATIONS:
        if not any(x.key == tol.key and x.effect == tol.effect for x in out.spec.tolerations):
            out.spec.tolerations.append(tol)
    return out


def template_hash(ds: t.DaemonSet) -> str:
    return pod_template_hash(ds.spec.template, ds.status.collision_count if ds.status.HasField("collision_count")
                             else None)


def should_run(template: t.PodTemplateSpec, node: t.Node) -> bool:
    """Whether `node` should run a pod of `template` (nodeSelector and hard taints)."""
    if any(node.metadata.labels.get(k) != v for k, v in template.spec.node_selector.items()):
        return False
    return taints.untolerated(node.spec.taints, template.spec.tolerations) is None


@dataclass(frozen=True)
class DaemonPlan:
    status: t.DaemonSetStatus
    create: tuple[str, ...] = ()  # node names that get a new pod
    delete: tuple[t.Pod, ...] = ()
    requeue_after: float | None = None  # minReadySeconds: look again when a pod becomes available


def plan_daemonset(ds: t.DaemonSet, nodes: Sequence[t.Node], pods_by_node: Mapping[str, Sequence[t.Pod]],
                   now: float, *, current_hash: str) -> DaemonPlan:
    """What to create and delete so each eligible node runs one up-to-date pod, and the status."""
    template = pod_template(ds)
    min_ready = ds.spec.min_ready_seconds
    strategy = ds.spec.update_strategy
    rolling = strategy.type in ("", "RollingUpdate")
    create: list[str] = []
    delete: list[t.Pod] = []
    desired = current = misscheduled = ready = available = updated = 0
    # Per eligible node: (node, the one old pod kept, the new pod), for the rolling update below.
    rolling_nodes: list[tuple[str, t.Pod | None, t.Pod | None]] = []
    requeue: float | None = None
    for node in sorted(nodes, key=lambda n: n.metadata.name):
        name = node.metadata.name
        pods = [p for p in pods_by_node.get(name, ()) if not p.metadata.HasField("deletion_timestamp")]
        if not should_run(template, node):
            if pods:
                misscheduled += 1
            delete.extend(pods)
            continue
        desired += 1
        failed = [p for p in pods if p.status.phase == "Failed"]
        delete.extend(failed)
        live = sorted((p for p in pods if p.status.phase != "Failed"), key=podutil.created)
        if not live:
            if not failed:
                create.append(name)
            continue
        current += 1
        new = [p for p in live if p.metadata.labels.get(REVISION_HASH) == current_hash]
        old = [p for p in live if p.metadata.labels.get(REVISION_HASH) != current_hash]
        # One of each at most: the oldest new pod, the oldest old pod.
        delete.extend(new[1:])
        delete.extend(old[1:])
        keep_new = new[0] if new else None
        keep_old = old[0] if old else None
        shown = keep_new or keep_old
        assert shown is not None
        if conditions.is_pod_ready(shown):
            ready += 1
        if podutil.is_available(shown, min_ready, now):
            available += 1
        elif conditions.is_pod_ready(shown) and min_ready > 0:
            since = podutil.ready_since(shown) or now
            wait = since + min_ready - now
            requeue = wait if requeue is None else min(requeue, wait)
        if keep_new is not None:
            updated += 1
        if keep_old is not None:
            rolling_nodes.append((name, keep_old, keep_new))

    if rolling and rolling_nodes:
        ru = strategy.rolling_update
        surge = scaled_value(int_or_string(ru.max_surge if ru.HasField("max_surge") else None, "0%"),
                             desired, round_up=True)
        max_unavailable = scaled_value(int_or_string(ru.max_unavailable if ru.HasField("max_unavailable") else None,
                                                     "1"), desired, round_up=False) \
            if ru.HasField("max_unavailable") else 1
        if surge == 0 and max_unavailable == 0:
            max_unavailable = 1
        if surge > 0:
            surging = 0
            candidates: list[str] = []
            for name, old_pod, new_pod in rolling_nodes:
                assert old_pod is not None
                if new_pod is not None:
                    if podutil.is_available(new_pod, min_ready, now):
                        delete.append(old_pod)
                    else:
                        surging += 1
                elif not podutil.is_available(old_pod, min_ready, now):
                    # Not serving anyway: replaced at once, at no cost to availability.
                    delete.append(old_pod)
                    create.append(name)
                else:
                    candidates.append(name)
            create.extend(candidates[:max(surge - surging, 0)])
        else:
            unavailable_now = desired - available
            budget = max(max_unavailable - unavailable_now, 0)
            # Old pods that are not available anyway go first; they cost nothing.
            for _name, old_pod, _ in rolling_nodes:
                assert old_pod is not None
                if not podutil.is_available(old_pod, min_ready, now):
                    delete.append(old_pod)
            for _name, old_pod, _ in rolling_nodes:
                assert old_pod is not None
                if podutil.is_available(old_pod, min_ready, now) and budget > 0:
                    delete.append(old_pod)
                    budget -= 1
    status = t.DaemonSetStatus(
        current_number_scheduled=current, number_misscheduled=misscheduled, desired_number_scheduled=desired,
        number_ready=ready, observed_generation=ds.metadata.generation, updated_number_scheduled=updated,
        number_available=available, number_unavailable=max(desired - available, 0))
    if ds.status.HasField("collision_count"):
        status.collision_count = ds.status.collision_count
    status.conditions.extend(ds.status.conditions)
    unique: dict[str, t.Pod] = {}
    for p in delete:
        unique.setdefault(podutil.pod_key(p), p)
    return DaemonPlan(status, tuple(dict.fromkeys(create)), tuple(unique.values()), requeue)


def pod_for(ds: t.DaemonSet, node: str, current_hash: str) -> t.Pod:
    template = pod_template(ds)
    pod = t.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = f"{ds.metadata.name[:57]}-{''.join(random.choices(_NAME_ALPHABET, k=5))}"
    pod.metadata.namespace = ds.metadata.namespace
    pod.metadata.labels.update(template.metadata.labels)
    pod.metadata.labels[REVISION_HASH] = current_hash
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.metadata.owner_references.append(podutil.owner_reference(ds))
    pod.spec.CopyFrom(template.spec)
    pod.spec.node_name = node
    return pod


# ------------------------------------------------------------------ the controller


class DaemonSetController(QueueController, ExpectingPodHandlers):
    name = "daemonset"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.expectations = Expectations(self.clock)
        self.daemonsets = factory.informer(t.DaemonSet)
        self.nodes = factory.informer(t.Node)
        self.pods = factory.informer(t.Pod)
        self.revisions = factory.informer(t.ControllerRevision)
        self.pods.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.pods.add_indexer(podutil.ORPHAN_INDEX, podutil.index_orphans)
        self.revisions.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.daemonsets.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                    on_delete=lambda ds: self.expectations.forget(object_key(ds)))
        self.nodes.add_handler(on_add=self._node_changed, on_update=self._node_updated,
                               on_delete=self._node_changed)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    def _all(self, _: object = None) -> None:
        for ds in self.daemonsets.list():
            self.enqueue(ds)

    def _node_changed(self, node: t.Node) -> None:
        self._all()

    def _node_updated(self, old: t.Node, new: t.Node) -> None:
        # Heartbeats change status only; eligibility depends on labels and taints.
        if old.metadata.labels != new.metadata.labels or list(old.spec.taints) != list(new.spec.taints):
            self._all()

    def _owner(self, pod: t.Pod) -> t.DaemonSet | None:
        return live_controller(self.daemonsets, pod, "DaemonSet")

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        ds = self.daemonsets.get(name, namespace)
        if ds is None or ds.metadata.HasField("deletion_timestamp"):
            self.expectations.forget(key)
            return
        selector = selector_or_event(ds, self.recorder)
        if selector is None:
            return
        pods = await claim(self.client, ds, claim_candidates(self.pods, ds), selector)
        by_node: dict[str, list[t.Pod]] = {}
        for p in pods:
            by_node.setdefault(p.spec.node_name, []).append(p)
        current_hash = template_hash(ds)
        await self._revisions(ds, current_hash, {p.metadata.labels.get(REVISION_HASH, "") for p in pods})
        now = self.clock.now()
        plan = plan_daemonset(ds, self.nodes.list(), by_node, now, current_hash=current_hash)
        error: BaseException | None = None
        if self.expectations.satisfied(key):
            try:
                await self._apply(key, ds, plan, current_hash)
            except Exception as exc:
                error = exc
        if plan.status != ds.status:
            await write_status(self.client, ds, plan.status)
        if error is not None:
            raise error
        if plan.requeue_after is not None:
            self.queue.add_after(key, max(plan.requeue_after, 0.0) + 0.5)

    async def _revisions(self, ds: t.DaemonSet, current_hash: str, in_use: set[str]) -> None:
        mine = list(self.revisions.by_index(podutil.CONTROLLER_UID_INDEX, ds.metadata.uid))
        create, renumber, delete = history.plan_revisions(ds, ds.spec.template, mine, current_hash,
                                                          in_use | {current_hash})
        await history.apply(self.client, create, renumber, delete, ds.metadata.namespace)

    async def _apply(self, key: str, ds: t.DaemonSet, plan: DaemonPlan, current_hash: str) -> None:
        if plan.delete:
            self.expectations.expect_deletions(key, [podutil.pod_key(p) for p in plan.delete])
            for pod in plan.delete:
                try:
                    await self.client.delete(t.Pod, pod.metadata.name, pod.metadata.namespace)
                    self.recorder.event(ds, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}")
                except errors.NotFoundError:
                    self.expectations.deletion_observed(key, podutil.pod_key(pod))
        if plan.create:
            self.expectations.expect_creations(key, len(plan.create))
            results = await asyncio.gather(*(self._create(ds, n, current_hash) for n in plan.create),
                                           return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            for _ in failures:
                self.expectations.creation_observed(key)
            if failures:
                raise failures[0]

    async def _create(self, ds: t.DaemonSet, node: str, current_hash: str) -> None:
        try:
            created = await self.client.create(pod_for(ds, node, current_hash))
        except errors.SkiffError as exc:
            self.recorder.event(ds, WARNING, "FailedCreate", f"Error creating: {exc}")
            raise
        self.recorder.event(ds, NORMAL, "SuccessfulCreate", f"Created pod: {created.metadata.name}")
