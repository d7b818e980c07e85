"""Background tasks that never die silently: guarded, supervised, or fatal.

Every long-lived asyncio task in Skiff (watch loops, workers, heartbeats) starts through
`guard()` or `supervise()`:
- `supervise(factory, name)` runs a loop and, when it raises anything but a cancellation (or
  returns, though it was meant to run forever), logs it with the loop's name and starts it
  again after a backoff (`LOOP_BACKOFF`, reset once a run lasted `healthy_after` seconds);
- `guard(coro, name)` runs a task once; if a task meant to run forever ends (an exception or
  a return), the failure is logged with the task's name and `fatal()` ends the process
  non-zero, for its supervisor (systemd, the all-in-one, the lab) to restart it, unless the
  caller passes its own `on_exit`.

What must hold:
- no task started here ends unnoticed: a cancellation is the only quiet ending;
- `fatal(reason)` goes to the handler the process installed (`fatal_handler`: the daemon's
  main cancels its work and exits 1, `skiff.daemon.run_until_signalled`); without one it
  exits the process at once with status `EXIT_FATAL`, never returning to a half-working
  state;
- restarting is bounded in rate: the n-th consecutive failure waits `LOOP_BACKOFF.delay(n)`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from skiff.retry import Backoff, Delays

log = logging.getLogger("skiff.guard")

EXIT_FATAL = 70  # EX_SOFTWARE: an internal error ended the process
# A supervised loop that failed: 0.5 s doubling to 30 s, jittered.
LOOP_BACKOFF = Backoff(initial=0.5, max=30.0, jitter=0.2)
# A run at least this long counts as healthy: the next failure starts the backoff afresh.
HEALTHY_AFTER = 60.0

_tasks: set[asyncio.Task[Any]] = set()
_fatal_handler: Callable[[str], None] | None = None


@contextmanager
def fatal_handler(handler: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, `fatal(reason)` calls `handler(reason)` instead of exiting."""
    global _fatal_handler
    previous, _fatal_handler = _fatal_handler, handler
    try:
        yield
    finally:
        _fatal_handler = previous


def fatal(reason: str) -> None:
    """A part of this process that must not stop has stopped: end the process non-zero."""
    log.critical("fatal: %s; the process exits for its supervisor to restart it", reason)
    if _fatal_handler is not None:
        _fatal_handler(reason)
        return
    logging.shutdown()
    os._exit(EXIT_FATAL)


def fatal_on_exit(name: str, exc: BaseException | None) -> None:
    """The `on_exit` of a task the process cannot work without."""
    fatal(f"background task {name} {'failed: ' + repr(exc) if exc is not None else 'exited'}")


def guard(coro: Coroutine[Any, Any, Any], name: str, *, forever: bool = True,
          on_exit: Callable[[str, BaseException | None], None] | None = fatal_on_exit) -> asyncio.Task[Any]:
    """Start `coro` as a task named `name`; log (and report) how it ended unless cancelled.

    A `forever` task that ends calls `on_exit(name, exception or None)`: by default `fatal`.
    The task is referenced here until it ends, so it is never garbage-collected mid-run.
    """
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _tasks.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            log.error("background task %s failed: %s", name, exc, exc_info=exc)
        elif forever:
            log.error("background task %s exited unexpectedly", name)
        else:
            return
        if forever and on_exit is not None:
            on_exit(name, exc)

    task.add_done_callback(done)
    return task


async def supervised(factory: Callable[[], Awaitable[Any]], name: str, *, backoff: Backoff = LOOP_BACKOFF,
                     healthy_after: float = HEALTHY_AFTER, clock: Callable[[], float] | None = None,
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Run `factory()` for ever: after each failure (or return) log it and start it again after
    the backoff. Only cancellation ends it."""
    now = clock or asyncio.get_running_loop().time
    delays = Delays(backoff)
    while True:
        started = now()
        try:
            await factory()
            problem = "ended by itself"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("loop %s failed: %s", name, exc, exc_info=exc)
            problem = f"failed ({type(exc).__name__}: {exc})"
        if now() - started >= healthy_after:
            delays.reset()
        delay = delays.next()
        log.warning("loop %s %s; restarting it in %.1fs (failure %d in a row)", name, problem, delay,
                    delays.failures)
        await sleep(delay)


def supervise(factory: Callable[[], Awaitable[Any]], name: str, *, backoff: Backoff = LOOP_BACKOFF,
              healthy_after: float = HEALTHY_AFTER) -> asyncio.Task[Any]:
    """Start the loop `factory()` as a task that restarts it with backoff (see `supervised`)."""
    return guard(supervised(factory, name, backoff=backoff, healthy_after=healthy_after), name)
