"""The replicaset controller: create or delete pods until a ReplicaSet's count holds.

What must hold:
- the pods a ReplicaSet counts are the active ones (not finished, not being deleted) that it
  controls; matching orphans are adopted and controlled pods that stop matching are released;
- expectations: after asking for N creations (or deletions of given pods), the set is not
  managed again until the informer has shown them all (or 5 minutes passed), so a cache that
  lags behind our own writes never makes us create twice;
- large creations go in slow-start batches (1, 2, 4, ...), stopping at the first failure, so a
  broken template (or quota) costs one failed call, not hundreds; at most 500 pods change per sync;
- deletions pick, in order: unscheduled pods, pending before running, not-ready before ready,
  recently ready before long ready, more restarts first, then the youngest;
- status (replicas, fullyLabeled, ready, available after minReadySeconds, observedGeneration)
  is written only when it changes; a create failure shows as a ReplicaFailure condition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from controlplane.common import podutil
from controlplane.controllers.base import (
    QueueController,
    claim,
    claim_candidates,
    condition_states,
    live_controller,
    selector_or_event,
)
from skiff import conditions, defaults, errors, labels
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock, stamp
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory, object_key, split_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.replicaset")

BURST_REPLICAS = 500
SLOW_START_INITIAL_BATCH = 1
EXPECTATIONS_TTL = 300.0


# ------------------------------------------------------------------ pure helpers

_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_order(pod: t.Pod) -> tuple[int, int, int, float, int, float]:
    """Sort key: the pods to delete first sort first (Kubernetes' ActivePods ordering)."""
    since = podutil.ready_since(pod)
    return (
        1 if pod.spec.node_name else 0,
        _PHASE_ORDER.get(pod.status.phase, 0),
        1 if since is not None else 0,
        -(since or 0.0),
        -podutil.restart_count(pod),
        -podutil.created(pod),
    )


def plan_victims(pods: Sequence[t.Pod], count: int) -> list[t.Pod]:
    return sorted(pods, key=deletion_order)[:count]


def slow_start_sizes(count: int, initial: int = SLOW_START_INITIAL_BATCH) -> list[int]:
    """Batch sizes for `count` creations: initial, then doubling, the last one trimmed."""
    sizes: list[int] = []
    remaining, size = count, min(count, initial)
    while size > 0:
        sizes.append(size)
        remaining -= size
        size = min(2 * size, remaining)
    return sizes


async def slow_start_batch(count: int, fn: Callable[[], Awaitable[None]], *,
                           initial: int = SLOW_START_INITIAL_BATCH) -> tuple[int, BaseException | None]:
    """Run `fn` `count` times in growing concurrent batches; stop after a batch with a failure.

    Returns (successes, the first error or None).
    """
    successes = 0
    for size in slow_start_sizes(count, initial):
        results = await asyncio.gather(*(fn() for _ in range(size)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        successes += size - len(failures)
        if failures:
            return successes, failures[0]
    return successes, None


def status_urgent(rs: t.ReplicaSet, status: t.ReplicaSetStatus, *, rolling: bool = False) -> bool:
    """Whether a status change is written at once rather than batched: a new observedGeneration
    (the deployment controller waits for it), a condition changing state, the set settled
    (every replica ready and available, the state a rollout step waits for), or, while its
    Deployment rolls (`rolling`), any change of `availableReplicas`: each one lets the rollout
    take its next step."""
    replicas = defaults.replicas(rs.spec)
    return (status.observed_generation != rs.status.observed_generation
            or condition_states(status.conditions) != condition_states(rs.status.conditions)
            or status.replicas == status.ready_replicas == status.available_replicas == replicas
            or (rolling and status.available_replicas != rs.status.available_replicas))


def calculate_status(rs: t.ReplicaSet, pods: Sequence[t.Pod], create_error: BaseException | None,
                     now: float) -> t.ReplicaSetStatus:
    template_labels = rs.spec.template.metadata.labels
    status = t.ReplicaSetStatus(
        replicas=len(pods),
        fully_labeled_replicas=sum(1 for p in pods
                                   if all(p.metadata.labels.get(k) == v for k, v in template_labels.items())),
        ready_replicas=sum(1 for p in pods if conditions.is_pod_ready(p)),
        available_replicas=sum(1 for p in pods if podutil.is_available(p, rs.spec.min_ready_seconds, now)),
        observed_generation=rs.metadata.generation,
    )
    status.conditions.extend(rs.status.conditions)
    if create_error is not None:
        cond = t.ReplicaSetCondition(type="ReplicaFailure", status="True", reason="FailedCreate",
                                     message=str(create_error))
        stamp(cond.last_transition_time, now)
        conditions.set_condition(status.conditions, cond)
    else:
        conditions.remove_condition(status.conditions, "ReplicaFailure")
    return status


def pod_from_template(rs: t.ReplicaSet) -> t.Pod:
    """A new pod of `rs`, named by the api-server from generateName `<replicaset>-`."""
    pod = t.Pod(api_version="v1", kind="Pod")
    pod.metadata.generate_name = f"{rs.metadata.name}-"
    pod.metadata.namespace = rs.metadata.namespace
    pod.metadata.labels.update(rs.spec.template.metadata.labels)
    pod.metadata.annotations.update(rs.spec.template.metadata.annotations)
    pod.metadata.owner_references.append(podutil.owner_reference(rs))
    pod.spec.CopyFrom(rs.spec.template.spec)
    return pod


# ------------------------------------------------------------------ expectations


@dataclass
class _Expectation:
    adds: int
    deletes: set[str] = field(default_factory=set)
    at: float = 0.0


class Expectations:
    """What a controller is still waiting to see after its own creates and deletes."""

    def __init__(self, clock: Clock, *, ttl: float = EXPECTATIONS_TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        self._by_key: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        exp = self._by_key.get(key)
        if exp is None:
            return True
        if exp.adds <= 0 and not exp.deletes:
            return True
        # A watch event that never came (the object was created and deleted in between)
        # must not block the controller forever.
        return self.clock.now() - exp.at > self.ttl

    def expect_creations(self, key: str, count: int) -> None:
        self._by_key[key] = _Expectation(count, set(), self.clock.now())

    def expect_deletions(self, key: str, pod_keys: Sequence[str]) -> None:
        self._by_key[key] = _Expectation(0, set(pod_keys), self.clock.now())

    def creation_observed(self, key: str) -> None:
        exp = self._by_key.get(key)
        if exp is not None and exp.adds > 0:
            exp.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        exp = self._by_key.get(key)
        if exp is not None:
            exp.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)

    def pending(self, key: str) -> tuple[int, int]:
        exp = self._by_key.get(key)
        return (exp.adds, len(exp.deletes)) if exp is not None else (0, 0)


# ------------------------------------------------------------------ the controller


class ReplicaSetController(QueueController):
    name = "replicaset"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None, burst_replicas: int = BURST_REPLICAS,
                 status_batch_period: float = 0.0) -> None:
        super().__init__(batch_period=status_batch_period)
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.burst_replicas = burst_replicas
        self.expectations = Expectations(self.clock)
        self.replicasets = factory.informer(t.ReplicaSet)
        self.pods = factory.informer(t.Pod)
        self.pods.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.pods.add_indexer(podutil.ORPHAN_INDEX, podutil.index_orphans)
        self.replicasets.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                     on_delete=self._rs_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    # ------------------------------------------------------------------ handlers

    def _rs_deleted(self, rs: t.ReplicaSet) -> None:
        self.expectations.forget(object_key(rs))
        self.enqueue(rs)

    def _owner(self, pod: t.Pod) -> t.ReplicaSet | None:
        return live_controller(self.replicasets, pod, "ReplicaSet")

    def _matching(self, pod: t.Pod) -> list[t.ReplicaSet]:
        out = []
        for rs in self.replicasets.list(pod.metadata.namespace):
            try:
                selector = labels.from_label_selector(rs.spec.selector)
            except labels.SelectorError:
                continue
            if selector and labels.matches(selector, pod.metadata.labels):
                out.append(rs)
        return out

    def _pod_added(self, pod: t.Pod) -> None:
        if pod.metadata.HasField("deletion_timestamp"):
            self._pod_deleted(pod)
            return
        owner = self._owner(pod)
        if owner is not None:
            self.expectations.creation_observed(object_key(owner))
            self.enqueue(owner)
        elif podutil.controller_ref(pod) is None:
            for rs in self._matching(pod):
                self.enqueue(rs)

    def _pod_updated(self, old: t.Pod, new: t.Pod) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            return
        if new.metadata.HasField("deletion_timestamp"):
            # Being deleted counts as deleted: the pod no longer counts toward the set.
            self._pod_deleted(new)
            if old.metadata.labels != new.metadata.labels:
                self._pod_deleted(old)
            return
        before, after = podutil.controller_ref(old), podutil.controller_ref(new)
        if before is not None and (after is None or after.uid != before.uid):
            owner = self._owner(old)
            if owner is not None:
                self.enqueue(owner)
        owner = self._owner(new)
        if owner is not None:
            self.enqueue(owner)
            if (owner.spec.min_ready_seconds > 0 and not conditions.is_pod_ready(old) and conditions.is_pod_ready(new)):
                # Available only minReadySeconds after Ready: look again then.
                self.queue.add_after(object_key(owner), owner.spec.min_ready_seconds + 1.0)
        elif after is None and (old.metadata.labels != new.metadata.labels or before is not None):
            for rs in self._matching(new):
                self.enqueue(rs)

    def _pod_deleted(self, pod: t.Pod) -> None:
        owner = self._owner(pod)
        if owner is None:
            return
        key = object_key(owner)
        self.expectations.deletion_observed(key, podutil.pod_key(pod))
        self.enqueue(owner)

    # ------------------------------------------------------------------ sync

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        cached = self.replicasets.get(name, namespace)
        if cached is None:
            self.expectations.forget(key)
            return
        rs = cached
        selector = selector_or_event(rs, self.recorder)
        if selector is None:
            return
        if not selector:
            self.recorder.event(rs, WARNING, "SelectingAll", "This replica set is selecting all pods; "
                                "a non-empty selector is required.")
            return
        needs_sync = self.expectations.satisfied(key)
        active = [p for p in claim_candidates(self.pods, rs) if podutil.is_active(p)]
        pods = await claim(self.client, rs, active, selector)
        create_error: BaseException | None = None
        manage_error: BaseException | None = None
        if needs_sync and not rs.metadata.HasField("deletion_timestamp"):
            try:
                await self._manage(key, rs, pods)
            except _CreateFailed as exc:
                create_error = manage_error = exc.cause
            except Exception as exc:
                manage_error = exc
        now = self.clock.now()
        status = calculate_status(rs, pods, create_error, now)
        replicas = defaults.replicas(rs.spec)
        # A count that moved is written at most once per batch period (the last count wins);
        # what the deployment controller waits on is written at once.
        if status != rs.status and not self.hold_write(
                key, urgent=status_urgent(rs, status, rolling=self._rolling(rs))):
            try:
                await self._write_status(rs, status)
            except errors.NotFoundError:
                return
        if manage_error is not None:
            raise manage_error
        if (rs.spec.min_ready_seconds > 0 and status.ready_replicas == replicas
                and status.available_replicas != replicas):
            self.queue.add_after(key, rs.spec.min_ready_seconds + 1.0)

    def _rolling(self, rs: t.ReplicaSet) -> bool:
        """Whether another ReplicaSet of the same controller (a Deployment) still has replicas:
        a rollout in progress, which waits on this set's availability."""
        owner = podutil.controller_ref(rs)
        if owner is None:
            return False
        return any(other.metadata.uid != rs.metadata.uid and (other.spec.replicas or other.status.replicas)
                   and (ref := podutil.controller_ref(other)) is not None and ref.uid == owner.uid
                   for other in self.replicasets.list(rs.metadata.namespace))

    async def _write_status(self, rs: t.ReplicaSet, status: t.ReplicaSetStatus) -> None:
        """Write status; on a conflict (our own spec writes, or the cache lagging) re-read once."""
        updated = podutil.copy(rs)
        updated.status.CopyFrom(status)
        try:
            await self.client.update_status(updated)
        except errors.ConflictError:
            fresh = await self.client.get(t.ReplicaSet, rs.metadata.name, rs.metadata.namespace)
            if fresh.metadata.uid != rs.metadata.uid:
                return
            status.observed_generation = min(status.observed_generation, fresh.metadata.generation)
            fresh.status.CopyFrom(status)
            await self.client.update_status(fresh)

    async def _manage(self, key: str, rs: t.ReplicaSet, pods: list[t.Pod]) -> None:
        replicas = defaults.replicas(rs.spec)
        diff = len(pods) - replicas
        if diff < 0:
            count = min(-diff, self.burst_replicas)
            self.expectations.expect_creations(key, count)
            created, err = await slow_start_batch(count, lambda: self._create_pod(rs))
            for _ in range(count - created):
                # The ones we never created will never be observed.
                self.expectations.creation_observed(key)
            if err is not None:
                raise _CreateFailed(err)
        elif diff > 0:
            count = min(diff, self.burst_replicas)
            victims = plan_victims(pods, count)
            self.expectations.expect_deletions(key, [podutil.pod_key(p) for p in victims])
            results = await asyncio.gather(*(self._delete_pod(rs, p) for p in victims), return_exceptions=True)
            failures = []
            for pod, result in zip(victims, results, strict=True):
                if isinstance(result, BaseException):
                    # The informer will not see a deletion that did not happen (or already did).
                    self.expectations.deletion_observed(key, podutil.pod_key(pod))
                    if not isinstance(result, errors.NotFoundError):
                        failures.append(result)
            if failures:
                raise failures[0]

    async def _create_pod(self, rs: t.ReplicaSet) -> None:
        # The api-server picks the name (and retries its own collisions), as in Kubernetes.
        try:
            created = await self.client.create(pod_from_template(rs))
        except errors.SkiffError as exc:
            self.recorder.event(rs, WARNING, "FailedCreate", f"Error creating: {exc}")
            raise
        self.recorder.event(rs, NORMAL, "SuccessfulCreate", f"Created pod: {created.metadata.name}")

    async def _delete_pod(self, rs: t.ReplicaSet, pod: t.Pod) -> None:
        try:
            await self.client.delete(t.Pod, pod.metadata.name, pod.metadata.namespace)
        except errors.NotFoundError:
            raise
        except errors.SkiffError as exc:
            self.recorder.event(rs, WARNING, "FailedDelete", f"Error deleting: {exc}")
            raise
        self.recorder.event(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}")


class _CreateFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause
