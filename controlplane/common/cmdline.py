"""Command-line helpers shared by the control-plane daemons: durations, logging, signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
from collections.abc import Coroutine
from typing import Any

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def duration(text: str) -> float:
    """Seconds from `40s`, `1m`, `1m30s`, `500ms`, `2h` or a bare number of seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    m = _DURATION.match(text)
    if not text or not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f'invalid duration "{text}": use e.g. 40s, 1m30s, 500ms or 2h')
    h, mins, s, ms = m.groups()
    return float(h or 0) * 3600 + float(mins or 0) * 60 + float(s or 0) + float(ms or 0) / 1000


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_until_signalled(main: Coroutine[Any, Any, Any]) -> int:
    """Run `main` until it ends or SIGTERM/SIGINT cancels it (so `finally` blocks run)."""

    async def runner() -> int:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            return 0
        return 0

    return asyncio.run(runner())
