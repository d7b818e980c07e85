"""A crash-safe Raft journal for pysyncobj, replacing its FileJournal.

What pysyncobj 0.3.17's FileJournal does (read from its source): records go into an mmap of the
journal file (`mm[offset:offset+n] = data`) and the "last record offset" in the header is
updated in place; nothing ever calls msync/fsync while running (only `_destroy()` flushes).
Its meta file (term, vote, commit index) is written with a Python-level flush and a rename, no
fsync. So after `kill -9` the data survives (the dirty pages belong to the kernel), but after a
machine crash or power loss anything since the kernel's last writeback (up to ~30 s) is gone,
records have no checksum, and a header flushed before its data pages makes the loader parse
garbage. Raft's promise — an acknowledged entry is on a majority of disks — does not hold.

This journal keeps pysyncobj's Journal interface and adds what is missing:

- Records are appended with os.write and carry a CRC32. At load, a torn tail is cut (it was
  never acknowledged: see the sync rules below); a bad record in the middle of the journal
  (valid records after it, no sign of a torn write) is corruption of acknowledged data, and the
  member refuses to start, naming the file and offset (`scan_journal`). `repair_journal` (the
  explicit `skiff-store-repair` command, never automatic) cuts the journal there.
- A failed write or fdatasync stops the member at once (disk.py): never retried.
- `sync()` makes everything appended so far durable with one fdatasync. The Raft layer
  (raft.py) calls it at the start of every tick, before the leader counts its own log towards a
  commit, and before a follower sends the message that acknowledges entries. Appends in between
  are group-committed by that one call.
- Term and vote are written with write + fsync + rename + directory fsync before the vote
  message leaves (Raft's rule). The commit index is a hint, saved lazily (once a second) in
  its own file without fsync: it used to share the term/vote file, and replacing that file
  without fsync could lose the vote in a crash.
- `align_to_snapshot()`: after a crash between "snapshot written" and "journal truncated", the
  journal still starts before the snapshot; dropping that stale head at load keeps pysyncobj
  from discarding the whole journal when it finds the two disagree.

All methods run on pysyncobj's tick thread, except the read-only `stats()`.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pysyncobj.journal import Journal

from controlplane.store.disk import (
    OS_SYNC,
    CorruptData,
    Fatal,
    FileSync,
    fsync_dir,
    pwrite_all,
    stop_member,
    write_durably,
)
from controlplane.store.metrics import WAL_FSYNC

log = logging.getLogger("skiff.store.journal")

MAGIC = b"SKIFF-RAFT-JOURNAL-1\n"
_REC = struct.Struct("<IIQQ")  # payload length, crc32(idx, term, payload), idx, term
_IDX_AT = 8  # offset of idx inside a record header
SECTOR = 512
Entry = tuple[bytes, int, int]  # (command, index, term), pysyncobj's shape

REPAIR_HINT = ("If this member's data is damaged, either run `skiff-store-repair --data-dir {dir}` (cuts the "
               "journal at that offset, keeping a copy; the member then catches up from the others), or remove "
               "the member (`etcdctl member remove`), wipe its data dir and add it again.")


def _crc(command: bytes, idx: int, term: int) -> int:
    return zlib.crc32(command, zlib.crc32(struct.pack("<QQ", idx, term)))


def _encode(command: bytes, idx: int, term: int) -> bytes:
    return _REC.pack(len(command), _crc(command, idx, term), idx, term) + command


# ---------------------------------------------------------------- reading a journal (pure)


class Damage(NamedTuple):
    """The first bad byte range of a journal: a torn tail (cut at load) or corruption (refused)."""

    offset: int
    torn: bool
    detail: str


class JournalScan(NamedTuple):
    entries: list[Entry]
    offsets: list[int]
    end: int  # offset just past the last valid record
    damage: Damage | None


def _record_at(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(end, idx, term) of a complete record with a valid checksum at `pos`, else None."""
    if pos < len(MAGIC) or pos + _REC.size > len(data):
        return None
    n, crc, idx, term = _REC.unpack_from(data, pos)
    end = pos + _REC.size + n
    if end > len(data) or _crc(data[pos + _REC.size : end], idx, term) != crc:
        return None
    return end, idx, term


