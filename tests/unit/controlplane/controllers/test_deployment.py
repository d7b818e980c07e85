"""Deployment controller syncs against the in-process api-server: ReplicaSets, rolling, recreate,
undo, scaling, status."""

from __future__ import annotations

import pytest

from controlplane.controllers import rollout
from controlplane.controllers.deployment import DeploymentController, status_urgent
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, deployment, replicaset

KEY = "default/web"


async def setup(cluster: Cluster, d: t.Deployment) -> DeploymentController:
    ctrl = DeploymentController(cluster.api, cluster.factory, recorder=cluster.recorder, clock=cluster.clock)
    await cluster.create(d)
    await cluster.start()
    return ctrl


def replicasets(cluster: Cluster) -> dict[str, t.ReplicaSet]:
    return {rs.metadata.name: rs for rs in cluster.api.objects(t.ReplicaSet)}


def sizes(cluster: Cluster) -> dict[str, int]:
    return {name: rs.spec.replicas for name, rs in replicasets(cluster).items()}


async def make_available(cluster: Cluster, *, only: str = "", available: int | None = None) -> None:
    """Play the replicaset controller: every set's pods exist and are available."""
    for rs in cluster.api.objects(t.ReplicaSet):
        if only and rs.metadata.name != only:
            continue
        n = rs.spec.replicas if available is None else available
        rs.status.replicas = rs.spec.replicas
        rs.status.ready_replicas = rs.status.available_replicas = n
        rs.status.observed_generation = rs.metadata.generation
        await cluster.api.update_status(rs)
    await cluster.settle()


async def update_deployment(cluster: Cluster, **changes: object) -> None:
    d = await cluster.api.get(t.Deployment, "web")
    if "image" in changes:
        d.spec.template.spec.containers[0].image = str(changes["image"])
    if "replicas" in changes:
        d.spec.replicas = int(changes["replicas"])  # type: ignore[call-overload]
    if "paused" in changes:
        d.spec.paused = bool(changes["paused"])
    await cluster.api.update(d)
    await cluster.settle()


async def sync(cluster: Cluster, ctrl: DeploymentController) -> None:
    await cluster.settle()
    await ctrl.sync(KEY)
    await cluster.settle()


async def test_new_deployment_gets_one_replicaset_per_template(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=3))
    await sync(cluster, ctrl)
    [rs] = cluster.api.objects(t.ReplicaSet)
    h = rs.metadata.labels[rollout.POD_TEMPLATE_HASH]
    assert rs.metadata.name == f"web-{h}"
    assert rs.spec.replicas == 3
    assert rs.spec.selector.match_labels == {"app": "web", rollout.POD_TEMPLATE_HASH: h}
    assert rs.spec.template.metadata.labels[rollout.POD_TEMPLATE_HASH] == h
    ref = rs.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.controller, ref.block_owner_deletion) == ("Deployment", "web", True, True)
    assert rs.metadata.annotations[rollout.REVISION] == "1"
    d = await cluster.api.get(t.Deployment, "web")
    assert d.metadata.annotations[rollout.REVISION] == "1"
    # Idempotent: syncing again creates nothing.
    await sync(cluster, ctrl)
    await sync(cluster, ctrl)
    assert cluster.writes("create", "replicasets") == 1


async def test_rolling_update_respects_surge_and_unavailability(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=4, max_surge=1, max_unavailable=0))
    await sync(cluster, ctrl)
    await make_available(cluster)
    [old] = replicasets(cluster)
    await update_deployment(cluster, image="img:2")
    await sync(cluster, ctrl)
    [new] = set(replicasets(cluster)) - {old}
    assert sizes(cluster) == {old: 4, new: 1}  # surge 1: one new pod, nothing old goes
    await sync(cluster, ctrl)
    assert sizes(cluster) == {old: 4, new: 1}  # the new pod is not available: still nothing goes
    steps = []
    for _ in range(10):
        await make_available(cluster)
        await sync(cluster, ctrl)
        current = sizes(cluster)
        steps.append((current[old], current[new]))
        assert current[old] + current[new] <= 5
        if current == {old: 0, new: 4}:
            break
    assert steps[-1] == (0, 4)
    assert replicasets(cluster)[new].metadata.annotations[rollout.REVISION] == "2"


