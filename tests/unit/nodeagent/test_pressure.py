"""Node pressure conditions and allocatable from host figures, and the scheduler's NodePressure filter."""

from __future__ import annotations

import pytest

from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from controlplane.scheduler.plugins.node_pressure import NodePressure
from nodeagent.pressure import HostStats, allocatable, merge_conditions, pressure_conditions, read_host
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import node, pod

GI = 2**30
CALM = HostStats(mem_available=4 * GI, disk_available=50 * GI, disk_total=100 * GI, pids=300, pid_max=32768)


@pytest.mark.parametrize(("stats", "want"), [
    (CALM, {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False"}),
    (HostStats(99 * 2**20, 50 * GI, 100 * GI, 300, 32768), {"MemoryPressure": "True", "DiskPressure": "False",
                                                            "PIDPressure": "False"}),
    (HostStats(4 * GI, 9 * GI, 100 * GI, 300, 32768), {"MemoryPressure": "False", "DiskPressure": "True",
                                                       "PIDPressure": "False"}),
    (HostStats(4 * GI, 10 * GI, 100 * GI, 29500, 32768), {"MemoryPressure": "False", "DiskPressure": "False",
                                                          "PIDPressure": "True"}),
], ids=["calm", "memory", "disk", "pids"])
def test_pressure_conditions(stats: HostStats, want: dict[str, str]) -> None:
    got = pressure_conditions(stats, [], 100.0)
    assert {c.type: c.status for c in got} == want
    reasons = {c.type: c.reason for c in got}
    assert reasons["MemoryPressure"] == ("KubeletHasInsufficientMemory" if want["MemoryPressure"] == "True"
                                         else "KubeletHasSufficientMemory")


def test_transition_time_kept_while_status_stays() -> None:
    first = pressure_conditions(CALM, [], 100.0)
    again = pressure_conditions(CALM, first, 200.0)
    assert [c.last_transition_time.seconds for c in again] == [100, 100, 100]
    assert [c.last_heartbeat_time.seconds for c in again] == [200, 200, 200]
    low = pressure_conditions(HostStats(1, 50 * GI, 100 * GI, 300, 32768), again, 300.0)
    assert [c.last_transition_time.seconds for c in low] == [300, 100, 100]


def test_allocatable_subtracts_the_memory_threshold() -> None:
    assert allocatable({"cpu": "4", "memory": "8Gi", "pods": "110"}) == {"cpu": "4", "memory": "8092Mi", "pods": "110"}
    assert allocatable({"memory": "50Mi"})["memory"] == "0"


def test_merge_keeps_ready() -> None:
    n = t.Node()
    n.status.conditions.add(type="Ready", status="True")
    n.status.conditions.add(type="MemoryPressure", status="True")
    merge_conditions(n, pressure_conditions(CALM, [], 1.0))
    assert [(c.type, c.status) for c in n.status.conditions] == [
        ("MemoryPressure", "False"), ("DiskPressure", "False"), ("PIDPressure", "False"), ("Ready", "True")]


def test_read_host_on_this_machine(tmp_path: object) -> None:
    stats = read_host("/nonexistent/state/dir")
    assert stats.mem_available > 0 and stats.disk_total > 0 and 0 < stats.pids < stats.pid_max


def pressured(*types: str) -> NodeInfo:
    n = node("n")
    for ctype in types:
        n.status.conditions.add(type=ctype, status="True")
    n.status.conditions.add(type="PIDPressure", status="False")
    ni = NodeInfo("n")
    ni.set_node(n)
    return ni


def pod_info(*, cpu: str = "") -> PodInfo:
    p = pod("p", cpu=cpu)
    p.metadata.uid = "u"
    return PodInfo.of(p)


@pytest.mark.parametrize(("node_info", "cpu", "want"), [
    (pressured(), "", ()),
    (pressured("MemoryPressure"), "", ("node(s) had memory pressure",)),
    (pressured("MemoryPressure"), "100m", ()),
    (pressured("DiskPressure"), "100m", ("node(s) had disk pressure",)),
    (pressured("PIDPressure"), "", ("node(s) had pid pressure",)),
], ids=["none", "memory-besteffort", "memory-burstable", "disk", "pid"])
def test_node_pressure_filter(node_info: NodeInfo, cpu: str, want: tuple[str, ...]) -> None:
    status = NodePressure().filter(pod_info(cpu=cpu), node_info)
    assert (() if status is None else status.reasons) == want
