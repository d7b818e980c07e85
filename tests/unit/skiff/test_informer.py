"""Informers over the in-process api-server: list+watch, resume, relist on compaction, selectors,
indexes."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from skiff import errors, kinds
from skiff.client import WatchEvent
from skiff.informer import Informer, InformerFactory, compact
from skiffpb.api.v1 import apiserver_pb2
from skiffpb.api.v1 import types_pb2 as t


def pod(name: str, *, ns: str = "default", node: str = "", **labels: str) -> t.Pod:
    p = kinds.new(kinds.by_kind("Pod"), name, ns)  # type: ignore[arg-type]
    assert isinstance(p, t.Pod)
    p.metadata.labels.update(labels)
    p.spec.containers.add(name="c", image="img")
    p.spec.node_name = node
    return p


async def eventually(check, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_informer_follows_changes_and_indexes(api: InProcessApi) -> None:
    await api.create(pod("a", node="n1"))
    informer = Informer(api, t.Pod, indexers={"node": lambda p: [p.spec.node_name]})
    events: list[tuple[str, str]] = []
    informer.add_handler(on_add=lambda o: events.append(("add", o.metadata.name)),
                         on_update=lambda o, n: events.append(("update", n.metadata.name)),
                         on_delete=lambda o: events.append(("delete", o.metadata.name)))
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced(2)
        await api.create(pod("b", node="n2"))
        got = await api.get(t.Pod, "a")
        got.metadata.labels["x"] = "y"
        await api.update(got)
        await api.delete(t.Pod, "b", grace_period_seconds=0)  # bound: no agent to confirm
        await eventually(lambda: len(events) >= 4)
        assert events == [("add", "a"), ("add", "b"), ("update", "a"), ("delete", "b")]
        assert [p.metadata.name for p in informer.by_index("node", "n1")] == ["a"]
        assert informer.by_index("node", "n2") == []
        assert informer.get("a", "default") is not None
    finally:
        task.cancel()


async def test_informer_relists_after_compaction_and_reports_missed_delete(api: InProcessApi) -> None:
    await api.create(pod("a"))
    await api.create(pod("b"))
    informer = Informer(api, t.Pod)
    deleted: list[str] = []
    informer.add_handler(on_delete=lambda o: deleted.append(o.metadata.name))
    await informer._relist()  # synced at the current revision, not watching
    await api.delete(t.Pod, "a")
    await api.create(pod("c"))
    await api.compact()  # the informer's resourceVersion is now too old
    task = asyncio.create_task(informer.run())
    try:
        await eventually(lambda: sorted(informer.keys()) == ["default/b", "default/c"])
        assert deleted == ["a"]
    finally:
        task.cancel()


async def test_watch_selector_transitions_look_like_add_and_delete(api: InProcessApi) -> None:
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for ev in api.watch(t.Pod, label_selector="app=web"):
            seen.append((ev.type, ev.obj.metadata.name))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    p = await api.create(pod("a", app="db"))
    p.metadata.labels["app"] = "web"
    p = await api.update(p)
    p.metadata.labels["app"] = "db"
    await api.update(p)
    await eventually(lambda: len(seen) == 2)
    task.cancel()
    assert seen == [("ADDED", "a"), ("DELETED", "a")]


async def test_factory_shares_informers(api: InProcessApi) -> None:
    factory = InformerFactory(api)
    assert factory.informer(t.Pod) is factory.informer(t.Pod)
    assert factory.informer(t.Pod) is not factory.informer(t.Pod, namespace="x")
    await factory.start()
    await factory.wait_synced(2)
    await factory.stop()


async def test_informer_survives_an_unexpected_error_and_relists(api: InProcessApi) -> None:
    await api.create(pod("a"))
    informer = Informer(api, t.Pod)
    calls = {"n": 0}
    real_watch = api.watch

    def flaky_watch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transport blew up")  # not a SkiffError
        return real_watch(*args, **kwargs)

    api.watch = flaky_watch  # type: ignore[method-assign]
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced(2)
        await api.create(pod("b"))
        await eventually(lambda: sorted(informer.keys()) == ["default/a", "default/b"])
        assert calls["n"] >= 2
        assert not task.done()
    finally:
        task.cancel()


async def test_settle_returns_once_informers_have_every_write(api: InProcessApi) -> None:
    informers = [Informer(api, t.Pod), Informer(api, t.Pod, label_selector="app=web")]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    try:
        for i in informers:
            await i.wait_synced(2)
        for n in range(30):
            await api.create(pod(f"p{n}", app="web"))
        await api.settle()  # no sleeping, no polling: every event has been handed over
        assert [len(i.keys()) for i in informers] == [30, 30]
    finally:
        for task in tasks:
            task.cancel()


class RecordingApi(InProcessApi):
    """The in-process api-server, recording each List's size and failing every watch with 410."""

    def __init__(self, *, gone: bool = False) -> None:
        super().__init__()
        self.pages: list[tuple[int, int, bool]] = []  # (limit asked, items returned, continued)
        self.gone = gone

    async def list(self, cls, **kw):  # type: ignore[no-untyped-def,override]
        out = await super().list(cls, **kw)
        self.pages.append((kw.get("limit", 0), len(out.items), bool(kw.get("continue_token"))))
        return out

    async def watch(self, cls, **kw):  # type: ignore[no-untyped-def,override]
        if self.gone:
            raise errors.GoneError("injected: too old resource version")
        async for ev in super().watch(cls, **kw):
            yield ev


