"""Job controller: the pure plan (completions, parallelism, backoff, deadline, TTL, Indexed), and sync
against the in-process api-server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controlplane.controllers import job as jc
from controlplane.controllers.job import JobController
from skiff.clock import stamp, to_seconds
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, pod

NOW = 10_000.0


def job(*, completions: int | None = 1, parallelism: int | None = 1, backoff: int = 6, deadline: int | None = None,
        ttl: int | None = None, indexed: bool = False, suspend: bool = False, policy: str = "Never") -> t.Job:
    j = t.Job(api_version="batch/v1", kind="Job")
    j.metadata.name, j.metadata.namespace = "pi", "default"
    if completions is not None:
        j.spec.completions = completions
    if parallelism is not None:
        j.spec.parallelism = parallelism
    j.spec.backoff_limit = backoff
    if deadline is not None:
        j.spec.active_deadline_seconds = deadline
    if ttl is not None:
        j.spec.ttl_seconds_after_finished = ttl
    j.spec.completion_mode = "Indexed" if indexed else "NonIndexed"
    j.spec.suspend = suspend
    j.spec.template.metadata.labels["app"] = "pi"
    j.spec.template.spec.restart_policy = policy
    j.spec.template.spec.containers.add(name="c", image="img")
    return j


def jpod(name: str, phase: str, *, index: int | None = None, finished: float = 0.0, created: float = 1.0,
         restarts: int = 0, ready: bool | None = None) -> t.Pod:
    p = pod(name, phase=phase, node="n1", created=created, restarts=restarts, ready=ready)
    if index is not None:
        p.metadata.annotations[jc.INDEX_LABEL] = str(index)
    if finished:
        statuses = p.status.container_statuses
        cs = statuses[0] if statuses else statuses.add(name="c")
        stamp(cs.state.terminated.finished_at, finished)
    return p


def started(j: t.Job, at: float) -> t.Job:
    stamp(j.status.start_time, at)
    return j


@dataclass
class Case:
    id: str
    job: t.Job
    pods: list[t.Pod]
    create: list[int | None]
    delete: list[str] = field(default_factory=list)
    condition: str = ""  # "Complete", "Failed:<reason>", "Suspended"
    counts: tuple[int, int, int] = (-1, -1, -1)  # active, succeeded, failed (-1: not checked)
    requeue: float | None = None


CASES = [
    Case("new job: one pod", job(), [], [None], counts=(0, 0, 0)),
    Case("parallelism 3 of 5 completions", job(completions=5, parallelism=3), [], [None, None, None]),
    Case("never more than the completions left", job(completions=5, parallelism=3),
         [jpod(f"s{i}", "Succeeded") for i in range(4)], [None], counts=(0, 4, 0)),
    Case("running pods count as active", job(completions=2, parallelism=2),
         [jpod("a", "Running"), jpod("b", "Pending")], [], counts=(2, 0, 0)),
    Case("parallelism lowered: the youngest goes", job(completions=4, parallelism=1),
         [jpod("old", "Running", created=1), jpod("young", "Running", created=5)], [], delete=["young"]),
    Case("completions reached: Complete", job(completions=2, parallelism=2),
         [jpod("a", "Succeeded"), jpod("b", "Succeeded")], [], condition="Complete", counts=(0, 2, 0)),
    Case("work queue: one success and none active completes", job(completions=None, parallelism=2),
         [jpod("a", "Succeeded"), jpod("b", "Succeeded")], [], condition="Complete"),
    Case("work queue: after a success no new pods, wait for the active", job(completions=None, parallelism=3),
         [jpod("a", "Succeeded"), jpod("b", "Running")], [], counts=(1, 1, 0)),
    Case("failure: backoff 10 s from the failure", job(),
         [jpod("a", "Failed", finished=NOW - 4)], [], counts=(0, 0, 1), requeue=6.0),
    Case("failure: after the backoff a new pod", job(), [jpod("a", "Failed", finished=NOW - 11)], [None]),
    Case("two failures: 20 s", job(),
         [jpod("a", "Failed", finished=NOW - 30), jpod("b", "Failed", finished=NOW - 15)], [], requeue=5.0),
    Case("more failures than backoffLimit: Failed, active pods deleted", job(completions=3, parallelism=2, backoff=1),
         [jpod("a", "Failed"), jpod("b", "Failed"), jpod("c", "Running")], [], delete=["c"],
         condition="Failed:BackoffLimitExceeded", counts=(1, 0, 2)),
    Case("OnFailure: restarts count as failures", job(backoff=2, policy="OnFailure"),
         [jpod("a", "Running", restarts=3)], [], delete=["a"], condition="Failed:BackoffLimitExceeded",
         counts=(1, 0, 0)),
    Case("OnFailure: restarts within the limit go on", job(backoff=3, policy="OnFailure"),
         [jpod("a", "Running", restarts=3)], [], counts=(1, 0, 0)),
    Case("deadline passed: Failed", started(job(deadline=60), NOW - 61), [jpod("a", "Running")], [], delete=["a"],
         condition="Failed:DeadlineExceeded"),
    Case("deadline ahead: look again then", started(job(deadline=60), NOW - 20), [jpod("a", "Running")], [],
         requeue=40.0),
    Case("suspended: active pods deleted, nothing created", job(suspend=True), [jpod("a", "Running")], [],
         delete=["a"], condition="Suspended"),
    Case("indexed: each missing index once", job(completions=4, parallelism=3, indexed=True),
         [jpod("i1", "Succeeded", index=1), jpod("i0", "Running", index=0)], [2, 3], counts=(1, 1, 0)),
    Case("indexed: a failed index is retried", job(completions=2, parallelism=2, indexed=True),
         [jpod("i0", "Failed", index=0, finished=NOW - 100), jpod("i1", "Running", index=1)], [0]),
    Case("indexed: duplicate index keeps the oldest", job(completions=2, parallelism=2, indexed=True),
         [jpod("x", "Running", index=0, created=1), jpod("y", "Running", index=0, created=2)], [1], delete=["y"]),
    Case("indexed: every index succeeded completes", job(completions=2, parallelism=1, indexed=True),
         [jpod("a", "Succeeded", index=0), jpod("b", "Succeeded", index=1), jpod("c", "Succeeded", index=1)], [],
         condition="Complete", counts=(0, 2, 0)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_job(case: Case) -> None:
    plan = jc.plan_job(case.job, case.pods, NOW)
    assert list(plan.create) == case.create
    assert sorted(p.metadata.name for p in plan.delete) == sorted(case.delete)
    conds = {c.type: c for c in plan.status.conditions if c.status == "True"}
    if case.condition:
        ctype, _, reason = case.condition.partition(":")
        assert ctype in conds and (not reason or conds[ctype].reason == reason)
    else:
        assert not conds
    if case.counts[0] >= 0:
        assert (plan.status.active, plan.status.succeeded, plan.status.failed) == case.counts
    if case.requeue is not None:
        assert plan.requeue_after == pytest.approx(case.requeue)


def finished_job(at: float, ttl: int | None) -> t.Job:
    j = job(ttl=ttl)
    cond = j.status.conditions.add(type="Complete", status="True")
    stamp(cond.last_transition_time, at)
    return j


@pytest.mark.parametrize(("ttl", "ago", "delete_job", "requeue"), [
    (None, 1000, False, None), (100, 30, False, 70.0), (100, 100, True, None), (0, 0, True, None),
], ids=["no-ttl", "ttl-ahead", "ttl-passed", "ttl-zero"])
def test_finished_job_ttl(ttl: int | None, ago: float, delete_job: bool, requeue: float | None) -> None:
    plan = jc.plan_job(finished_job(NOW - ago, ttl), [jpod("a", "Running")], NOW)
    assert plan.create == ()
    assert [p.metadata.name for p in plan.delete] == ["a"]  # a finished job never keeps pods running
    assert plan.delete_job is delete_job
    assert plan.requeue_after == (pytest.approx(requeue) if requeue is not None else None)


def test_finished_job_counts_but_never_restarts() -> None:
    j = job(completions=3)
    j.status.conditions.add(type="Failed", status="True", reason="BackoffLimitExceeded")
    plan = jc.plan_job(j, [jpod("a", "Failed"), jpod("b", "Succeeded")], NOW)
    assert plan.create == () and (plan.status.succeeded, plan.status.failed) == (1, 1)


@pytest.mark.parametrize(("failures", "want"), [(0, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (6, 320.0), (7, 360.0),
                                                (30, 360.0)],
                         ids=["none", "one", "two", "three", "six", "capped", "many"])
def test_backoff_delay(failures: int, want: float) -> None:
    assert jc.backoff_delay(failures) == want


@pytest.mark.parametrize(("indexes", "want"), [
    ([], ""), ([3], "3"), ([0, 1, 2], "0-2"), ([5, 0, 2, 3, 1, 9], "0-3,5,9"),
], ids=["none", "one", "run", "mixed"])
def test_format_indexes(indexes: list[int], want: str) -> None:
    assert jc.format_indexes(indexes) == want


def test_indexed_pod_gets_index_env_and_hostname() -> None:
    j = job(completions=3, indexed=True)
    p = jc.pod_for(j, 2)
    assert p.metadata.labels[jc.INDEX_LABEL] == p.metadata.annotations[jc.INDEX_LABEL] == "2"
    assert p.spec.hostname == "pi-2"
    assert [(e.name, e.value) for e in p.spec.containers[0].env] == [("JOB_COMPLETION_INDEX", "2")]
    assert p.metadata.name.startswith("pi-2-") and p.metadata.owner_references[0].kind == "Job"


# ---------------------------------------------------------------- sync on the in-process api-server


async def start(cluster: Cluster, j: t.Job) -> tuple[JobController, t.Job]:
    ctrl = JobController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    created = await cluster.create(j)
    await cluster.start()
    return ctrl, created


async def set_phase(cluster: Cluster, name: str, phase: str, *, finished: float = 0.0) -> None:
    p = await cluster.api.get(t.Pod, name, "default")
    p.status.phase = phase
    if finished:
        stamp(p.status.container_statuses.add(name="c").state.terminated.finished_at, finished)
    await cluster.api.update_status(p)


async def job_pods(cluster: Cluster) -> list[t.Pod]:
    return sorted((await cluster.api.list(t.Pod, namespace="default")).items, key=lambda p: p.metadata.name)


async def test_api_server_selects_by_uid_and_labels_the_template(cluster: Cluster) -> None:
    _, created = await start(cluster, job())
    uid = created.metadata.uid
    assert dict(created.spec.selector.match_labels) == {"batch.kubernetes.io/controller-uid": uid}
    tmpl = created.spec.template.metadata.labels
    assert tmpl["batch.kubernetes.io/job-name"] == "pi" and tmpl["controller-uid"] == uid
    assert created.spec.template.spec.restart_policy == "Never"  # not defaulted to Always


async def test_job_runs_to_completion(cluster: Cluster) -> None:
    ctrl, _ = await start(cluster, job(completions=2, parallelism=1))
    await cluster.drain(ctrl)
    first = await job_pods(cluster)
    assert len(first) == 1 and first[0].metadata.labels["batch.kubernetes.io/job-name"] == "pi"
    await set_phase(cluster, first[0].metadata.name, "Succeeded")
    await cluster.drain(ctrl)
    pods = await job_pods(cluster)
    assert len(pods) == 2
    await set_phase(cluster, next(p for p in pods if p.status.phase != "Succeeded").metadata.name, "Succeeded")
    await cluster.drain(ctrl)
    done = await cluster.api.get(t.Job, "pi", "default")
    assert [(c.type, c.status) for c in done.status.conditions] == [("Complete", "True")]
    assert done.status.succeeded == 2 and done.status.active == 0
    assert to_seconds(done.status.completion_time) == pytest.approx(cluster.clock.now(), abs=1)
    assert cluster.writes("create", "pods") == 2


async def test_failing_job_backs_off_then_fails(cluster: Cluster) -> None:
    ctrl, _ = await start(cluster, job(backoff=1))
    await cluster.drain(ctrl)
    (first,) = await job_pods(cluster)
    await set_phase(cluster, first.metadata.name, "Failed", finished=cluster.clock.now())
    await cluster.drain(ctrl)
    assert cluster.writes("create", "pods") == 1  # inside the 10 s backoff
    cluster.clock.advance(11)
    ctrl.enqueue(await cluster.api.get(t.Job, "pi", "default"))
    await cluster.drain(ctrl)
    assert cluster.writes("create", "pods") == 2
    second = next(p for p in await job_pods(cluster) if p.metadata.name != first.metadata.name)
    await set_phase(cluster, second.metadata.name, "Failed", finished=cluster.clock.now())
    await cluster.drain(ctrl)
    failed = await cluster.api.get(t.Job, "pi", "default")
    cond = next(c for c in failed.status.conditions if c.type == "Failed")
    assert (cond.status, cond.reason, failed.status.failed) == ("True", "BackoffLimitExceeded", 2)
    cluster.clock.advance(3600)
    ctrl.enqueue(failed)
    await cluster.drain(ctrl)
    assert cluster.writes("create", "pods") == 2  # a failed job never starts pods again


async def test_ttl_deletes_the_finished_job(cluster: Cluster) -> None:
    ctrl, _ = await start(cluster, job(ttl=30))
    await cluster.drain(ctrl)
    (p,) = await job_pods(cluster)
    await set_phase(cluster, p.metadata.name, "Succeeded")
    await cluster.drain(ctrl)
    assert (await cluster.api.list(t.Job, namespace="default")).items
    cluster.clock.advance(31)
    ctrl.enqueue(await cluster.api.get(t.Job, "pi", "default"))
    await cluster.drain(ctrl)
    assert not (await cluster.api.list(t.Job, namespace="default")).items
