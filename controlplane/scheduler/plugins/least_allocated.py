"""LeastAllocated: prefer nodes with the most room left (cpu and memory, equal weights).

Requests here are the "non-zero" ones (a container without requests counts as 100m / 200Mi),
so pods that ask for nothing still spread by load.
"""

from __future__ import annotations

from controlplane.scheduler.framework import MAX_NODE_SCORE
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo

NAME = "LeastAllocated"


def least_requested_score(requested: int, allocatable: int) -> int:
    """(allocatable - requested) / allocatable on 0..MAX_NODE_SCORE; 0 when over-committed."""
    if allocatable <= 0 or requested > allocatable:
        return 0
    return (allocatable - requested) * MAX_NODE_SCORE // allocatable


class LeastAllocated:
    name = NAME
    memoizable = True
    scores_in_range = True  # normalize is a no-op
    weight = 1

    def score(self, pod: PodInfo, node: NodeInfo) -> int:
        return (least_requested_score(node.nz_cpu + pod.nz_cpu, node.alloc_cpu)
                + least_requested_score(node.nz_mem + pod.nz_mem, node.alloc_mem)) // 2

    def score_all(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        pc, pm = pod.nz_cpu, pod.nz_mem
        out = []
        for ni in nodes:
            ac, am, rc, rm = ni.alloc_cpu, ni.alloc_mem, ni.nz_cpu + pc, ni.nz_mem + pm
            cpu = (ac - rc) * MAX_NODE_SCORE // ac if 0 < ac and rc <= ac else 0
            mem = (am - rm) * MAX_NODE_SCORE // am if 0 < am and rm <= am else 0
            out.append((cpu + mem) // 2)
        return out

    def normalize(self, pod: PodInfo, scores: list[int]) -> None:
        return None
