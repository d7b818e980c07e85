"""controllers/base.py: the batch period of writes per key."""

from __future__ import annotations

import pytest

from controlplane.controllers.base import WriteBatcher, batch_wait


@pytest.mark.parametrize(("last", "now", "period", "wait"), [
    (None, 10.0, 1.0, 0.0),
    (9.5, 10.0, 1.0, 0.5),
    (8.0, 10.0, 1.0, 0.0),
    (10.0, 10.0, 0.0, 0.0),
], ids=["never-written", "within-period", "period-over", "no-batching"])
def test_batch_wait(last: float | None, now: float, period: float, wait: float) -> None:
    assert batch_wait(last, now, period) == pytest.approx(wait)


def test_batcher_forgets_keys_older_than_a_period_past_its_bound() -> None:
    b = WriteBatcher(1.0, max_keys=2)
    b.wrote("a", 0.0)
    b.wrote("b", 5.0)
    b.wrote("c", 5.5)  # over the bound: "a" (written 5.5 s ago) no longer matters
    assert (b.wait("a", 5.5), b.wait("b", 5.5), b.wait("c", 5.5)) == (0.0, pytest.approx(0.5), 1.0)
    assert sorted(b._last) == ["b", "c"]
