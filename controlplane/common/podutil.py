"""Small facts about pods and owners that several controllers and the scheduler agree on.

Readiness and conditions are skiff.conditions (the node agent and the CLI need them too).

They read objects and never mutate them. Availability follows Kubernetes: a pod is available
once it has been Ready for at least minReadySeconds, measured from the Ready condition's
lastTransitionTime.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import Message

from skiff import conditions, kinds, podresources, quantity
from skiff.clock import to_seconds
from skiffpb.api.v1 import types_pb2 as t

M = TypeVar("M", bound=Message)

# Scoring treats a container without requests as asking this much, as kube-scheduler does,
# so that "free" pods still spread instead of piling onto one node.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024


def copy(msg: M) -> M:
    """A private copy of a (cached, shared) object that may be changed."""
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def controller_ref(obj: Any) -> t.OwnerReference | None:
    for ref in obj.metadata.owner_references:
        if ref.controller:
            return ref  # type: ignore[no-any-return]
    return None


def owner_reference(owner: Any, *, controller: bool = True, block: bool = True) -> t.OwnerReference:
    kind = kinds.of_message(owner)
    return t.OwnerReference(api_version=kind.api_version, kind=kind.kind, name=owner.metadata.name,
                            uid=owner.metadata.uid, controller=controller, block_owner_deletion=block)


def is_terminal(pod: t.Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def is_active(pod: t.Pod) -> bool:
    """Counts toward a ReplicaSet: neither finished nor being deleted."""
    return not is_terminal(pod) and not pod.metadata.HasField("deletion_timestamp")


def ready_since(pod: t.Pod) -> float | None:
    """When the pod became Ready (None when it is not)."""
    cond = conditions.pod_ready_condition(pod)
    if cond is None or cond.status != "True":
        return None
    return to_seconds(cond.last_transition_time) if cond.HasField("last_transition_time") else 0.0


def is_available(pod: t.Pod, min_ready_seconds: int, now: float) -> bool:
    since = ready_since(pod)
    if since is None:
        return False
    return min_ready_seconds <= 0 or since + min_ready_seconds <= now


def restart_count(pod: t.Pod) -> int:
    return sum(cs.restart_count for cs in pod.status.container_statuses)


def _cpu(c: t.Container, default: int = 0) -> int:
    req = c.resources.requests
    return quantity.cpu_millis(req["cpu"]) if "cpu" in req else default


def _mem(c: t.Container, default: int = 0) -> int:
    req = c.resources.requests
    return quantity.to_bytes(req["memory"]) if "memory" in req else default


def requests(pod: t.Pod) -> tuple[int, int]:
    """(millicores, bytes) the pod requests: its containers' sum, or more while an init container runs
    (skiff.podresources)."""
    return podresources.effective(pod.spec, _cpu, 0), podresources.effective(pod.spec, _mem, 0)


def nonzero_requests(pod: t.Pod) -> tuple[int, int]:
    """Requests for scoring: containers asking for nothing count as the defaults above."""
    return (podresources.effective(pod.spec, lambda c: _cpu(c, DEFAULT_MILLI_CPU_REQUEST), 0),
            podresources.effective(pod.spec, lambda c: _mem(c, DEFAULT_MEMORY_REQUEST), 0))


def created(obj: Any) -> float:
    return to_seconds(obj.metadata.creation_timestamp)


def pod_key(pod: t.Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


CONTROLLER_UID_INDEX = "controller-uid"
ORPHAN_INDEX = "orphan-namespace"
NODE_INDEX = "node-name"


def index_controller_uid(obj: Any) -> list[str]:
    """Index: the uid of the object's controlling owner (none for orphans)."""
    ref = controller_ref(obj)
    return [ref.uid] if ref is not None else []


def index_orphans(obj: Any) -> list[str]:
    """Index: the namespace of objects without a controlling owner (candidates for adoption)."""
    return [] if controller_ref(obj) is not None else [obj.metadata.namespace]


def index_node_name(pod: t.Pod) -> list[str]:
    return [pod.spec.node_name] if pod.spec.node_name else []