async def test_rolling_update_with_max_unavailable_scales_old_down_first(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=4, max_surge=0, max_unavailable=2))
    await sync(cluster, ctrl)
    await make_available(cluster)
    [old] = replicasets(cluster)
    await update_deployment(cluster, image="img:2")
    await sync(cluster, ctrl)
    [new] = set(replicasets(cluster)) - {old}
    # No surge: the new set starts at 0 and two old pods may go at once.
    assert sizes(cluster) == {old: 2, new: 0}
    await make_available(cluster)
    await sync(cluster, ctrl)
    assert sizes(cluster) == {old: 2, new: 2}


async def test_recreate_scales_old_to_zero_and_waits_for_pods(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=3, strategy="Recreate"))
    await sync(cluster, ctrl)
    await make_available(cluster)
    [old] = replicasets(cluster)
    await update_deployment(cluster, image="img:2")
    await sync(cluster, ctrl)
    assert sizes(cluster) == {old: 0}  # no new set while old pods run
    await sync(cluster, ctrl)
    assert sizes(cluster) == {old: 0}
    rs = await cluster.api.get(t.ReplicaSet, old)
    rs.status.replicas = rs.status.available_replicas = rs.status.ready_replicas = 0
    await cluster.api.update_status(rs)
    await sync(cluster, ctrl)
    [new] = set(replicasets(cluster)) - {old}
    assert sizes(cluster) == {old: 0, new: 3}


async def test_undo_reuses_the_old_replicaset_and_bumps_its_revision(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=2))
    await sync(cluster, ctrl)
    await make_available(cluster)
    [first] = replicasets(cluster)
    await update_deployment(cluster, image="img:2")
    for _ in range(6):
        await sync(cluster, ctrl)
        await make_available(cluster)
    [second] = set(replicasets(cluster)) - {first}
    assert sizes(cluster) == {first: 0, second: 2}
    # `rollout undo`: the old template comes back.
    await update_deployment(cluster, image="img:1")
    for _ in range(6):
        await sync(cluster, ctrl)
        await make_available(cluster)
    rss = replicasets(cluster)
    assert set(rss) == {first, second}, "no third ReplicaSet for a template that exists"
    assert sizes(cluster) == {first: 2, second: 0}
    assert rss[first].metadata.annotations[rollout.REVISION] == "3"
    assert rss[first].metadata.annotations[rollout.REVISION_HISTORY] == "1"
    d = await cluster.api.get(t.Deployment, "web")
    assert d.metadata.annotations[rollout.REVISION] == "3"


async def test_scaling_mid_rollout_is_proportional(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=10, max_surge=3, max_unavailable=2))
    await sync(cluster, ctrl)
    await make_available(cluster)
    [old] = replicasets(cluster)
    await update_deployment(cluster, image="img:2")
    await sync(cluster, ctrl)
    [new] = set(replicasets(cluster)) - {old}
    before = sizes(cluster)
    assert before[new] == 3 and sum(before.values()) <= 13
    await update_deployment(cluster, replicas=20)
    await sync(cluster, ctrl)
    after = sizes(cluster)
    assert sum(after.values()) == 20 + 3  # desired + maxSurge
    assert after[old] > before[old] and after[new] > before[new]


async def test_paused_deployment_scales_but_does_not_roll(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=2))
    await sync(cluster, ctrl)
    await make_available(cluster)
    [only] = replicasets(cluster)
    await update_deployment(cluster, paused=True)
    await update_deployment(cluster, image="img:2")
    await sync(cluster, ctrl)
    assert list(replicasets(cluster)) == [only]
    await update_deployment(cluster, replicas=5)
    await sync(cluster, ctrl)
    assert sizes(cluster) == {only: 5}
    d = await cluster.api.get(t.Deployment, "web")
    progressing = [c for c in d.status.conditions if c.type == "Progressing"]
    assert progressing[0].reason == "DeploymentPaused"
    await update_deployment(cluster, paused=False)
    await sync(cluster, ctrl)
    assert len(replicasets(cluster)) == 2


