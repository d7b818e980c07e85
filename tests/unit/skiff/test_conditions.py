"""skiff.conditions: readiness of pods and nodes, and setting a condition keeping lastTransitionTime."""

from __future__ import annotations

import pytest

from skiff import conditions
from skiff.clock import micro_timestamp, seconds_timestamp, stamp, to_seconds
from skiffpb.api.v1 import types_pb2 as t

NOW = 2000.0


def pod_with(*conds: tuple[str, str]) -> t.Pod:
    pod = t.Pod()
    for type_, status in conds:
        pod.status.conditions.add(type=type_, status=status)
    return pod


def node_with(*conds: tuple[str, str]) -> t.Node:
    node = t.Node()
    for type_, status in conds:
        node.status.conditions.add(type=type_, status=status)
    return node


READINESS = [
    ((), False, ""),
    ((("Ready", "True"),), True, "True"),
    ((("Ready", "False"),), False, "False"),
    ((("Ready", "Unknown"),), False, "Unknown"),
    ((("ContainersReady", "True"), ("Ready", "False")), False, "False"),
    ((("PodScheduled", "True"), ("Ready", "True")), True, "True"),
    ((("ready", "True"),), False, ""),
]
READINESS_IDS = ["none", "true", "false", "unknown", "other-true-ready-false", "ready-after-others", "case-matters"]


@pytest.mark.parametrize(("conds", "ready", "status"), READINESS, ids=READINESS_IDS)
def test_pod_and_node_readiness(conds: tuple[tuple[str, str], ...], ready: bool, status: str) -> None:
    assert conditions.is_pod_ready(pod_with(*conds)) is ready
    assert conditions.is_node_ready(node_with(*conds)) is ready
    assert conditions.node_ready_status(node_with(*conds)) == status
    found = conditions.pod_ready_condition(pod_with(*conds))
    assert (found.status if found is not None else "") == status


def cond(status: str, reason: str = "", since: float | None = None) -> t.PodCondition:
    out = t.PodCondition(type="Ready", status=status, reason=reason)
    if since is not None:
        stamp(out.last_transition_time, since)
    return out


@pytest.mark.parametrize(("previous", "status", "want"), [
    ([], "True", NOW),
    ([cond("True", since=100.0)], "True", 100.0),
    ([cond("False", since=100.0)], "True", NOW),
    ([cond("True")], "True", NOW),
    ([t.PodCondition(type="Initialized", status="True", last_transition_time=micro_timestamp(100.0))], "True", NOW),
], ids=["first", "same-status-keeps", "status-changed", "previous-without-time", "other-type-ignored"])
def test_transition_time(previous: list[t.PodCondition], status: str, want: float) -> None:
    assert to_seconds(conditions.transition_time(previous, "Ready", status, NOW)) == want


@pytest.mark.parametrize(("current", "new", "changed", "want_since", "want_reason"), [
    ([], cond("True", "Fresh", since=NOW), True, NOW, "Fresh"),
    ([cond("True", "Same", since=100.0)], cond("True", "Same", since=NOW), False, 100.0, "Same"),
    ([cond("True", "Old", since=100.0)], cond("True", "New", since=NOW), True, 100.0, "New"),
    ([cond("False", "Old", since=100.0)], cond("True", "New", since=NOW), True, NOW, "New"),
], ids=["added", "same-status-and-reason-untouched", "reason-change-keeps-time", "status-change-new-time"])
def test_set_condition(current: list[t.PodCondition], new: t.PodCondition, changed: bool, want_since: float,
                       want_reason: str) -> None:
    status = t.PodStatus()
    status.conditions.add(type="PodScheduled", status="True")
    status.conditions.extend(current)
    assert conditions.set_condition(status.conditions, new) is changed
    got = conditions.find(status.conditions, "Ready")
    assert got is not None and (to_seconds(got.last_transition_time), got.reason) == (want_since, want_reason)
    assert [c.type for c in status.conditions].count("Ready") == 1
    assert conditions.find(status.conditions, "PodScheduled") is not None


def test_replace_and_remove_condition() -> None:
    status = t.NodeStatus()
    status.conditions.add(type="Ready", status="True", reason="KubeletReady")
    status.conditions.add(type="MemoryPressure", status="False")
    conditions.replace_condition(status.conditions, t.NodeCondition(type="Ready", status="Unknown"))
    assert [(c.type, c.status) for c in status.conditions] == [("MemoryPressure", "False"), ("Ready", "Unknown")]
    assert conditions.remove_condition(status.conditions, "Ready") is True
    assert conditions.remove_condition(status.conditions, "Ready") is False
    assert [c.type for c in status.conditions] == ["MemoryPressure"]


@pytest.mark.parametrize(("seconds", "micro", "whole"), [
    (1.0, (1, 0), (1, 0)),
    (1.9999996, (2, 0), (1, 0)),
    (1.25, (1, 250_000_000), (1, 0)),
    (1.0000004, (1, 0), (1, 0)),
], ids=["whole", "micro-rounds-up", "fraction", "below-a-microsecond"])
def test_the_two_timestamps_say_how_they_round(seconds: float, micro: tuple[int, int], whole: tuple[int, int]) -> None:
    m, w = micro_timestamp(seconds), seconds_timestamp(seconds)
    assert ((m.seconds, m.nanos), (w.seconds, w.nanos)) == (micro, whole)
