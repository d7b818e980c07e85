"""`python -m bench.plots`: which pictures the result files give (pure `charts`), and that the
committed result files all draw (matplotlib's Agg backend, into a temporary directory)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import plots

META = {"date": "2026-12-07T01:00:00Z", "load_before": [1.0, 1.0, 1.0], "load_after": [2.5, 1.0, 1.0]}


def result(**results: Any) -> dict[str, Any]:
    return {"meta": META, "results": results}


@pytest.mark.parametrize(("bench", "data", "expected"), [
    ("apiserver", result(create_at_rate={"rate": 200.0, "p50_ms": 4, "p99_ms": 18, "max_ms": 39,
                                         "samples_ms": [3.0, 4.0, 18.0]}),
     [("apiserver-create-latency", "hist", (("create", (3.0, 4.0, 18.0)),))]),
    ("apiserver", result(create_at_rate={"rate": 200.0, "p50_ms": 4, "p99_ms": 18, "max_ms": 39}),
     [("apiserver-create-latency", "bars", (("create", (4.0, 18.0, 39.0)),))]),
    ("nodeagent", result(pods=3, sequential_p50_s=0.3, sequential_p99_s=0.4, burst_p50_s=5, burst_p99_s=6,
                         sequential_samples_s=[0.3, 0.4], burst_samples_s=[5, 6]),
     [("nodeagent-pod-startup", "hist", (("bound one at a time", (0.3, 0.4)), ("all bound at once", (5.0, 6.0))))]),
    ("e2e", result(startup={"replicas": 2, "create_to_ready_watch": {"samples_s": [1.0, 2.0]},
                            "create_to_bound": {"samples_s": [0.5, 0.6]}}),
     [("e2e-pods-ready", "steps", (("Ready (watch)", (1.0, 2.0)), ("bound", (0.5, 0.6))))]),
    ("scale", result(params={"pods": 30000, "nodes": 1000},
                     skiff={"timeline": {"t_s": [0, 1, 2], "bound": [0, 5, 9], "running": [0, 2, 9]}},
                     etcd={"all_running_s": 3.0}),
     [("scale-skiff-pods", "lines", (("bound", (0.0, 5.0, 9.0)), ("running", (0.0, 2.0, 9.0))))]),
    ("dns", result(anything=1), []),
], ids=["samples-histogram", "summary-only-bars", "two-distributions", "ready-over-time", "pods-over-time",
        "nothing-to-draw"])
def test_charts_draw_samples_when_kept_else_the_summary(bench: str, data: dict[str, Any],
                                                        expected: list[tuple[str, str, Any]]) -> None:
    got = plots.charts({bench: data})
    assert [(c.name, c.kind, c.series) for c in got] == expected
    for c in got:
        assert f"bench/results/{bench}.json, 2026-12-07, load 1.0 -> 2.5" in c.title


def test_every_committed_result_draws(tmp_path: Path) -> None:
    for f in plots.RESULTS.glob("*.json"):
        shutil.copy(f, tmp_path)
    assert plots.main(["--results", str(tmp_path)]) == 0
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"store-throughput.png", "apiserver-create-latency.png", "nodeagent-pod-startup.png",
            "e2e-pods-ready.png", "netproxy-programming-latency.png"} <= set(drawn)
    assert all((tmp_path / n).stat().st_size > 5_000 for n in drawn)


def test_lines_draw(tmp_path: Path) -> None:
    chart = plots.Chart("x", "pods over time", "lines", "s", "pods", xs=(0.0, 1.0, 2.0),
                        series=(("running", (0.0, 4.0, 9.0)),))
    plots.draw(chart, tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 5_000