@pytest.mark.parametrize(("objects", "page_size", "pages"), [(0, 5, 1), (5, 5, 1), (23, 5, 5), (23, 100, 1)],
                         ids=["empty", "one-full-page", "several-pages", "one-page"])
async def test_informer_lists_in_pages(objects: int, page_size: int, pages: int) -> None:
    async with RecordingApi() as api:
        for i in range(objects):
            await api.create(pod(f"p{i:02d}"))
        informer = Informer(api, t.Pod, page_size=page_size)
        task = asyncio.create_task(informer.run())
        try:
            await informer.wait_synced(5)
            assert len(informer.list()) == objects
            assert len(api.pages) == pages
            assert all(limit == page_size and n <= page_size for limit, n, _ in api.pages)
            assert [continued for _, _, continued in api.pages] == [False] + [True] * (pages - 1)
        finally:
            task.cancel()


async def test_relisting_after_gone_backs_off() -> None:
    async with RecordingApi(gone=True) as api:
        informer = Informer(api, t.Pod)
        task = asyncio.create_task(informer.run())
        await asyncio.sleep(1.3)
        task.cancel()
        # 0.2 + 0.4 + 0.8 s between relists (plus jitter): at most 4 lists, where a hot loop makes hundreds.
        assert 2 <= len(api.pages) <= 4, api.pages


class TooSlowApi(InProcessApi):
    """The in-process api-server whose every watch brings one bookmark and is then closed as too
    slow, as the api-server closes a watcher whose client lags (watchcache.Watcher.lag)."""

    def __init__(self) -> None:
        super().__init__()
        self.watched_at: list[float] = []

    async def watch(self, cls, **kw):  # type: ignore[no-untyped-def,override]
        self.watched_at.append(asyncio.get_running_loop().time())
        mark = t.Pod()
        mark.metadata.resource_version = kw["resource_version"]
        yield WatchEvent("BOOKMARK", mark)
        raise errors.TooManyRequestsError("injected: watch closed, too slow to read")


async def test_a_watch_that_delivered_before_failing_resumes_without_growing_backoff() -> None:
    """A lagging informer closed again and again must not idle for ever longer backoffs: each of
    those watches brought something, so none is the failing loop the backoff is for."""
    async with TooSlowApi() as api:
        informer = Informer(api, t.Pod)
        task = asyncio.create_task(informer.run())
        try:
            await eventually(lambda: len(api.watched_at) >= 5, timeout=10)
        finally:
            task.cancel()
        # 0.2 s (+-20%) between watches; a growing backoff (0.2 + 0.4 + 0.8 + 1.6 s) takes 2.4 s or more.
        assert api.watched_at[4] - api.watched_at[0] < 2.0, api.watched_at


def _label_only(p: t.Pod) -> t.Pod:
    out = t.Pod()
    out.metadata.CopyFrom(p.metadata)
    out.spec.node_name = p.spec.node_name
    return out


@pytest.mark.parametrize("listed_first", [True, False], ids=["from-the-list", "from-the-watch"])
async def test_factory_transform_applies_to_cache_and_handlers(api: InProcessApi, listed_first: bool) -> None:
    """A factory's transform shapes what is cached and what handlers see, whether the object came
    from the list or the watch; other kinds are untouched."""
    if listed_first:
        await api.create(pod("a", node="n1"))
    factory = InformerFactory(api, transforms={t.Pod: _label_only})
    informer = factory.informer(t.Pod)
    seen: list[t.Pod] = []
    informer.add_handler(on_add=seen.append, on_update=lambda old, new: seen.append(new))
    assert factory.informer(t.Namespace).transform is None
    await factory.start()
    try:
        await factory.wait_synced(2)
        if not listed_first:
            await api.create(pod("a", node="n1"))
        await eventually(lambda: informer.get("a", "default") is not None)
        cached = informer.get("a", "default")
        assert cached is not None and cached.spec.node_name == "n1" and not cached.spec.containers
        assert [len(p.spec.containers) for p in seen] == [0]
    finally:
        await factory.stop()


