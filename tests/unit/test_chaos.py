"""bench/chaos.py's pure parts: which write counts as lost, which failed request counts against
the cluster (outside a cut window) and which fault it is blamed on."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bench.chaos import Fault, WriteLog, classify


@dataclass(frozen=True)
class WriteCase:
    id: str
    events: tuple[tuple[str, str, str], ...]  # (ack|unknown, name, value), in order
    stored: dict[str, str | None]
    problems: int


WRITES = [
    WriteCase("acked-value-present", (("ack", "a", "1"), ("ack", "a", "2")), {"a": "2"}, 0),
    WriteCase("acked-value-lost", (("ack", "a", "1"), ("ack", "a", "2")), {"a": "1"}, 1),
    WriteCase("acked-object-missing", (("ack", "a", "1"),), {}, 1),
    WriteCase("a-later-unknown-write-may-win", (("ack", "a", "1"), ("unknown", "a", "2")), {"a": "2"}, 0),
    WriteCase("an-unknown-write-before-the-ack-may-not", (("unknown", "a", "0"), ("ack", "a", "1")), {"a": "0"}, 1),
    WriteCase("never-acked-is-not-checked", (("unknown", "b", "1"),), {}, 0),
]


@pytest.mark.parametrize("case", WRITES, ids=lambda c: c.id)
def test_write_log_check(case: WriteCase) -> None:
    log = WriteLog()
    for kind, name, value in case.events:
        (log.ack if kind == "ack" else log.unknown)(name, value)
    assert len(log.check(case.stored)) == case.problems


FAULTS = [Fault("api-server s1", "cp", "apiserver-s1", started=100, ended=110),
          Fault("n2 cut off", "n2", "", started=200, ended=230, cut=True)]


@pytest.mark.parametrize(("lines", "inside", "outside", "blamed"), [
    (["99 ok", "105 ok"], 0, 0, {}),
    (["105 FAIL"], 0, 1, {"api-server s1": 1}),
    (["215 FAIL", "232 FAIL"], 2, 0, {}),  # within the cut, and its slack after it healed
    (["300 FAIL"], 0, 1, {"(no fault)": 1}),
    (["garbage", "12 maybe ok"], 0, 0, {}),
], ids=["all-ok", "during-a-restart", "inside-the-cut-and-slack", "no-fault-around", "unparsable-lines"])
def test_classify(lines: list[str], inside: int, outside: int, blamed: dict[str, int]) -> None:
    out = classify(lines, FAULTS)
    assert (out["failed_in_cut_windows"], out["failed_outside_cut_windows"]) == (inside, outside)
    assert out["failures_outside_by_fault"] == blamed
