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

File format: MAGIC, then pickles: a header dict {last, prev, cluster}, the state without its
big lists, then the big lists in chunks (so pickling yields the GIL between chunks).
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from controlplane.store.journal import fsync_dir

log = logging.getLogger("skiff.store.snapshot")

MAGIC = b"SKIFF-SNAPSHOT-1\n"
EMPTY = b"SKIFF-SNAPSHOT-NONE\n"  # placeholder before the first dump completes
CHUNK = 20_000
BIG = ("kvs", "events", "event_revs")


class NoSnapshot(Exception):
    pass


def write_snapshot(f: BinaryIO, header: dict[str, Any], state: dict[str, Any]) -> None:
    f.write(MAGIC)
    small = {k: v for k, v in state.items() if k not in BIG}
    pickle.dump(header, f, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.dump(small, f, protocol=pickle.HIGHEST_PROTOCOL)
    for name in BIG:
        items = state.get(name, [])
        chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
        pickle.dump((name, len(chunks)), f, protocol=pickle.HIGHEST_PROTOCOL)
        for c in chunks:
            pickle.dump(c, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_snapshot(f: BinaryIO, *, header_only: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    head = f.read(len(MAGIC))
    if head != MAGIC:
        if (head + f.read(len(EMPTY) - len(head))) == EMPTY:
            raise NoSnapshot("no snapshot has completed yet")
        raise ValueError("not a Skiff snapshot (bad header)")
    header = pickle.load(f)
    if header_only:
        return header, {}
    state = pickle.load(f)
    for _ in BIG:
        name, n = pickle.load(f)
        items: list[Any] = []
        for _ in range(n):
            items.extend(pickle.load(f))
        state[name] = items
    return header, state


def read_header(path: str) -> dict[str, Any] | None:
    """The snapshot's {last, prev, cluster} header, or None if there is no complete snapshot."""
    try:
        with open(path, "rb") as f:
            return read_snapshot(f, header_only=True)[0]
    except (FileNotFoundError, NoSnapshot):
        return None


class SnapshotStore:
    """pysyncobj's serializer / serializeChecker / deserializer, backed by a state machine."""

    def __init__(self, path: str, *, take: Callable[[], dict[str, Any]],
                 restore: Callable[[dict[str, Any]], None]) -> None:
        self.path = path
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
        try:
            with open(self.path + ".new", "wb") as f:
                write_snapshot(f, header, state)
                f.flush()
                os.fsync(f.fileno())
        except Exception:
            log.exception("writing snapshot %s failed", self.path)
            self._failed = True
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
        fsync_dir(self.path)
        self.completed += 1
        return SERIALIZER_STATE.SUCCESS

    # pysyncobj: deserializer(fileName) -> (last_entry, prev_entry, cluster_nodes)
    def deserialize(self, file_name: str) -> tuple[Any, Any, list[TCPNode]]:
        with open(file_name, "rb") as f:
            os.fsync(f.fileno())  # a dump received from the leader was written without fsync
            header, state = read_snapshot(f)
        fsync_dir(file_name)
        self._restore(state)
        return header["last"], header["prev"], [TCPNode(a) for a in header["cluster"]]
