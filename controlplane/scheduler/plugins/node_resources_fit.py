"""NodeResourcesFit: the pod's cpu/memory requests fit in allocatable minus what is already requested,
and the node has room for one more pod."""

from __future__ import annotations

from controlplane.scheduler.framework import Status, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo

NAME = "NodeResourcesFit"
INSUFFICIENT_CPU = "Insufficient cpu"
INSUFFICIENT_MEMORY = "Insufficient memory"
TOO_MANY_PODS = "Too many pods"
_STATUSES: dict[tuple[str, ...], Status] = {}


def insufficient(pod_cpu: int, pod_mem: int, *, alloc_cpu: int, alloc_mem: int, alloc_pods: int,
                 req_cpu: int, req_mem: int, pod_count: int) -> tuple[str, ...]:
    """The reasons the pod does not fit (empty: it fits). Zero requests always fit their resource."""
    reasons = []
    if pod_count + 1 > alloc_pods:
        reasons.append(TOO_MANY_PODS)
    if pod_cpu and req_cpu + pod_cpu > alloc_cpu:
        reasons.append(INSUFFICIENT_CPU)
    if pod_mem and req_mem + pod_mem > alloc_mem:
        reasons.append(INSUFFICIENT_MEMORY)
    return tuple(reasons)


def _status(reasons: tuple[str, ...]) -> Status:
    st = _STATUSES.get(reasons)
    if st is None:
        st = _STATUSES[reasons] = unschedulable(NAME, *reasons)
    return st


class NodeResourcesFit:
    name = NAME
    memoizable = True

    def pre_filter(self, pod: PodInfo) -> bool:
        return True

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        # The common case (it fits) is decided inline, without building a reasons tuple.
        if (node.pod_count < node.alloc_pods and node.req_cpu + pod.cpu <= node.alloc_cpu
                and node.req_mem + pod.mem <= node.alloc_mem):
            return None
        reasons = insufficient(pod.cpu, pod.mem, alloc_cpu=node.alloc_cpu, alloc_mem=node.alloc_mem,
                               alloc_pods=node.alloc_pods, req_cpu=node.req_cpu, req_mem=node.req_mem,
                               pod_count=node.pod_count)
        return _status(reasons) if reasons else None
