"""End to end: the workload kinds on a network-namespace lab (1 control-plane host, 2 workers), with
real containers: the examples/ of each kind applied, a Job to completion, a failing Job to its
backoffLimit, a DaemonSet on every worker including one that joins later, a StatefulSet started in
order, a CronJob's Job, and `skiff get ds,job,cronjob,sts`.

The tests share one lab and run in file order: the CronJob is applied first, so that its first
minute has passed by the time the last test looks for its Job.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deploy import netplan
from deploy.lab import Lab, LabSpec
from skiff import manifests
from skiff.client import Client
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from tests.support import labs

pytestmark = pytest.mark.e2e

T = TypeVar("T")
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WEB1 = "skiff/web:1.0"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    prefix = f"w{os.getpid() % 10000}"
    spec = LabSpec(prefix=prefix, workers=2, lan_cidr=netplan.free_lan(range(150, 200), 1), min_sync_period="0s")
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        yield the_lab


def cli_env(lab: Lab) -> dict[str, str]:
    """`skiff` as the lab's admin (its config names the admin's certificate)."""
    return dict(os.environ, SKIFF_CONFIG=str(lab.config_path))


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def apply_example(client: Client, kind: str) -> list[Any]:
    """Create every object of examples/<kind>/ (as `skiff apply -f` would on an empty cluster)."""
    return [await client.create(item.obj) for item in manifests.load([str(EXAMPLES / kind)])]


def condition(job: t.Job, ctype: str) -> t.JobCondition | None:
    return next((c for c in job.status.conditions if c.type == ctype and c.status == "True"), None)


def ready(pod: t.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def owned_pods(client: Client, kind: str, name: str) -> list[t.Pod]:
    pods = (await client.list(t.Pod, namespace="default")).items
    return [p for p in pods if any(r.kind == kind and r.name == name and r.controller
                                   for r in p.metadata.owner_references)]


def test_cronjob_example_applied(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            (cj,) = await apply_example(client, "cronjob")
            assert cj.spec.concurrency_policy == "Forbid" and cj.spec.time_zone == "Etc/UTC"

    run(scenario())


def test_job_example_runs_to_completion(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            await apply_example(client, "job")

            async def complete() -> t.Job | None:
                job = await client.get(t.Job, "countdown", "default")
                return job if condition(job, "Complete") else None

            job = await eventually(complete, timeout=120, what="Job countdown Complete")
            assert (job.status.succeeded, job.status.failed, job.status.active) == (3, 0, 0)
            assert job.status.completed_indexes == "0-2"
            pods = await owned_pods(client, "Job", "countdown")
            indexes = sorted(p.metadata.labels["batch.kubernetes.io/job-completion-index"] for p in pods)
            assert indexes == ["0", "1", "2"]
            assert {p.status.phase for p in pods} == {"Succeeded"}
            for p in pods:
                exit_codes = [cs.state.terminated.exit_code for cs in p.status.container_statuses]
                assert exit_codes == [0]
                text = b"".join([chunk async for chunk in client.logs("default", p.metadata.name)]).decode()
                index = p.metadata.labels["batch.kubernetes.io/job-completion-index"]
                assert f"index {index} on countdown-{index}" in text

    run(scenario())


def test_failing_job_stops_at_its_backoff_limit(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            job = t.Job(api_version="batch/v1", kind="Job")
            job.metadata.name = "fails"
            job.spec.backoff_limit = 1
            job.spec.template.spec.restart_policy = "Never"
            job.spec.template.spec.containers.add(name="fail", image=WEB1, image_pull_policy="IfNotPresent",
                                                  command=["/bin/sh", "-c", "echo failing; exit 3"])
            await client.create(job, namespace="default")

            async def failed() -> t.Job | None:
                got = await client.get(t.Job, "fails", "default")
                return got if condition(got, "Failed") else None

            # Two pods: the first fails, the second starts 10 s later (backoff) and fails too.
            got = await eventually(failed, timeout=120, what="Job fails Failed")
            cond = condition(got, "Failed")
            assert cond is not None and cond.reason == "BackoffLimitExceeded"
            assert (got.status.failed, got.status.succeeded, got.status.active) == (2, 0, 0)
            pods = sorted(await owned_pods(client, "Job", "fails"), key=lambda p: p.metadata.creation_timestamp.seconds)
            assert [p.status.phase for p in pods] == ["Failed", "Failed"]
            assert [p.status.container_statuses[0].state.terminated.exit_code for p in pods] == [3, 3]
            first_end = pods[0].status.container_statuses[0].state.terminated.finished_at.seconds
            second_start = pods[1].metadata.creation_timestamp.seconds
            assert second_start - first_end >= 9  # the 10 s backoff (timestamps in whole seconds)
            await asyncio.sleep(12)
            assert len(await owned_pods(client, "Job", "fails")) == 2  # no pod after failing

    run(scenario())


def test_daemonset_runs_on_every_worker_including_a_later_one(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            # n2 leaves (its daemons stop, its Node is deleted) and joins again after the DaemonSet exists,
            # as a fresh machine would: its old pod bridge, CNI config and IPAM state go too (the re-joined
            # Node may get another podCIDR; a stale config or bridge would hand out the old range).
            lab.stop_worker("n2")
            await client.delete(t.Node, "n2")
            lab.run_in("n2", ["ip", "link", "del", "cni0"])
            paths = lab.host_config("n2").node_paths
            for stale in (paths.cni_conf_dir, paths.ipam_dir):
                shutil.rmtree(stale, ignore_errors=True)
                stale.mkdir(parents=True, exist_ok=True)
            await apply_example(client, "daemonset")

            async def on_nodes(want: set[str]) -> dict[str, t.Pod] | None:
                pods = [p for p in await owned_pods(client, "DaemonSet", "node-web")
                        if not p.metadata.HasField("deletion_timestamp")]
                by_node = {p.spec.node_name: p for p in pods}
                ok = set(by_node) == want and len(pods) == len(want) and all(ready(p) for p in pods)
                return by_node if ok else None

            await eventually(lambda: on_nodes({"n1"}), timeout=90, what="node-web Ready on n1 only")
            lab.start_worker("n2")
            await lab.wait_nodes_ready(["n2"], 60)
            by_node = await eventually(lambda: on_nodes({"n1", "n2"}), timeout=90,
                                       what="node-web Ready on n1 and the re-joined n2")
            for node, pod in by_node.items():
                assert f"hello from {pod.metadata.name}" in lab.http_get(node, f"http://{pod.status.pod_ip}/")

            async def status_done() -> t.DaemonSet | None:
                ds = await client.get(t.DaemonSet, "node-web", "default")
                s = ds.status
                return ds if (s.desired_number_scheduled, s.number_ready, s.number_available) == (2, 2, 2) else None

            await eventually(status_done, timeout=30, what="DaemonSet status 2/2/2")
            # The control-plane host is tainted NoSchedule: no daemon pod there.
            assert "cp" not in by_node

    run(scenario())


def test_statefulset_example_starts_in_order(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            svc, _ = await apply_example(client, "statefulset")
            assert svc.spec.cluster_ip == "None"

            async def both_ready() -> list[t.Pod] | None:
                pods = sorted(await owned_pods(client, "StatefulSet", "db"), key=lambda p: p.metadata.name)
                return pods if [p.metadata.name for p in pods] == ["db-0", "db-1"] and all(map(ready, pods)) \
                    else None

            db0, db1 = await eventually(both_ready, timeout=120, what="db-0 and db-1 Ready")
            ready0 = next(c for c in db0.status.conditions if c.type == "Ready").last_transition_time.seconds
            assert db1.metadata.creation_timestamp.seconds >= ready0  # db-1 only after db-0 was Ready
            assert (db0.spec.hostname, db1.spec.hostname) == ("db-0", "db-1")
            sts = await client.get(t.StatefulSet, "db", "default")
            assert sts.status.ready_replicas == 2

    run(scenario())


def test_cronjob_started_a_job_and_cli_shows_the_workloads(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            async def a_job_done() -> list[t.Job] | None:
                jobs = [j for j in (await client.list(t.Job, namespace="default")).items
                        if any(r.kind == "CronJob" and r.name == "every-minute" for r in j.metadata.owner_references)]
                return jobs if any(condition(j, "Complete") for j in jobs) else None

            jobs = await eventually(a_job_done, timeout=150, what="a Job of CronJob every-minute Complete")
            assert all(j.metadata.name.startswith("every-minute-") for j in jobs)
            cj = await client.get(t.CronJob, "every-minute", "default")
            assert cj.status.HasField("last_schedule_time") and cj.status.HasField("last_successful_time")

    run(scenario())
    out = subprocess.run([sys.executable, "-m", "skiff.cli.main", "get", "ds,job,cronjob,sts",
                          "--server", ",".join(lab.api_servers)], capture_output=True, text=True, timeout=60,
                         check=True, env=cli_env(lab)).stdout
    lines = out.splitlines()
    headers = [line for line in lines if line.startswith("NAME")]
    assert [re.split(r"\s{3,}", h.strip()) for h in headers] == [
        ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"],
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"],
        ["NAME", "READY", "AGE"]], out
    assert any(line.split()[:6] == ["daemonset.apps/node-web", "2", "2", "2", "2", "2"] for line in lines), out
    assert any(line.split()[:3] == ["job.batch/countdown", "Complete", "3/3"] for line in lines), out
    assert any(line.split()[:3] == ["job.batch/fails", "Failed", "0/1"] for line in lines), out
    assert any(line.startswith("cronjob.batch/every-minute") and "* * * * *" in line for line in lines), out
    assert any(line.split()[:2] == ["statefulset.apps/db", "2/2"] for line in lines), out


def test_daemonset_rolling_update_and_undo(lab: Lab) -> None:
    async def on_image(client: Client, image: str) -> list[t.Pod] | None:
        pods = [p for p in await owned_pods(client, "DaemonSet", "node-web")
                if not p.metadata.HasField("deletion_timestamp")]
        ok = (sorted(p.spec.node_name for p in pods) == ["n1", "n2"] and all(map(ready, pods))
              and all(p.spec.containers[0].image == image for p in pods))
        return pods if ok else None

    async def update() -> None:
        async with lab.client() as client:
            ds = await client.get(t.DaemonSet, "node-web", "default")
            ds.spec.template.spec.containers[0].image = "skiff/web:2.0"
            await client.update(ds)
            pods = await eventually(lambda: on_image(client, "skiff/web:2.0"), timeout=120,
                                    what="node-web rolled to skiff/web:2.0 on both workers")
            for pod in pods:
                assert "v2" in lab.http_get(pod.spec.node_name, f"http://{pod.status.pod_ip}/")

    run(update())
    cli = [sys.executable, "-m", "skiff.cli.main"]
    server = ["--server", ",".join(lab.api_servers)]
    history = subprocess.run([*cli, "rollout", "history", "ds/node-web", *server], capture_output=True, text=True,
                             timeout=60, check=True, env=cli_env(lab)).stdout
    assert history.splitlines()[2:] == ["1         <none>", "2         <none>"], history
    subprocess.run([*cli, "rollout", "undo", "ds/node-web", *server], check=True, timeout=60, env=cli_env(lab))
    subprocess.run([*cli, "rollout", "status", "ds/node-web", "--timeout", "120", *server], check=True, timeout=150,
                   env=cli_env(lab))

    async def undone() -> None:
        async with lab.client() as client:
            await eventually(lambda: on_image(client, WEB1), timeout=120, what="node-web back on skiff/web:1.0")
            revs = [r for r in (await client.list(t.ControllerRevision, namespace="default")).items
                    if r.metadata.name.startswith("node-web-")]  # the StatefulSet db has its own
            # The rollback re-numbers revision 1 to 3 instead of copying it.
            assert sorted(r.revision for r in revs) == [2, 3], [(r.metadata.name, r.revision) for r in revs]

    run(undone())
