"""ReplicaSet controller: victim order, slow start, expectations, adoption, status."""

from __future__ import annotations

import pytest

from controlplane.common import podutil
from controlplane.controllers import replicaset as rsc
from controlplane.controllers.replicaset import ReplicaSetController
from skiff import errors
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, deployment, pod
from tests.unit.controlplane.harness import replicaset as harness_replicaset

KEY = "default/web-abc"


def replicaset(replicas: int, *, min_ready: int = 0) -> t.ReplicaSet:
    rs = t.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name, rs.metadata.namespace = "web-abc", "default"
    rs.spec.replicas = replicas
    rs.spec.min_ready_seconds = min_ready
    rs.spec.selector.match_labels["app"] = "web"
    rs.spec.template.metadata.labels["app"] = "web"
    rs.spec.template.spec.containers.add(name="c", image="img")
    return rs


async def setup(cluster: Cluster, rs: t.ReplicaSet, *pods: t.Pod, burst: int = 500) -> ReplicaSetController:
    ctrl = ReplicaSetController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock,
                                burst_replicas=burst)
    created = await cluster.create(rs)
    for p in pods:
        if p.metadata.owner_references:
            p.metadata.owner_references[0].uid = created.metadata.uid
        await cluster.create(p)
    await cluster.start()
    return ctrl


@pytest.mark.parametrize(("count", "want"), [
    (0, []), (1, [1]), (3, [1, 2]), (10, [1, 2, 4, 3]), (500, [1, 2, 4, 8, 16, 32, 64, 128, 245]),
], ids=["none", "one", "three", "ten", "burst"])
def test_slow_start_sizes(count: int, want: list[int]) -> None:
    assert rsc.slow_start_sizes(count) == want


def test_victims_unscheduled_then_not_ready_then_youngest() -> None:
    pods = [
        pod("old-ready", node="n1", phase="Running", ready=True, ready_since=100, created=1),
        pod("young-ready", node="n1", phase="Running", ready=True, ready_since=100, created=5),
        pod("not-ready", node="n1", phase="Running", ready=False, created=2),
        pod("unscheduled", phase="Pending", created=1),
        pod("pending", node="n1", phase="Pending", created=1),
        pod("recently-ready", node="n1", phase="Running", ready=True, ready_since=500, created=1),
        pod("restarty", node="n1", phase="Running", ready=True, ready_since=100, created=1, restarts=4),
    ]
    order = [p.metadata.name for p in rsc.plan_victims(pods, len(pods))]
    assert order == ["unscheduled", "pending", "not-ready", "recently-ready", "restarty", "young-ready",
                     "old-ready"]
    assert [p.metadata.name for p in rsc.plan_victims(pods, 2)] == ["unscheduled", "pending"]


async def test_slow_start_stops_at_first_failure() -> None:
    calls = 0

    async def create() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise errors.InvalidError("quota")

    ok, err = await rsc.slow_start_batch(20, create)
    assert (calls, ok) == (3, 2) and isinstance(err, errors.InvalidError)


async def test_creates_missing_pods_once_despite_a_stale_cache(cluster: Cluster) -> None:
    ctrl = await setup(cluster, replicaset(5))
    await ctrl.sync(KEY)
    await ctrl.sync(KEY)  # the cache has not seen the pods yet: expectations hold us back
    assert cluster.writes("create", "pods") == 5
    await cluster.settle()
    await ctrl.sync(KEY)
    assert cluster.writes("create", "pods") == 5
    pods = cluster.api.objects(t.Pod)
    # Named by the api-server from generateName, not by the controller.
    assert {p.metadata.generate_name for p in pods} == {"web-abc-"}
    assert len({p.metadata.name for p in pods}) == 5 and all(p.metadata.name.startswith("web-abc-") for p in pods)
    ref = pods[0].metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.controller, ref.block_owner_deletion) == ("ReplicaSet", "web-abc", True, True)
    assert pods[0].metadata.labels["app"] == "web"
    rs = await cluster.api.get(t.ReplicaSet, "web-abc")
    assert rs.status.replicas == 5 and rs.status.observed_generation == rs.metadata.generation


