"""`skiff get ds,job,cronjob,sts,controllerrevision`: kubectl's columns and cell values."""

from __future__ import annotations

from typing import Any

import pytest

from skiff import kinds
from skiff.cli import printers
from skiff.clock import stamp
from skiffpb.api.v1 import types_pb2 as t

NOW = 1_700_000_000.0


def _meta(obj: Any, name: str, age: float = 65) -> Any:
    obj.metadata.name = name
    stamp(obj.metadata.creation_timestamp, NOW - age)
    return obj


def daemonset() -> t.DaemonSet:
    ds = _meta(t.DaemonSet(), "agent")
    ds.spec.template.spec.node_selector["kubernetes.io/os"] = "linux"
    ds.status.desired_number_scheduled, ds.status.current_number_scheduled = 3, 3
    ds.status.number_ready, ds.status.updated_number_scheduled, ds.status.number_available = 2, 3, 2
    return ds


def job(*, completions: int | None = 3, parallelism: int = 1, cond: str = "", duration: float | None = 42,
        succeeded: int = 1) -> t.Job:
    j = _meta(t.Job(), "pi", 600)
    if completions is not None:
        j.spec.completions = completions
    j.spec.parallelism = parallelism
    j.status.succeeded = succeeded
    stamp(j.status.start_time, NOW - 100)
    if duration is not None:
        stamp(j.status.completion_time, NOW - 100 + duration)
    if cond:
        j.status.conditions.add(type=cond, status="True")
    return j


def cronjob(*, zone: str = "", last: float | None = 30, suspend: bool = False) -> t.CronJob:
    c = _meta(t.CronJob(), "tick", 3 * 3600)
    c.spec.schedule = "*/5 * * * *"
    if zone:
        c.spec.time_zone = zone
    c.spec.suspend = suspend
    if last is not None:
        stamp(c.status.last_schedule_time, NOW - last)
    c.status.active.add(name="tick-1")
    return c


def statefulset() -> t.StatefulSet:
    s = _meta(t.StatefulSet(), "db")
    s.spec.replicas = 3
    s.status.ready_replicas = 2
    return s


def revision() -> t.ControllerRevision:
    r = _meta(t.ControllerRevision(), "agent-5d8f", 10)
    r.revision = 2
    r.metadata.owner_references.add(kind="DaemonSet", name="agent", controller=True)
    return r


@pytest.mark.parametrize(("kind", "obj", "header", "row"), [
    ("DaemonSet", daemonset(), ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR",
                                "AGE"],
     ["agent", "3", "3", "2", "3", "2", "kubernetes.io/os=linux", "65s"]),
    ("Job", job(cond="Complete", succeeded=3), ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
     ["pi", "Complete", "3/3", "42s", "10m"]),
    ("Job", job(duration=None), ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
     ["pi", "Running", "1/3", "100s", "10m"]),
    ("Job", job(completions=None, parallelism=4, cond="Failed", succeeded=0),
     ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"], ["pi", "Failed", "0/1 of 4", "42s", "10m"]),
    ("CronJob", cronjob(zone="Europe/Berlin"),
     ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"],
     ["tick", "*/5 * * * *", "Europe/Berlin", "False", "1", "30s", "3h"]),
    ("CronJob", cronjob(last=None, suspend=True),
     ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"],
     ["tick", "*/5 * * * *", "<none>", "True", "1", "<none>", "3h"]),
    ("StatefulSet", statefulset(), ["NAME", "READY", "AGE"], ["db", "2/3", "65s"]),
    ("ControllerRevision", revision(), ["NAME", "CONTROLLER", "REVISION", "AGE"],
     ["agent-5d8f", "daemonset.apps/agent", "2", "10s"]),
], ids=["daemonset", "job-complete", "job-running", "job-work-queue-failed", "cronjob", "cronjob-suspended",
        "statefulset", "controllerrevision"])
def test_workload_columns(kind: str, obj: Any, header: list[str], row: list[str]) -> None:
    got_header, rows = printers.rows(kinds.by_kind(kind), [obj], now=NOW)  # type: ignore[arg-type]
    assert (got_header, rows) == (header, [row])


@pytest.mark.parametrize(("alias", "kind"), [("ds", "DaemonSet"), ("job", "Job"), ("jobs.batch", "Job"),
                                             ("cj", "CronJob"), ("cronjob", "CronJob"), ("sts", "StatefulSet"),
                                             ("controllerrevisions", "ControllerRevision")],
                         ids=["ds", "job", "jobs.batch", "cj", "cronjob", "sts", "controllerrevisions"])
def test_aliases(alias: str, kind: str) -> None:
    found = kinds.by_alias(alias)
    assert found is not None and found.kind == kind
