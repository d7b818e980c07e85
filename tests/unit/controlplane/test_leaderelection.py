"""Leader election over the in-process api-server with an injected clock: one leader, takeover, release."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from controlplane.common.leaderelection import LeaderElectionConfig, LeaderElector
from skiff.clock import FakeClock
from skiffpb.api.v1 import types_pb2 as t


def elector(api: InProcessApi, clock: FakeClock, identity: str) -> LeaderElector:
    return LeaderElector(api, LeaderElectionConfig(name="skiff-scheduler", identity=identity, lease_duration=10,
                                                   renew_deadline=7, retry_period=2), clock=clock)


async def test_only_one_leads_and_a_standby_takes_over_after_the_lease_expires(api: InProcessApi) -> None:
    clock = FakeClock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    for _ in range(10):  # a renews every 2 s: b never gets it
        clock.advance(2)
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    # a dies right after its last renewal, which b has seen: b waits a full lease duration from then.
    clock.advance(2)
    assert not await b.try_acquire_or_renew()
    clock.advance(7.5)
    assert not await b.try_acquire_or_renew()
    clock.advance(1)
    assert await b.try_acquire_or_renew()
    lease = await api.get(t.Lease, "skiff-scheduler", "kube-system")
    assert lease.spec.holder_identity == "b" and lease.spec.lease_transitions == 1
    # a comes back: it sees a fresh holder and stays a follower.
    assert not await a.try_acquire_or_renew()


async def test_concurrent_takeover_has_one_winner(api: InProcessApi) -> None:
    clock = FakeClock()
    a = elector(api, clock, "a")
    assert await a.try_acquire_or_renew()
    others = [elector(api, clock, f"x{i}") for i in range(5)]
    for e in others:
        await e.try_acquire_or_renew()
    clock.advance(11)
    results = await asyncio.gather(*(e.try_acquire_or_renew() for e in others))
    assert results.count(True) == 1


async def test_release_hands_over_at_once(api: InProcessApi) -> None:
    clock = FakeClock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    clock.advance(1.1)
    assert await b.try_acquire_or_renew()


async def test_run_cancels_the_work_when_leadership_is_lost(api: InProcessApi) -> None:
    clock = FakeClock()
    cfg = LeaderElectionConfig(name="x", identity="a", lease_duration=0.5, renew_deadline=0.3, retry_period=0.05)
    e = LeaderElector(api, cfg, clock=clock)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    runner = asyncio.ensure_future(e.run(work))
    await asyncio.wait_for(started.wait(), 5)
    print("STARTED")
    # Someone else takes the lease (e.g. we were partitioned away): renewals fail from now on.
    lease = await api.get(t.Lease, "x", "kube-system")
    lease.spec.holder_identity = "intruder"
    await api.update(lease)
    clock.advance(1.0)
    await asyncio.wait_for(cancelled.wait(), 5)
    print("CANCELLED")
    assert not e.leading
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaderElectionConfig(name="x", lease_duration=5, renew_deadline=10, retry_period=2)


class _HangingApi(InProcessApi):
    """An api-server that no longer answers (gone during shutdown)."""

    async def get(self, cls, name, namespace=""):  # type: ignore[no-untyped-def,override]
        await asyncio.sleep(3600)


async def test_release_gives_up_when_the_api_server_is_gone() -> None:
    clock, api = FakeClock(), _HangingApi()
    await api.start()
    a = LeaderElector(api, LeaderElectionConfig(name="skiff-scheduler", identity="a", lease_duration=10,
                                                renew_deadline=7, retry_period=0.05), clock=clock)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(a.release(), 2)
    finally:
        await api.close()
    assert loop.time() - started < 1.0
