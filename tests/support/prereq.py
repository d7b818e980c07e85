"""Prerequisites of real-system tests: in CI a missing one fails the test, elsewhere it skips.

CI sets CI=true; there every e2e prerequisite (root, binaries, kernel features) is required,
so a broken machine shows up as a failure, never as a quiet skip. IP_VS is the exception the
project allows: this kernel lacks it, and its tests say so when they skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, reason: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"missing prerequisite (required in CI): {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root")


def require_binaries(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    require(not missing, f"needs {', '.join(missing)} on PATH (make setup installs them)")
