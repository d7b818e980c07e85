"""NodeReady: only nodes whose Ready condition is True take new pods."""

from __future__ import annotations

from controlplane.scheduler.framework import Status, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo

NAME = "NodeReady"
REASON = "node(s) were not ready"
_NOT_READY = unschedulable(NAME, REASON, unresolvable=True)


def node_ready(node: NodeInfo) -> bool:
    return node.ready


class NodeReady:
    name = NAME
    memoizable = True

    def pre_filter(self, pod: PodInfo) -> bool:
        return True

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        return None if node.ready else _NOT_READY
