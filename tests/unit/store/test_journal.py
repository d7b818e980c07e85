"""The durable Raft journal: what survives a reopen, torn tails, and when it syncs."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from controlplane.store.disk import EXIT_STORAGE_FAILURE, CorruptData
from controlplane.store.journal import MAGIC, SECTOR, DurableJournal, _encode, repair_journal, scan_journal


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


# ---------------------------------------------------------------- damage: torn tail vs corruption

def _journal_bytes(n: int, size: int = 10) -> tuple[bytes, list[int]]:
    """A journal of n records (payload `size` bytes each) and the offset of each record."""
    parts, offsets, pos = [MAGIC], [], len(MAGIC)
    for i in range(1, n + 1):
        rec = _encode(b"%d:" % i + b"x" * (size - len(b"%d:" % i)), i, 1)
        offsets.append(pos)
        parts.append(rec)
        pos += len(rec)
    return b"".join(parts), offsets


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]


def _zero_sector_in(data: bytes, start: int) -> bytes:
    s = -(-start // SECTOR) * SECTOR
    return data[:s] + bytes(SECTOR) + data[s + SECTOR :]


HDR = 24  # record header: length, crc, idx, term

# (damage applied to a 5-record journal, records kept, torn?, damaged record (1-based) or None)
SCAN_CASES = [
    ("intact", lambda d, o: d, 5, None, None),
    ("torn-last-record", lambda d, o: d[:-3], 4, True, 5),
    ("torn-header", lambda d, o: d[: o[4] + 10], 4, True, 5),
    ("bad-crc-last-record", lambda d, o: _flip(d, len(d) - 1), 4, True, 5),
    ("garbage-tail", lambda d, o: d + b"\x07" * 40, 5, True, 6),
    ("bad-payload-mid", lambda d, o: _flip(d, o[2] + HDR + 1), 2, False, 3),
    ("bad-term-mid", lambda d, o: _flip(d, o[1] + 16), 1, False, 2),
    ("bad-length-mid", lambda d, o: _flip(d, o[2]), 2, False, 3),
    ("huge-length-mid", lambda d, o: d[: o[2]] + b"\xff\xff\xff\x7f" + d[o[2] + 4 :], 2, False, 3),
    ("bad-first-record", lambda d, o: _flip(d, o[0] + HDR), 0, False, 1),
]


@pytest.mark.parametrize(("damage", "kept", "torn", "record"), [c[1:] for c in SCAN_CASES],
                         ids=[c[0] for c in SCAN_CASES])
def test_scan_tells_torn_tail_from_corruption(damage: Callable[[bytes, list[int]], bytes], kept: int,
                                              torn: bool | None, record: int | None) -> None:
    data, offsets = _journal_bytes(5)
    scan = scan_journal(damage(data, offsets))
    assert [e[1] for e in scan.entries] == list(range(1, kept + 1))
    if record is None:
        assert scan.damage is None and scan.end == len(data)
        return
    assert scan.damage is not None
    assert scan.damage.torn is torn
    at = offsets[record - 1] if record <= 5 else len(data)
    assert scan.damage.offset == scan.end == at


@pytest.mark.parametrize(("damaged", "torn"), [(2, True), (5, True)], ids=["mid-group", "last"])
def test_zeroed_sector_is_a_torn_write(damaged: int, torn: bool) -> None:
    # Records bigger than a sector: a write that never reached the disk reads back as zeros.
    # That is a torn group commit even with (unsynced) records after it, as etcd's WAL judges.
    data, offsets = _journal_bytes(6, size=1500)
    scan = scan_journal(_zero_sector_in(data, offsets[damaged - 1] + HDR))
    assert scan.damage is not None and scan.damage.torn is torn
    assert scan.damage.offset == offsets[damaged - 1] and len(scan.entries) == damaged - 1


def _write(p: str, data: bytes) -> None:
    with open(p, "wb") as f:
        f.write(data)


def test_corrupt_journal_refuses_then_repair_cuts_it(tmp_path: Path) -> None:
    p = str(tmp_path / "raft.journal")
    data, offsets = _journal_bytes(5)
    _write(p, _flip(data, offsets[2] + HDR + 2))
    with pytest.raises(CorruptData) as err:
        DurableJournal(p)
    assert err.value.path == p and err.value.offset == offsets[2]
    assert f"{p}: checksum mismatch" in str(err.value) and f"at offset {offsets[2]}" in str(err.value)
    assert "skiff-store-repair" in str(err.value)
    assert os.path.getsize(p) == len(data)  # refusing changes nothing
    report = repair_journal(p)
    assert (report.offset, report.kept, report.dropped_bytes) == (offsets[2], 2, len(data) - offsets[2])
    assert report.backup is not None and os.path.getsize(report.backup) == len(data)
    j = DurableJournal(p)
    assert [e[1] for e in j[:]] == [1, 2]
    j._destroy()
    assert repair_journal(p).offset == -1  # nothing left to repair


def test_unreadable_term_vote_file_refuses(tmp_path: Path) -> None:
    p = str(tmp_path / "raft.journal")
    _write(p + ".meta", b'{"term": 3, "vot')
    with pytest.raises(CorruptData, match="unreadable term/vote file"):
        DurableJournal(p)


# ---------------------------------------------------------------- a failing disk stops the member


class Stopped(Exception):
    pass


def _stop(message: str) -> NoReturn:
    raise Stopped(message)


class FailingSync:
    """A disk whose syncs fail (EIO) once `fail` is set; counts what was asked of it."""

    def __init__(self) -> None:
        self.fail = False
        self.calls = 0

    def fsync(self, fd: int) -> None:
        self.fdatasync(fd)

    def fdatasync(self, fd: int) -> None:
        self.calls += 1
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize(
    "operation",
    ["sync", "set-term", "compact"],
    ids=["fdatasync-of-appends", "fsync-of-vote", "fsync-of-rewrite"],
)
def test_failed_sync_stops_without_retry(tmp_path: Path, operation: str) -> None:
    p = str(tmp_path / "j")
    disk = FailingSync()
    j = DurableJournal(p, sync=disk, fatal=_stop)
    _fill(j, 4)
    j.sync()
    _fill(j, 2, start=5)
    disk.fail = True
    with pytest.raises(Stopped, match=r"of .*/j(\.meta)? failed: .*Input/output error.*without retrying"):
        if operation == "sync":
            j.sync()
        elif operation == "set-term":
            j.setCurrentTerm(2, "127.0.0.1:2")
        else:
            j.deleteEntriesTo(2)
    if operation == "sync":
        # Nothing counts as synced after the failure (no ack may cover entries 5 and 6).
        assert j.dirty and j.synced_index == 4


def test_vote_is_durable_and_commit_index_is_a_hint_apart(tmp_path: Path) -> None:
    p = str(tmp_path / "j")
    disk = FailingSync()
    j = DurableJournal(p, sync=disk, fatal=_stop)
    j.setCurrentTerm(3, "127.0.0.1:2")
    assert disk.calls == 4  # the new journal and its directory, then the term/vote file and its directory
    j.setRaftCommitIndex(7)
    j.onOneSecondTimer()
    assert disk.calls == 4  # the commit index is written without fsync, and never over the vote
    with open(p + ".meta") as f:
        assert "commit" not in f.read()
    os.close(j._fd)
    j2 = DurableJournal(p)
    assert (j2.getCurrentTerm(), j2.getVotedForNodeId(), j2.getRaftCommitIndex()) == (3, "127.0.0.1:2", 7)
    # Torn by a crash, the hint falls back (to the older meta file's, or 1); the vote stays.
    _write(p + ".commit", b"")
    j3 = DurableJournal(p)
    assert (j3.getCurrentTerm(), j3.getRaftCommitIndex()) == (3, 1)


def test_default_on_failure_is_process_exit(tmp_path: Path) -> None:
    # The real stop: os._exit from inside the journal, with the reason on stderr.
    code = (
        "import errno, sys\n"
        "from controlplane.store.journal import DurableJournal\n"
        "class Bad:\n"
        "    def fsync(self, fd): pass\n"
        "    def fdatasync(self, fd): raise OSError(errno.EIO, 'Input/output error')\n"
        f"j = DurableJournal({str(tmp_path / 'j')!r}, sync=Bad())\n"
        "j.add(b'x', 1, 1)\n"
        "try:\n"
        "    j.sync()\n"
        "except BaseException:\n"
        "    pass\n"
        "print('still running')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == EXIT_STORAGE_FAILURE
    assert "still running" not in res.stdout
    assert "fdatasync of" in res.stderr and "Input/output error" in res.stderr


@pytest.mark.parametrize(
    ("content", "starts"),
    [(b"", True), (MAGIC[:7], True), (bytes(len(MAGIC)), True), (b"something else entirely\n", False)],
    ids=["empty", "torn-header", "zeroed-header", "not-a-journal"],
)
def test_header_torn_at_creation_starts_empty(tmp_path: Path, content: bytes, starts: bool) -> None:
    p = str(tmp_path / "j")
    _write(p, content)
    if not starts:
        with pytest.raises(CorruptData, match="not a Skiff Raft journal"):
            DurableJournal(p)
        return
    j = DurableJournal(p)
    assert len(j) == 0
    j.add(b"a", 1, 1)
    j._destroy()
    assert DurableJournal(p)[:] == [(b"a", 1, 1)]


def _cmd(i: int) -> bytes:
    return b"cmd-%d-" % i + b"x" * 100


@pytest.mark.parametrize("step", ["appended", "reopened", "head-dropped", "tail-deleted-and-readded"])
def test_commands_beyond_the_hot_bytes_are_read_back(tmp_path: Path, step: str) -> None:
    # Only the newest commands stay in memory (~3 here); every entry still reads as written.
    p = str(tmp_path / "j")
    j = DurableJournal(p, hot_bytes=350)
    for i in range(1, 21):
        j.add(_cmd(i), i, 1 + i // 10)
    want = [(_cmd(i), i, 1 + i // 10) for i in range(1, 21)]
    if step == "reopened":
        j.sync()
        j._destroy()
        j = DurableJournal(p, hot_bytes=350)
    elif step == "head-dropped":
        j.deleteEntriesTo(12)  # after a snapshot
        want = want[12:]
    elif step == "tail-deleted-and-readded":
        j.deleteEntriesFrom(5)
        for cmd, idx, term in want[5:8]:
            j.add(cmd, idx, term)  # the same entries again: kept in place
        want = want[:8]
    assert j.stats()["commands_in_memory_bytes"] <= 350
    assert [j[i] for i in range(len(j))] == want
    assert j[-1] == want[-1] and list(j[2:]) == want[2:] and j[1:3][1] == want[2] and len(j[3:]) == len(want) - 3
    j.sync()
    j._destroy()
    assert [DurableJournal(p)[i] for i in range(len(want))] == want  # the file holds them all


def test_a_command_read_back_wrong_stops_the_member(tmp_path: Path) -> None:
    p = str(tmp_path / "j")
    j = DurableJournal(p, hot_bytes=350, fatal=_stop)
    for i in range(1, 11):
        j.add(_cmd(i), i, 1)
    j.sync()
    with open(p, "r+b") as f:  # flip a byte of entry 2's command, behind the journal's back
        data = f.read()
        at = data.index(_cmd(2)) + 5
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))
    assert j[0] == (_cmd(1), 1, 1)
    with pytest.raises(Stopped, match=r"entry 2 read back at offset .* does not match"):
        j[1]