async def test_revision_history_limit_deletes_oldest_empty_sets(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=1, history=1))
    for image in ("img:2", "img:3", "img:4"):
        for _ in range(5):
            await sync(cluster, ctrl)
            await make_available(cluster)
        await update_deployment(cluster, image=image)
    for _ in range(5):
        await sync(cluster, ctrl)
        await make_available(cluster)
    rss = replicasets(cluster)
    images = sorted(rs.spec.template.spec.containers[0].image for rs in rss.values())
    assert images == ["img:3", "img:4"], "the new set plus one old one"
    assert cluster.writes("delete", "replicasets") == 2


async def test_status_and_conditions(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=3))
    await sync(cluster, ctrl)
    d = await cluster.api.get(t.Deployment, "web")
    conds = {c.type: (c.status, c.reason) for c in d.status.conditions}
    assert conds["Available"] == ("False", "MinimumReplicasUnavailable")
    assert conds["Progressing"] == ("True", "NewReplicaSetCreated")
    await make_available(cluster)
    await sync(cluster, ctrl)
    d = await cluster.api.get(t.Deployment, "web")
    conds = {c.type: (c.status, c.reason) for c in d.status.conditions}
    assert conds["Available"] == ("True", "MinimumReplicasAvailable")
    assert conds["Progressing"] == ("True", "NewReplicaSetAvailable")
    assert (d.status.replicas, d.status.updated_replicas, d.status.ready_replicas,
            d.status.available_replicas, d.status.unavailable_replicas) == (3, 3, 3, 3, 0)
    assert d.status.observed_generation == d.metadata.generation
    writes = cluster.writes("update_status", "deployments")
    await sync(cluster, ctrl)
    assert cluster.writes("update_status", "deployments") == writes, "unchanged status is not rewritten"


async def test_progress_deadline_exceeded(cluster: Cluster) -> None:
    ctrl = await setup(cluster, deployment(replicas=2, deadline=30))
    await sync(cluster, ctrl)
    await make_available(cluster, available=0)
    await sync(cluster, ctrl)
    cluster.clock.advance(31)
    await sync(cluster, ctrl)
    d = await cluster.api.get(t.Deployment, "web")
    [progressing] = [c for c in d.status.conditions if c.type == "Progressing"]
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")


async def test_orphan_replicaset_is_adopted_and_foreign_one_ignored(cluster: Cluster) -> None:
    await cluster.create(replicaset("stray", app="web", labels={"app": "web"}))
    other = replicaset("foreign", app="web", labels={"app": "web"})
    other.metadata.owner_references.add(api_version="apps/v1", kind="Deployment", name="x", uid="other-uid",
                                        controller=True)
    await cluster.create(other)
    ctrl = await setup(cluster, deployment(replicas=1))
    await sync(cluster, ctrl)
    rss = replicasets(cluster)
    assert rss["stray"].metadata.owner_references[0].name == "web"
    assert rss["foreign"].metadata.owner_references[0].uid == "other-uid"


def _dstatus(updated: int, available: int, *, generation: int = 1, reason: str = "ReplicaSetUpdated",
             at: float = 0.0) -> t.DeploymentStatus:
    s = t.DeploymentStatus(replicas=3, updated_replicas=updated, ready_replicas=available,
                           available_replicas=available, observed_generation=generation)
    cond = s.conditions.add(type="Progressing", status="True", reason=reason)
    cond.last_update_time.seconds = int(at)
    return s


@pytest.mark.parametrize(("before", "after", "urgent"), [
    (_dstatus(1, 1, at=1), _dstatus(2, 1, at=2), False),
    (_dstatus(3, 2), _dstatus(3, 3, reason="NewReplicaSetAvailable"), True),
    (_dstatus(3, 2), _dstatus(3, 3), True),
    (_dstatus(1, 1), _dstatus(1, 1, generation=2), True),
], ids=["counts-and-timestamps-move", "condition-reason", "complete", "new-generation"])
def test_status_urgent(before: t.DeploymentStatus, after: t.DeploymentStatus, urgent: bool) -> None:
    d = deployment(replicas=3)
    d.metadata.generation = 2 if after.observed_generation == 2 else 1
    d.status.CopyFrom(before)
    assert status_urgent(d, after) is urgent
