"""NodeSelector: every key=value of the pod's nodeSelector must be a label of the node."""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.scheduler.framework import Status, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo

NAME = "NodeSelector"
REASON = "node(s) didn't match node selector"
_MISMATCH = unschedulable(NAME, REASON, unresolvable=True)


def matches(selector: Mapping[str, str], node_labels: Mapping[str, str]) -> bool:
    return all(node_labels.get(k) == v for k, v in selector.items())


class NodeSelector:
    name = NAME
    memoizable = True

    def pre_filter(self, pod: PodInfo) -> bool:
        return bool(pod.node_selector)

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        return None if matches(pod.node_selector, node.labels) else _MISMATCH
