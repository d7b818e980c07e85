"""The job controller: run a Job's pods until enough of them succeed, or give up.

What must hold (Kubernetes' batch/v1 Job semantics, without pod failure policies):
- the pods a Job counts are the ones it controls (adopting matching orphans); a pod that
  Succeeded counts toward completions, a Failed one (and, with restartPolicy OnFailure, every
  restart of a container) toward backoffLimit;
- at most `parallelism` pods are active, and never more than the completions still missing;
  with completions unset (a work queue) no new pod starts once one has succeeded, and the Job
  is Complete when one has succeeded and none is active;
- completionMode Indexed: each pod has an index 0..completions-1 (label and annotation
  batch.kubernetes.io/job-completion-index, env JOB_COMPLETION_INDEX, hostname
  `<job>-<index>`); the Job is Complete when every index has a Succeeded pod;
- after a failure, the next pod waits 10 s doubling per failure up to 6 min (the backoff is
  measured from the last failure), so a crashing Job does not spin;
- more failures than backoffLimit, or activeDeadlineSeconds passed since startTime, make the Job
  Failed (reason BackoffLimitExceeded / DeadlineExceeded) and its active pods are deleted;
- a finished Job (Complete or Failed condition True) never starts pods again; with
  ttlSecondsAfterFinished it is deleted (with its pods) that long after it finished;
- suspend deletes the active pods and shows a Suspended condition; resuming starts them again;
- the decision is the pure `plan_job(job, pods, now)`; `sync` applies it with the same
  create/delete expectations as the replicaset controller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.common import podutil
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
from skiff import conditions, errors
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock, stamp, to_seconds
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory, object_key, split_key
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.job")

INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
INDEX_ENV = "JOB_COMPLETION_INDEX"
BACKOFF_BASE = 10.0
BACKOFF_MAX = 360.0
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# ------------------------------------------------------------------ pure helpers


def finished_condition(job: t.Job) -> t.JobCondition | None:
    """The Complete or Failed condition when the Job has finished."""
    for cond in job.status.conditions:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond
    return None


def pod_index(pod: t.Pod) -> int | None:
    value = pod.metadata.annotations.get(INDEX_LABEL, pod.metadata.labels.get(INDEX_LABEL, ""))
    return int(value) if value.isdigit() else None


def pod_finished_at(pod: t.Pod) -> float:
    """When a finished pod's last container ended (its creation time when no status says)."""
    ends = [to_seconds(cs.state.terminated.finished_at) for cs in pod.status.container_statuses
            if cs.state.HasField("terminated") and cs.state.terminated.HasField("finished_at")]
    return max(ends) if ends else podutil.created(pod)


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """The wait before the next pod after `failures` failures: 0, then 10 s doubling, capped."""
    if failures <= 0:
        return 0.0
    return float(min(base * 2 ** (failures - 1), cap))


def format_indexes(indexes: Sequence[int]) -> str:
    """Kubernetes' completedIndexes: sorted, runs collapsed ("0,2-4")."""
    out: list[str] = []
    ordered = sorted(set(indexes))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


@dataclass(frozen=True)
class JobPlan:
    status: t.JobStatus
    create: tuple[int | None, ...] = ()  # one entry per pod to create: its index (None: NonIndexed)
    delete: tuple[t.Pod, ...] = ()
    requeue_after: float | None = None  # look again then (backoff, deadline, TTL)
    delete_job: bool = False  # the TTL after finishing has passed
    events: tuple[tuple[str, str, str], ...] = ()  # (type, reason, message)


def _condition(status: t.JobStatus, type_: str, cond_status: str, reason: str, message: str, now: float) -> None:
    cond = t.JobCondition(type=type_, status=cond_status, reason=reason, message=message)
    stamp(cond.last_transition_time, now)
    stamp(cond.last_probe_time, now)
    conditions.set_condition(status.conditions, cond)


