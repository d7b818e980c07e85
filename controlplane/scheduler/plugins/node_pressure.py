"""NodePressure: a node reporting MemoryPressure takes no new BestEffort pods; DiskPressure or
PIDPressure takes no new pods at all (Kubernetes' CheckNodeMemoryPressure/DiskPressure/PIDPressure
predicates; newer Kubernetes expresses the same through node.kubernetes.io/*-pressure taints).

What must hold: only a condition whose status is "True" counts; a pod's QoS class is computed
from its spec (skiff/qos.py), the same as its status shows.
"""

from __future__ import annotations

from controlplane.scheduler.framework import Status, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from skiff import qos
from skiffpb.api.v1 import types_pb2 as t

NAME = "NodePressure"
_MEMORY = unschedulable(NAME, "node(s) had memory pressure")
_DISK = unschedulable(NAME, "node(s) had disk pressure")
_PID = unschedulable(NAME, "node(s) had pid pressure")


def pressures(node: t.Node | None) -> frozenset[str]:
    """The pressure conditions that are True on `node`."""
    if node is None:
        return frozenset()
    return frozenset(c.type for c in node.status.conditions
                     if c.type in ("MemoryPressure", "DiskPressure", "PIDPressure") and c.status == "True")


class NodePressure:
    name = NAME

    def pre_filter(self, pod: PodInfo) -> bool:
        return True

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        found = pressures(node.node)
        if not found:
            return None
        if "DiskPressure" in found:
            return _DISK
        if "PIDPressure" in found:
            return _PID
        if qos.qos_class(pod.pod.spec) == qos.BEST_EFFORT:
            return _MEMORY
        return None
