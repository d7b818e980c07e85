"""Full dumps of the state machine, written in the background through pysyncobj's serializer hooks.

pysyncobj compacts its log by asking for a full dump: it calls `serializer(tmp_file, data)` on
its tick thread, immediately renames tmp_file over the dump file, then polls
`serializeChecker()` each tick and truncates the journal once it says SUCCESS. What must hold:

- The journal is only truncated after the new dump is durable (fsync'ed file, renamed,
  directory fsync'ed): SUCCESS is reported only after that.
- The tick thread never blocks on pickling or disk: `serialize()` takes a cheap consistent
  copy of the state (the state machine's records are immutable) and a background thread
  pickles and writes it. So that pysyncobj's own immediate rename cannot replace the current
  dump with something incomplete, the tmp file it renames is a hard link to the current dump
  (a no-op), and our rename of the new dump happens later, on the tick thread, in the checker.
- A dump received from the leader (pysyncobj writes it without fsync) is fsync'ed before it is
  loaded and before the follower acknowledges it.
- A snapshot carries a CRC32 of its body and is never used when it does not match: at startup
  the member refuses to start (`verify_snapshot`, before pysyncobj, which would log the error
  and go on without the snapshot), and a corrupt dump received from the leader stops the member.
- A failed fsync stops the member (disk.py); a failed write (a full disk) only fails this
  snapshot, and the journal keeps everything until a later one succeeds.

- A restored state shares its records as the state that was written did: the records are
  immutable tuples, one KeyValue held by the live map, by the event that wrote it and as the
  next event's prev_kv; pickled in separate chunks they would come back as separate copies
  (values included: a restored state of 30,000 pods took 204 MB against 151 MB). The reader
  loads records equal in value as one object, chunk by chunk (`_Sharing`), so the copies are
  freed while loading.

File format: MAGIC, then pickles: a header dict {last, prev, cluster}, the state without its
big lists, then the big lists in chunks (so pickling yields the GIL between chunks); then a
trailer: TRAILER_MAGIC, the body's length and its CRC32. Snapshots of the first format
(MAGIC_V1, no trailer) are still read, without a check.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from controlplane.store.disk import OS_SYNC, CorruptData, Fatal, FileSync, fsync_dir, stop_member

log = logging.getLogger("skiff.store.snapshot")

MAGIC = b"SKIFF-SNAPSHOT-2\n"
MAGIC_V1 = b"SKIFF-SNAPSHOT-1\n"  # no checksum
EMPTY = b"SKIFF-SNAPSHOT-NONE\n"  # placeholder before the first dump completes
TRAILER_MAGIC = b"SKIFF-SNAPSHOT-END"
_TRAILER = struct.Struct("<18sQI")  # TRAILER_MAGIC, body length, crc32(body)
CHUNK = 20_000
BIG = ("kvs", "events", "event_revs")
REMEDY = ("Remove the member (`etcdctl member remove`), wipe its data dir and add it again: it gets a "
          "fresh snapshot from the leader.")


class NoSnapshot(Exception):
    pass


class _CrcWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.crc = 0
        self.length = 0

    def write(self, b: bytes) -> int:
        self.crc = zlib.crc32(b, self.crc)
        self.length += len(b)
        return self.f.write(b)


class _CrcReader:
    """What pickle.load needs of a file (read, readline), with a running CRC32 of what it read."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.crc = 0
        self.length = 0

    def _seen(self, b: bytes) -> bytes:
        self.crc = zlib.crc32(b, self.crc)
        self.length += len(b)
        return b

    def read(self, n: int = -1) -> bytes:
        return self._seen(self.f.read(n))

    def readline(self) -> bytes:
        return self._seen(self.f.readline())


