"""The scheduling framework's shapes (kube-scheduler's, reduced): Status, plugins, fit errors.

What must hold:
- a filter returns None for "fits" (as a nil *Status in Go) or a Status naming why not;
  statuses are values, often shared constants, never mutated;
- a plugin may opt out for a pod in `pre_filter` (a pod without host ports needs no port
  check), so the per-node loop only runs the checks that matter for that pod;
- scores are 0..MAX_NODE_SCORE per plugin after normalization, then weighted and summed;
- a plugin with `memoizable = True` is a pure function of the pod's `PodInfo.signature` and the
  NodeInfo's state (nothing else: no informer, no clock), and its `score` equals `score_all`'s
  element. When every plugin a decision runs is memoizable, the scheduler keeps each node's
  verdict per pod signature until the node changes (`NodeInfo.verdicts`): pods of one owner
  are decided on the nodes' remembered verdicts instead of re-running every plugin on every
  examined node. A plugin without the attribute is treated as not memoizable;
- a plugin with `scores_in_range = True` scores 0..MAX_NODE_SCORE already (its `normalize`
  changes nothing), so a remembered verdict may hold its weighted score summed with the others
  of its kind, added once per node instead of once per plugin per node;
- `normalize` gives equal raw scores equal results (each score is a function of itself and of
  the column's aggregates, as Kubernetes' normalize helpers): a column whose raw scores are all
  equal adds the same to every node's total, so a decision skips it and picks the same winners;
- the FailedScheduling message lists, per reason, how many nodes gave it:
  `0/3 nodes are available: 2 Insufficient cpu, 1 node(s) didn't match node selector.`
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo

MAX_NODE_SCORE = 100

SUCCESS = 0
UNSCHEDULABLE = 1
# Unschedulable and nothing but a change to the node itself can fix it.
UNSCHEDULABLE_AND_UNRESOLVABLE = 2
ERROR = 3


@dataclass(frozen=True, slots=True)
class Status:
    code: int
    reasons: tuple[str, ...]
    plugin: str = ""

    @property
    def success(self) -> bool:
        return self.code == SUCCESS


def unschedulable(plugin: str, *reasons: str, unresolvable: bool = False) -> Status:
    return Status(UNSCHEDULABLE_AND_UNRESOLVABLE if unresolvable else UNSCHEDULABLE, reasons, plugin)


class FilterPlugin(Protocol):
    name: str

    def pre_filter(self, pod: PodInfo) -> bool:
        """False: this plugin has nothing to check for this pod (skip it on every node)."""
        ...

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None: ...


class ScorePlugin(Protocol):
    name: str
    weight: int

    def score(self, pod: PodInfo, node: NodeInfo) -> int: ...

    def score_all(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        """[score(pod, n) for n in nodes], written as one loop (it is the hot path)."""
        ...

    def normalize(self, pod: PodInfo, scores: list[int]) -> None:
        """Rescale raw scores in place to 0..MAX_NODE_SCORE (a no-op for plugins already in range);
        equal raw scores must stay equal (a decision skips a column of equal scores)."""
        ...


def default_normalize(scores: list[int], *, reverse: bool) -> None:
    """Scale to 0..MAX_NODE_SCORE by the maximum; `reverse`: fewer is better (Kubernetes' helper)."""
    top = max(scores, default=0)
    if top == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    # One comprehension, not an indexed loop: it runs over hundreds of nodes per decision.
    if reverse:
        scores[:] = [MAX_NODE_SCORE - MAX_NODE_SCORE * s // top for s in scores]
    else:
        scores[:] = [MAX_NODE_SCORE * s // top for s in scores]


@dataclass
class FitError(Exception):
    """No node fits: `diagnosis` counts, per reason, the nodes that gave it."""

    pod: str
    num_nodes: int
    diagnosis: Counter[str]

    def __str__(self) -> str:
        return fit_message(self.num_nodes, self.diagnosis)


def fit_message(num_nodes: int, diagnosis: Counter[str]) -> str:
    if num_nodes == 0:
        return "0/0 nodes are available: no nodes available to schedule pods."
    parts = [f"{count} {reason}" for reason, count in sorted(diagnosis.items(), key=lambda rc: (-rc[1], rc[0]))]
    return f"0/{num_nodes} nodes are available: {', '.join(parts)}."


def memoizable(plugin: object) -> bool:
    """The plugin declares itself a pure function of the pod's signature and the node's state."""
    return getattr(plugin, "memoizable", False) is True


def scores_in_range(plugin: object) -> bool:
    """The plugin's raw scores are final (its normalize is a no-op)."""
    return getattr(plugin, "scores_in_range", False) is True


def num_feasible_nodes_to_find(num_nodes: int, percentage: int = 0) -> int:
    """How many fitting nodes to look for before scoring (kube-scheduler's percentageOfNodesToScore).

    0 means adaptive: 50% of the nodes, less 1% per 125 nodes, at least 5%; never under 100 nodes.
    Searching stops there because a good-enough node among many is as good as the best, and
    the next pod starts where this search stopped, so every node gets its turn.
    """
    min_feasible = 100
    if num_nodes < min_feasible or percentage >= 100:
        return num_nodes
    if percentage <= 0:
        percentage = max(50 - num_nodes // 125, 5)
    return max(num_nodes * percentage // 100, min_feasible)
