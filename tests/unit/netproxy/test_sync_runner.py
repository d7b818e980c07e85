"""The bounded-frequency runner: the pure policy as a table, and the loop with a fake sync."""

from __future__ import annotations

import asyncio
import math

import pytest

from netproxy.sync import RunnerState, SyncRunner, next_step

S = RunnerState
STEPS = [
    # (id, state, now, expected (kind, wait))
    ("first-sync-is-full-at-once", S(), 0.0, ("full", 0.0)),
    ("idle-waits-for-resync", S(last_sync=10, last_full=10), 12.0, ("wait", 28.0)),
    ("request-after-min-interval-runs", S(last_sync=10, last_full=10, pending=True), 11.5, ("sync", 0.0)),
    ("request-too-soon-waits", S(last_sync=10, last_full=10, pending=True), 10.25, ("wait", 0.75)),
    ("resync-due-runs-full", S(last_sync=30, last_full=10, pending=True), 40.0, ("full", 0.0)),
    ("failure-retries-full-after-interval", S(last_sync=10, last_full=5, failed=True), 12.0, ("full", 0.0)),
    ("failure-waits-retry-interval", S(last_sync=10, last_full=5, failed=True), 10.5, ("wait", 1.5)),
    ("first-full-failed-retries-full", S(last_sync=10, failed=True), 12.0, ("full", 0.0)),
]


@pytest.mark.parametrize(("state", "now", "expected"), [s[1:] for s in STEPS], ids=[s[0] for s in STEPS])
def test_next_step(state: RunnerState, now: float, expected: tuple[str, float]) -> None:
    kind, wait = next_step(state, now, min_interval=1.0, sync_period=30.0, retry_interval=2.0)
    assert (kind, pytest.approx(wait)) == expected


def test_no_periodic_resync_waits_for_requests() -> None:
    assert next_step(S(last_sync=1, last_full=1), 5.0, min_interval=0, sync_period=0,
                     retry_interval=1)[1] == math.inf


class FakeSync:
    def __init__(self, *, fail: int = 0, duration: float = 0.0) -> None:
        self.calls: list[bool] = []
        self.fail = fail
        self.duration = duration

    async def __call__(self, full: bool) -> None:
        self.calls.append(full)
        await asyncio.sleep(self.duration)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("boom")


async def until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_bursts_merge_into_one_sync() -> None:
    sync = FakeSync()
    runner = SyncRunner(sync, min_interval=0.3, sync_period=0)
    task = asyncio.ensure_future(runner.run())
    try:
        await until(lambda: len(sync.calls) == 1)
        for _ in range(50):
            runner.request()
        await until(lambda: len(sync.calls) == 2)
        await asyncio.sleep(0.5)
        assert sync.calls == [True, False]
    finally:
        task.cancel()


async def test_request_during_a_sync_gets_one_more_sync() -> None:
    sync = FakeSync(duration=0.1)
    runner = SyncRunner(sync, min_interval=0, sync_period=0)
    task = asyncio.ensure_future(runner.run())
    try:
        await until(lambda: len(sync.calls) == 1)
        runner.request()
        runner.request()
        await until(lambda: len(sync.calls) == 2)
        await asyncio.sleep(0.3)
        assert sync.calls == [True, False]
    finally:
        task.cancel()


async def test_failure_is_retried_with_a_full_sync() -> None:
    sync = FakeSync(fail=1)
    runner = SyncRunner(sync, min_interval=0, sync_period=0, retry_interval=0.05)
    task = asyncio.ensure_future(runner.run())
    try:
        # The second call is recorded as it starts: wait for it to end too.
        await until(lambda: len(sync.calls) == 2 and not runner.state.failed)
        assert sync.calls == [True, True]
    finally:
        task.cancel()


@pytest.mark.parametrize("period", [0.0, 30.0], ids=["wait-for-a-request", "wait-for-the-resync"])
async def test_cancelled_as_a_request_comes_it_stops(period: float) -> None:
    """A cancellation that arrives together with a request (a Service event at shutdown) ends
    the runner: asyncio.wait_for in Python 3.11 swallowed it and the runner ran on forever."""
    sync = FakeSync()
    runner = SyncRunner(sync, min_interval=0, sync_period=period)
    task = asyncio.ensure_future(runner.run())
    await until(lambda: len(sync.calls) == 1)
    await asyncio.sleep(0.05)  # the runner waits now
    runner.request()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done and task.cancelled(), f"still running after cancel; syncs {sync.calls}"


async def test_cancelled_during_a_sync_it_stops_at_once() -> None:
    sync = FakeSync(duration=30)
    runner = SyncRunner(sync, min_interval=0, sync_period=0)
    task = asyncio.ensure_future(runner.run())
    await until(lambda: len(sync.calls) == 1)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done and task.cancelled()