class BreakingWatch:
    """The api, whose pod watch breaks once right after the first event of a bound pod: in the
    middle of a revision when the pods were bound in one transaction."""

    def __init__(self, api: InProcessApi) -> None:
        self.api = api
        self.broken = False
        self.watched_from: list[str] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.api, name)

    async def watch(self, cls, **kwargs):  # type: ignore[no-untyped-def]
        self.watched_from.append(kwargs.get("resource_version", ""))
        async for ev in self.api.watch(cls, **kwargs):
            yield ev
            if not self.broken and ev.type == "MODIFIED" and ev.obj.spec.node_name:
                self.broken = True
                raise errors.UnavailableError("connection reset")


async def test_a_watch_broken_inside_a_revision_resumes_without_losing_or_repeating(api: InProcessApi) -> None:
    for name in ("a", "b", "c"):
        await api.create(pod(name))
    client = BreakingWatch(api)
    informer = Informer(client, t.Pod)  # type: ignore[arg-type]
    updates: list[str] = []
    informer.add_handler(on_update=lambda old, new: updates.append(new.metadata.name))
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced(2)
        await eventually(lambda: len(client.watched_from) == 1)
        pods = [await api.get(t.Pod, name) for name in ("a", "b", "c")]
        outcomes = await api.bind_batch([t.Binding(metadata=t.ObjectMeta(name=p.metadata.name, namespace="default",
                                                                         uid=p.metadata.uid),
                                                   target=t.ObjectReference(kind="Node", name="n1")) for p in pods])
        assert outcomes == [None, None, None]
        shared = (await api.get(t.Pod, "a")).metadata.resource_version
        assert {(await api.get(t.Pod, n)).metadata.resource_version for n in ("b", "c")} == {shared}
        await eventually(lambda: all(informer.get(n, "default").spec.node_name == "n1"  # type: ignore[union-attr]
                                     for n in ("a", "b", "c")), timeout=5)
        assert client.broken and client.watched_from[1] == str(int(shared) - 1)
        assert sorted(updates) == ["a", "b", "c"]  # each change once: a not again on the replay
    finally:
        task.cancel()


def _running_pod() -> t.Pod:
    p = pod("web-1", node="n1", app="web")
    p.metadata.annotations["note"] = "kept"
    p.metadata.managed_fields.add(manager="kubectl", operation="Apply")
    p.metadata.owner_references.add(kind="ReplicaSet", name="web", uid="u1", controller=True)
    p.spec.volumes.add(name="data").persistent_volume_claim.claim_name = "data"
    p.status.phase, p.status.pod_ip = "Running", "10.0.0.5"
    p.status.conditions.add(type="Ready", status="True")
    p.status.container_statuses.add(name="c", restart_count=2).state.terminated.exit_code = 1
    return p


def _listed(obj: t.Pod) -> t.Pod:
    """`obj` as a List page hands it out: a part of the page's message."""
    page = apiserver_pb2.ListResponse()
    page.items.add().pod.CopyFrom(obj)
    return page.items[0].pod


def _watched(obj: t.Pod) -> t.Pod:
    """`obj` as a watch event hands it out: decoded from the wire with its event."""
    event = apiserver_pb2.WatchEvent(type="ADDED")
    event.object.pod.CopyFrom(obj)
    return apiserver_pb2.WatchEvent.FromString(event.SerializeToString()).object.pod


@pytest.mark.parametrize("obj", [
    pod("bare"), _running_pod(), _listed(_running_pod()), _watched(_running_pod()),
], ids=["bare-pod", "running-pod", "from-a-list-page", "from-a-watch-event"])
def test_compact_keeps_every_field_in_a_message_of_its_own(obj: t.Pod) -> None:
    out = compact(obj)
    assert type(out) is type(obj) and out is not obj
    assert out == obj and out.SerializeToString(deterministic=True) == obj.SerializeToString(deterministic=True)
    out.metadata.labels["changed"] = "yes"
    assert "changed" not in obj.metadata.labels  # a copy: the cached object is not the decoded one
