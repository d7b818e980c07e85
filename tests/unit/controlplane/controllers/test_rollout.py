"""Deployment arithmetic (controlplane.controllers.rollout), table-driven, cases after Kubernetes'."""

from __future__ import annotations

import pytest

from controlplane.controllers import rollout
from controlplane.controllers.rollout import RSView
from skiffpb.api.v1 import types_pb2 as t


@pytest.mark.parametrize(("value", "total", "up", "want"), [
    (3, 10, True, 3),
    ("25%", 10, True, 3),
    ("25%", 10, False, 2),
    ("25%", 4, False, 1),
    ("25%", 1, True, 1),
    ("25%", 1, False, 0),
    ("10%", 30, True, 3),
    ("100%", 7, False, 7),
    ("0%", 7, True, 0),
], ids=["int", "pct-up", "pct-down", "pct-exact", "pct-small-up", "pct-small-down", "exact-no-float-error",
        "all", "zero"])
def test_scaled_value(value: int | str, total: int, up: bool, want: int) -> None:
    assert rollout.scaled_value(value, total, round_up=up) == want


@pytest.mark.parametrize("bad", ["25", "abc%", "-1%", -1, "1.5%"], ids=["no-pct", "word", "neg-pct", "neg", "frac"])
def test_scaled_value_rejects(bad: int | str) -> None:
    with pytest.raises(ValueError):
        rollout.scaled_value(bad, 10, round_up=True)


@pytest.mark.parametrize(("surge", "unavailable", "desired", "want"), [
    ("25%", "25%", 10, (3, 2)),
    ("25%", "25%", 1, (1, 0)),
    (0, 0, 5, (0, 1)),
    ("0%", "0%", 5, (0, 1)),
    (2, "50%", 3, (2, 1)),
], ids=["defaults-10", "defaults-1", "both-zero-int", "both-zero-pct", "mixed"])
def test_resolve_fenceposts(surge: int | str, unavailable: int | str, desired: int, want: tuple[int, int]) -> None:
    assert rollout.resolve_fenceposts(surge, unavailable, desired) == want


@pytest.mark.parametrize(("desired", "surge", "total", "new", "want"), [
    (10, 3, 10, 0, 3),     # first step of a rollout: surge worth of new pods
    (10, 3, 13, 3, 3),     # at the ceiling: wait
    (10, 3, 11, 3, 5),     # old ones went: fill up to the ceiling
    (10, 3, 3, 3, 10),     # old all gone: only up to desired
    (10, 0, 10, 0, 0),     # no surge: the old must go first
], ids=["first-step", "at-ceiling", "room", "capped-at-desired", "no-surge"])
def test_new_rs_replicas_rolling(desired: int, surge: int, total: int, new: int, want: int) -> None:
    assert rollout.new_rs_replicas_rolling(desired=desired, max_surge=surge, current_total=total,
                                           new_replicas=new) == want


@pytest.mark.parametrize(("kw", "want"), [
    ({"desired": 10, "max_unavailable": 2, "all_total": 13, "new_replicas": 3, "new_available": 0}, 2),
    ({"desired": 10, "max_unavailable": 2, "all_total": 13, "new_replicas": 3, "new_available": 3}, 5),
    ({"desired": 10, "max_unavailable": 0, "all_total": 11, "new_replicas": 1, "new_available": 0}, 0),
], ids=["new-unavailable-counts", "new-available", "no-budget"])
def test_max_scaled_down(kw: dict[str, int], want: int) -> None:
    assert rollout.max_scaled_down(**kw) == want


def test_cleanup_unhealthy_takes_unavailable_pods_from_oldest_first() -> None:
    old = [RSView("b", 5, available=5, created=2), RSView("a", 4, available=1, created=1),
           RSView("c", 3, available=0, created=3)]
    assert rollout.plan_cleanup_unhealthy(old, 4) == {"a": 1, "c": 2}
    assert rollout.plan_cleanup_unhealthy(old, 2) == {"a": 2}
    assert rollout.plan_cleanup_unhealthy(old, 0) == {}