def write_snapshot(f: BinaryIO, header: dict[str, Any], state: dict[str, Any]) -> None:
    f.write(MAGIC)
    w = _CrcWriter(f)
    small = {k: v for k, v in state.items() if k not in BIG}
    pickle.dump(header, w, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.dump(small, w, protocol=pickle.HIGHEST_PROTOCOL)
    for name in BIG:
        items = state.get(name, [])
        chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
        pickle.dump((name, len(chunks)), w, protocol=pickle.HIGHEST_PROTOCOL)
        for c in chunks:
            pickle.dump(c, w, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_TRAILER.pack(TRAILER_MAGIC, w.length, w.crc))


def _magic(f: BinaryIO) -> bytes:
    head = f.read(len(MAGIC))
    if head in (MAGIC, MAGIC_V1):
        return head
    if (head + f.read(len(EMPTY) - len(head))) == EMPTY:
        raise NoSnapshot("no snapshot has completed yet")
    raise ValueError("not a Skiff snapshot (bad header)")


def _check_trailer(f: BinaryIO, crc: int, length: int, path: str) -> None:
    raw = f.read(_TRAILER.size)
    if len(raw) != _TRAILER.size or f.read(1):
        raise CorruptData(path, len(MAGIC) + length, "snapshot trailer missing or followed by extra bytes "
                          "(truncated or damaged file)", REMEDY)
    tag, want_len, want_crc = _TRAILER.unpack(raw)
    if tag != TRAILER_MAGIC or (want_len, want_crc) != (length, crc):
        raise CorruptData(path, len(MAGIC), f"snapshot checksum mismatch: body of {length} bytes has crc32 "
                          f"{crc:08x}, the trailer records {want_len} bytes with crc32 {want_crc:08x}", REMEDY)


class _Sharing:
    """Loads records equal in value as one object: a tuple with no tuple inside (a KeyValue) is
    kept once; one holding tuples (an Event) is rebuilt around the kept ones."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def record(self, item: Any) -> Any:
        if not isinstance(item, tuple):
            return item
        if any(isinstance(x, tuple) for x in item):
            parts = [self.record(x) for x in item]
            return item._make(parts) if hasattr(item, "_make") else tuple(parts)
        return self._seen.setdefault(item, item)


def read_snapshot(f: BinaryIO, *, header_only: bool = False,
                  path: str = "snapshot") -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and state; the state is returned only after its checksum matched (CorruptData)."""
    version = _magic(f)
    r = _CrcReader(f)
    try:
        header = pickle.load(r)
        if header_only:
            return header, {}
        state = pickle.load(r)
        sharing = _Sharing()
        for _ in BIG:
            name, n = pickle.load(r)
            items: list[Any] = []
            for _ in range(n):
                items.extend([sharing.record(item) for item in pickle.load(r)])
            state[name] = items
    except CorruptData:
        raise
    except Exception as e:
        raise CorruptData(path, len(MAGIC) + r.length, f"unreadable snapshot ({type(e).__name__}: {e})",
                          REMEDY) from None
    if version == MAGIC:
        _check_trailer(f, r.crc, r.length, path)
    return header, state


def verify_snapshot(path: str) -> None:
    """Check a snapshot file's checksum without loading it (CorruptData); no file is fine."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        try:
            version = _magic(f)
        except NoSnapshot:
            return
        except ValueError as e:
            raise CorruptData(path, 0, str(e), REMEDY) from None
        if version == MAGIC_V1:
            log.warning("snapshot %s has the first format, without a checksum", path)
            return
        body = os.fstat(f.fileno()).st_size - len(MAGIC) - _TRAILER.size
        if body < 0:
            raise CorruptData(path, len(MAGIC), "snapshot too short for its trailer", REMEDY)
        crc, left = 0, body
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
        _check_trailer(f, crc, body - left, path)


def read_header(path: str) -> dict[str, Any] | None:
    """The snapshot's {last, prev, cluster} header, or None if there is no complete snapshot."""
    try:
        with open(path, "rb") as f:
            return read_snapshot(f, header_only=True, path=path)[0]
    except (FileNotFoundError, NoSnapshot):
        return None


class SnapshotStore:
    """pysyncobj's serializer / serializeChecker / deserializer, backed by a state machine."""

    def __init__(self, path: str, *, take: Callable[[], dict[str, Any]],
                 restore: Callable[[dict[str, Any]], None], sync: FileSync = OS_SYNC,
                 fatal: Fatal = stop_member) -> None:
        self.path = path
        self._sync = sync
        self._fatal = fatal
        self._take = take
        self._restore = restore
        self._status = SERIALIZER_STATE.NOT_SERIALIZING
        self._written = threading.Event()
        self._failed = False
        self.completed = 0

    @property
    def busy(self) -> bool:
        return bool(self._status == SERIALIZER_STATE.SERIALIZING)

    # pysyncobj: serializer(fileName, data) with data = (last_entry, prev_entry, cluster_nodes)
    def serialize(self, tmp_file: str, data: tuple[Any, ...]) -> None:
        last, prev, cluster = data
        state = self._take()
        header = {"last": tuple(last), "prev": tuple(prev), "cluster": sorted(n.id for n in cluster)}
        if os.path.exists(self.path):
            if os.path.exists(tmp_file):
                os.unlink(tmp_file)
            os.link(self.path, tmp_file)
        else:
            with open(tmp_file, "wb") as f:
                f.write(EMPTY)
        self._status = SERIALIZER_STATE.SERIALIZING
        self._written.clear()
        self._failed = False
        threading.Thread(target=self._write, args=(header, state), name="snapshot-writer", daemon=True).start()

    def _write(self, header: dict[str, Any], state: dict[str, Any]) -> None:
        new = self.path + ".new"
        try:
            with open(new, "wb") as f:
                write_snapshot(f, header, state)
                f.flush()
                try:
                    self._sync.fsync(f.fileno())
                except OSError as e:
                    self._fatal(f"fsync of {new} failed: {e}; stopping this member without retrying")
        except Exception:
            # A full disk, say: this snapshot fails, the journal keeps everything, and
            # pysyncobj tries again later.
            log.exception("writing snapshot %s failed", self.path)
            self._failed = True
            try:
                os.unlink(new)
            except OSError:
                pass
        self._written.set()

    # pysyncobj: serializeChecker() -> SERIALIZER_STATE, polled every tick
    def check(self) -> int:
        if self._status != SERIALIZER_STATE.SERIALIZING:
            return SERIALIZER_STATE.NOT_SERIALIZING
        if not self._written.is_set():
            return SERIALIZER_STATE.SERIALIZING
        self._status = SERIALIZER_STATE.NOT_SERIALIZING
        if self._failed:
            return SERIALIZER_STATE.FAILED
        os.replace(self.path + ".new", self.path)
        try:
            fsync_dir(self.path, sync=self._sync)
        except OSError as e:
            self._fatal(f"fsync of the directory of {self.path} failed: {e}; stopping this member")
        self.completed += 1
        return SERIALIZER_STATE.SUCCESS

    # pysyncobj: deserializer(fileName) -> (last_entry, prev_entry, cluster_nodes)
    def deserialize(self, file_name: str) -> tuple[Any, Any, list[TCPNode]]:
        try:
            with open(file_name, "rb") as f:
                self._sync.fsync(f.fileno())  # a dump received from the leader was written without fsync
                header, state = read_snapshot(f, path=file_name)
            fsync_dir(file_name, sync=self._sync)
        except OSError as e:
            self._fatal(f"fsync of {file_name} failed: {e}; stopping this member without retrying")
        except CorruptData as e:
            # pysyncobj would log this and go on as if the dump had been loaded (and ack it).
            self._fatal(f"corrupt snapshot: {e}")
        self._restore(state)
        return header["last"], header["prev"], [TCPNode(a) for a in header["cluster"]]
