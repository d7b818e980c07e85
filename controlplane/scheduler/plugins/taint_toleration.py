"""TaintToleration: NoSchedule/NoExecute taints must be tolerated; PreferNoSchedule ones score lower."""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.scheduler.framework import Status, default_normalize, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from skiff import taints
from skiffpb.api.v1 import types_pb2 as t

NAME = "TaintToleration"


def untolerated_hard_taint(node_taints: Iterable[t.Taint], tolerations: Iterable[t.Toleration]) -> t.Taint | None:
    return taints.untolerated(node_taints, tolerations)


def count_intolerable_soft_taints(node_taints: Iterable[t.Taint], tolerations: Iterable[t.Toleration]) -> int:
    tols = [tol for tol in tolerations if tol.effect in ("", taints.PREFER_NO_SCHEDULE)]
    return sum(1 for tn in node_taints if taints.tolerating(tols, tn) is None)


class TaintToleration:
    name = NAME
    memoizable = True
    weight = 3

    def pre_filter(self, pod: PodInfo) -> bool:
        return True

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.hard_taints:
            return None
        taint = untolerated_hard_taint(node.hard_taints, pod.tolerations)
        if taint is None:
            return None
        return unschedulable(NAME, f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}", unresolvable=True)

    def score(self, pod: PodInfo, node: NodeInfo) -> int:
        if not node.soft_taints:
            return 0
        return count_intolerable_soft_taints(node.soft_taints, pod.tolerations)

    def score_all(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        tols = pod.tolerations
        return [count_intolerable_soft_taints(ni.soft_taints, tols) if ni.soft_taints else 0 for ni in nodes]

    def normalize(self, pod: PodInfo, scores: list[int]) -> None:
        default_normalize(scores, reverse=True)
