"""Background snapshots through pysyncobj's serializer hooks."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from controlplane.store import mvcc
from controlplane.store.snapshot import SnapshotStore, read_header


def _state(n: int) -> mvcc.KVState:
    st = mvcc.KVState()
    st.apply([mvcc.cmd_put(mvcc.PutReq(b"k%05d" % i, b"v" * 100)) for i in range(n)])
    return st


def _serialize(store: SnapshotStore, tmp: str, last: tuple, prev: tuple) -> int:
    """Drive it the way pysyncobj does: serialize, rename tmp over the dump, then poll."""
    store.serialize(tmp, (last, prev, {TCPNode("127.0.0.1:1"), TCPNode("127.0.0.1:2")}))
    os.replace(tmp, store.path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = store.check()
        if st != SERIALIZER_STATE.SERIALIZING:
            return st
        time.sleep(0.01)
    raise AssertionError("snapshot never finished")


def test_snapshot_roundtrip_and_old_dump_kept_until_done(tmp_path: Path) -> None:
    path = str(tmp_path / "snapshot")
    src = _state(45_000)  # more than one chunk
    restored: list[mvcc.KVState] = []
    store = SnapshotStore(path, take=src.snapshot, restore=lambda d: restored.append(mvcc.KVState.from_snapshot(d)))
    assert _serialize(store, path + ".tmp", (b"c2", 11, 3), (b"c1", 10, 3)) == SERIALIZER_STATE.SUCCESS
    header = read_header(path)
    assert header is not None and header["last"] == (b"c2", 11, 3) and header["prev"] == (b"c1", 10, 3)
    # A second snapshot: pysyncobj's immediate rename must leave the first one in place.
    src.apply([mvcc.cmd_put(mvcc.PutReq(b"new", b"1"))])
    store.serialize(path + ".tmp", ((b"c4", 20, 3), (b"c3", 19, 3), set()))
    os.replace(path + ".tmp", path)
    assert read_header(path)["last"] == (b"c2", 11, 3)  # type: ignore[index]
    while store.check() == SERIALIZER_STATE.SERIALIZING:
        time.sleep(0.01)
    last, prev, cluster = store.deserialize(path)
    assert last == (b"c4", 20, 3) and prev == (b"c3", 19, 3) and cluster == []
    everything = mvcc.RangeReq(b"\x00", mvcc.ALL_KEYS)
    assert restored[-1].range(everything) == src.range(everything)
    assert restored[-1].revision == src.revision


def test_first_snapshot_placeholder_is_not_a_snapshot(tmp_path: Path) -> None:
    path = str(tmp_path / "snapshot")
    store = SnapshotStore(path, take=lambda: {}, restore=lambda d: None)
    store._write = lambda *a: None  # type: ignore[method-assign]  # never finishes
    store.serialize(path + ".tmp", ((b"b", 2, 1), (b"a", 1, 1), set()))
    os.replace(path + ".tmp", path)
    assert read_header(path) is None
