"""BalancedAllocation: prefer nodes where cpu and memory would be used in equal proportion."""

from __future__ import annotations

from controlplane.scheduler.framework import MAX_NODE_SCORE
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo

NAME = "BalancedAllocation"


def balanced_score(cpu_fraction: float, mem_fraction: float) -> int:
    """(1 - standard deviation of the fractions) on 0..MAX_NODE_SCORE; for two values std = |a-b|/2."""
    cpu_fraction, mem_fraction = min(cpu_fraction, 1.0), min(mem_fraction, 1.0)
    std = abs(cpu_fraction - mem_fraction) / 2
    return int((1 - std) * MAX_NODE_SCORE)


class BalancedAllocation:
    name = NAME
    weight = 1

    def score(self, pod: PodInfo, node: NodeInfo) -> int:
        if node.alloc_cpu <= 0 or node.alloc_mem <= 0:
            return 0
        return balanced_score((node.nz_cpu + pod.nz_cpu) / node.alloc_cpu, (node.nz_mem + pod.nz_mem) / node.alloc_mem)

    def normalize(self, pod: PodInfo, scores: list[int]) -> None:
        return None
