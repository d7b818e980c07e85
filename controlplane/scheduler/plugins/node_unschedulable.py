"""NodeUnschedulable: a cordoned node (spec.unschedulable) takes no pods, unless they tolerate it."""

from __future__ import annotations

from controlplane.scheduler.framework import Status, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from skiff import taints
from skiffpb.api.v1 import types_pb2 as t

NAME = "NodeUnschedulable"
REASON = "node(s) were unschedulable"
_CORDONED = unschedulable(NAME, REASON, unresolvable=True)
_TAINT = t.Taint(key=taints.UNSCHEDULABLE, effect=taints.NO_SCHEDULE)


def tolerates_unschedulable(pod: PodInfo) -> bool:
    return taints.tolerating(pod.tolerations, _TAINT) is not None


class NodeUnschedulable:
    name = NAME
    memoizable = True

    def pre_filter(self, pod: PodInfo) -> bool:
        return not tolerates_unschedulable(pod)

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        return _CORDONED if node.unschedulable else None