def plan_job(job: t.Job, pods: Sequence[t.Pod], now: float, *, backoff_base: float = BACKOFF_BASE,
             backoff_max: float = BACKOFF_MAX) -> JobPlan:
    """What to do with `job` whose controlled pods are `pods` (see the module docstring)."""
    spec = job.spec
    status = t.JobStatus()
    status.CopyFrom(job.status)
    live = [p for p in pods if not p.metadata.HasField("deletion_timestamp")]
    active = [p for p in live if not podutil.is_terminal(p)]
    succeeded = [p for p in pods if p.status.phase == "Succeeded"]
    failed = [p for p in pods if p.status.phase == "Failed"]
    restarts = sum(podutil.restart_count(p) for p in active) if spec.template.spec.restart_policy == "OnFailure" else 0
    indexed = spec.completion_mode == "Indexed"
    done_indexes = sorted({i for p in succeeded if (i := pod_index(p)) is not None})
    status.active = len(active)
    status.ready = sum(1 for p in active if conditions.is_pod_ready(p))
    status.succeeded = len(done_indexes) if indexed else len(succeeded)
    status.failed = len(failed)
    status.completed_indexes = format_indexes(done_indexes) if indexed else ""

    finished = finished_condition(job)
    if finished is not None:
        # Finished: nothing runs any more; the TTL clock runs from the condition.
        ttl_wait: float | None = None
        delete_job = False
        if spec.HasField("ttl_seconds_after_finished"):
            expires = to_seconds(finished.last_transition_time) + spec.ttl_seconds_after_finished
            delete_job = now >= expires
            ttl_wait = None if delete_job else expires - now
        return JobPlan(status, delete=tuple(active), requeue_after=ttl_wait, delete_job=delete_job)

    if spec.suspend:
        _condition(status, "Suspended", "True", "JobSuspended", "Job suspended", now)
        return JobPlan(status, delete=tuple(active))
    if conditions.find(status.conditions, "Suspended") is not None:
        _condition(status, "Suspended", "False", "JobResumed", "Job resumed", now)
        status.ClearField("start_time")  # the deadline counts from the resumption, as in Kubernetes

    if not status.HasField("start_time"):
        stamp(status.start_time, now)
    start = to_seconds(status.start_time)
    backoff_limit = spec.backoff_limit if spec.HasField("backoff_limit") else 6

    failure: tuple[str, str] | None = None
    # As Kubernetes: with OnFailure the active pods' container restarts count toward the limit too.
    if status.failed + restarts > backoff_limit:
        failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    elif spec.HasField("active_deadline_seconds") and now >= start + spec.active_deadline_seconds:
        failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
    if failure is not None:
        _condition(status, "Failed", "True", failure[0], failure[1], now)
        return JobPlan(status, delete=tuple(active), events=((WARNING, failure[0], failure[1]),),
                       requeue_after=_ttl(spec))

    completions = spec.completions if spec.HasField("completions") else None
    parallelism = spec.parallelism if spec.HasField("parallelism") else 1
    if completions is None:
        complete = bool(succeeded) and not active
    else:
        complete = status.succeeded >= completions
    if complete:
        _condition(status, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods",
                   now)
        stamp(status.completion_time, now)
        return JobPlan(status, delete=tuple(active),
                       events=((NORMAL, "Completed", "Job completed"),), requeue_after=_ttl(spec))

    # How many pods should be running.
    if completions is None:
        # A work queue: after a success no new pod starts, but the running ones finish their work.
        wanted = min(len(active), parallelism) if succeeded else parallelism
    else:
        wanted = max(min(parallelism, completions - status.succeeded), 0)
    deadline_wait = (start + spec.active_deadline_seconds - now) if spec.HasField("active_deadline_seconds") else None
    create: list[int | None] = []
    delete: list[t.Pod] = []
    if indexed and completions is not None:
        running = {i for p in active if (i := pod_index(p)) is not None}
        # An index with two active pods (a retry raced a slow deletion) keeps one.
        seen: set[int] = set()
        for p in sorted(active, key=podutil.created):
            i = pod_index(p)
            if i is None or i >= completions or i in seen or i in done_indexes:
                delete.append(p)
            else:
                seen.add(i)
        missing = [i for i in range(completions) if i not in running and i not in done_indexes]
        room = max(wanted - len(seen), 0)
        create = list(missing[:room])
    else:
        diff = wanted - len(active)
        if diff > 0:
            create = [None] * diff
        elif diff < 0:
            delete = sorted(active, key=_deletion_key)[:-diff]
    requeue = deadline_wait
    if create and failed:
        delay = backoff_delay(status.failed + restarts, backoff_base, backoff_max)
        ready_at = max(pod_finished_at(p) for p in failed) + delay
        if now < ready_at:
            create = []
            requeue = ready_at - now if requeue is None else min(requeue, ready_at - now)
    return JobPlan(status, create=tuple(create), delete=tuple(delete), requeue_after=requeue)


def _ttl(spec: t.JobSpec) -> float | None:
    return float(spec.ttl_seconds_after_finished) if spec.HasField("ttl_seconds_after_finished") else None