def _valid_record_after(data: bytes, pos: int, idx_hints: list[int]) -> int | None:
    """Offset of a valid record somewhere after `pos`, looked for by its expected Raft index.

    Records are not aligned, so a damaged length field hides where the next one starts; Raft
    indexes are consecutive, so the next records carry one of a few known indexes. Searching
    for those 8 bytes is fast (C), and the checksum rules out chance matches.
    """
    for idx in idx_hints:
        if idx <= 0:
            continue
        needle = struct.pack("<Q", idx)
        at = data.find(needle, pos + 1 + _IDX_AT)
        tries = 0
        while at != -1 and tries < 100_000:
            if _record_at(data, at - _IDX_AT) is not None:
                return at - _IDX_AT
            at = data.find(needle, at + 1)
            tries += 1
    return None


def _has_zero_sector(data: bytes, start: int, end: int) -> bool:
    """Whether [start, end) holds a whole, aligned, all-zero sector (etcd's torn-write sign)."""
    first = -(-start // SECTOR) * SECTOR
    zero = bytes(SECTOR)
    return any(data[s : s + SECTOR] == zero for s in range(first, end - SECTOR + 1, SECTOR))


def scan_journal(data: bytes) -> JournalScan:
    """Parse a journal's bytes: its valid records, and where (and how) it is damaged.

    Appends are group-committed (several records written, then one fdatasync), so a crash can
    only damage records that were never synced and never acknowledged: the tail. A bad record
    counts as that torn tail when no valid record follows it, or when it holds a zeroed sector
    (a write that never reached the disk; etcd's WAL uses the same sign). A bad record with
    valid records after it and no such sign is corruption of data that was acknowledged: the
    journal must not be used (cutting it there would silently drop committed entries).
    """
    if not data.startswith(MAGIC):
        return JournalScan([], [], 0, Damage(0, False, "not a Skiff Raft journal (bad header)"))
    entries: list[Entry] = []
    offsets: list[int] = []
    pos = len(MAGIC)
    size = len(data)
    while pos < size:
        rec = _record_at(data, pos)
        if rec is None:
            break
        end, idx, term = rec
        entries.append((data[pos + _REC.size : end], idx, term))
        offsets.append(pos)
        pos = end
    if pos == size:
        return JournalScan(entries, offsets, pos, None)
    if pos + _REC.size > size:
        return JournalScan(entries, offsets, pos, Damage(pos, True, f"incomplete record header ({size - pos} bytes)"))
    n, _, idx, term = _REC.unpack_from(data, pos)
    bad_end = min(size, pos + _REC.size + n)
    what = (f"record claiming index {idx}, term {term}, {n} bytes "
            f"{'extends past the end of the file' if pos + _REC.size + n > size else 'fails its checksum'}")
    last = entries[-1][1] if entries else 0
    hints = [last + 1, last + 2, last + 3] if entries else [idx + 1]
    following = _valid_record_after(data, pos, hints)
    if following is None:
        return JournalScan(entries, offsets, pos, Damage(pos, True, f"torn tail: {what}"))
    if _has_zero_sector(data, pos, min(bad_end, following)):
        return JournalScan(entries, offsets, pos, Damage(pos, True, f"torn write (zeroed sector): {what}"))
    return JournalScan(entries, offsets, pos, Damage(
        pos, False, f"checksum mismatch in the middle of the journal ({what}; a valid record follows at offset "
                    f"{following}, after entry {last})"))


class RepairReport(NamedTuple):
    path: str
    offset: int  # where the journal was cut (-1: nothing to repair)
    kept: int  # entries kept
    dropped_bytes: int
    backup: str | None


def repair_journal(path: str, *, sync: FileSync = OS_SYNC) -> RepairReport:
    """Cut the journal at its first damaged record, keeping a copy of the whole file first.

    The entries from there on are gone from this member; in a cluster the leader sends them
    again (they were committed on a majority). This is an operator's decision, never automatic.
    """
    with open(path, "rb") as f:
        data = f.read()
    scan = scan_journal(data)
    if scan.damage is None:
        return RepairReport(path, -1, len(scan.entries), 0, None)
    if scan.damage.offset < len(MAGIC):
        raise CorruptData(path, 0, scan.damage.detail, "Not a journal; the repair command does not touch it.")
    backup = f"{path}.damaged-at-{scan.damage.offset}"
    write_durably(backup, data, sync=sync)
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, scan.damage.offset)
        sync.fsync(fd)
    finally:
        os.close(fd)
    return RepairReport(path, scan.damage.offset, len(scan.entries), len(data) - scan.damage.offset, backup)


