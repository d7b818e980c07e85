"""bench/profile.py: py-spy's collapsed stacks summarised per function."""

from __future__ import annotations

import pytest

from bench.profile import frame_name, summarize


@pytest.mark.parametrize(("frame", "name"), [
    ("sync (nodeagent/worker.py:120)", "sync (nodeagent/worker.py)"),
    ("_run (/x/.venv/lib/python3.11/site-packages/grpc/aio/_call.py:10)", "_run (grpc/aio/_call.py)"),
    ("select (/usr/lib/python3.11/selectors.py:468)", "select (stdlib/selectors.py)"),
    ("<module> (bench.py)", "<module> (bench.py)"),
    ("weird", "weird"),
], ids=["project", "site-packages", "stdlib", "no-line", "unparsed"])
def test_frame_name(frame: str, name: str) -> None:
    assert frame_name(frame) == name


def test_summarize_self_and_total() -> None:
    lines = [
        "main (a.py:1);loop (a.py:5);put (s.py:9) 6",
        "main (a.py:1);loop (a.py:6);pickle (p.py:2) 3",
        "main (a.py:1);loop (a.py:5) 1",
        "",
        "garbage-without-count",
    ]
    samples, rows = summarize(lines)
    assert samples == 10
    by = {r.function: (round(r.self_share, 2), round(r.total_share, 2)) for r in rows}
    assert by["put (s.py)"] == (0.6, 0.6)
    assert by["pickle (p.py)"] == (0.3, 0.3)
    assert by["loop (a.py)"] == (0.1, 1.0)  # two lines of one function merged
    assert by["main (a.py)"] == (0.0, 1.0)
    assert [r.function for r in rows][:2] == ["put (s.py)", "pickle (p.py)"]


def test_summarize_recursion_counts_once_in_total() -> None:
    samples, rows = summarize(["f (a.py:1);f (a.py:1);f (a.py:1) 4"])
    assert samples == 4 and rows[0].total_share == 1.0 and rows[0].self_share == 1.0


def test_summarize_empty() -> None:
    assert summarize([]) == (0, [])
