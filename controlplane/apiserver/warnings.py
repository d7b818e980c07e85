"""Warnings for the caller of the request being served (Kubernetes' `Warning: 299` headers).

Admission (Pod Security's warn mode, ...) adds warnings deep below the front ends; the front end
that collects them for its request (`collecting`) sends them with its response. Like the caller
(caller.py) they live in a context variable: each request runs in its own asyncio task, so one
request never sees another's warnings.

What must hold: a warning added while nobody collects (the gRPC API, in-process callers) is
logged, never lost silently and never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger("skiff.apiserver.warnings")

_WARNINGS: ContextVar[list[str] | None] = ContextVar("skiff_apiserver_warnings", default=None)


def add(text: str) -> None:
    collected = _WARNINGS.get()
    if collected is None:
        log.info("warning: %s", text)
    elif text not in collected:
        collected.append(text)


def current() -> list[str]:
    """The warnings collected so far for this request (a copy)."""
    return list(_WARNINGS.get() or ())


@contextmanager
def collecting() -> Iterator[list[str]]:
    """Collect the warnings of the enclosed work (the list is filled as they come)."""
    collected: list[str] = []
    token = _WARNINGS.set(collected)
    try:
        yield collected
    finally:
        _WARNINGS.reset(token)
