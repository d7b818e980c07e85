"""e2e plumbing: when a test on a lab fails, the report carries the tails of the lab's daemon logs.

Labs are torn down (logs included) when their module ends, so a CI failure would otherwise
leave nothing to read. A module that runs a lab sets `LAB` (module-level) to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TAIL_LINES = 40


def _tails(lab_dir: Path) -> str:
    parts = []
    # Namespace hosts log under <host>/run/, guest hosts (the VM lab) on their share and console.
    logs = [*lab_dir.glob("*/run/*.log"), *lab_dir.glob("*/vm/share/logs/*.log"), *lab_dir.glob("*/vm/console.log"),
            *lab_dir.glob("*/vm/share/output.log")]
    for log in sorted(logs):
        lines = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        parts.append(f"----- {log.relative_to(lab_dir)} (last {len(lines)} lines)\n" + "\n".join(lines))
    return "\n".join(parts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    lab = getattr(item.module, "LAB", None)
    if report.failed and lab is not None and lab.dir.exists():
        report.sections.append(("lab daemon logs", _tails(lab.dir)))
