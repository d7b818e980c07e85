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
    memoizable = True
    scores_in_range = True  # normalize is a no-op
    weight = 1

    def score(self, pod: PodInfo, node: NodeInfo) -> int:
        if node.alloc_cpu <= 0 or node.alloc_mem <= 0:
            return 0
        return balanced_score((node.nz_cpu + pod.nz_cpu) / node.alloc_cpu, (node.nz_mem + pod.nz_mem) / node.alloc_mem)

    def score_all(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        pc, pm = pod.nz_cpu, pod.nz_mem
        out = []
        for ni in nodes:
            ac, am = ni.alloc_cpu, ni.alloc_mem
            if ac <= 0 or am <= 0:
                out.append(0)
                continue
            c, m = (ni.nz_cpu + pc) / ac, (ni.nz_mem + pm) / am
            c, m = (c if c < 1.0 else 1.0), (m if m < 1.0 else 1.0)
            out.append(int((1 - abs(c - m) / 2) * MAX_NODE_SCORE))
        return out

    def normalize(self, pod: PodInfo, scores: list[int]) -> None:
        return None
