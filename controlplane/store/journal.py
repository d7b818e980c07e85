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

- Records are appended with os.write and carry a CRC32; a torn or corrupt tail is cut off
  at load (it was never acknowledged: see the sync rules below).
- `sync()` makes everything appended so far durable with one fdatasync. The Raft layer
  (raft.py) calls it at the start of every tick, before the leader counts its own log towards a
  commit, and before a follower sends the message that acknowledges entries. Appends in between
  are group-committed by that one call.
- Term and vote are written with write + fsync + rename + directory fsync before the vote
  message leaves (Raft's rule); the commit index is a hint and is saved lazily.
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
from typing import Any

from pysyncobj.journal import Journal

log = logging.getLogger("skiff.store.journal")

MAGIC = b"SKIFF-RAFT-JOURNAL-1\n"
_REC = struct.Struct("<IIQQ")  # payload length, crc32(idx, term, payload), idx, term
Entry = tuple[bytes, int, int]  # (command, index, term), pysyncobj's shape


def fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes) -> None:
    """Replace `path` with `data` so that after a crash it is either the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path)


def _encode(command: bytes, idx: int, term: int) -> bytes:
    crc = zlib.crc32(command, zlib.crc32(struct.pack("<QQ", idx, term)))
    return _REC.pack(len(command), crc, idx, term) + command


class DurableJournal(Journal):  # type: ignore[misc]
    def __init__(self, path: str) -> None:
        self._path = path
        self._meta_path = path + ".meta"
        self._entries: list[Entry] = []
        self._offsets: list[int] = []
        self._dirty = False
        self._syncs = 0
        self._synced_index = 0
        # Records still in the file past the logical end, after deleteEntriesFrom: pysyncobj
        # often deletes entries and appends the very same ones again (a leader re-sending
        # after an out-of-order ack); those are then kept in place instead of rewritten.
        self._tail: list[tuple[Entry, int]] = []
        self._meta: dict[str, Any] = self._load_meta()
        self._meta_saved = True
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._end = self._load()
        self._synced_index = self._entries[-1][1] if self._entries else 0

    # ------------------------------------------------------------ loading

    def _load_meta(self) -> dict[str, Any]:
        try:
            with open(self._meta_path, "rb") as f:
                data: dict[str, Any] = json.loads(f.read())
                return data
        except FileNotFoundError:
            return {}

    def _load(self) -> int:
        size = os.fstat(self._fd).st_size
        if size == 0:
            os.write(self._fd, MAGIC)
            os.fsync(self._fd)
            fsync_dir(self._path)
            return len(MAGIC)
        data = os.pread(self._fd, size, 0)
        if not data.startswith(MAGIC):
            raise RuntimeError(f"{self._path} is not a Skiff Raft journal (bad header)")
        pos = len(MAGIC)
        while pos + _REC.size <= size:
            n, crc, idx, term = _REC.unpack_from(data, pos)
            start = pos + _REC.size
            if start + n > size:
                break
            command = data[start : start + n]
            if zlib.crc32(command, zlib.crc32(struct.pack("<QQ", idx, term))) != crc:
                break
            self._entries.append((command, idx, term))
            self._offsets.append(pos)
            pos = start + n
        if pos != size:
            # Only an unacknowledged tail can be torn: acknowledged entries were fdatasync'ed.
            log.warning("journal %s: dropping %d bytes of torn or corrupt tail", self._path, size - pos)
            os.ftruncate(self._fd, pos)
            os.fsync(self._fd)
        return pos

    def align_to_snapshot(self, prev: Entry, last: Entry) -> None:
        """Drop the entries before the snapshot's `prev` entry if the journal still has them."""
        if len(self._entries) >= 2 and self._entries[0] == tuple(prev) and self._entries[1] == tuple(last):
            return
        for i, e in enumerate(self._entries):
            if e[1] == prev[1]:
                if e == tuple(prev) and i > 0:
                    log.info("journal: dropping %d entries already covered by the snapshot", i)
                    self.deleteEntriesTo(i)
                return

    # ------------------------------------------------------------ the pysyncobj Journal interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        if self._tail:
            (entry, offset) = self._tail[0]
            if entry == (command, idx, term):
                self._tail.pop(0)
                self._entries.append(entry)
                self._offsets.append(offset)
                self._end = offset + _REC.size + len(command)
                return
            self._truncate_tail()
        rec = _encode(command, idx, term)
        os.pwrite(self._fd, rec, self._end)
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end += len(rec)
        self._dirty = True

    def _truncate_tail(self) -> None:
        self._tail = []
        os.ftruncate(self._fd, self._end)
        self._dirty = True

    def clear(self) -> None:
        self._tail = []
        self._entries = []
        self._offsets = []
        self._end = len(MAGIC)
        os.ftruncate(self._fd, self._end)
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        self._tail = list(zip(self._entries[entryFrom:], self._offsets[entryFrom:], strict=True)) + self._tail
        self._end = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Keep entries[entryTo:], rewriting the file atomically (called after a snapshot)."""
        keep = self._entries[entryTo:]
        self._tail = []
        tmp = self._path + ".compact"
        offsets = []
        pos = len(MAGIC)
        parts = [MAGIC]
        for command, idx, term in keep:
            rec = _encode(command, idx, term)
            offsets.append(pos)
            parts.append(rec)
            pos += len(rec)
        with open(tmp, "wb") as f:
            f.write(b"".join(parts))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        fsync_dir(self._path)
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR, 0o600)
        self._entries = list(keep)
        self._offsets = offsets
        self._end = pos
        self._dirty = False
        self._synced_index = keep[-1][1] if keep else 0

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
        if self._meta.get("commit_index") != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_saved = False

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("commit_index", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        write_durably(self._meta_path, json.dumps(self._meta).encode())
        self._meta_saved = True

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("voted_for")

    def onOneSecondTimer(self) -> None:
        if not self._meta_saved:
            # The commit index is only a hint (Raft recomputes it), so no fsync here.
            tmp = self._meta_path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(json.dumps(self._meta).encode())
            os.replace(tmp, self._meta_path)
            self._meta_saved = True

    # ------------------------------------------------------------ durability

    @property
    def dirty(self) -> bool:
        return self._dirty

    def sync(self) -> None:
        """Make every append, truncation and clear so far durable (one fdatasync)."""
        if self._tail:
            self._truncate_tail()  # entries deleted and not re-added must not come back
        if self._dirty and self._fd >= 0:
            os.fdatasync(self._fd)
            self._syncs += 1
            self._dirty = False
        self._synced_index = self._entries[-1][1] if self._entries else 0

    @property
    def synced_index(self) -> int:
        """Raft index of the last entry known to be on disk."""
        return self._synced_index

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self._end, "syncs": self._syncs}
