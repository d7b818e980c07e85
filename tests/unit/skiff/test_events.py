"""Event recorder (shared by the controllers, the scheduler and the node agent): aggregation of
repeats, spam filter, bounded, conflicts."""

from __future__ import annotations

import time

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from skiff.clock import FakeClock
from skiff.events import NORMAL, WARNING, EventRecorder
from skiff.ratelimit import TokenBucket
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


@pytest.mark.parametrize(("qps", "burst", "pods", "max_pending", "written", "dropped", "at_least_s"), [
    (0.0, 100, 8, 4096, 8, 0, 0.0),  # no limit: every event written
    (40.0, 2, 8, 4096, 8, 0, 6 / 40),  # 2 at once, then one per 1/40 s
    (40.0, 2, 8, 4, 4, 4, 2 / 40),  # the pending bound drops the rest while writes wait
], ids=["unlimited", "limited", "limited-and-bounded"])
async def test_write_rate_limit(api: InProcessApi, qps: float, burst: int, pods: int, max_pending: int,
                                written: int, dropped: int, at_least_s: float) -> None:
    rec = EventRecorder(api, "default-scheduler", qps=qps, burst=burst, max_pending=max_pending)
    created = [await api.create(pod(f"p{i}")) for i in range(pods)]
    start = time.monotonic()
    for p in created:
        rec.event(p, NORMAL, "Scheduled", f"Successfully assigned default/{p.metadata.name} to n1")
    await rec.flush()
    elapsed = time.monotonic() - start
    assert api.count("create", "events") == written and rec.dropped == dropped
    assert elapsed >= at_least_s * 0.95  # never faster than the rate allows


@pytest.mark.parametrize(("bucket", "now", "ok", "wait_after"), [
    (TokenBucket.full(10.0, 0.0, burst=2.0), 0.0, True, 0.0),  # one token left
    (TokenBucket(10.0, 0.0, 0.0, 2.0), 0.0, False, 0.1),  # empty: next in 1/rate
    (TokenBucket(10.0, 0.0, 0.0, 2.0), 0.05, False, 0.05),  # half refilled
    (TokenBucket(10.0, 0.0, 0.0, 2.0), 0.1, True, 0.1),  # refilled one, took it
    (TokenBucket(0.0, 5.0, 0.0, 5.0), 0.0, False, float("inf")),  # rate 0: never
], ids=["full", "empty", "half", "refilled", "zero-rate"])
def test_token_bucket(bucket: TokenBucket, now: float, ok: bool, wait_after: float) -> None:
    taken, after = bucket.take(now)
    assert taken is ok
    assert after.wait() == pytest.approx(wait_after)


@pytest.mark.parametrize(("messages", "gap", "individual", "combined_count"), [
    (5, 0.0, 5, 0),
    (9, 0.0, 9, 0),
    (10, 0.0, 9, 1),
    (25, 0.0, 9, 16),
    (12, 601.0, 12, 0),
], ids=["few", "just-below", "tenth-combined", "scale-up", "spread-over-intervals"])
async def test_similar_events_are_combined(api: InProcessApi, messages: int, gap: float, individual: int,
                                           combined_count: int) -> None:
    """client-go's EventAggregator: distinct messages of one reason about one object become one
    combined Event from the 10th within 10 minutes on."""
    clock = FakeClock()
    rec = EventRecorder(api, "replicaset-controller", clock=clock, spam_burst=100)
    rs = t.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name, rs.metadata.namespace, rs.metadata.uid = "web", "default", "u1"
    for i in range(messages):
        rec.event(rs, NORMAL, "SuccessfulCreate", f"Created pod: web-{i}")
        clock.advance(gap)
    await rec.flush()
    events = api.objects(t.Event)
    combined = [e for e in events if e.message.startswith("(combined from similar events): ")]
    assert len(events) - len(combined) == individual
    assert sum(e.count for e in combined) == combined_count
    if combined_count:
        [ev] = combined
        assert ev.message == f"(combined from similar events): Created pod: web-{messages - 1}"
        assert api.count("create", "events") == individual + 1, "the combined repeats merge into one write"


@pytest.mark.parametrize("written_first", [True, False], ids=["after-its-events-were-written", "while-pending"])
async def test_forget_drops_only_that_objects_cache(api: InProcessApi, written_first: bool) -> None:
    """A forgotten object's written Events, similar messages and spam bucket go; its pending
    events are still written, then forgotten; another object's entries stay."""
    rec = EventRecorder(api, "c")
    gone, kept = await api.create(pod("gone")), await api.create(pod("kept"))
    for p in (gone, kept):
        rec.event(p, NORMAL, "Created", "Created container c")
    await rec.flush()
    only_kept = rec.cached()
    rec.event(gone, NORMAL, "Killing", "Stopping container c")
    if written_first:
        await rec.flush()
    rec.forget(gone.metadata.uid)
    await rec.flush()
    assert {e.reason for e in api.objects(t.Event) if e.involved_object.name == "gone"} == {"Created", "Killing"}
    assert rec.cached() == only_kept // 2
    rec.event(kept, NORMAL, "Created", "Created container c")
    await rec.flush()
    [ev] = [e for e in api.objects(t.Event) if e.involved_object.name == "kept"]
    assert ev.count == 2  # the kept object's Event is still updated, not created again