@pytest.mark.parametrize(("available_total", "want"), [
    (8, {}),                       # exactly at minimum availability: nothing may go
    (10, {"old1": 0, "old2": 1}),  # two over: the oldest set first
    (20, {"old1": 0, "old2": 0}),  # everything may go
], ids=["at-minimum", "partial", "all"])
def test_scale_down_old(available_total: int, want: dict[str, int]) -> None:
    old = [RSView("old2", 2, available=2, created=2), RSView("old1", 1, available=1, created=1),
           RSView("empty", 0, created=0)]
    assert rollout.plan_scale_down_old(old, desired=10, max_unavailable=2, available_total=available_total) == want


# Kubernetes' TestScale cases (maxSurge 0: the max-replicas annotation is the old size).
@pytest.mark.parametrize(("old_size", "new_size", "sets", "want"), [
    (5, 10, [("new", 2, 3), ("old", 3, 1)], {"new": 4, "old": 6}),
    (5, 3, [("new", 2, 3), ("old", 3, 1)], {"new": 1, "old": 2}),
    (9, 4, [("new", 8, 3), ("old", 1, 1)], {"new": 4, "old": 0}),
    (7, 10, [("v3", 2, 3), ("v2", 3, 2), ("v1", 2, 1)], {"v3": 3, "v2": 4, "v1": 3}),
    (13, 8, [("v3", 2, 3), ("v2", 8, 2), ("v1", 3, 1)], {"v3": 1, "v2": 5, "v1": 2}),
    (10, 0, [("new", 6, 2), ("old", 4, 1)], {"new": 0, "old": 0}),
], ids=["5-to-10", "5-to-3", "9-to-4", "7-to-10-three-sets", "13-to-8-three-sets", "to-zero"])
def test_proportional_scale(old_size: int, new_size: int, sets: list[tuple[str, int, float]],
                            want: dict[str, int]) -> None:
    rss = [RSView(name, size, created=created, max_replicas=old_size) for name, size, created in sets]
    got = rollout.plan_proportional_scale(rss, desired=new_size, max_surge=0, status_replicas=old_size)
    assert got == want
    assert sum(got.values()) == new_size


def test_proportional_scale_without_annotation_uses_status_replicas() -> None:
    rss = [RSView("a", 4, created=2), RSView("b", 4, created=1)]
    assert rollout.plan_proportional_scale(rss, desired=16, max_surge=0, status_replicas=8) == {"a": 8, "b": 8}


def test_find_active_or_latest() -> None:
    new, old1, old2 = RSView("new", 0, created=3), RSView("o1", 0, created=1), RSView("o2", 0, created=2)
    assert rollout.find_active_or_latest(new, [old1, old2]) == new
    assert rollout.find_active_or_latest(None, [old1, old2]) == old2
    assert rollout.find_active_or_latest(None, []) is None
    busy = RSView("o1", 3, created=1)
    assert rollout.find_active_or_latest(new, [busy, old2]) == busy
    assert rollout.find_active_or_latest(RSView("new", 1, created=3), [busy]) is None


def test_history_cleanup_removes_lowest_revisions_that_are_empty() -> None:
    old = [RSView(f"r{i}", 0, revision=i, created=i) for i in range(1, 6)]
    assert rollout.plan_history_cleanup(old, 2, deletable=[rs.name for rs in old]) == ["r1", "r2", "r3"]
    # r2 still has pods: it counts against the limit but is not deleted.
    assert rollout.plan_history_cleanup(old, 2, deletable=["r1", "r3", "r4", "r5"]) == ["r1", "r3"]
    assert rollout.plan_history_cleanup(old, 10, deletable=["r1"]) == []


def template(image: str, **labels: str) -> t.PodTemplateSpec:
    tpl = t.PodTemplateSpec()
    tpl.metadata.labels.update({"app": "web", **labels})
    tpl.spec.containers.add(name="c", image=image)
    return tpl


def test_pod_template_hash_is_stable_dns_safe_and_ignores_its_own_label() -> None:
    a = rollout.pod_template_hash(template("nginx:1"))
    assert a == rollout.pod_template_hash(template("nginx:1"))
    assert a == rollout.pod_template_hash(template("nginx:1", **{rollout.POD_TEMPLATE_HASH: "x"}))
    assert a != rollout.pod_template_hash(template("nginx:2"))
    assert a != rollout.pod_template_hash(template("nginx:1"), collision_count=1)
    assert a and set(a) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert rollout.equal_ignore_hash(template("x", **{rollout.POD_TEMPLATE_HASH: "abc"}), template("x"))
    assert not rollout.equal_ignore_hash(template("x"), template("y"))
