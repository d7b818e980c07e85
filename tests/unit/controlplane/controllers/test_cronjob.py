"""CronJob controller: due times, concurrency policies, deadlines, history limits, suspend, and sync with
an injected clock against the in-process api-server."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from controlplane.controllers import cronjob as cjc
from controlplane.controllers.cronjob import CronJobController
from skiff import cron
from skiff.clock import stamp, to_seconds
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


CREATED = utc("2026-03-04 10:00:30")


def cronjob(schedule: str = "*/5 * * * *", *, policy: str = "Allow", deadline: int | None = None,
            suspend: bool = False, last: str = "", zone: str = "", ok_limit: int = 3,
            failed_limit: int = 1) -> t.CronJob:
    cj = t.CronJob(api_version="batch/v1", kind="CronJob")
    cj.metadata.name, cj.metadata.namespace, cj.metadata.uid = "tick", "default", "cj-uid"
    stamp(cj.metadata.creation_timestamp, CREATED)
    cj.spec.schedule = schedule
    cj.spec.concurrency_policy = policy
    if deadline is not None:
        cj.spec.starting_deadline_seconds = deadline
    if zone:
        cj.spec.time_zone = zone
    cj.spec.suspend = suspend
    cj.spec.successful_jobs_history_limit = ok_limit
    cj.spec.failed_jobs_history_limit = failed_limit
    cj.spec.job_template.metadata.labels["app"] = "tick"
    cj.spec.job_template.spec.template.spec.restart_policy = "OnFailure"
    cj.spec.job_template.spec.template.spec.containers.add(name="c", image="img")
    if last:
        stamp(cj.status.last_schedule_time, utc(last))
    return cj


def cjob(name: str, state: str = "", *, created: float = 0.0) -> t.Job:
    j = t.Job(api_version="batch/v1", kind="Job")
    j.metadata.name, j.metadata.namespace = name, "default"
    stamp(j.metadata.creation_timestamp, created or CREATED)
    if state:
        j.status.conditions.add(type=state, status="True")
        if state == "Complete":
            stamp(j.status.completion_time, (created or CREATED) + 10)
    return j


@dataclass
class Case:
    id: str
    cj: t.CronJob
    now: str
    jobs: list[t.Job] = field(default_factory=list)
    create: str = ""  # the scheduled time of the Job created ("" none)
    delete: list[str] = field(default_factory=list)
    wake: float | None = None


CASES = [
    Case("not due yet", cronjob(), "2026-03-04 10:04:00", wake=60),
    Case("due: the job of that minute", cronjob(), "2026-03-04 10:05:10", create="2026-03-04 10:05:00", wake=290),
    Case("already ran that time", cronjob(last="2026-03-04 10:05:00"), "2026-03-04 10:06:00", wake=240),
    Case("missed several: only the latest runs", cronjob(last="2026-03-04 10:05:00"), "2026-03-04 10:21:00",
         create="2026-03-04 10:20:00"),
    Case("past the starting deadline: missed", cronjob(deadline=30, last="2026-03-04 10:05:00"),
         "2026-03-04 10:10:45"),
    Case("within the starting deadline", cronjob(deadline=60, last="2026-03-04 10:05:00"), "2026-03-04 10:10:45",
         create="2026-03-04 10:10:00"),
    Case("suspended: nothing", cronjob(suspend=True), "2026-03-04 10:05:10"),
    Case("Forbid with an active job: skipped", cronjob(policy="Forbid"), "2026-03-04 10:05:10", jobs=[cjob("a")]),
    Case("Forbid, previous finished: runs", cronjob(policy="Forbid"), "2026-03-04 10:05:10",
         jobs=[cjob("a", "Complete")], create="2026-03-04 10:05:00"),
    Case("Replace: the active job goes", cronjob(policy="Replace"), "2026-03-04 10:05:10", jobs=[cjob("a")],
         create="2026-03-04 10:05:00", delete=["a"]),
    Case("Allow: side by side", cronjob(), "2026-03-04 10:05:10", jobs=[cjob("a")], create="2026-03-04 10:05:00"),
    Case("history limits: oldest finished go", cronjob(ok_limit=1, failed_limit=0, last="2026-03-04 10:05:00"),
         "2026-03-04 10:06:00",
         jobs=[cjob("ok1", "Complete", created=CREATED), cjob("ok2", "Complete", created=CREATED + 60),
               cjob("bad", "Failed")], delete=["ok1", "bad"]),
    Case("time zone: 9:00 in Tokyo is 0:00 UTC", cronjob("0 9 * * *", zone="Asia/Tokyo"), "2026-03-05 00:00:05",
         create="2026-03-05 00:00:00"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_cronjob(case: Case) -> None:
    plan = cjc.plan_cronjob(case.cj, case.jobs, utc(case.now))
    if case.create:
        assert plan.create is not None
        scheduled = utc(case.create)
        assert plan.create.metadata.name == f"tick-{int(scheduled // 60)}"
        assert to_seconds(plan.status.last_schedule_time) == scheduled
        assert plan.create.metadata.owner_references[0].kind == "CronJob"
        assert plan.create.spec == case.cj.spec.job_template.spec
    else:
        assert plan.create is None
        assert plan.status.last_schedule_time == case.cj.status.last_schedule_time
    assert sorted(j.metadata.name for j in plan.delete) == sorted(case.delete)
    if case.wake is not None:
        assert plan.requeue_after == pytest.approx(case.wake)


def test_active_and_last_successful_time() -> None:
    jobs = [cjob("run"), cjob("done", "Complete", created=CREATED + 100)]
    plan = cjc.plan_cronjob(cronjob(last="2026-03-04 10:05:00"), jobs, utc("2026-03-04 10:06:00"))
    assert [r.name for r in plan.status.active] == ["run"]
    assert to_seconds(plan.status.last_successful_time) == CREATED + 110


def test_too_many_missed_still_runs_the_latest() -> None:
    sched = cron.parse("* * * * *")
    latest, count = cjc.due_time(sched, dt.UTC, utc("2026-03-01 00:00:00"), utc("2026-03-04 10:05:30"))
    assert latest == utc("2026-03-04 10:05:00") and count > cjc.MAX_MISSED


async def test_sync_creates_each_scheduled_job_once(cluster: Cluster) -> None:
    cluster.clock.t = CREATED
    ctrl = CronJobController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    cj = cronjob()
    cj.metadata.uid = ""
    cj.ClearField("status")
    await cluster.create(cj)
    await cluster.start()
    await cluster.drain(ctrl)
    assert cluster.writes("create", "jobs") == 0
    cluster.clock.advance(5 * 60)  # 10:05:30
    ctrl.enqueue(cj)
    await cluster.drain(ctrl)
    ctrl.enqueue(cj)
    await cluster.drain(ctrl)
    jobs = (await cluster.api.list(t.Job, namespace="default")).items
    assert [j.metadata.name for j in jobs] == [f"tick-{int(utc('2026-03-04 10:05:00') // 60)}"]
    assert jobs[0].metadata.annotations[cjc.SCHEDULED_ANNOTATION] == "2026-03-04T10:05:00Z"
    stored = await cluster.api.get(t.CronJob, "tick", "default")
    assert [r.name for r in stored.status.active] == [jobs[0].metadata.name]
    cluster.clock.advance(5 * 60)
    ctrl.enqueue(cj)
    await cluster.drain(ctrl)
    assert cluster.writes("create", "jobs") == 2
