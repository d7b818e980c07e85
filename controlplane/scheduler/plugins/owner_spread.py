"""OwnerSpread: spread the pods of one owner (ReplicaSet, ...) across nodes.

The raw score is how many pods of the same controller the node already runs; normalized,
the emptiest nodes score MAX_NODE_SCORE and the fullest 0 (kube-scheduler's SelectorSpread,
keyed by the controlling owner).
"""

from __future__ import annotations

from controlplane.scheduler.framework import default_normalize
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo

NAME = "OwnerSpread"


def spread_scores(counts: list[int]) -> list[int]:
    scores = list(counts)
    default_normalize(scores, reverse=True)
    return scores


class OwnerSpread:
    name = NAME
    memoizable = True
    weight = 2

    def score(self, pod: PodInfo, node: NodeInfo) -> int:
        return node.owners.get(pod.owner_uid, 0) if pod.owner_uid else 0

    def score_all(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        uid = pod.owner_uid
        if not uid:
            return [0] * len(nodes)
        return [ni.owners.get(uid, 0) for ni in nodes]

    def normalize(self, pod: PodInfo, scores: list[int]) -> None:
        default_normalize(scores, reverse=True)
