"""The cronjob controller: create a CronJob's Jobs on its schedule.

What must hold (Kubernetes' batch/v1 CronJob semantics):
- times are the schedule's in spec.timeZone (UTC when unset); the controller's clock is
  injected, so tests step through hours without waiting;
- at each sync the most recent scheduled time that is due and not yet started (after
  status.lastScheduleTime, else after the CronJob's creation) is run once; older missed times
  are skipped, not run in a burst; with startingDeadlineSeconds a time older than that is
  missed for good (more than 100 missed times without a deadline: one event, then the latest);
- the Job of scheduled time T is named `<cronjob>-<T in minutes since the epoch>`, so a
  retried sync never creates it twice (AlreadyExists means done);
- concurrencyPolicy: Allow runs Jobs side by side; Forbid skips a time while a Job is active
  (the time is not recorded, so it runs when the active one ends if still within the deadline);
  Replace deletes the active Jobs first;
- suspend creates nothing; finished Jobs beyond successful/failedJobsHistoryLimit are deleted,
  oldest first; status.active lists the unfinished Jobs, lastSuccessfulTime the latest completion;
- the decision is the pure `plan_cronjob(...)`; `sync` applies it and asks to be woken at the
  next scheduled time.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.common import podutil
from controlplane.controllers.base import QueueController, write_status
from controlplane.controllers.job import finished_condition
from skiff import cron, errors
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock, stamp, to_seconds
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory, object_key, split_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.cronjob")

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MAX_MISSED = 100


# ------------------------------------------------------------------ pure helpers


def job_name(cj: t.CronJob, scheduled: float) -> str:
    return f"{cj.metadata.name[:52]}-{int(scheduled // 60)}"


def due_time(schedule: cron.Schedule, zone: dt.tzinfo, earliest: float, now: float) -> tuple[float | None, int]:
    """(the latest scheduled time in (earliest, now], how many there are, counted up to MAX_MISSED + 1)."""
    latest = schedule.last_at_or_before(now, zone)
    if latest is None or latest <= earliest:
        return None, 0
    count = 0
    when = schedule.next_after(earliest, zone)
    while when is not None and when <= latest and count <= MAX_MISSED:
        count += 1
        when = schedule.next_after(when, zone)
    return latest, count


@dataclass(frozen=True)
class CronPlan:
    status: t.CronJobStatus
    create: t.Job | None = None
    delete: tuple[t.Job, ...] = ()
    requeue_after: float | None = None
    events: tuple[tuple[str, str, str], ...] = ()


def job_for(cj: t.CronJob, scheduled: float) -> t.Job:
    job = t.Job(api_version="batch/v1", kind="Job")
    job.metadata.name = job_name(cj, scheduled)
    job.metadata.namespace = cj.metadata.namespace
    job.metadata.labels.update(cj.spec.job_template.metadata.labels)
    job.metadata.annotations.update(cj.spec.job_template.metadata.annotations)
    job.metadata.annotations[SCHEDULED_ANNOTATION] = dt.datetime.fromtimestamp(scheduled, dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    job.metadata.owner_references.append(podutil.owner_reference(cj))
    job.spec.CopyFrom(cj.spec.job_template.spec)
    return job


def _ref(job: t.Job) -> t.ObjectReference:
    return t.ObjectReference(kind="Job", namespace=job.metadata.namespace, name=job.metadata.name,
                             uid=job.metadata.uid, api_version="batch/v1",
                             resource_version=job.metadata.resource_version)


def plan_cronjob(cj: t.CronJob, jobs: Sequence[t.Job], now: float) -> CronPlan:
    """What to do for `cj`, whose own Jobs are `jobs`, at `now` (see the module docstring)."""
    spec = cj.spec
    status = t.CronJobStatus()
    status.CopyFrom(cj.status)
    live = [j for j in jobs if not j.metadata.HasField("deletion_timestamp")]
    active = sorted((j for j in live if finished_condition(j) is None), key=lambda j: j.metadata.name)
    done_ok = sorted((j for j in live if (c := finished_condition(j)) is not None and c.type == "Complete"),
                     key=podutil.created)
    done_failed = sorted((j for j in live if (c := finished_condition(j)) is not None and c.type == "Failed"),
                         key=podutil.created)
    del status.active[:]
    status.active.extend(_ref(j) for j in active)
    completions = [to_seconds(j.status.completion_time) for j in done_ok if j.status.HasField("completion_time")]
    if completions and max(completions) > to_seconds(status.last_successful_time):
        stamp(status.last_successful_time, max(completions))
    delete: list[t.Job] = []
    ok_limit = spec.successful_jobs_history_limit if spec.HasField("successful_jobs_history_limit") else 3
    failed_limit = spec.failed_jobs_history_limit if spec.HasField("failed_jobs_history_limit") else 1
    delete += done_ok[:max(len(done_ok) - ok_limit, 0)]
    delete += done_failed[:max(len(done_failed) - failed_limit, 0)]

    try:
        schedule = cron.parse(spec.schedule)
        zone = cron.zone(spec.time_zone if spec.HasField("time_zone") else "")
    except cron.CronError as exc:
        return CronPlan(status, delete=tuple(delete), events=((WARNING, "InvalidSchedule", str(exc)),))
    following = schedule.next_after(now, zone)
    wake = following - now if following is not None else None
    if spec.suspend:
        return CronPlan(status, delete=tuple(delete), requeue_after=wake)
    earliest = to_seconds(status.last_schedule_time) if status.HasField("last_schedule_time") \
        else podutil.created(cj)
    if spec.HasField("starting_deadline_seconds"):
        earliest = max(earliest, now - spec.starting_deadline_seconds - 1)
    scheduled, due = due_time(schedule, zone, earliest, now)
    events: list[tuple[str, str, str]] = []
    if scheduled is None:
        return CronPlan(status, delete=tuple(delete), requeue_after=wake)
    if due > MAX_MISSED:
        events.append((WARNING, "TooManyMissedTimes",
                       "too many missed start times; set or decrease .spec.startingDeadlineSeconds or check "
                       "clock skew"))
    policy = spec.concurrency_policy or "Allow"
    if policy == "Forbid" and active:
        # Not recorded as scheduled: it may still start when the active one finishes.
        return CronPlan(status, delete=tuple(delete), requeue_after=wake,
                        events=(*events, (NORMAL, "JobAlreadyActive", "Not starting job because prior execution is "
                                          "running and concurrency policy is Forbid")))
    if policy == "Replace":
        delete += active
    job = job_for(cj, scheduled)
    stamp(status.last_schedule_time, scheduled)
    return CronPlan(status, create=job, delete=tuple(delete), requeue_after=wake, events=tuple(events))


# ------------------------------------------------------------------ the controller


class CronJobController(QueueController):
    name = "cronjob"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.cronjobs = factory.informer(t.CronJob)
        self.jobs = factory.informer(t.Job)
        self.jobs.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.cronjobs.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                  on_delete=lambda cj: None)
        self.enqueue_controllers_of(self.jobs, "CronJob")

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        cj = self.cronjobs.get(name, namespace)
        if cj is None or cj.metadata.HasField("deletion_timestamp"):
            return
        jobs = list(self.jobs.by_index(podutil.CONTROLLER_UID_INDEX, cj.metadata.uid))
        plan = plan_cronjob(cj, jobs, self.clock.now())
        for job in plan.delete:
            try:
                await self.client.delete(t.Job, job.metadata.name, job.metadata.namespace,
                                         propagation_policy="Background")
                self.recorder.event(cj, NORMAL, "SuccessfulDelete", f"Deleted job {job.metadata.name}")
            except errors.NotFoundError:
                pass
        status = plan.status
        if plan.create is not None:
            try:
                created = await self.client.create(plan.create)
                self.recorder.event(cj, NORMAL, "SuccessfulCreate", f"Created job {created.metadata.name}")
                status.active.append(_ref(created))
            except errors.AlreadyExistsError:
                pass
            except errors.SkiffError as exc:
                self.recorder.event(cj, WARNING, "FailedCreate", f"Error creating job: {exc}")
                raise
        if status != cj.status:
            await write_status(self.client, cj, status)
            for type_, reason, message in plan.events:
                self.recorder.event(cj, type_, reason, message)
        if plan.requeue_after is not None:
            self.queue.add_after(object_key(cj), max(plan.requeue_after, 0.0) + 0.1)