async def test_burst_limits_one_sync(cluster: Cluster) -> None:
    ctrl = await setup(cluster, replicaset(8), burst=5)
    await ctrl.sync(KEY)
    assert cluster.writes("create", "pods") == 5
    await cluster.settle()
    await ctrl.sync(KEY)
    assert cluster.writes("create", "pods") == 8


async def test_scale_down_deletes_the_best_victims(cluster: Cluster) -> None:
    owner = replicaset(2)
    owner.metadata.uid = "set-later"
    pods = [pod("a", node="n1", phase="Running", ready=True, labels={"app": "web"}, owner=owner, created=1),
            pod("b", labels={"app": "web"}, owner=owner, created=2),
            pod("c", node="n1", phase="Running", ready=False, labels={"app": "web"}, owner=owner, created=3),
            pod("d", node="n1", phase="Running", ready=True, labels={"app": "web"}, owner=owner, created=4)]
    ctrl = await setup(cluster, replicaset(2), *pods)
    await ctrl.sync(KEY)
    deleted = {a[3] for a in cluster.api.actions if a[0] == "delete"}
    assert deleted == {"b", "c"}
    await cluster.settle()
    await ctrl.sync(KEY)
    assert cluster.writes("delete", "pods") == 2


async def test_adopts_orphans_and_releases_pods_that_stop_matching(cluster: Cluster) -> None:
    owner = replicaset(2)
    pods = [pod("orphan", labels={"app": "web"}),
            pod("mine", labels={"app": "web"}, owner=owner),
            pod("relabelled", labels={"app": "other"}, owner=owner),
            pod("unrelated", labels={"app": "db"})]
    ctrl = await setup(cluster, replicaset(2), *pods)
    await ctrl.sync(KEY)
    by_name = {p.metadata.name: p for p in cluster.api.objects(t.Pod)}
    assert podutil.controller_ref(by_name["orphan"]).name == "web-abc"  # type: ignore[union-attr]
    assert podutil.controller_ref(by_name["relabelled"]) is None
    assert podutil.controller_ref(by_name["unrelated"]) is None
    assert cluster.writes("create", "pods") == 4, "two claimed pods: nothing to create"


async def test_failed_create_sets_replica_failure_and_retries(cluster: Cluster) -> None:
    ctrl = await setup(cluster, replicaset(4))
    cluster.api.fail_next("create", "pods", errors.InvalidError("pods are forbidden: quota exceeded"))
    with pytest.raises(errors.InvalidError):
        await ctrl.sync(KEY)
    assert cluster.writes("create", "pods") == 1, "slow start: one failed call, not four"
    rs = await cluster.api.get(t.ReplicaSet, "web-abc")
    [cond] = rs.status.conditions
    assert (cond.type, cond.reason) == ("ReplicaFailure", "FailedCreate")
    await cluster.settle()
    await ctrl.sync(KEY)
    assert len(cluster.api.objects(t.Pod)) == 4
    rs = await cluster.api.get(t.ReplicaSet, "web-abc")
    assert not rs.status.conditions


async def test_status_counts_ready_and_available_after_min_ready_seconds(cluster: Cluster) -> None:
    owner = replicaset(3, min_ready=10)
    now = cluster.clock.now()
    pods = [pod("a", node="n", phase="Running", ready=True, ready_since=now - 60, labels={"app": "web"}, owner=owner),
            pod("b", node="n", phase="Running", ready=True, ready_since=now - 5, labels={"app": "web"}, owner=owner),
            pod("c", node="n", phase="Running", ready=False, labels={"app": "web"}, owner=owner),
            pod("done", node="n", phase="Succeeded", labels={"app": "web"}, owner=owner)]
    ctrl = await setup(cluster, replicaset(3, min_ready=10), *pods)
    await ctrl.sync(KEY)
    rs = await cluster.api.get(t.ReplicaSet, "web-abc")
    assert (rs.status.replicas, rs.status.ready_replicas, rs.status.available_replicas) == (3, 2, 1)
    assert cluster.writes("create", "pods") == 4, "a finished pod does not count, but 3 active ones hold"


