"""The scale scenario's pure pieces: the pods-over-time timeline its picture is drawn from."""

from __future__ import annotations

import pytest

from bench import scale


@pytest.mark.parametrize(("events", "points", "expected"), [
    ({"running": [10.0, 11.0, 12.0]}, 3, {"t_s": [0.0, 1.0, 2.0], "running": [1.0, 2.0, 3.0]}),
    ({"bound": [10.5, 10.5], "running": [12.0]}, 5,
     {"t_s": [0.0, 0.5, 1.0, 1.5, 2.0], "bound": [0.0, 2.0, 2.0, 2.0, 2.0], "running": [0.0, 0.0, 0.0, 0.0, 1.0]}),
    ({"running": []}, 2, {"t_s": [0.0, 0.0], "running": [0.0, 0.0]}),
], ids=["one-per-step", "two-states-share-the-clock", "nothing-yet"])
def test_timeline_counts_pods_by_each_moment(events: dict[str, list[float]], points: int,
                                             expected: dict[str, list[float]]) -> None:
    assert scale.timeline(10.0, events, points) == expected


def test_timeline_is_small_for_many_pods() -> None:
    got = scale.timeline(0.0, {"running": [i / 100 for i in range(30_000)]})
    assert len(got["t_s"]) == len(got["running"]) == 200
    assert got["running"][-1] == 30_000.0
    assert got["running"] == sorted(got["running"])