# Commands of the newest entries kept in memory: what applying and replicating to followers that
# keep up read. Older ones are read back from the file when asked for (a follower catching up,
# the head kept after a snapshot), from the kernel's page cache as a rule.
HOT_BYTES = 4 << 20


class _Entries:
    """The journal's entries as pysyncobj sees them, (command, index, term), without holding
    every command: index, term and place in the file of each entry stay in memory, the command
    only for the newest `hot_bytes`. Until the next snapshot truncates the journal (at up to the
    64 MB that forces one) every command used to stay in memory as well: a second copy of every
    value the state machine holds, on every member. A command read back is checked against its
    record's CRC."""

    def __init__(self, read: Callable[[int, int], bytes], fatal: Fatal, *, hot_bytes: int = HOT_BYTES) -> None:
        self._read = read  # (offset, length) -> bytes of the journal file
        self._fatal = fatal
        self._hot_max = hot_bytes
        self.idx: list[int] = []
        self.term: list[int] = []
        self.offset: list[int] = []  # of the record (its header)
        self._commands: list[bytes | None] = []  # None: read it back from the file
        self._lengths: list[int] = []
        self._cold = 0  # entries before this one hold no command in memory
        self._hot = 0  # bytes of the commands held

    def __len__(self) -> int:
        return len(self.idx)

    def append(self, command: bytes, idx: int, term: int, offset: int) -> None:
        self.idx.append(idx)
        self.term.append(term)
        self.offset.append(offset)
        self._commands.append(command)
        self._lengths.append(len(command))
        self._hot += len(command)
        while self._hot > self._hot_max and self._cold < len(self._commands) - 1:
            dropped = self._commands[self._cold]
            if dropped is not None:
                self._hot -= len(dropped)
                self._commands[self._cold] = None
            self._cold += 1

    def entry(self, i: int) -> Entry:
        command = self._commands[i]
        if command is None:
            command = self._read_back(i)
        return (command, self.idx[i], self.term[i])

    def _read_back(self, i: int) -> bytes:
        record = self._read(self.offset[i], _REC.size + self._lengths[i])
        n, crc, idx, term = _REC.unpack_from(record)
        command = record[_REC.size :]
        if (n, idx, term) != (self._lengths[i], self.idx[i], self.term[i]) or _crc(command, idx, term) != crc:
            self._fatal(f"raft journal entry {self.idx[i]} read back at offset {self.offset[i]} does not match "
                        "its record: stopping this member (check the disk; the others hold the entry)")
        return command

    def __getitem__(self, item: int | slice) -> Any:
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self.idx))
            if step != 1:
                raise ValueError("journal slices are contiguous")
            return _EntrySlice(self, start, max(start, stop))
        if item < 0:
            item += len(self.idx)
        if not 0 <= item < len(self.idx):
            raise IndexError(item)
        return self.entry(item)

    def truncate(self, keep: int) -> None:
        """Keep the first `keep` entries."""
        self._hot -= sum(len(c) for c in self._commands[keep:] if c is not None)
        for column in (self.idx, self.term, self.offset, self._commands, self._lengths):
            del column[keep:]
        self._cold = min(self._cold, keep)

    def drop_head(self, drop: int, moved_by: int) -> None:
        """Forget the first `drop` entries; the others' records now start `moved_by` bytes earlier."""
        self._hot -= sum(len(c) for c in self._commands[:drop] if c is not None)
        for column in (self.idx, self.term, self.offset, self._commands, self._lengths):
            del column[:drop]
        self.offset = [o - moved_by for o in self.offset]
        self._cold = max(0, self._cold - drop)

    @property
    def hot_bytes(self) -> int:
        return self._hot


