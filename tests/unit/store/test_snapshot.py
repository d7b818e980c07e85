"""Background snapshots through pysyncobj's serializer hooks."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import NoReturn

import pytest
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from controlplane.store import mvcc
from controlplane.store.disk import CorruptData
from controlplane.store.snapshot import (
    MAGIC,
    MAGIC_V1,
    TRAILER_MAGIC,
    SnapshotStore,
    read_header,
    read_snapshot,
    verify_snapshot,
    write_snapshot,
)


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


# ---------------------------------------------------------------- checksums


def _snapshot_file(path: str, n: int = 300) -> bytes:
    with open(path, "wb") as f:
        write_snapshot(f, {"last": (b"b", 2, 1), "prev": (b"a", 1, 1), "cluster": []}, _state(n).snapshot())
    with open(path, "rb") as f:
        return f.read()


def _damage(kind: str, data: bytes) -> bytes:
    mid = len(data) // 2
    if kind == "flip-body-byte":
        return data[:mid] + bytes([data[mid] ^ 1]) + data[mid + 1 :]
    if kind == "flip-trailer-crc":
        return data[:-1] + bytes([data[-1] ^ 1])
    if kind == "truncated":
        return data[:mid]
    if kind == "no-trailer":
        return data[: -len(TRAILER_MAGIC) - 12]
    if kind == "extra-bytes":
        return data + b"\0"
    return data


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("intact", None),
        ("flip-body-byte", "snapshot"),
        ("flip-trailer-crc", "snapshot checksum mismatch"),
        ("truncated", "snapshot"),
        ("no-trailer", "snapshot"),
        ("extra-bytes", "snapshot"),
    ],
    ids=["intact", "flipped-body-byte", "flipped-checksum", "truncated", "no-trailer", "extra-bytes"],
)
def test_corrupt_snapshot_is_refused(tmp_path: Path, kind: str, message: str | None) -> None:
    path = str(tmp_path / "snapshot")
    data = _snapshot_file(path)
    with open(path, "wb") as f:
        f.write(_damage(kind, data))
    restored: list[dict] = []
    stopped: list[str] = []

    def stop(msg: str) -> NoReturn:
        stopped.append(msg)
        raise RuntimeError(msg)

    store = SnapshotStore(path, take=dict, restore=restored.append, fatal=stop)
    if message is None:
        verify_snapshot(path)
        with open(path, "rb") as f:
            assert len(read_snapshot(f)[1]["kvs"]) == 300
        store.deserialize(path)
        assert len(restored) == 1 and not stopped
        return
    with pytest.raises(CorruptData, match=message) as err:
        verify_snapshot(path)
    assert err.value.path == path and path in str(err.value) and "refusing to start" in str(err.value)
    with pytest.raises(CorruptData), open(path, "rb") as f:
        read_snapshot(f, path=path)
    # A dump received from the leader that fails its check stops the member; never loaded.
    with pytest.raises(RuntimeError):
        store.deserialize(path)
    assert not restored and stopped and "corrupt snapshot" in stopped[0]


def test_first_format_snapshot_is_still_read(tmp_path: Path) -> None:
    path = str(tmp_path / "snapshot")
    data = _snapshot_file(path, n=5)
    body = data[len(MAGIC) : -(len(TRAILER_MAGIC) + 12)]
    with open(path, "wb") as f:
        f.write(MAGIC_V1 + body)
    verify_snapshot(path)
    with open(path, "rb") as f:
        assert len(read_snapshot(f)[1]["kvs"]) == 5


def test_failed_snapshot_fsync_stops_the_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "snapshot")
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the writer thread ends by SystemExit

    class Bad:
        def fsync(self, fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        def fdatasync(self, fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

    stopped: list[str] = []

    def stop(msg: str) -> NoReturn:
        stopped.append(msg)
        raise SystemExit(msg)  # ends the writer thread, as os._exit would end the process

    store = SnapshotStore(path, take=_state(10).snapshot, restore=lambda d: None, sync=Bad(), fatal=stop)
    store.serialize(path + ".tmp", ((b"b", 2, 1), (b"a", 1, 1), set()))
    deadline = time.monotonic() + 10
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stopped and "fsync of" in stopped[0] and "Input/output error" in stopped[0]
    assert read_header(path) is None  # the placeholder stays: no snapshot replaced the old one


def test_a_restored_state_shares_its_records_as_the_written_one(tmp_path: Path) -> None:
    # Live map, the event that wrote a version and the next event's prev_kv share one KeyValue
    # in a running state; the snapshot's separate pickles must not make three of it.
    st = mvcc.KVState()
    for rnd in range(3):
        st.apply([mvcc.cmd_put(mvcc.PutReq(b"k%d" % i, b"v%d-%d" % (i, rnd) * 50)) for i in range(4)])
    st.apply([mvcc.cmd_txn(mvcc.TxnReq((), (mvcc.PutReq(b"k0", b"once"), mvcc.DeleteReq(b"k1")), ()))])
    path = tmp_path / "snap"
    with open(path, "wb") as f:
        write_snapshot(f, {"last": None, "prev": None, "cluster": []}, st.snapshot())
    with open(path, "rb") as f:
        _, snap = read_snapshot(f)
    restored = mvcc.KVState.from_snapshot(snap)
    assert restored.snapshot() == st.snapshot()
    assert all(type(a) is type(b) for a, b in zip(restored.snapshot()["events"], st.snapshot()["events"], strict=True))
    events = restored.events_since(1)
    for later, ev in enumerate(events, 1):
        following = [e for e in events[later:] if e.kv.key == ev.kv.key]
        if ev.type == mvcc.PUT and following:
            assert following[0].prev_kv is ev.kv, ev
        elif ev.type == mvcc.PUT:
            assert restored.get(ev.kv.key) is ev.kv, ev
