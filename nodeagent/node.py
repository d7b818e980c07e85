"""The node's own objects: its Node (registration, status, Ready condition) and its Lease.

`compute_ready_condition` is pure: the runtime's CRI Status (or the error reaching it) becomes
the Node's Ready condition, with a reason a user can act on (ContainerRuntimeDown,
ContainerRuntimeNotReady, NetworkPluginNotReady), keeping lastTransitionTime while the status
stays the same. The agent is the one writer of Ready=True/False; the node lifecycle controller
only sets Unknown when the agent falls silent. `system_info` and `capacity` read the host once at start.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence

from skiff import __version__, conditions, defaults
from skiff.clock import micro_timestamp
from skiff.images import go_arch
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

LEASE_NAMESPACE = defaults.NODE_LEASE_NAMESPACE
LEASE_DURATION = 40
MAX_PODS = 110


def compute_ready_condition(runtime_status: cri.StatusResponse | None, error: str,
                            previous: Sequence[t.NodeCondition], now: float) -> t.NodeCondition:
    if runtime_status is None:
        status, reason, message = "False", "ContainerRuntimeDown", f"container runtime is down: {error}"
    else:
        conds = {c.type: c for c in runtime_status.status.conditions}
        rt, net = conds.get("RuntimeReady"), conds.get("NetworkReady")
        if rt is None or not rt.status:
            detail = f"{rt.reason}: {rt.message}" if rt is not None else "no RuntimeReady condition"
            status, reason, message = "False", "ContainerRuntimeNotReady", f"container runtime not ready: {detail}"
        elif net is None or not net.status:
            detail = f"{net.reason}: {net.message}" if net is not None else "no NetworkReady condition"
            status, reason, message = "False", "NetworkPluginNotReady", \
                f"container runtime network not ready: {detail}"
        else:
            status, reason, message = "True", "KubeletReady", "skiff node agent is posting ready status"
    out = t.NodeCondition(type=conditions.READY, status=status, reason=reason, message=message)
    out.last_heartbeat_time.CopyFrom(micro_timestamp(now))
    out.last_transition_time.CopyFrom(conditions.transition_time(previous, conditions.READY, status, now))
    return out


def same_condition(a: t.NodeCondition | None, b: t.NodeCondition | None) -> bool:
    """Equal but for the heartbeat time."""
    if a is None or b is None:
        return a is b
    return (a.status, a.reason, a.message) == (b.status, b.reason, b.message)


def host_capacity() -> dict[str, str]:
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": str(MAX_PODS)}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def system_info(runtime_version: str) -> t.NodeSystemInfo:
    return t.NodeSystemInfo(
        machine_id=_read("/etc/machine-id"), boot_id=_read("/proc/sys/kernel/random/boot_id"),
        kernel_version=platform.release(), os_image=os_image(), container_runtime_version=runtime_version,
        kubelet_version=f"skiff-{__version__}", operating_system="linux", architecture=go_arch())


def build_node(name: str, *, node_ip: str, capacity: Mapping[str, str], info: t.NodeSystemInfo, port: int,
               ready: t.NodeCondition, labels: Mapping[str, str] | None = None) -> t.Node:
    node = t.Node(api_version="v1", kind="Node")
    node.metadata.name = name
    node.metadata.labels.update({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                 "kubernetes.io/arch": go_arch(), **(labels or {})})
    set_status(node, node_ip=node_ip, capacity=capacity, info=info, port=port, ready=ready, hostname=name)
    return node


def set_status(node: t.Node, *, node_ip: str, capacity: Mapping[str, str], info: t.NodeSystemInfo, port: int,
               ready: t.NodeCondition, hostname: str) -> None:
    st = node.status
    st.capacity.clear()
    st.capacity.update(capacity)
    st.allocatable.clear()
    st.allocatable.update(capacity)
    del st.addresses[:]
    if node_ip:
        st.addresses.add(type="InternalIP", address=node_ip)
    st.addresses.add(type="Hostname", address=hostname)
    st.node_info.CopyFrom(info)
    st.daemon_endpoints.kubelet_endpoint.port = port
    conditions.replace_condition(st.conditions, ready)


def build_lease(name: str, now: float) -> t.Lease:
    lease = t.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
    lease.metadata.name = name
    lease.metadata.namespace = LEASE_NAMESPACE
    lease.spec.holder_identity = name
    lease.spec.lease_duration_seconds = LEASE_DURATION
    lease.spec.renew_time.CopyFrom(micro_timestamp(now))
    lease.spec.acquire_time.CopyFrom(micro_timestamp(now))
    return lease