class _EntrySlice(Sequence[Entry]):
    """Entries [start, stop) read as they are asked for: pysyncobj slices the journal to its end
    and then takes what fits in one message."""

    def __init__(self, entries: _Entries, start: int, stop: int) -> None:
        self._entries, self._start, self._stop = entries, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"journal entries {self._start}..{self._stop}: {list(self)!r}"

    def __getitem__(self, item: int | slice) -> Any:  # type: ignore[override]
        n = self._stop - self._start
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            return [self._entries.entry(self._start + i) for i in range(start, stop, step)]
        if item < 0:
            item += n
        if not 0 <= item < n:
            raise IndexError(item)
        return self._entries.entry(self._start + item)


class DurableJournal(Journal):  # type: ignore[misc]
    def __init__(self, path: str, *, sync: FileSync = OS_SYNC, fatal: Fatal = stop_member,
                 hot_bytes: int = HOT_BYTES) -> None:
        self._path = path
        self._meta_path = path + ".meta"
        self._sync = sync
        self._fatal = fatal
        self._entries = _Entries(self._pread, fatal, hot_bytes=hot_bytes)
        self._dirty = False
        self._syncs = 0
        self._synced_index = 0
        # Records still in the file past the logical end, after deleteEntriesFrom: pysyncobj
        # often deletes entries and appends the very same ones again (a leader re-sending
        # after an out-of-order ack); those are then kept in place instead of rewritten.
        self._tail: list[tuple[Entry, int]] = []
        self._meta: dict[str, Any] = self._load_meta()
        self._commit_path = path + ".commit"
        self._commit_index = self._load_commit_index()
        self._commit_saved = True
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._end = self._load()
        except BaseException:
            os.close(self._fd)
            raise
        self._synced_index = self._entries.idx[-1] if self._entries else 0

    def _pread(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as e:
            self._fatal(f"read of {self._path} failed: {e}; stopping this member")
        if len(data) != length:
            self._fatal(f"short read of {self._path} at offset {offset} ({len(data)} of {length} bytes): "
                        "the file was changed behind this member; stopping it")
        return data

    # ------------------------------------------------------------ loading

    def _load_meta(self) -> dict[str, Any]:
        try:
            with open(self._meta_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            data: dict[str, Any] = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise CorruptData(self._meta_path, 0, f"unreadable term/vote file ({e})",
                              "The member's vote cannot be trusted: remove the member (`etcdctl member remove`), "
                              "wipe its data dir and add it again.") from None
        return data

    def _load(self) -> int:
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, len(MAGIC), 0) if 0 < size <= len(MAGIC) else b""
        if size == 0 or (head and (MAGIC.startswith(head) or not head.strip(b"\0"))):
            # New, or a crash while it was being created (the header alone, torn): no entries.
            os.ftruncate(self._fd, 0)
            self._guard("write", lambda: pwrite_all(self._fd, MAGIC, 0))
            self._guard("fsync", lambda: self._sync.fsync(self._fd))
            self._guard("fsync", lambda: fsync_dir(self._path, sync=self._sync))
            return len(MAGIC)
        scan = scan_journal(os.pread(self._fd, size, 0))
        damage = scan.damage
        if damage is not None and not damage.torn:
            hint = REPAIR_HINT.format(dir=os.path.dirname(os.path.abspath(self._path)))
            raise CorruptData(self._path, damage.offset, damage.detail,
                              hint if damage.offset >= len(MAGIC) else "This is not a Skiff Raft journal.")
        for (command, idx, term), offset in zip(scan.entries, scan.offsets, strict=True):
            self._entries.append(command, idx, term, offset)
        if damage is not None:
            # Only an unacknowledged tail can be torn: acknowledged entries were fdatasync'ed.
            log.warning("journal %s: cutting %d bytes at offset %d: %s", self._path, size - scan.end, scan.end,
                        damage.detail)
            os.ftruncate(self._fd, scan.end)
            self._guard("fsync", lambda: self._sync.fsync(self._fd))
        return scan.end

    def align_to_snapshot(self, prev: Entry, last: Entry) -> None:
        """Drop the entries before the snapshot's `prev` entry if the journal still has them."""
        entries = self._entries
        if len(entries) >= 2 and entries.entry(0) == tuple(prev) and entries.entry(1) == tuple(last):
            return
        for i, idx in enumerate(entries.idx):
            if idx == prev[1]:
                if entries.entry(i) == tuple(prev) and i > 0:
                    log.info("journal: dropping %d entries already covered by the snapshot", i)
                    self.deleteEntriesTo(i)
                return

    def _guard(self, what: str, op: Callable[[], object]) -> None:
        """Run a write or sync of the journal; a failure stops the member (see disk.py)."""
        try:
            op()
        except OSError as e:
            self._fatal(f"{what} of {self._path} failed: {e}; stopping this member without retrying "
                        f"(the kernel may have dropped the unsynced data). Check the disk, then restart it.")

    # ------------------------------------------------------------ the pysyncobj Journal interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        if self._tail:
            (entry, offset) = self._tail[0]
            if entry == (command, idx, term):
                self._tail.pop(0)
                self._entries.append(command, idx, term, offset)
                self._end = offset + _REC.size + len(command)
                return
            self._truncate_tail()
        rec = _encode(command, idx, term)
        self._guard("write", lambda: pwrite_all(self._fd, rec, self._end))
        self._entries.append(command, idx, term, self._end)
        self._end += len(rec)
        self._dirty = True

    def _truncate_tail(self) -> None:
        self._tail = []
        self._guard("truncate", lambda: os.ftruncate(self._fd, self._end))
        self._dirty = True

    def clear(self) -> None:
        self._tail = []
        self._entries.truncate(0)
        self._end = len(MAGIC)
        self._guard("truncate", lambda: os.ftruncate(self._fd, self._end))
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        entries = self._entries
        if entryFrom >= len(entries):
            return
        self._tail = [(entries.entry(i), entries.offset[i]) for i in range(entryFrom, len(entries))] + self._tail
        self._end = entries.offset[entryFrom]
        entries.truncate(entryFrom)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Keep entries[entryTo:], rewriting the file atomically (called after a snapshot)."""
        entries = self._entries
        start = entries.offset[entryTo] if entryTo < len(entries) else self._end
        kept = self._pread(start, self._end - start)  # their records as they are: idx, term, CRC, command
        self._tail = []
        self._guard("rewrite", lambda: write_durably(self._path, MAGIC + kept, sync=self._sync))
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR, 0o600)
        entries.drop_head(entryTo, start - len(MAGIC))
        self._end = len(MAGIC) + len(kept)
        self._dirty = False
        self._synced_index = entries.idx[-1] if entries else 0

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.sync()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.onOneSecondTimer()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._commit_index != raftCommitIndex:
            self._commit_index = raftCommitIndex
            self._commit_saved = False

    def getRaftCommitIndex(self) -> int:
        return self._commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        # pysyncobj calls this before the vote request or vote response leaves.
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        data = json.dumps(self._meta).encode()
        self._guard("write of the term/vote file",
                    lambda: write_durably(self._meta_path, data, sync=self._sync))

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("voted_for")

    def onOneSecondTimer(self) -> None:
        if not self._commit_saved:
            # The commit index is only a hint (Raft learns it again from the leader; pysyncobj
            # clamps one beyond the journal), so it lives in its own file, replaced without
            # fsync: a crash can lose it but never the term and vote, which are only ever
            # replaced durably.
            tmp = self._commit_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(self._commit_index))
            os.replace(tmp, self._commit_path)
            self._commit_saved = True

    def _load_commit_index(self) -> int:
        try:
            with open(self._commit_path) as f:
                return int(f.read())
        except (FileNotFoundError, ValueError):
            # Missing or torn by a crash: the older term/vote file may still hold one.
            return int(self._meta.get("commit_index", 1))

    # ------------------------------------------------------------ durability

    @property
    def dirty(self) -> bool:
        return self._dirty

    def sync(self) -> None:
        """Make every append, truncation and clear so far durable (one fdatasync)."""
        if self._tail:
            self._truncate_tail()  # entries deleted and not re-added must not come back
        if self._dirty and self._fd >= 0:
            with WAL_FSYNC.time():
                self._guard("fdatasync", lambda: self._sync.fdatasync(self._fd))
            self._syncs += 1
            self._dirty = False
        self._synced_index = self._entries.idx[-1] if self._entries else 0

    @property
    def synced_index(self) -> int:
        """Raft index of the last entry known to be on disk."""
        return self._synced_index

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self._end, "syncs": self._syncs,
                "commands_in_memory_bytes": self._entries.hot_bytes}
