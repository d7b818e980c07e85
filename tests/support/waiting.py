"""Waiting for a cluster to reach a state, for the e2e tests that drive a lab."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str,
                     interval: float = 0.5) -> T:
    """The first truthy result of `check`, polled every `interval`; AssertionError naming `what`
    and the last result (or exception) once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f}s (last: {last!r})")
        await asyncio.sleep(interval)
