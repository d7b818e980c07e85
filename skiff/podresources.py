"""A pod's effective request or limit of one resource, with init containers, as Kubernetes counts it.

What must hold (Kubernetes' resourcehelper.PodRequests):
- app containers and native sidecars (init containers with restartPolicy Always) run together:
  their values add up;
- a run-to-completion init container runs alone, beside only the sidecars started before it;
- the pod's value is the larger of the two: max(sum(app) + sum(sidecars), max over init
  containers in order of (its value + sidecars before it)).
The scheduler, quota admission and the quota controller all count a pod this way.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import TypeVar

from skiffpb.api.v1 import types_pb2 as t

N = TypeVar("N", int, Fraction)


def is_sidecar(c: t.Container) -> bool:
    return c.HasField("restart_policy") and c.restart_policy == "Always"


def effective(spec: t.PodSpec, value: Callable[[t.Container], N], zero: N) -> N:
    """The pod's effective value, `value(container)` being one container's (see the module docstring)."""
    total = zero
    for c in spec.containers:
        total += value(c)
    sidecars = zero
    init_peak = zero
    for c in spec.init_containers:
        if is_sidecar(c):
            sidecars += value(c)
            running = sidecars
        else:
            running = value(c) + sidecars
        init_peak = max(init_peak, running)
    return max(total + sidecars, init_peak)
