"""When decided pods go out as BindBatch calls: the pure rule (`bind_batch_size`), and the
scheduler following it while a call is held in flight."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from controlplane.scheduler.scheduler import BindBatching, Scheduler, bind_batch_size
from skiff import errors
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, node, pod

ONE = BindBatching(max_calls=1)
TWO = BindBatching(max_calls=2)
TWO_MIN_50 = BindBatching(max_calls=2, min_batch=50)


@pytest.mark.parametrize(("waiting", "calls", "rule", "send"), [
    (0, 0, ONE, 0),
    (1, 0, ONE, 1),
    (37, 0, ONE, 37),
    (250, 0, ONE, 100),
    (80, 1, ONE, 0),
    (80, 1, TWO, 80),
    (80, 2, TWO, 0),
    (1, 0, TWO_MIN_50, 1),
    (49, 1, TWO_MIN_50, 0),
    (50, 1, TWO_MIN_50, 50),
    (130, 1, TWO_MIN_50, 100),
    (130, 0, BindBatching(max_batch=10), 10),
], ids=["nothing-waiting", "first-call-takes-a-lone-pod", "first-call-takes-all", "capped-at-100",
        "one-in-flight-waits", "second-call-allowed", "two-in-flight-wait", "first-call-never-waits",
        "second-call-below-min-waits", "second-call-at-min", "second-call-capped", "smaller-cap"])
def test_bind_batch_size(waiting: int, calls: int, rule: BindBatching, send: int) -> None:
    assert bind_batch_size(waiting, calls, rule) == send


@pytest.mark.parametrize("kwargs", [{"max_calls": 0}, {"min_batch": 0}, {"min_batch": 101}],
                         ids=["no-calls", "min-zero", "min-above-max"])
def test_bind_batching_refuses_rules_that_never_send(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        BindBatching(**kwargs)


class HeldBindBatch:
    """The in-process api-server whose BindBatch calls wait until `release` is set: a call held in
    flight. Every other verb goes straight through."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.release = asyncio.Event()
        self.sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    async def bind_batch(self, bindings: Sequence[t.Binding]) -> list[errors.SkiffError | None]:
        self.sizes.append(len(bindings))
        await self.release.wait()
        return await self.api.bind_batch(bindings)  # type: ignore[no-any-return]


async def decide(sched: Scheduler, count: int) -> None:
    for _ in range(count):
        qp = await sched.queue.pop()
        assert qp is not None
        await sched.schedule_one(qp)


async def yield_a_while() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize(("rule", "while_held", "after"), [
    (ONE, [1], [1, 5]),
    (TWO, [1, 5], [1, 5]),
    (TWO_MIN_50, [1], [1, 5]),
], ids=["one-in-flight", "two-in-flight", "second-call-waits-for-50"])
async def test_pods_decided_while_a_call_is_out_follow_the_rule(cluster: Cluster, rule: BindBatching,
                                                                while_held: list[int], after: list[int]) -> None:
    for n in [node("n0"), node("n1")]:
        await cluster.create(n)
    for i in range(6):
        await cluster.create(pod(f"p{i}", cpu="100m", created=i + 1))
    held = HeldBindBatch(cluster.api)
    sched = Scheduler(held, cluster.factory, recorder=cluster.recorder, clock=cluster.clock,  # type: ignore[arg-type]
                      rng=random.Random(1), bind_batching=rule)
    await cluster.start()
    await decide(sched, 1)
    await yield_a_while()  # the first call goes out with the lone pod
    await decide(sched, 5)
    await yield_a_while()
    assert held.sizes == while_held
    held.release.set()
    await sched.wait_binds()
    assert held.sizes == after
    assert sched.scheduled == 6 and sched.bind_calls == len(after)
    await cluster.settle()
    assert all(p.spec.node_name for p in cluster.api.objects(t.Pod))
