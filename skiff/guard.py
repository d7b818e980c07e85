"""Starting background tasks so that an unexpected exit is never silent.

Every long-lived asyncio task in Skiff (watch loops, workers, heartbeats) starts through
`guard()`: if it ends with an exception, or ends at all when it was meant to run forever,
the failure is logged with the task's name, and an optional callback can stop the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("skiff.guard")

_tasks: set[asyncio.Task[Any]] = set()


def guard(coro: Coroutine[Any, Any, Any], name: str, *, forever: bool = True,
          on_exit: Callable[[BaseException | None], None] | None = None) -> asyncio.Task[Any]:
    """Start `coro` as a task named `name`; log (and report) how it ended unless cancelled.

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
        if on_exit is not None:
            on_exit(exc)

    task.add_done_callback(done)
    return task
