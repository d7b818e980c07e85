"""The workload kinds through the api-server's registry in-process: defaults, Job selectors,
validation and immutable fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.message import Message

from controlplane.apiserver.inprocess import InProcessApi
from skiff import errors
from skiffpb.api.v1 import types_pb2 as t


def _template(spec: Any, *, policy: str = "", labels: bool = True) -> None:
    if labels:
        spec.template.metadata.labels["app"] = "x"
    spec.template.spec.containers.add(name="c", image="img:1")
    if policy:
        spec.template.spec.restart_policy = policy


def job(policy: str = "Never") -> t.Job:
    j = t.Job(api_version="batch/v1", kind="Job")
    j.metadata.name = "pi"
    _template(j.spec, policy=policy, labels=False)
    return j


def cronjob() -> t.CronJob:
    c = t.CronJob(api_version="batch/v1", kind="CronJob")
    c.metadata.name = "tick"
    c.spec.schedule = "@hourly"
    _template(c.spec.job_template.spec, policy="OnFailure", labels=False)
    return c


def daemonset() -> t.DaemonSet:
    d = t.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    d.metadata.name = "agent"
    d.spec.selector.match_labels["app"] = "x"
    _template(d.spec)
    return d


def statefulset() -> t.StatefulSet:
    s = t.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    s.metadata.name = "db"
    s.spec.service_name = "db"
    s.spec.selector.match_labels["app"] = "x"
    _template(s.spec)
    return s


@pytest.mark.parametrize(("make", "check"), [
    (job, lambda o: (o.spec.parallelism, o.spec.completions, o.spec.backoff_limit, o.spec.completion_mode,
                     o.spec.template.spec.restart_policy) == (1, 1, 6, "NonIndexed", "Never")),
    (cronjob, lambda o: (o.spec.concurrency_policy, o.spec.successful_jobs_history_limit,
                         o.spec.failed_jobs_history_limit, o.spec.suspend) == ("Allow", 3, 1, False)),
    (daemonset, lambda o: (o.spec.update_strategy.type, o.spec.update_strategy.rolling_update.max_unavailable.int_val,
                           o.spec.revision_history_limit, o.spec.template.spec.restart_policy)
     == ("RollingUpdate", 1, 10, "Always")),
    (statefulset, lambda o: (o.spec.replicas, o.spec.pod_management_policy, o.spec.update_strategy.type,
                             o.spec.update_strategy.rolling_update.partition)
     == (1, "OrderedReady", "RollingUpdate", 0)),
], ids=["job", "cronjob", "daemonset", "statefulset"])
async def test_defaults(api: InProcessApi, make: Callable[[], Message], check: Callable[[Any], bool]) -> None:
    created = await api.create(make())
    assert check(created), created
    assert created.metadata.generation == 1


async def test_job_selector_from_uid_unless_manual(api: InProcessApi) -> None:
    auto = await api.create(job())
    assert dict(auto.spec.selector.match_labels) == {"batch.kubernetes.io/controller-uid": auto.metadata.uid}
    manual = job()
    manual.metadata.name = "manual"
    manual.spec.manual_selector = True
    manual.spec.selector.match_labels["app"] = "x"
    manual.spec.template.metadata.labels["app"] = "x"
    created = await api.create(manual)
    assert dict(created.spec.selector.match_labels) == {"app": "x"}
    assert "batch.kubernetes.io/controller-uid" not in created.spec.template.metadata.labels


@pytest.mark.parametrize(("obj", "error"), [
    (job(policy="Always"), 'restartPolicy: unsupported value "Always"'),
    (job(policy=""), "restartPolicy: Required value"),
    (statefulset(), None),
], ids=["job-always", "job-no-policy", "sts-ok"])
async def test_validation(api: InProcessApi, obj: Message, error: str | None) -> None:
    if error is None:
        await api.create(obj)
        return
    with pytest.raises(errors.InvalidError, match=error):
        await api.create(obj)


@pytest.mark.parametrize(("make", "change", "error"), [
    (job, lambda o: o.spec.template.spec.containers[0].__setattr__("image", "img:2"),
     "spec.template: field is immutable"),
    (job, lambda o: o.spec.selector.match_labels.__setitem__("more", "x"), "spec.selector: field is immutable"),
    (daemonset, lambda o: o.spec.selector.match_labels.__setitem__("app", "y"), "spec.selector: field is immutable"),
    (daemonset, lambda o: o.spec.template.spec.containers[0].__setattr__("image", "img:2"), None),
    (job, lambda o: o.spec.__setattr__("suspend", True), None),
], ids=["job-template", "job-selector", "ds-selector", "ds-template-ok", "job-suspend-ok"])
async def test_updates(api: InProcessApi, make: Callable[[], Message], change: Callable[[Any], None],
                       error: str | None) -> None:
    created: Any = await api.create(make())
    change(created)
    if error is None:
        updated: Any = await api.update(created)
        assert updated.metadata.generation == 2
        return
    with pytest.raises(errors.InvalidError, match=error):
        await api.update(created)
