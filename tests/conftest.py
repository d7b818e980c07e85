"""Settings and fixtures every test tier shares.

Tests may run a store member without a cluster password (throwaway clusters on loopback);
outside tests `--insecure-no-password` is refused.

Every test runs with a `skiff.guard` fatal handler that records instead of exiting. In a daemon,
`fatal()` ends the process; in the test process that would end pytest. A test during which
anything called `fatal()` (a background task the code cannot work without ended) fails, naming
the reason; tests of `fatal` itself install their own handler.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from skiff.guard import fatal_handler

os.environ.setdefault("SKIFF_TEST_MODE", "1")


@pytest.fixture(autouse=True)
def _no_fatal() -> Iterator[None]:
    reasons: list[str] = []
    with fatal_handler(reasons.append):
        yield
    if reasons:
        pytest.fail(f"skiff.guard.fatal was called: {'; '.join(reasons)}")
