"""The node agent's Prometheus metrics, named and labelled as the kubelet's: CRI operations and
their latency, PLEG relist latency, running pods and containers, pod start duration.

What must hold: every CRI call through GrpcRuntime counts once by operation (and once more as
an error when it fails); running pods and containers are set from each relist (the runtime's
view, as the kubelet's PLEG); a pod's start duration is observed once, when the agent first
writes it Running, from when its worker was created.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# The kubelet's buckets for runtime operations and relists.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
POD_START_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200,
                     1800, 2700, 3600)

RUNTIME_OPERATIONS = Counter("kubelet_runtime_operations", "Cumulative number of runtime operations by operation "
                             "type.", ["operation_type"])
RUNTIME_ERRORS = Counter("kubelet_runtime_operations_errors", "Cumulative number of runtime operation errors by "
                         "operation type.", ["operation_type"])
RUNTIME_DURATION = Histogram("kubelet_runtime_operations_duration_seconds", "Duration in seconds of runtime "
                             "operations. Broken down by operation type.", ["operation_type"], buckets=BUCKETS)
PLEG_RELIST = Histogram("kubelet_pleg_relist_duration_seconds", "Duration in seconds for relisting pods in PLEG.",
                        buckets=BUCKETS)
PLEG_LAST_SEEN = Gauge("kubelet_pleg_last_seen_seconds", "Timestamp in seconds when PLEG was last seen active.")
RUNNING_PODS = Gauge("kubelet_running_pods", "Number of pods that have a running pod sandbox")
RUNNING_CONTAINERS = Gauge("kubelet_running_containers", "Number of containers currently running",
                           ["container_state"])
POD_START = Histogram("kubelet_pod_start_duration_seconds", "Duration in seconds from kubelet seeing a pod for the "
                      "first time to the pod starting to run", buckets=POD_START_BUCKETS)
NODE_NAME = Gauge("kubelet_node_name", "The node's name. The count is always 1.", ["node"])

CONTAINER_STATES = ("created", "running", "exited", "unknown")


@functools.cache  # every CRI call asks: at hundreds of agents per process (hollow nodes) the regex showed
def operation_type(method: str) -> str:
    """The kubelet's operation_type of a CRI method: RunPodSandbox -> run_podsandbox."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method.replace("PodSandbox", "Podsandbox")).lower()


@functools.cache  # labels() takes a lock and builds a key on every call: asked once per method instead
def runtime_children(method: str) -> tuple[Any, Any, Any]:
    """The operations counter, the duration histogram and the errors counter of a CRI method's
    operation_type (prometheus_client's labelled children)."""
    op = operation_type(method)
    return RUNTIME_OPERATIONS.labels(op), RUNTIME_DURATION.labels(op), RUNTIME_ERRORS.labels(op)