def _deletion_key(pod: t.Pod) -> tuple[int, int, float]:
    # Unscheduled first, then not ready, then the youngest (as the ReplicaSet orders victims).
    return (1 if pod.spec.node_name else 0, 1 if conditions.is_pod_ready(pod) else 0, -podutil.created(pod))


def pod_for(job: t.Job, index: int | None) -> t.Pod:
    """A new pod of `job` (with its completion index when Indexed)."""
    pod = t.Pod(api_version="v1", kind="Pod")
    base = job.metadata.name[:50] if index is None else f"{job.metadata.name[:44]}-{index}"
    pod.metadata.name = f"{base}-{''.join(random.choices(_NAME_ALPHABET, k=5))}"
    pod.metadata.namespace = job.metadata.namespace
    pod.metadata.labels.update(job.spec.template.metadata.labels)
    pod.metadata.annotations.update(job.spec.template.metadata.annotations)
    pod.metadata.owner_references.append(podutil.owner_reference(job))
    pod.spec.CopyFrom(job.spec.template.spec)
    if index is not None:
        pod.metadata.labels[INDEX_LABEL] = str(index)
        pod.metadata.annotations[INDEX_LABEL] = str(index)
        if not pod.spec.hostname:
            pod.spec.hostname = f"{job.metadata.name[:60]}-{index}"[:63]
        for c in pod.spec.containers:
            if not any(e.name == INDEX_ENV for e in c.env):
                c.env.add(name=INDEX_ENV, value=str(index))
    return pod


# ------------------------------------------------------------------ the controller


class JobController(QueueController, ExpectingPodHandlers):
    name = "job"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None, backoff_base: float = BACKOFF_BASE) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.backoff_base = backoff_base
        self.expectations = Expectations(self.clock)
        self.jobs = factory.informer(t.Job)
        self.pods = factory.informer(t.Pod)
        self.pods.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.pods.add_indexer(podutil.ORPHAN_INDEX, podutil.index_orphans)
        self.jobs.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                              on_delete=self._job_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    def _job_deleted(self, job: t.Job) -> None:
        self.expectations.forget(object_key(job))

    def _owner(self, pod: t.Pod) -> t.Job | None:
        return live_controller(self.jobs, pod, "Job")

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        job = self.jobs.get(name, namespace)
        if job is None or job.metadata.HasField("deletion_timestamp"):
            self.expectations.forget(key)
            return
        selector = selector_or_event(job, self.recorder)
        if selector is None:
            return
        pods = await claim(self.client, job, claim_candidates(self.pods, job), selector)
        now = self.clock.now()
        plan = plan_job(job, pods, now, backoff_base=self.backoff_base)
        if plan.delete_job:
            try:
                await self.client.delete(t.Job, name, namespace, propagation_policy="Background",
                                         preconditions=api.Preconditions(uid=job.metadata.uid))
            except errors.NotFoundError:
                pass
            return
        error: BaseException | None = None
        if self.expectations.satisfied(key):
            try:
                await self._apply(key, job, plan)
            except Exception as exc:  # status is still written; the error makes the key retry
                error = exc
        if plan.status != job.status:
            await write_status(self.client, job, plan.status)
            # Events of a transition (Completed, BackoffLimitExceeded) once: when it is written.
            for type_, reason, message in plan.events:
                self.recorder.event(job, type_, reason, message)
        if error is not None:
            raise error
        if plan.requeue_after is not None:
            self.queue.add_after(key, max(plan.requeue_after, 0.0) + 0.01)

    async def _apply(self, key: str, job: t.Job, plan: JobPlan) -> None:
        if plan.create:
            self.expectations.expect_creations(key, len(plan.create))
            results = await asyncio.gather(*(self._create(job, i) for i in plan.create), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            for _ in failures:
                self.expectations.creation_observed(key)
            if failures:
                raise failures[0]
        if plan.delete:
            self.expectations.expect_deletions(key, [podutil.pod_key(p) for p in plan.delete])
            for pod in plan.delete:
                try:
                    await self.client.delete(t.Pod, pod.metadata.name, pod.metadata.namespace)
                    self.recorder.event(job, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}")
                except errors.NotFoundError:
                    self.expectations.deletion_observed(key, podutil.pod_key(pod))

    async def _create(self, job: t.Job, index: int | None) -> None:
        try:
            created = await self.client.create(pod_for(job, index))
        except errors.SkiffError as exc:
            self.recorder.event(job, WARNING, "FailedCreate", f"Error creating: {exc}")
            raise
        self.recorder.event(job, NORMAL, "SuccessfulCreate", f"Created pod: {created.metadata.name}")

