"""Picking the winners from the feasible nodes' scores (`best_totals`): skipping a column of
equal raw scores picks the same winners as normalizing and adding every column."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controlplane.scheduler.framework import default_normalize
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.plugins.owner_spread import OwnerSpread
from controlplane.scheduler.plugins.taint_toleration import TaintToleration
from controlplane.scheduler.scheduler import best_totals
from tests.unit.controlplane.harness import pod


@dataclass
class Forward:
    """A plugin whose raw scores normalize by the maximum, more is better."""

    weight: int = 1
    name: str = "Forward"

    def normalize(self, pod: PodInfo, scores: list[int]) -> None:
        default_normalize(scores, reverse=False)


def every_column(info: PodInfo, totals: list[int], columns: list[tuple[object, list[int]]]) -> list[int]:
    """The reference: every column normalized, weighted and added, then every index at the top."""
    totals = list(totals)
    for plugin, scores in columns:
        scores = list(scores)
        plugin.normalize(info, scores)  # type: ignore[attr-defined]
        totals = [total + s * plugin.weight for total, s in zip(totals, scores, strict=True)]  # type: ignore[attr-defined]
    return [i for i, total in enumerate(totals) if total == max(totals)]


SPREAD, TAINTS, FORWARD = OwnerSpread(), TaintToleration(), Forward(weight=3)


@pytest.mark.parametrize(("totals", "columns", "winners"), [
    ([150, 170, 160], [(SPREAD, [0, 0, 0]), (TAINTS, [0, 0, 0])], [1]),
    ([150, 170, 160], [(SPREAD, [2, 2, 2]), (TAINTS, [1, 1, 1])], [1]),
    ([150, 170, 160], [(SPREAD, [0, 1, 0]), (TAINTS, [0, 0, 0])], [2]),
    ([150, 150, 150], [(SPREAD, [1, 0, 1]), (TAINTS, [0, 0, 0])], [1]),
    ([150, 150, 150], [(SPREAD, [0, 0, 0]), (TAINTS, [0, 0, 0])], [0, 1, 2]),
    ([100, 100, 90, 100], [(SPREAD, [1, 0, 0, 0]), (TAINTS, [2, 2, 2, 2])], [1, 3]),
    ([0, 0, 0], [(FORWARD, [5, 5, 5]), (SPREAD, [3, 1, 2])], [1]),
    ([0, 10, 0], [(FORWARD, [1, 0, 4])], [2]),
    ([7], [(SPREAD, [4]), (FORWARD, [9])], [0]),
], ids=["all-constant", "all-constant-nonzero", "spread-decides", "spread-breaks-a-tie",
        "everything-tied", "a-tie-left", "forward-constant", "forward-decides", "one-node"])
def test_best_totals(totals: list[int], columns: list[tuple[object, list[int]]], winners: list[int]) -> None:
    info = PodInfo.of(pod("p"))
    assert every_column(info, totals, columns) == winners
    copies = [(plugin, list(scores)) for plugin, scores in columns]
    assert best_totals(info, list(totals), copies) == winners  # type: ignore[arg-type]
