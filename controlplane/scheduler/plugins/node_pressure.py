"""NodePressure: a node reporting MemoryPressure takes no new BestEffort pods; DiskPressure or
PIDPressure takes no new pods at all (Kubernetes' CheckNodeMemoryPressure/DiskPressure/PIDPressure
predicates; newer Kubernetes expresses the same through node.kubernetes.io/*-pressure taints).

What must hold: only a condition whose status is "True" counts (NodeInfo derives them once per
node update: `nodeinfo.node_pressures`); a pod's QoS class is computed from its spec
(skiff/qos.py), the same as its status shows, once per pod (`PodInfo.best_effort`).
"""

from __future__ import annotations

from controlplane.scheduler.framework import Status, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo, node_pressures

NAME = "NodePressure"
_MEMORY = unschedulable(NAME, "node(s) had memory pressure")
_DISK = unschedulable(NAME, "node(s) had disk pressure")
_PID = unschedulable(NAME, "node(s) had pid pressure")


pressures = node_pressures  # the pure helper, by the name this plugin's readers look for


class NodePressure:
    name = NAME
    memoizable = True

    def pre_filter(self, pod: PodInfo) -> bool:
        return True

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        found = node.pressures
        if not found:
            return None
        if "DiskPressure" in found:
            return _DISK
        if "PIDPressure" in found:
            return _PID
        if pod.best_effort:
            return _MEMORY
        return None