def _status(replicas: int, ready: int, available: int, *, generation: int = 1,
            failure: bool = False) -> t.ReplicaSetStatus:
    s = t.ReplicaSetStatus(replicas=replicas, ready_replicas=ready, available_replicas=available,
                           fully_labeled_replicas=replicas, observed_generation=generation)
    if failure:
        s.conditions.add(type="ReplicaFailure", status="True", reason="FailedCreate")
    return s


@pytest.mark.parametrize(("before", "after", "rolling", "urgent"), [
    (_status(3, 1, 1), _status(3, 2, 2), False, False),
    (_status(2, 0, 0), _status(3, 0, 0), False, False),
    (_status(3, 2, 2), _status(3, 3, 3), False, True),
    (_status(3, 3, 3, generation=1), _status(3, 3, 3, generation=2), False, True),
    (_status(3, 1, 1), _status(3, 1, 1, failure=True), False, True),
    (_status(3, 1, 1), _status(3, 2, 2), True, True),
    (_status(3, 1, 0), _status(3, 2, 0), True, False),
], ids=["ready-count-moves", "replica-count-moves", "settled", "new-generation", "condition",
        "available-moves-in-a-rollout", "ready-moves-in-a-rollout"])
def test_status_urgent(before: t.ReplicaSetStatus, after: t.ReplicaSetStatus, rolling: bool, urgent: bool) -> None:
    rs = replicaset(3)
    rs.status.CopyFrom(before)
    assert rsc.status_urgent(rs, after, rolling=rolling) is urgent


@pytest.mark.parametrize(("period", "during", "total"), [
    (0.0, 4, 4),
    (5.0, 0, 1),
], ids=["every-change", "batched"])
async def test_status_writes_batched_per_period(cluster: Cluster, period: float, during: int, total: int) -> None:
    """Pods becoming ready one at a time, right after a status write: with a batch period every
    count waits for the period's end, where one write carries the last count."""
    owner = replicaset(5)
    pods = [pod(f"p{i}", node="n", phase="Running", ready=False, labels={"app": "web"}, owner=owner)
            for i in range(5)]
    ctrl = await setup(cluster, replicaset(5), *pods)
    ctrl.batches.period = period
    mono = [1000.0]
    ctrl.batches.clock = lambda: mono[0]
    await cluster.drain(ctrl)
    base = cluster.writes("update_status", "replicasets")
    for p in pods[:4]:
        fresh = await cluster.api.get(t.Pod, p.metadata.name)
        fresh.status.conditions[0].status = "True"
        await cluster.api.update_status(fresh)
        await cluster.drain(ctrl)
        mono[0] += 0.1
    assert cluster.writes("update_status", "replicasets") - base == during
    mono[0] += period  # the period's end: the held key's sync writes what it has now
    ctrl.queue.add(KEY)
    await cluster.drain(ctrl)
    rs = await cluster.api.get(t.ReplicaSet, "web-abc")
    assert rs.status.ready_replicas == 4
    assert cluster.writes("update_status", "replicasets") - base == total
    ctrl.shutdown()


@pytest.mark.parametrize(("old_replicas", "rolling"), [(2, True), (0, False)], ids=["old-set-has-replicas", "alone"])
async def test_rolling_while_a_sibling_set_has_replicas(cluster: Cluster, old_replicas: int, rolling: bool) -> None:
    d = await cluster.create(deployment("web"))
    await cluster.create(harness_replicaset("web-old", app="web", replicas=old_replicas, owner=d))
    new = await cluster.create(harness_replicaset("web-new", app="web", replicas=3, owner=d))
    ctrl = ReplicaSetController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.start()
    assert ctrl._rolling(new) is rolling
