"""The durable Raft journal: what survives a reopen, torn tails, and when it syncs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controlplane.store.journal import MAGIC, DurableJournal


def _fill(j: DurableJournal, n: int, term: int = 1, start: int = 1) -> None:
    for i in range(start, start + n):
        j.add(b"cmd-%d" % i, i, term)


def test_roundtrip_and_sync_only_when_dirty(tmp_path: Path) -> None:
    p = str(tmp_path / "j")
    j = DurableJournal(p)
    _fill(j, 5)
    assert j.dirty
    j.sync()
    j.sync()
    assert not j.dirty and j.stats()["syncs"] == 1
    j._destroy()
    j2 = DurableJournal(p)
    assert [j2[i] for i in range(len(j2))] == [(b"cmd-%d" % i, i, 1) for i in range(1, 6)]
    assert j2[-1][1] == 5 and j2[1:3] == [(b"cmd-2", 2, 1), (b"cmd-3", 3, 1)]


@pytest.mark.parametrize(
    ("damage", "kept"),
    [
        ("truncate-mid-record", 4),
        ("flip-last-payload-byte", 4),
        ("append-garbage", 5),
        ("none", 5),
    ],
    ids=["torn-record", "bad-crc", "garbage-tail", "intact"],
)
def test_torn_or_corrupt_tail_is_cut(tmp_path: Path, damage: str, kept: int) -> None:
    p = str(tmp_path / "j")
    j = DurableJournal(p)
    _fill(j, 5)
    j._destroy()
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        if damage == "truncate-mid-record":
            f.truncate(size - 3)
        elif damage == "flip-last-payload-byte":
            f.seek(size - 1)
            f.write(b"X")
        elif damage == "append-garbage":
            f.seek(size)
            f.write(b"\x07" * 11)
    j2 = DurableJournal(p)
    assert len(j2) == kept
    j2.add(b"next", kept + 1, 2)
    j2._destroy()
    assert DurableJournal(p)[-1] == (b"next", kept + 1, 2)


def test_delete_then_readd_same_entries_keeps_file(tmp_path: Path) -> None:
    p = str(tmp_path / "j")
    j = DurableJournal(p)
    _fill(j, 6)
    j.sync()
    size = os.path.getsize(p)
    j.deleteEntriesFrom(3)  # pysyncobj: leader re-sends entries 4..6
    _fill(j, 3, start=4)
    assert not j.dirty and os.path.getsize(p) == size and len(j) == 6
    # A different entry at 5 replaces the tail from there on.
    j.deleteEntriesFrom(3)
    j.add(b"cmd-4", 4, 1)
    j.add(b"other", 5, 2)
    assert j.dirty
    j._destroy()
    j2 = DurableJournal(p)
    assert [e[0] for e in j2[:]] == [b"cmd-1", b"cmd-2", b"cmd-3", b"cmd-4", b"other"]


def test_deleted_entries_do_not_come_back_after_sync(tmp_path: Path) -> None:
    p = str(tmp_path / "j")
    j = DurableJournal(p)
    _fill(j, 6)
    j.sync()
    j.deleteEntriesFrom(2)
    j.sync()
    os.close(j._fd)  # crash: no clean shutdown
    assert len(DurableJournal(p)) == 2


def test_delete_to_rewrites_and_meta_persists(tmp_path: Path) -> None:
    p = str(tmp_path / "j")
    j = DurableJournal(p)
    _fill(j, 10)
    j.setCurrentTerm(7, "127.0.0.1:1")
    j.setRaftCommitIndex(9)
    j.deleteEntriesTo(8)
    assert [e[1] for e in j[:]] == [9, 10]
    os.close(j._fd)  # crash: term/vote were written durably; the commit index is only a hint
    j2 = DurableJournal(p)
    assert [e[1] for e in j2[:]] == [9, 10]
    assert (j2.getCurrentTerm(), j2.getVotedForNodeId()) == (7, "127.0.0.1:1")
    with open(p, "rb") as f:
        assert f.read(len(MAGIC)) == MAGIC


def test_align_to_snapshot_drops_covered_head(tmp_path: Path) -> None:
    p = str(tmp_path / "j")
    j = DurableJournal(p)
    _fill(j, 10)
    j.sync()
    # Crash after the snapshot at 6 was written but before the journal was truncated.
    j.align_to_snapshot((b"cmd-5", 5, 1), (b"cmd-6", 6, 1))
    assert [e[1] for e in j[:]] == [5, 6, 7, 8, 9, 10]
    j.align_to_snapshot((b"cmd-5", 5, 1), (b"cmd-6", 6, 1))
    assert len(j) == 6
