"""The caller of the request being served, for everything below the front ends.

Authentication happens once, in the front end that received the request (the gRPC service or
the HTTP server); it stores the `UserInfo` here with `acting_as`. Authorization, admission and
the audit log read it with `current()` instead of taking a user argument through every registry
method. Each gRPC call and each HTTP request runs in its own asyncio task, so the value set for
one request is never seen by another (contextvars are per task).

What must hold: a request nobody authenticated is anonymous (`system:anonymous` in
`system:unauthenticated`), never an administrator by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from skiff import identity
from skiff.identity import UserInfo

ANONYMOUS = UserInfo(identity.ANONYMOUS, (identity.UNAUTHENTICATED,))

_CALLER: ContextVar[UserInfo] = ContextVar("skiff_apiserver_caller", default=ANONYMOUS)


def current() -> UserInfo:
    return _CALLER.get()


@contextmanager
def acting_as(user: UserInfo) -> Iterator[UserInfo]:
    """Serve the enclosed work as `user` (restored afterwards)."""
    token = _CALLER.set(user)
    try:
        yield user
    finally:
        _CALLER.reset(token)
