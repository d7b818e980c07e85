"""Conditions of API objects (Pod, Node, Deployment, ReplicaSet): find them, test them, set them.

What must hold:
- a condition's lastTransitionTime changes only when its status changes (Kubernetes' rule):
  setting a condition again with the same status keeps the old time, even when its reason or
  message change; `transition_time` and `set_condition` are the only places that decide this;
- "is it Ready" is `is_pod_ready` / `is_node_ready`: the Ready condition exists and is "True";
- reading never mutates: only `set_condition`, `replace_condition` and `remove_condition`
  change the repeated field they are given, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableSequence
from typing import Protocol, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from skiff.clock import micro_timestamp
from skiffpb.api.v1 import types_pb2 as t

READY = "Ready"
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


class Condition(Protocol):
    """What PodCondition, NodeCondition, DeploymentCondition and ReplicaSetCondition share."""

    type: str
    status: str
    reason: str

    @property
    def last_transition_time(self) -> Timestamp: ...

    def HasField(self, field_name: str) -> bool: ...


C = TypeVar("C", bound=Condition)


def find(conditions: Iterable[C], type_: str) -> C | None:
    """The condition of this type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Iterable[C], type_: str) -> bool:
    cond = find(conditions, type_)
    return cond is not None and cond.status == TRUE


def pod_ready_condition(pod: t.Pod) -> t.PodCondition | None:
    return find(pod.status.conditions, READY)


def node_ready_condition(node: t.Node) -> t.NodeCondition | None:
    return find(node.status.conditions, READY)


def is_pod_ready(pod: t.Pod) -> bool:
    return is_true(pod.status.conditions, READY)


def is_node_ready(node: t.Node) -> bool:
    return is_true(node.status.conditions, READY)


def node_ready_status(node: t.Node) -> str:
    """"True", "False", "Unknown", or "" when the node has no Ready condition yet."""
    cond = node_ready_condition(node)
    return cond.status if cond is not None else ""


def transition_time(previous: Iterable[C], type_: str, status: str, now: float) -> Timestamp:
    """When a condition of `type_` that now has `status` last transitioned: the previous
    condition's time when its status was the same (and it has one), else `now`."""
    cond = find(previous, type_)
    if cond is not None and cond.status == status and cond.HasField("last_transition_time"):
        out = Timestamp()
        out.CopyFrom(cond.last_transition_time)
        return out
    return micro_timestamp(now)


def set_condition(conditions: MutableSequence[C], new: C) -> bool:
    """Put `new` into a repeated condition field, Kubernetes' SetCondition way; True if it changed.

    Same status and reason: nothing changes (timestamps included). Same status, other reason:
    replaced, but lastTransitionTime is kept, because the status did not transition.
    """
    cur = find(conditions, new.type)
    if cur is not None:
        if cur.status == new.status and cur.reason == new.reason:
            return False
        if cur.status == new.status and cur.HasField("last_transition_time"):
            new.last_transition_time.CopyFrom(cur.last_transition_time)
    replace_condition(conditions, new)
    return True


def replace_condition(conditions: MutableSequence[C], new: C) -> None:
    """Put `new` in place of the condition of its type (appended last), as given."""
    remove_condition(conditions, new.type)
    conditions.append(new)


def remove_condition(conditions: MutableSequence[C], type_: str) -> bool:
    for i, cur in enumerate(conditions):
        if cur.type == type_:
            del conditions[i]
            return True
    return False
