"""The storage contract (controlplane/apiserver/storage.py) held by every backend.

Run against the in-memory store and a real etcd; any etcd v3 server (the Skiff store
included) must pass it through EtcdStore.
"""

from __future__ import annotations

import asyncio

import pytest

from controlplane.apiserver.storage import CompactedError, Compare, Delete, Put, Store, WatchBatch

pytestmark = pytest.mark.integration


async def next_batches(store: Store, prefix: str, start: int, count: int) -> list[WatchBatch]:
    out: list[WatchBatch] = []
    watch = store.watch(prefix, start_revision=start)
    try:
        async def run() -> None:
            async for batch in watch:
                if batch.events:
                    out.append(batch)
                if len(out) >= count:
                    return

        await asyncio.wait_for(run(), 10)
    finally:
        await watch.close()
    return out


async def test_txn_compare_and_current(store: Store) -> None:
    created = await store.txn([Compare("/c/a", 0)], [Put("/c/a", b"1")])
    assert created.succeeded
    kv = await store.get("/c/a")
    assert kv is not None and kv.mod_revision == created.revision == kv.create_revision
    lost = await store.txn([Compare("/c/a", 0), Compare("/c/b", 0)], [Put("/c/a", b"2")])
    assert not lost.succeeded and lost.current["/c/a"] == kv and lost.current["/c/b"] is None
    updated = await store.txn([Compare("/c/a", kv.mod_revision)], [Put("/c/a", b"3"), Put("/c/b", b"x")])
    assert updated.succeeded and updated.revision == kv.mod_revision + 1  # one revision for both puts
    stale = await store.txn([Compare("/c/a", kv.mod_revision)], [Delete("/c/a")])
    assert not stale.succeeded
    after = await store.get("/c/a")
    assert after is not None and after.value == b"3" and after.create_revision == kv.create_revision
    assert await store.revision() == updated.revision


async def test_range_pages_and_past_revisions(store: Store) -> None:
    first = 0
    for i in range(5):
        r = await store.txn([], [Put(f"/r/{i}", str(i).encode())])
        first = first or r.revision
    await store.txn([], [Delete("/r/0")])
    page = await store.range("/r/", limit=2)
    assert [kv.key for kv in page.kvs] == ["/r/1", "/r/2"] and page.more
    rest = await store.range("/r/", start=page.kvs[-1].key + "\0", revision=page.revision)
    assert [kv.key for kv in rest.kvs] == ["/r/3", "/r/4"] and not rest.more
    past = await store.range("/r/", revision=first)
    assert [kv.key for kv in past.kvs] == ["/r/0"]
    assert (await store.range("/other/")).kvs == []


async def test_watch_from_revision_in_order_with_prev_values(store: Store) -> None:
    base = (await store.txn([], [Put("/w/a", b"1")])).revision
    await store.txn([], [Put("/w/a", b"2"), Put("/w/b", b"1")])
    await store.txn([], [Delete("/w/a")])
    await store.txn([], [Put("/elsewhere", b"x")])
    batches = await next_batches(store, "/w/", base, 3)
    flat = [(b.revision, e.type, e.key, e.value, e.prev_value) for b in batches for e in b.events]
    assert flat == [
        (base, "PUT", "/w/a", b"1", None),
        (base + 1, "PUT", "/w/a", b"2", b"1"),
        (base + 1, "PUT", "/w/b", b"1", None),
        (base + 2, "DELETE", "/w/a", b"", b"2"),
    ]
    assert all(len({e.revision for e in b.events}) == 1 for b in batches)


async def test_live_watch_and_progress_notifications(store: Store) -> None:
    start = await store.revision()
    watch = store.watch("/live/", start_revision=start + 1)
    got: list[WatchBatch] = []

    async def run() -> None:
        async for batch in watch:
            got.append(batch)
            if got[0].events and any(not b.events for b in got[1:]):
                return

    task = asyncio.ensure_future(run())
    await asyncio.sleep(0.3)
    rev = (await store.txn([], [Put("/live/x", b"1")])).revision
    await asyncio.wait_for(task, 10)  # an idle watch hears progress (etcd: progress_notify interval)
    await watch.close()
    assert got[0].events[0].key == "/live/x"
    assert next(b for b in got if not b.events).revision >= rev


async def test_prefix_status(store: Store) -> None:
    first = (await store.txn([], [Put("/s/a", b"1"), Put("/s/b", b"1"), Put("/t/x", b"1")])).revision
    status = await store.prefix_status("/s/", modified_after=first)
    assert (status.count, status.modified) == (2, False) and status.revision >= first
    await store.txn([], [Put("/s/b", b"2")])
    assert (await store.prefix_status("/s/", modified_after=first)).modified
    await store.txn([], [Delete("/s/a")])
    status = await store.prefix_status("/s/", modified_after=status.revision + 1)
    assert (status.count, status.modified) == (1, False)


async def test_compaction(store: Store) -> None:
    old = (await store.txn([], [Put("/k/a", b"1")])).revision
    await store.txn([], [Put("/k/a", b"2")])
    now = await store.revision()
    await store.compact(now)
    with pytest.raises(CompactedError):
        await store.range("/k/", revision=old)
    with pytest.raises(CompactedError):
        await next_batches(store, "/k/", old, 1)
    assert (await store.get("/k/a")).value == b"2"  # type: ignore[union-attr]


async def test_leases_expire_keys(store: Store) -> None:
    lease = await store.grant_lease(1)
    await store.txn([], [Put("/lease/x", b"1", lease)])
    assert await store.get("/lease/x") is not None
    if store.describe() == "memory":
        store.clock = lambda: 10**12  # type: ignore[attr-defined]
    for _ in range(50):
        if await store.get("/lease/x") is None:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("a key with an expired lease is still there")
