"""A pod's QoS class, as Kubernetes computes it (pkg/apis/core/v1/helper/qos). Pure.

What must hold:
- Guaranteed: every container has cpu AND memory limits, and its requests (defaulted to the
  limits when unset) equal them;
- BestEffort: no container has any cpu or memory request or limit;
- Burstable: everything else.
Only cpu and memory count; other resources (ephemeral-storage, extended) do not change the class.
"""

from __future__ import annotations

from skiff import quantity
from skiffpb.api.v1 import types_pb2 as t

GUARANTEED = "Guaranteed"
BURSTABLE = "Burstable"
BEST_EFFORT = "BestEffort"
_COMPUTE = ("cpu", "memory")


def _value(name: str, text: str) -> int:
    return quantity.cpu_millis(text) if name == "cpu" else quantity.to_bytes(text)


def qos_class(spec: t.PodSpec) -> str:
    any_set = False
    guaranteed = True
    for c in (*spec.init_containers, *spec.containers):
        limits = {n: _value(n, v) for n, v in c.resources.limits.items() if n in _COMPUTE and v}
        requests = {n: _value(n, v) for n, v in c.resources.requests.items() if n in _COMPUTE and v}
        if any(limits.values()) or any(requests.values()):
            any_set = True
        if set(limits) != set(_COMPUTE):
            guaranteed = False
            continue
        for name in _COMPUTE:
            if requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if not any_set:
        return BEST_EFFORT
    return GUARANTEED if guaranteed else BURSTABLE
