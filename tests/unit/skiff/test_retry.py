"""skiff.retry: the backoff schedule, the bounded retry helper and retry-on-conflict, without sleeping."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from skiff import errors
from skiff.retry import CONFLICT_ATTEMPTS, Backoff, Delays, jittered, retry, retry_on_conflict


@pytest.mark.parametrize(
    ("backoff", "failures", "rand", "expected"),
    [
        (Backoff(initial=0.2, max=5.0), 0, 0.0, 0.0),
        (Backoff(initial=0.2, max=5.0), 1, 0.0, 0.2),
        (Backoff(initial=0.2, max=5.0), 2, 0.0, 0.4),
        (Backoff(initial=0.2, max=5.0), 5, 0.0, 3.2),
        (Backoff(initial=0.2, max=5.0), 6, 0.0, 5.0),
        (Backoff(initial=0.2, max=5.0), 10_000, 0.0, 5.0),
        (Backoff(initial=1.0, max=30.0, factor=3.0), 3, 0.0, 9.0),
        (Backoff(initial=0.01, max=0.01, factor=1.0), 4, 0.0, 0.01),
        (Backoff(initial=1.0, max=8.0, jitter=0.5), 2, 0.5, 2.5),
        (Backoff(initial=1.0, max=8.0, jitter=0.5), 9, 0.99, 11.96),
        (Backoff(initial=1.0, max=8.0, jitter=0.0), 3, 0.99, 4.0),
    ],
    ids=["no-failure", "first", "doubles", "fifth", "capped", "capped-no-overflow", "factor-3", "constant",
         "jitter-stretches", "jitter-on-the-cap", "no-jitter-ignores-rand"],
)
def test_backoff_schedule(backoff: Backoff, failures: int, rand: float, expected: float) -> None:
    assert backoff.delay(failures, rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial": 0.0, "max": 1.0}, "0 < initial"),
        ({"initial": 2.0, "max": 1.0}, "initial <= max"),
        ({"initial": 1.0, "max": 2.0, "factor": 0.5}, "factor >= 1"),
        ({"initial": 1.0, "max": 2.0, "jitter": -0.1}, "jitter >= 0"),
    ],
    ids=["zero-initial", "initial-above-max", "shrinking", "negative-jitter"],
)
def test_backoff_refuses_a_schedule_that_makes_no_sense(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Backoff(**kwargs)


def test_delays_grow_until_reset_then_start_over() -> None:
    delays = Delays(Backoff(initial=0.5, max=10.0), rand=lambda: 0.0)
    assert [delays.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    delays.reset()
    assert (delays.failures, delays.next()) == (0, 0.5)


@dataclass
class Script:
    """An attempt that raises the scripted errors in turn, then returns "ok"; a clock sleeping moves."""

    errors: list[BaseException]
    calls: int = 0
    now: float = 0.0
    slept: list[float] = field(default_factory=list)
    retried: list[tuple[str, float]] = field(default_factory=list)

    async def attempt(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += delay

    def clock(self) -> float:
        return self.now

    def on_retry(self, exc: BaseException, delay: float) -> None:
        self.retried.append((type(exc).__name__, delay))


def unavailable(exc: BaseException) -> bool:
    return isinstance(exc, errors.UnavailableError)


U = errors.UnavailableError
FAST = Backoff(initial=1.0, max=4.0)


@dataclass(frozen=True)
class RetryCase:
    id: str
    errors: list[BaseException]
    attempts: int | None
    budget: float | None
    raises: type[BaseException] | None
    calls: int
    slept: list[float]


RETRY_CASES = [
    RetryCase("first-try", [], 3, None, None, 1, []),
    RetryCase("recovers", [U("a"), U("b")], 5, None, None, 3, [1.0, 2.0]),
    RetryCase("attempts-exhausted", [U("a"), U("b"), U("c"), U("d")], 3, None, U, 3, [1.0, 2.0]),
    RetryCase("not-retryable-at-once", [errors.InvalidError("bad")], 5, None, errors.InvalidError, 1, []),
    RetryCase("not-retryable-later", [U("a"), errors.NotFoundError("gone")], 5, None, errors.NotFoundError, 2,
              [1.0]),
    # budget 4: waits 1 (ends at 1) and 2 (ends at 3), then 4 would end at 7 >= 4: give up.
    RetryCase("budget-exhausted", [U("a")] * 10, None, 4.0, U, 3, [1.0, 2.0]),
    RetryCase("budget-enough", [U("a")] * 2, None, 10.0, None, 3, [1.0, 2.0]),
    RetryCase("both-bounds-attempts-first", [U("a")] * 10, 2, 100.0, U, 2, [1.0]),
]


@pytest.mark.parametrize("case", RETRY_CASES, ids=[c.id for c in RETRY_CASES])
async def test_retry(case: RetryCase) -> None:
    script = Script(list(case.errors))
    if case.raises is None:
        result = await retry(script.attempt, retryable=unavailable, backoff=FAST, attempts=case.attempts,
                             budget=case.budget, clock=script.clock, sleep=script.sleep, rand=lambda: 0.0,
                             on_retry=script.on_retry)
        assert result == "ok"
    else:
        with pytest.raises(case.raises):
            await retry(script.attempt, retryable=unavailable, backoff=FAST, attempts=case.attempts,
                        budget=case.budget, clock=script.clock, sleep=script.sleep, rand=lambda: 0.0,
                        on_retry=script.on_retry)
    assert script.calls == case.calls
    assert script.slept == case.slept
    assert script.retried == [("UnavailableError", d) for d in case.slept]


async def test_retry_reraises_the_last_error_itself() -> None:
    last = U("the last one")
    script = Script([U("first"), last])
    with pytest.raises(U) as info:
        await retry(script.attempt, retryable=unavailable, backoff=FAST, attempts=2, sleep=script.sleep,
                    rand=lambda: 0.0)
    assert info.value is last


@pytest.mark.parametrize(
    ("attempts", "budget"), [(None, None), (0, None)], ids=["unbounded", "zero-attempts"],
)
async def test_retry_must_be_bounded(attempts: int | None, budget: float | None) -> None:
    script = Script([])
    with pytest.raises(ValueError):
        await retry(script.attempt, retryable=unavailable, backoff=FAST, attempts=attempts, budget=budget)
    assert script.calls == 0


@pytest.mark.parametrize(
    ("raised", "outcome", "calls"),
    [
        ([], "ok", 1),
        ([errors.ConflictError("changed")] * 2, "ok", 3),
        ([errors.PodAlreadyAssignedError("bound")], "ok", 2),
        ([errors.ConflictError("changed")] * CONFLICT_ATTEMPTS, errors.ConflictError, CONFLICT_ATTEMPTS),
        ([errors.AlreadyExistsError("exists")], errors.AlreadyExistsError, 1),
        ([errors.UnavailableError("down")], errors.UnavailableError, 1),
    ],
    ids=["no-conflict", "two-conflicts", "conflict-subclass", "always-conflicting", "not-a-conflict",
         "unavailable-is-not-a-conflict"],
)
async def test_retry_on_conflict(raised: list[BaseException], outcome: object, calls: int) -> None:
    script = Script(list(raised))
    if isinstance(outcome, type):
        with pytest.raises(outcome):
            await retry_on_conflict(script.attempt, sleep=script.sleep)
    else:
        assert await retry_on_conflict(script.attempt, sleep=script.sleep) == outcome
    assert script.calls == calls
    # client-go's DefaultRetry: 10 ms apart, stretched by at most 10%.
    assert all(0.01 <= d <= 0.011 for d in script.slept)
    assert len(script.slept) == calls - 1  # a wait between attempts, none after the last


@pytest.mark.parametrize(("period", "jitter", "rand", "want"), [
    (10.0, 0.1, 0.5, 10.0),
    (10.0, 0.1, 0.0, 9.0),
    (10.0, 0.1, 0.999999, 11.0),
    (1.0, 0.0, 0.9, 1.0),
    (60.0, 0.5, 0.25, 45.0),
], ids=["middle-is-the-period", "low-end", "high-end", "no-jitter", "half-either-way"])
def test_jittered(period: float, jitter: float, rand: float, want: float) -> None:
    assert jittered(period, jitter, rand) == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 2.0], ids=["negative", "one", "above-one"])
def test_jittered_refuses_a_jitter_that_could_stop_the_loop(jitter: float) -> None:
    with pytest.raises(ValueError):
        jittered(10.0, jitter, 0.5)
