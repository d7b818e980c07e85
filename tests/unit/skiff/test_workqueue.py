"""WorkQueue: dedup, one worker per key, re-adds while processing, per-key backoff."""

from __future__ import annotations

import asyncio

import pytest

from skiff.workqueue import WorkQueue, run_workers


async def test_key_waiting_is_queued_once() -> None:
    q = WorkQueue()
    for key in ["a", "b", "a", "a"]:
        q.add(key)
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_readd_while_processing_is_delivered_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # changed again while being processed
    assert len(q) == 0, "must not be handed to a second worker while processing"
    q.done(key)  # type: ignore[arg-type]
    assert await q.get() == "a"


async def test_no_key_processed_by_two_workers_at_once() -> None:
    q = WorkQueue()
    active: set[str] = set()
    overlaps = 0
    seen = 0

    async def sync(key: str) -> None:
        nonlocal overlaps, seen
        if key in active:
            overlaps += 1
        active.add(key)
        await asyncio.sleep(0.001)
        q.add(key if seen < 30 else "done")  # keep re-adding the same key
        seen += 1
        active.discard(key)
        if seen >= 60:
            q.shutdown()

    q.add("x")
    await asyncio.wait_for(run_workers(q, sync, workers=4), 5)
    assert seen >= 60
    assert overlaps == 0


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.01), (1, 0.02), (3, 0.08), (20, 1.0)],
    ids=["first", "second", "fourth", "capped"],
)
async def test_backoff_doubles_per_key_and_is_capped(failures: int, expected: float) -> None:
    q = WorkQueue(base_delay=0.01, max_delay=1.0)
    for _ in range(failures):
        q.add_rate_limited("k")
    assert q.backoff("k") == pytest.approx(expected)
    assert q.backoff("other") == pytest.approx(0.01)
    q.forget("k")
    assert q.backoff("k") == pytest.approx(0.01)
    q.shutdown()


async def test_failed_sync_is_retried_then_forgotten() -> None:
    q = WorkQueue(base_delay=0.001)
    calls: list[str] = []

    async def sync(key: str) -> None:
        calls.append(key)
        if len(calls) < 3:
            raise RuntimeError("transient")
        q.shutdown()

    q.add("k")
    await asyncio.wait_for(run_workers(q, sync), 5)
    assert calls == ["k", "k", "k"]
    assert q.num_requeues("k") == 0


async def test_add_after_keeps_earliest() -> None:
    q = WorkQueue()
    q.add_after("k", 0.05)
    q.add_after("k", 10)
    got = await asyncio.wait_for(q.get(), 2)
    assert got == "k"
    q.shutdown()
    assert await q.get() is None
