"""What every Skiff daemon's `main` needs: duration flags, logging, and running until a signal.

The convention every daemon (store, api-server, controllers, scheduler, node agent, proxy,
the all-in-one control plane) follows: time flags take `duration` (`5s`, `1m30s`, `500ms`, or
bare seconds), and `-v`/`--verbose` (`add_verbose_flag`) is the one logging switch: INFO
by default, DEBUG with `-v`.

What must hold:
- `duration` accepts what both Go-style daemons and people write (`0`, `1.5`, `500ms`, `40s`,
  `1m30s`, `2h`) and nothing negative or non-finite; a bad value is an argparse usage error
  that says "not a duration" and shows examples;
- `run_until_signalled` turns SIGTERM/SIGINT into cancelling the daemon's main task, so its
  `finally` blocks run (clients closed, servers stopped) and the process exits 0; an error
  raised by the main task propagates to the caller unchanged; a `skiff.guard.fatal` (a loop
  the daemon cannot work without has ended) cancels the main task the same way and the
  process exits 1. `loop_factory` (e.g. skiff.eventloop.new_event_loop: uvloop) picks the
  event loop; the default is asyncio's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from skiff.guard import fatal_handler

_NUM = r"\s*(\d+(?:\.\d*)?|\.\d+)\s*"
# Units in decreasing size, each at most once ("1h30m", "1m30s", "1s500ms"); `m(?!s)` keeps
# "500ms" from reading as 500 minutes and an "s".
_DURATION = re.compile(rf"(?:{_NUM}h)?(?:{_NUM}m(?!s))?(?:{_NUM}s)?(?:{_NUM}ms)?\s*")
_BARE = re.compile(_NUM)


def duration(text: str) -> float:
    """Seconds from `40s`, `1m30s`, `500ms`, `2h`, or a bare number of seconds (`0`, `1.5`)."""
    bare = _BARE.fullmatch(text)
    if bare:
        return float(bare.group(1))
    m = _DURATION.fullmatch(text)
    if not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (examples: 0, 500ms, 40s, 1m30s, 2h)")
    h, mins, s, ms = (float(g or 0) for g in m.groups())
    return h * 3600 + mins * 60 + s + ms / 1000


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_until_signalled(main: Coroutine[Any, Any, Any], *,
                        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> int:
    """Run `main` until it ends or SIGTERM/SIGINT cancels it (so `finally` blocks run): 0;
    1 when a `fatal()` ended it."""

    async def runner() -> int:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        reasons: list[str] = []

        def on_fatal(reason: str) -> None:
            reasons.append(reason)
            task.cancel()

        with fatal_handler(on_fatal):
            try:
                await task
            except asyncio.CancelledError:
                pass
        return 1 if reasons else 0

    with asyncio.Runner(loop_factory=loop_factory) as loop_runner:
        return loop_runner.run(runner())
