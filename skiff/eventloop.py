"""The event loop a Skiff daemon runs on when its serving cost matters: uvloop (libuv, in C)
instead of asyncio's default selector loop, whose scheduling is Python code.

Why: a grpc.aio request is a handful of loop callbacks, tasks and futures (grpc's own Cython
layer runs inside them), and the store's replication hands every batch across threads with
`call_soon_threadsafe`. Measured on the store (docs/store.md, "Throughput"), uvloop cut the
members' CPU per put at 64 clients by about a quarter and per serializable Range by about a
sixth, same machine, alternating runs.

What must hold:
- `run(main)` behaves as `asyncio.run(main)`: a new loop for this call, async generators and
  the default executor shut down and the loop closed at the end, `main`'s result or exception
  passed through.
- What the daemons use works on it unchanged: grpc.aio servers and clients (unary and
  streaming), `call_soon_threadsafe` from other threads, `asyncio.to_thread`, timers, and
  `add_signal_handler` (tests/unit/skiff/test_eventloop.py).
- `wait_event(event, timeout)` is how a loop sleeps until kicked or a deadline: never
  `asyncio.wait_for(event.wait(), timeout)`, whose Python 3.11 version swallows a cancellation
  that arrives while the event is being set (it returns the result instead), so a loop kicked
  at the moment it is cancelled runs on forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set (True) or `timeout` seconds pass (False; None: no timeout).
    A cancellation is always raised, also when it comes together with the event."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


def new_event_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on a new uvloop loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
