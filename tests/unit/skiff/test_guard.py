"""skiff.guard: a supervised loop restarts with backoff after a failure; a guarded task that
ends is fatal; a daemon's main exits 1 on a fatal. Clocks and sleeps are injected."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from skiff.daemon import run_until_signalled
from skiff.guard import fatal_handler, guard, supervised
from skiff.retry import Backoff

BACKOFF = Backoff(initial=1.0, max=4.0)


class Stop(BaseException):
    """Ends the test's supervised loop from inside its sleep (not an Exception: not restarted)."""


@dataclass(frozen=True)
class Case:
    id: str
    runs: tuple[tuple[str, float], ...]  # per run of the loop: how it ends ("raise"/"return") and how long it ran
    delays: tuple[float, ...]  # the waits before each restart


CASES = [
    Case("raises-doubling-to-the-cap", (("raise", 0), ("raise", 0), ("raise", 0), ("raise", 0)), (1, 2, 4, 4)),
    Case("a-loop-that-returns-is-restarted-too", (("return", 0), ("return", 0)), (1, 2)),
    Case("a-long-healthy-run-resets-the-backoff", (("raise", 0), ("raise", 0), ("raise", 100), ("raise", 0)),
         (1, 2, 1, 2)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_supervised_restarts_with_backoff(case: Case) -> None:
    now = [0.0]
    runs = list(case.runs)
    waits: list[float] = []

    async def loop() -> None:
        how, lasted = runs.pop(0)
        now[0] += lasted
        if how == "raise":
            raise RuntimeError("injected")

    async def sleep(delay: float) -> None:
        waits.append(delay)
        if not runs:
            raise Stop

    with pytest.raises(Stop):
        await supervised(loop, "test-loop", backoff=BACKOFF, healthy_after=60, clock=lambda: now[0], sleep=sleep)
    assert tuple(waits) == case.delays


async def test_supervised_is_ended_only_by_cancellation() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(supervised(forever, "x"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(("outcome", "fatal"), [("raise", True), ("return", True), ("cancel", False)],
                         ids=["raises", "returns", "cancelled"])
async def test_a_guarded_task_that_ends_is_fatal(outcome: str, fatal: bool) -> None:
    reasons: list[str] = []

    async def task_body() -> None:
        if outcome == "raise":
            raise RuntimeError("injected")
        if outcome == "cancel":
            await asyncio.sleep(3600)

    with fatal_handler(reasons.append):
        task = guard(task_body(), "guarded")
        await asyncio.sleep(0)
        if outcome == "cancel":
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert bool(reasons) == fatal
    if fatal:
        assert "guarded" in reasons[0]


def test_a_daemon_exits_1_on_fatal_and_runs_its_finally() -> None:
    cleaned: list[str] = []

    async def main() -> None:
        async def loop() -> None:
            raise RuntimeError("injected")

        guard(loop(), "the-only-loop")
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append("closed")

    assert run_until_signalled(main()) == 1
    assert cleaned == ["closed"]


def test_a_daemon_that_ends_normally_exits_0() -> None:
    async def main() -> None:
        return None

    assert run_until_signalled(main()) == 0
