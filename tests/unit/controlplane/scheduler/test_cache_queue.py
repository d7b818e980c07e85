"""Scheduler cache (assume/confirm/forget) and scheduling queue (order, backoff, moves)."""

from __future__ import annotations

import pytest

from controlplane.scheduler.cache import SchedulerCache
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.queue import SchedulingQueue
from skiff.clock import FakeClock
from tests.unit.controlplane.harness import node, pod


def bound(name: str, node_name: str, **kw: object) -> PodInfo:
    p = pod(name, node=node_name, **kw)  # type: ignore[arg-type]
    p.metadata.uid = f"uid-{name}"
    return PodInfo.of(p)


def test_assume_then_confirm_counts_once() -> None:
    cache = SchedulerCache()
    cache.add_node(node("n1", cpu="2"))
    p = pod("a", cpu="500m")
    p.metadata.uid = "uid-a"
    cache.assume(PodInfo.of(p), "n1")
    assert cache.nodes["n1"].req_cpu == 500 and cache.is_assumed("default/a")
    p.spec.node_name = "n1"
    cache.add_pod(p)  # the watch shows it bound where we put it
    assert cache.nodes["n1"].req_cpu == 500 and not cache.is_assumed("default/a")
    cache.forget("default/a")  # confirmed pods are not forgotten
    assert cache.nodes["n1"].req_cpu == 500
    p.status.phase = "Succeeded"
    cache.add_pod(p)
    assert cache.nodes["n1"].req_cpu == 0 and cache.pod_count == 0


def test_forget_frees_the_node() -> None:
    cache = SchedulerCache()
    cache.add_node(node("n1"))
    p = pod("a", cpu="1", host_ports=(80,))
    p.metadata.uid = "u"
    cache.assume(PodInfo.of(p), "n1")
    cache.forget("default/a")
    ni = cache.nodes["n1"]
    assert (ni.req_cpu, ni.pod_count, ni.ports) == (0, 0, {})


@pytest.mark.parametrize(("forget_uid", "still_assumed"), [
    ("uid-old", True),  # the failed bind was the deleted pod's: the new pod keeps its node
    ("uid-new", False),
    ("", False),  # no uid: whatever is assumed under the name
], ids=["other-incarnation", "same-incarnation", "any"])
def test_forget_leaves_a_recreated_pods_assumption(forget_uid: str, still_assumed: bool) -> None:
    cache = SchedulerCache()
    cache.add_node(node("n1", cpu="2"))
    old = pod("a", cpu="1")
    old.metadata.uid = "uid-old"
    cache.assume(PodInfo.of(old), "n1")
    cache.remove_pod(old)  # deleted while its bind was in flight
    new = pod("a", cpu="1")
    new.metadata.uid = "uid-new"
    cache.assume(PodInfo.of(new), "n1")
    cache.forget("default/a", forget_uid)
    assert cache.is_assumed("default/a") is still_assumed
    assert cache.nodes["n1"].req_cpu == (1000 if still_assumed else 0)


def test_pod_on_unknown_node_counts_when_the_node_appears() -> None:
    cache = SchedulerCache()
    p = pod("a", node="late", cpu="1")
    p.metadata.uid = "u"
    cache.add_pod(p)
    assert cache.node_list == []
    cache.add_node(node("late", cpu="2"))
    assert [n.name for n in cache.node_list] == ["late"] and cache.nodes["late"].req_cpu == 1000
    cache.remove_node("late")
    assert cache.node_list == [] and "late" in cache.nodes  # its pod still points there
    cache.remove_pod(p)
    assert "late" not in cache.nodes


def test_queue_orders_by_creation_and_skips_deleted() -> None:
    async def run() -> list[str]:
        q = SchedulingQueue(FakeClock())
        for name, created in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("gone", 0.5)):
            q.add(pod(name, created=created))
        q.delete("default/gone")
        out = []
        for _ in range(3):
            qp = await q.pop()
            assert qp is not None
            out.append(qp.pod.metadata.name)
            q.done(qp.key)
        return out

    import asyncio
    assert asyncio.run(run()) == ["a", "b", "c"]


async def test_unschedulable_waits_for_a_change_and_backs_off() -> None:
    clock = FakeClock()
    q = SchedulingQueue(clock, initial_backoff=1.0, max_backoff=10.0)
    q.add(pod("a"))
    qp = await q.pop()
    assert qp is not None
    q.unschedulable(qp)
    assert q.where("default/a") == "unschedulable"
    q.flush()
    assert q.where("default/a") == "unschedulable"
    clock.advance(0.5)
    q.move_all_to_active()  # a node was added, but the 1 s backoff has not passed
    assert q.where("default/a") == "backoff"
    clock.advance(0.6)
    q.flush()
    assert q.where("default/a") == "active"
    qp = await q.pop()
    assert qp is not None and qp.attempts == 2
    assert [q.backoff_duration(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


async def test_a_change_during_the_attempt_is_not_lost() -> None:
    clock = FakeClock()
    q = SchedulingQueue(clock)
    q.add(pod("a"))
    qp = await q.pop()
    assert qp is not None
    q.move_all_to_active()  # e.g. a node came up while we were deciding
    q.unschedulable(qp)
    assert q.where("default/a") == "backoff", "not parked until the next change"


async def test_long_unschedulable_pods_are_retried_anyway() -> None:
    clock = FakeClock()
    q = SchedulingQueue(clock, max_unschedulable=60)
    q.add(pod("a"))
    qp = await q.pop()
    assert qp is not None
    q.unschedulable(qp)
    clock.advance(61)
    q.flush()
    assert q.where("default/a") == "active"


def test_pod_info_holds_no_part_of_its_pod() -> None:
    # A sub-message keeps its whole pod alive: the cache swaps PodInfo.pod for newer copies, and
    # the first copy (the whole pending pod) must not stay behind through the tolerations.
    a, b = pod("a"), pod("b")
    for p in (a, b):
        p.spec.tolerations.add(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute",
                               toleration_seconds=300)
    info_a, info_b = PodInfo.of(a), PodInfo.of(b)
    a.spec.tolerations[0].key = "changed-in-the-pod"
    assert [tol.key for tol in info_a.tolerations] == ["node.kubernetes.io/not-ready"]
    assert info_a.tolerations is info_b.tolerations  # equal tolerations are shared
    assert info_a.signature is info_b.signature
    c = pod("c")
    c.spec.tolerations.add(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute")
    assert [tol.HasField("toleration_seconds") for tol in PodInfo.of(c).tolerations] == [False]
