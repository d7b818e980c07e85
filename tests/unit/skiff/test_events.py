"""Event recorder (shared by the controllers, the scheduler and the node agent): aggregation of
repeats, spam filter, bounded, conflicts."""

from __future__ import annotations

from controlplane.apiserver.inprocess import InProcessApi
from skiff.clock import FakeClock
from skiff.events import NORMAL, WARNING, EventRecorder
from skiffpb.api.v1 import types_pb2 as t


def pod(name: str) -> t.Pod:
    p = t.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, "default"
    p.spec.containers.add(name="c", image="img")
    return p


async def test_repeats_are_aggregated_into_one_event(api: InProcessApi) -> None:
    clock = FakeClock()
    rec = EventRecorder(api, "scheduler", host="h1", clock=clock)
    p = await api.create(pod("web-1"))
    rec.event(p, WARNING, "FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu.")
    await rec.flush()
    clock.advance(10)
    rec.event(p, WARNING, "FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu.")
    rec.event(p, WARNING, "FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu.")
    rec.event(p, NORMAL, "Scheduled", "Successfully assigned default/web-1 to n1")
    await rec.flush()
    events = {e.reason: e for e in api.objects(t.Event)}
    assert set(events) == {"FailedScheduling", "Scheduled"}
    failed = events["FailedScheduling"]
    assert failed.count == 3 and failed.type == "Warning"
    assert failed.last_timestamp.seconds - failed.first_timestamp.seconds == 10
    assert (failed.involved_object.kind, failed.involved_object.name, failed.involved_object.uid) == (
        "Pod", "web-1", p.metadata.uid)
    assert (failed.source.component, failed.source.host, failed.metadata.namespace) == ("scheduler", "h1", "default")
    assert api.count("create", "events") == 2


async def test_conflict_rereads_and_adds(api: InProcessApi) -> None:
    rec = EventRecorder(api, "c")
    p = await api.create(pod("a"))
    rec.event(p, NORMAL, "R", "m")
    await rec.flush()
    [ev] = api.objects(t.Event)
    ev.count = 7  # someone else bumped it: our cached copy is stale now
    await api.update(ev)
    rec.event(p, NORMAL, "R", "m")
    await rec.flush()
    [ev] = api.objects(t.Event)
    assert ev.count == 8


async def test_spam_filter_limits_events_per_object(api: InProcessApi) -> None:
    clock = FakeClock()
    rec = EventRecorder(api, "c", clock=clock, spam_burst=5, spam_refill_seconds=60)
    p = await api.create(pod("a"))
    for i in range(20):
        rec.event(p, NORMAL, "SuccessfulCreate", f"Created pod: p-{i}")
    await rec.flush()
    assert len(api.objects(t.Event)) == 5 and rec.dropped == 15
    clock.advance(60)
    rec.event(p, NORMAL, "SuccessfulCreate", "Created pod: late")
    await rec.flush()
    assert len(api.objects(t.Event)) == 6


async def test_pending_events_are_bounded(api: InProcessApi) -> None:
    rec = EventRecorder(api, "c", max_pending=3)
    for i in range(5):
        rec.event(await api.create(pod(f"p{i}")), NORMAL, "R", "m")
    assert rec.dropped == 2
    await rec.flush()
    assert len(api.objects(t.Event)) == 3


async def test_scoped_recorders_name_their_component(api: InProcessApi) -> None:
    rec = EventRecorder(api, "controller-manager")
    p = await api.create(pod("a"))
    rec.scoped("replicaset-controller").event(p, NORMAL, "R", "m")
    rec.scoped("deployment-controller").event(p, NORMAL, "R", "m")
    await rec.flush()
    assert sorted(e.source.component for e in api.objects(t.Event)) == ["deployment-controller",
                                                                        "replicaset-controller"]
