"""Taints and tolerations, as Kubernetes matches them.

Shared by node lifecycle (which sets the not-ready/unreachable taints), the scheduler (which
filters on them) and the labs (which wait until a new node takes pods).
"""

from __future__ import annotations

from collections.abc import Iterable

from skiff import conditions
from skiffpb.api.v1 import types_pb2 as t

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"
PREFER_NO_SCHEDULE = "PreferNoSchedule"


def tolerates(toleration: t.Toleration, taint: t.Taint) -> bool:
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    op = toleration.operator or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return toleration.value == taint.value
    return False


def tolerating(tolerations: Iterable[t.Toleration], taint: t.Taint) -> t.Toleration | None:
    for tol in tolerations:
        if tolerates(tol, taint):
            return tol
    return None


def untolerated(taints: Iterable[t.Taint], tolerations: Iterable[t.Toleration],
                effects: frozenset[str] = frozenset({NO_SCHEDULE, NO_EXECUTE})) -> t.Taint | None:
    """The first taint with one of `effects` that no toleration tolerates."""
    tols = list(tolerations)
    for taint in taints:
        if taint.effect in effects and tolerating(tols, taint) is None:
            return taint
    return None


def takes_new_pods(node: t.Node) -> bool:
    """Ready, not cordoned, and free of the lifecycle controller's not-ready/unreachable taints.

    A node turns Ready a moment before the lifecycle controller lifts the not-ready taint it set
    while the node was starting; until then the scheduler filters the node out. This is what
    Kubernetes' e2e framework waits for ("all nodes schedulable") before it places pods.
    """
    if node.spec.unschedulable or not conditions.is_node_ready(node):
        return False
    return not any(taint.key in (NOT_READY, UNREACHABLE) for taint in node.spec.taints)

