"""The api-server's bounds: in-flight limits on both front ends with a retry hint the client
honours, watches per client, watcher buffers bounded in bytes, and a watch cache that is
rebuilt after an unexpected failure instead of freezing.

The front ends are real (gRPC and aiohttp on loopback) over the real registry and one shared
Limiter; a slot is held by the test itself, so "the server is full" is exact, not a race.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest

from controlplane.apiserver import limits
from controlplane.apiserver.allocator import Allocator
from controlplane.apiserver.authn import Authenticator
from controlplane.apiserver.filters import make_filter
from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.inprocess import DEFAULT_OPTIONS
from controlplane.apiserver.limits import Limiter, Limits
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.rest import http
from controlplane.apiserver.server import grpc_server
from controlplane.apiserver.storage import WatchBatch
from controlplane.apiserver.watchcache import CachedEvent, WatchCache, Watcher, chunk_bytes
from skiff import errors, identity, kinds
from skiff.client import Client
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import apiserver_pb2_grpc as api_grpc
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import pod

HINT = 0.6


@pytest.mark.parametrize(("verb", "cls"), [
    ("get", limits.READ_ONLY), ("list", limits.READ_ONLY), ("version", limits.READ_ONLY),
    ("create", limits.MUTATING), ("update", limits.MUTATING), ("patch", limits.MUTATING),
    ("delete", limits.MUTATING), ("bind", limits.MUTATING), ("watch", limits.WATCH),
    ("logs", limits.LONG_RUNNING), ("exec", limits.LONG_RUNNING), ("frobnicate", limits.MUTATING),
], ids=lambda v: str(v))
def test_verb_class(verb: str, cls: str) -> None:
    assert limits.verb_class(verb) == cls


@pytest.mark.parametrize(("method", "verb"), [
    ("/skiff.api.v1.ApiServer/List", "list"), ("/skiff.api.v1.ApiServer/UpdateStatus", "update"),
    ("/skiff.api.v1.ApiServer/Watch", "watch"), ("/skiff.api.v1.ApiServer/Exec", "exec"),
], ids=["list", "update-status", "watch", "exec"])
def test_grpc_verb(method: str, verb: str) -> None:
    assert limits.grpc_verb(method) == verb


@pytest.mark.parametrize(("address", "key"), [
    ("ipv4:10.0.0.2:51234", "u@10.0.0.2"), ("ipv6:[::1]:5000", "u@[::1]"), ("10.0.0.2", "u@10.0.0.2"),
    ("unix:/run/x.sock", "u@unix:/run/x.sock"),
], ids=["ipv4-peer", "ipv6-peer", "http-remote", "unix"])
def test_client_key_drops_the_port(address: str, key: str) -> None:
    assert limits.client_key(identity.UserInfo("u"), address) == key


@dataclass(frozen=True)
class AdmitCase:
    id: str
    limits: Limits
    held: tuple[str, ...]  # verbs already in flight (by client "a")
    verb: str
    client: str
    admitted: bool


ADMIT = [
    AdmitCase("read-under-limit", Limits(max_requests_inflight=2), ("list",), "get", "a", True),
    AdmitCase("read-at-limit", Limits(max_requests_inflight=2), ("list", "get"), "get", "a", False),
    AdmitCase("writes-do-not-take-read-slots", Limits(max_requests_inflight=1), ("create",), "list", "a", True),
    AdmitCase("mutating-at-limit", Limits(max_mutating_requests_inflight=1), ("delete",), "create", "b", False),
    AdmitCase("reads-do-not-take-write-slots", Limits(max_mutating_requests_inflight=1), ("list",), "create",
              "a", True),
    AdmitCase("watches-are-not-in-flight", Limits(max_requests_inflight=1), ("watch", "watch"), "get", "a", True),
    AdmitCase("watches-per-client", Limits(max_watches_per_client=2), ("watch", "watch"), "watch", "a", False),
    AdmitCase("another-client-watches", Limits(max_watches_per_client=2), ("watch", "watch"), "watch", "b", True),
    AdmitCase("zero-is-unlimited", Limits(max_requests_inflight=0), ("list",) * 50, "list", "a", True),
    AdmitCase("logs-exempt", Limits(max_requests_inflight=1, max_mutating_requests_inflight=1),
              ("list", "create"), "logs", "a", True),
]


@pytest.mark.parametrize("case", ADMIT, ids=lambda c: c.id)
def test_admit(case: AdmitCase) -> None:
    limiter = Limiter(case.limits)
    held = [limiter.admit(v, "a") for v in case.held]
    for cm in held:
        cm.__enter__()
    try:
        with limiter.admit(case.verb, case.client):
            admitted = True
    except errors.TooManyRequestsError as exc:
        admitted = False
        assert exc.retry_after == case.limits.retry_after
        assert "--max-" in exc.message  # names the flag to raise
    assert admitted == case.admitted
    for cm in held:
        cm.__exit__(None, None, None)
    assert limiter.inflight == {limits.READ_ONLY: 0, limits.MUTATING: 0} and limiter.watches == {}


def test_a_slot_is_released_when_the_request_fails() -> None:
    limiter = Limiter(Limits(max_requests_inflight=1))
    with pytest.raises(ValueError), limiter.admit("list", "a"):
        raise ValueError("boom")
    with limiter.admit("list", "a"):
        pass
    assert limiter.inflight[limits.READ_ONLY] == 0


# ---------------------------------------------------------------------- the front ends


@dataclass
class Servers:
    limiter: Limiter
    grpc_target: str
    http_base: str


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    registry = Registry(MemoryStore(), allocator=Allocator(), options=DEFAULT_OPTIONS)
    await registry.start()
    forwarder = Forwarder(registry)
    limiter = Limiter(Limits(max_requests_inflight=1, max_mutating_requests_inflight=1, max_watches_per_client=2,
                             retry_after=HINT))
    # Insecure authentication (everyone the admin) and no authorizer: the limiter is what is tested.
    server = grpc_server(registry, forwarder, Authenticator(registry, insecure=True), limiter=limiter)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    runner, http_port = await http.start(registry, forwarder, "127.0.0.1:0", limiter=limiter)
    try:
        yield Servers(limiter, f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}")
    finally:
        await runner.cleanup()
        await server.stop(None)
        await registry.stop()
        await forwarder.close()


async def test_grpc_refusal_is_resource_exhausted_with_a_retry_hint(servers: Servers) -> None:
    async with grpc.aio.insecure_channel(servers.grpc_target) as channel:
        stub = api_grpc.ApiServerStub(channel)
        with servers.limiter.admit("list", "someone"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.List(api.ListRequest(resource="pods"))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max-requests-inflight" in (info.value.details() or "")
            assert errors.retry_after(info.value) == HINT
            await stub.Create(api.CreateRequest(object=kinds.wrap(pod("w"))))  # writes have their own slots
        await stub.List(api.ListRequest(resource="pods"))  # the slot is free again


async def test_http_refusal_is_429_with_retry_after(servers: Servers) -> None:
    async with aiohttp.ClientSession() as session:
        with servers.limiter.admit("create", "someone"):
            async with session.post(f"{servers.http_base}/api/v1/namespaces/default/configmaps",
                                    json={"metadata": {"name": "c"}}) as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "1"  # whole seconds, rounded up
                body = await r.json()
            assert body["reason"] == "TooManyRequests" and body["details"]["retryAfterSeconds"] == 1
            async with session.get(f"{servers.http_base}/api/v1/namespaces/default/configmaps") as r:
                assert r.status == 200  # reads have their own slots
        async with session.post(f"{servers.http_base}/api/v1/namespaces/default/configmaps",
                                json={"metadata": {"name": "c"}}) as r:
            assert r.status == 201


async def test_client_waits_out_the_hint_and_succeeds(servers: Servers) -> None:
    async with Client(servers.grpc_target) as client:
        slot = servers.limiter.admit("list", "someone")
        slot.__enter__()
        asyncio.get_running_loop().call_later(0.2, slot.__exit__, None, None, None)
        started = time.monotonic()
        await client.list(t.Pod)
        # The client's own backoff starts at 50 ms; only the hint explains waiting this long.
        assert time.monotonic() - started >= HINT
        assert servers.limiter.refused[limits.READ_ONLY] >= 1


async def test_watches_per_client_are_bounded(servers: Servers) -> None:
    async with Client(servers.grpc_target) as client:
        streams = [client.watch(t.Pod) for _ in range(2)]
        tasks = [asyncio.ensure_future(anext(s)) for s in streams]
        await asyncio.sleep(0.3)
        assert sum(servers.limiter.watches.values()) == 2
        with pytest.raises(errors.TooManyRequestsError, match="max-watches-per-client"):
            await anext(client.watch(t.Pod))
        for task in tasks:  # the cancellation ends each stream (its call is cancelled)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(50):
            if not servers.limiter.watches:
                break
            await asyncio.sleep(0.05)
        assert servers.limiter.watches == {}


# ---------------------------------------------------------------------- watcher buffers


def _event(name: str, revision: int, size: int) -> CachedEvent:
    p = pod(name)
    p.metadata.annotations["pad"] = "x" * size
    p.metadata.resource_version = str(revision)
    return CachedEvent("ADDED", f"/registry/pods/default/{name}", p, None, revision)


@dataclass(frozen=True)
class BufferCase:
    id: str
    limit: int
    max_bytes: int
    sizes: tuple[int, ...]  # padding of each event offered, in order
    closed: bool


BUFFERS = [
    BufferCase("under-both-bounds", 10, 10_000, (100, 100, 100), False),
    BufferCase("over-the-event-bound", 2, 10_000_000, (10, 10, 10), True),
    BufferCase("over-the-byte-bound", 1000, 3_000, (1_000, 1_000, 1_000, 1_000), True),
    BufferCase("one-large-event-to-an-empty-queue", 1000, 1_000, (50_000,), False),
    BufferCase("a-large-event-behind-others", 1000, 1_000, (10, 50_000), True),
]


@pytest.mark.parametrize("case", BUFFERS, ids=lambda c: c.id)
def test_watcher_buffer_bounds(case: BufferCase) -> None:
    kind = kinds.by_kind("Pod")
    assert kind is not None
    w = Watcher(kind, make_filter(kind), 0, limit=case.limit, max_bytes=case.max_bytes, allow_bookmarks=False)
    for i, size in enumerate(case.sizes, start=1):
        w.offer(_event(f"p{i}", i, size))
    assert (w.error is not None) == case.closed
    if case.closed:
        assert isinstance(w.error, errors.TooManyRequestsError)
        assert "too slow" in w.error.message and "resourceVersion" in w.error.message
        assert w.queued_bytes == 0 and not w.queue
    else:
        assert w.queued_bytes == sum(len(d) for d in w.queue)


async def test_reading_frees_the_byte_budget() -> None:
    kind = kinds.by_kind("Pod")
    assert kind is not None
    w = Watcher(kind, make_filter(kind), 0, limit=1000, max_bytes=3_000, allow_bookmarks=False)
    for i in range(1, 20):
        w.offer(_event(f"p{i}", i, 1_000))
        assert await w.next() is not None  # a reader keeping up is never cut off
    assert w.error is None and w.queued_bytes == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class LagCase:
    id: str
    # (seconds, step): "offer" an event; "take" the next event or "take-batch" everything queued
    # (the stream asking again means it wrote what it was handed); "initial-done": the initial
    # objects are out (`start_lag_clock`).
    steps: tuple[tuple[float, str], ...]
    max_lag: float | None
    closed: bool


KEEPING_UP = tuple(step for i in range(30) for step in ((float(i), "offer"), (i + 0.5, "take")))
LAGS = [
    LagCase("a-reader-keeping-up", KEEPING_UP, 2.0, False),
    LagCase("an-event-queued-past-the-bound", ((0, "offer"), (3, "offer")), 2.0, True),
    LagCase("an-event-queued-within-the-bound", ((0, "offer"), (1.5, "offer")), 2.0, False),
    LagCase("an-event-handed-out-but-not-written", ((0, "offer"), (0.1, "take"), (3, "offer")), 2.0, True),
    LagCase("written-once-the-stream-asks-again",
            ((0, "offer"), (0.1, "take"), (1, "offer"), (1.1, "take"), (2.5, "offer")), 2.0, False),
    LagCase("a-batch-waits-from-its-oldest-event",
            ((0, "offer"), (1, "offer"), (1.5, "take-batch"), (2.5, "offer")), 2.0, True),
    LagCase("queued-while-the-initial-objects-went-out",
            ((0, "offer"), (5, "initial-done"), (6, "offer")), 2.0, False),
    LagCase("no-bound", ((0, "offer"), (100, "offer")), None, False),
]


@pytest.mark.parametrize("case", LAGS, ids=lambda c: c.id)
async def test_watcher_lag_bound(case: LagCase) -> None:
    """A client that has not taken an event within the bound is closed as too slow when the next
    event comes (as Kubernetes' cacher closes a watcher that cannot take an event in time)."""
    kind = kinds.by_kind("Pod")
    assert kind is not None
    clock = FakeClock()
    w = Watcher(kind, make_filter(kind), 0, limit=1000, max_lag=case.max_lag, clock=clock, allow_bookmarks=False)
    revision = 0
    for at, step in case.steps:
        clock.now = at
        if step == "offer":
            revision += 1
            w.offer(_event(f"p{revision}", revision, 10))
        elif step == "take":
            assert await w.next() is not None
        elif step == "take-batch":
            assert await w.next_batch() is not None
        else:
            w.start_lag_clock()
    assert (w.error is not None) == case.closed
    if case.closed:
        assert isinstance(w.error, errors.TooManyRequestsError)
        assert "too slow" in w.error.message and "resourceVersion" in w.error.message
        assert f"bound of {case.max_lag:g}s" in w.error.message


def test_watchers_closed_as_too_slow_are_counted() -> None:
    """apiserver_terminated_watchers_total counts watchers a bound closed, not watches that ended."""
    kind = kinds.by_kind("Pod")
    assert kind is not None
    clock = FakeClock()
    cache = WatchCache(MemoryStore(), kind, watcher_limit=2, watcher_max_lag=2.0, clock=clock)
    over_the_event_bound, _ = cache.register(make_filter(kind), start_revision=None, allow_bookmarks=False)
    lagging, _ = cache.register(make_filter(kind), start_revision=None, allow_bookmarks=False)
    ended, _ = cache.register(make_filter(kind), start_revision=None, allow_bookmarks=False)
    for i in (1, 2, 3):
        over_the_event_bound.offer(_event(f"p{i}", i, 10))
    lagging.offer(_event("p1", 1, 10))
    clock.now = 3
    lagging.offer(_event("p2", 2, 10))
    ended.close()
    assert over_the_event_bound.too_slow and lagging.too_slow and not ended.too_slow
    assert cache.terminated_watchers == 2 and cache.watcher_count == 0


# (revisions offered, events read before the watcher fails, names the client still gets)
FAILING_MID_REVISION = [
    pytest.param((5, 5, 5, 6), 1, ["p2", "p3"], id="the-rest-of-the-revision-being-sent"),
    pytest.param((5, 6, 6), 1, [], id="nothing-of-the-next-revision"),
    pytest.param((5, 5, 6), 2, [], id="the-revision-complete"),
    pytest.param((5, 5), 0, [], id="nothing-read-nothing-kept"),
]


@pytest.mark.parametrize("revisions,read,rest", FAILING_MID_REVISION)
async def test_a_failing_watcher_first_completes_the_revision_being_sent(
        revisions: tuple[int, ...], read: int, rest: list[str]) -> None:
    """Objects written in one transaction share a revision, and a client resumes from the last
    resourceVersion it got: a watch ended between two events of one revision would lose the
    second for good."""
    kind = kinds.by_kind("Pod")
    assert kind is not None
    w = Watcher(kind, make_filter(kind), 0, limit=1000, allow_bookmarks=False)
    for i, revision in enumerate(revisions, start=1):
        w.offer(_event(f"p{i}", revision, 10))
    for _ in range(read):
        assert await w.next() is not None
    w.fail(errors.TooManyRequestsError("too slow"))
    got = []
    with pytest.raises(errors.TooManyRequestsError):
        while True:
            data = await w.next()
            assert data is not None
            got.append(api.WatchEvent.FromString(data).object.pod.metadata.name)
    assert got == rest
    assert w.queued_bytes == 0


# (padding of each event queued, the byte bound of a batch, the events of each batch handed out)
BATCHES = [
    pytest.param((10, 10, 10), 10_000, [["p1", "p2", "p3"]], id="everything-queued-in-one"),
    pytest.param((1_000, 1_000, 1_000), 2_500, [["p1", "p2"], ["p3"]], id="cut-at-the-byte-bound"),
    pytest.param((5_000, 10), 1_000, [["p1"], ["p2"]], id="a-large-event-alone"),
    pytest.param((10,), 10_000, [["p1"]], id="one-event"),
]


@pytest.mark.parametrize("sizes,max_bytes,batches", BATCHES)
async def test_next_batch_hands_out_what_is_queued_in_order(sizes: tuple[int, ...], max_bytes: int,
                                                            batches: list[list[str]]) -> None:
    kind = kinds.by_kind("Pod")
    assert kind is not None
    w = Watcher(kind, make_filter(kind), 0, limit=1000, allow_bookmarks=False)
    for i, size in enumerate(sizes, start=1):
        w.offer(_event(f"p{i}", i, size))
    got = []
    for _ in batches:
        batch = await w.next_batch(max_bytes)
        assert batch is not None
        got.append([api.WatchEvent.FromString(d).object.pod.metadata.name for d in batch])
    assert got == batches
    assert not w.queue and w.queued_bytes == 0
    w.expire()
    assert await w.next_batch(max_bytes) is None


async def test_a_failing_watcher_keeps_the_rest_of_a_revision_a_batch_cut() -> None:
    """A batch cut by its byte bound inside a revision: that revision's other events still come
    before the error, as after `next`."""
    kind = kinds.by_kind("Pod")
    assert kind is not None
    w = Watcher(kind, make_filter(kind), 0, limit=1000, allow_bookmarks=False)
    for i, revision in enumerate((5, 5, 5, 6), start=1):
        w.offer(_event(f"p{i}", revision, 1_000))
    first = await w.next_batch(2_500)
    assert first is not None and len(first) == 2
    w.fail(errors.TooManyRequestsError("too slow"))
    rest = await w.next_batch(100_000)
    assert rest is not None
    assert [api.WatchEvent.FromString(d).object.pod.metadata.name for d in rest] == ["p3"]
    with pytest.raises(errors.TooManyRequestsError):
        await w.next_batch(100_000)


@pytest.mark.parametrize("sizes,max_bytes,runs", [
    ((), 10, []),
    ((3, 3, 3), 10, [[3, 3, 3]]),
    ((4, 4, 4), 10, [[4, 4], [4]]),
    ((20, 1, 1), 10, [[20], [1, 1]]),
    ((1, 20, 1), 10, [[1], [20], [1]]),
], ids=["nothing", "all-in-one", "cut", "large-first", "large-between"])
def test_chunk_bytes(sizes: tuple[int, ...], max_bytes: int, runs: list[list[int]]) -> None:
    items = [bytes(n) for n in sizes]
    assert [[len(x) for x in run] for run in chunk_bytes(items, max_bytes)] == runs


# (revisions of the events in the ring, the resourceVersion a client resumes from, names it gets)
RESUMING_AT_A_SHARED_REVISION = [
    pytest.param((5, 5, 6), 5, ["p1", "p2", "p3"], id="shared-revision-replayed"),
    pytest.param((4, 5, 6), 5, ["p3"], id="single-event-revision-not-replayed"),
    pytest.param((5, 6, 6), 5, ["p2", "p3"], id="later-shared-revision-as-usual"),
    pytest.param((5, 5), 6, [], id="nothing-after"),
]


@pytest.mark.parametrize("revisions,resume,names", RESUMING_AT_A_SHARED_REVISION)
async def test_a_watch_resumed_at_a_shared_revision_replays_it(revisions: tuple[int, ...], resume: int,
                                                              names: list[str]) -> None:
    """A client-go reflector resumes from the last resourceVersion it got; if its connection broke
    between two events of one revision (pods bound in one transaction), the cache sends that
    revision again so the one it missed is not lost."""
    kind = kinds.by_kind("Pod")
    assert kind is not None
    cache = WatchCache(MemoryStore(), kind)
    for i, revision in enumerate(revisions, start=1):
        cache.events.append(_event(f"p{i}", revision, 10))
    cache.revision = max(revisions)
    w, _ = cache.register(make_filter(kind), start_revision=resume, allow_bookmarks=False)
    got = []
    while w.queue:
        data = await w.next()
        assert data is not None
        got.append(api.WatchEvent.FromString(data).object.pod.metadata.name)
    assert got == names


# ---------------------------------------------------------------------- a failing watch cache


class FailingWatchStore(MemoryStore):
    """The in-memory store whose next `failures` watches break with an unexpected error."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def watch(self, prefix: str, *, start_revision: int) -> Any:
        if self.failures > 0:
            self.failures -= 1
            return _BrokenWatch()
        return super().watch(prefix, start_revision=start_revision)


class _BrokenWatch:
    async def __aiter__(self) -> AsyncIterator[WatchBatch]:
        raise RuntimeError("injected: the watch broke")
        yield  # pragma: no cover

    async def close(self) -> None:
        return None


async def test_a_failing_watch_cache_is_rebuilt_not_frozen() -> None:
    store = FailingWatchStore()
    registry = Registry(store, allocator=Allocator(), options=DEFAULT_OPTIONS)
    await registry.start()
    try:
        cache = registry.caches["pods"]
        cache_task = cache._tasks[0]
        kind = kinds.by_kind("Pod")
        assert kind is not None
        w, _ = cache.register(make_filter(kind), start_revision=None, allow_bookmarks=True)
        store.failures = 1
        for sw in list(store._watches):  # the cache's store watch ends; its next one breaks
            if sw.prefix == cache.prefix:
                sw.fail()
        async with asyncio.timeout(5):
            with pytest.raises(errors.UnavailableError, match=r"failed .*RuntimeError.*rebuilt"):
                while True:
                    await w.next()
        async with asyncio.timeout(10):
            await cache.ready.wait()
        await registry.create(pod("after"))
        async with asyncio.timeout(5):
            while "/registry/pods/default/after" not in cache.objects:
                await asyncio.sleep(0.05)
        assert not cache_task.done()  # the same loop, still following the store
    finally:
        await registry.stop()


async def test_a_watch_cache_whose_loop_ends_is_fatal() -> None:
    from skiff.guard import fatal_handler

    reasons: list[str] = []
    kind = kinds.by_kind("ConfigMap")
    assert kind is not None
    cache = WatchCache(MemoryStore(), kind)

    async def ends() -> None:
        return None

    cache.run = ends  # type: ignore[method-assign]
    with fatal_handler(reasons.append):
        cache.start()
        await asyncio.sleep(0.05)
        await cache.stop()
    assert reasons and "watchcache-configmaps" in reasons[0]
