"""The default plugin set, in the order filters run (cheapest and most selective first)."""

from __future__ import annotations

from controlplane.scheduler.framework import FilterPlugin, ScorePlugin
from controlplane.scheduler.plugins.balanced_allocation import BalancedAllocation
from controlplane.scheduler.plugins.least_allocated import LeastAllocated
from controlplane.scheduler.plugins.node_ports import NodePorts
from controlplane.scheduler.plugins.node_pressure import NodePressure
from controlplane.scheduler.plugins.node_ready import NodeReady
from controlplane.scheduler.plugins.node_resources_fit import NodeResourcesFit
from controlplane.scheduler.plugins.node_selector import NodeSelector
from controlplane.scheduler.plugins.node_unschedulable import NodeUnschedulable
from controlplane.scheduler.plugins.owner_spread import OwnerSpread
from controlplane.scheduler.plugins.taint_toleration import TaintToleration


def default_filters() -> list[FilterPlugin]:
    return [NodeReady(), NodeUnschedulable(), NodePressure(), NodeSelector(), TaintToleration(), NodePorts(),
            NodeResourcesFit()]


def default_scores() -> list[ScorePlugin]:
    # Weights as kube-scheduler's defaults: spreading counts double, taint preferences triple.
    return [LeastAllocated(), BalancedAllocation(), OwnerSpread(), TaintToleration()]
