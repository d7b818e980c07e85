"""Taints and tolerations, as Kubernetes matches them (shared by node lifecycle and the scheduler)."""

from __future__ import annotations

from collections.abc import Iterable

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
