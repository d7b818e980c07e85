"""The store refusing to lie, on real store processes: damaged data on disk, a full disk or quota,
a failing fsync, more requests than the log can take.

Each test shows one row of docs/store.md's "When the disk or the load fails" table.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
from pysyncobj.transport import TCPTransport

from controlplane.store import mvcc
from controlplane.store.cluster import StoreCluster, free_addr
from controlplane.store.journal import scan_journal
from controlplane.store.raft import RaftNode
from controlplane.store.snapshot import MAGIC as SNAPSHOT_MAGIC
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.integration.store.conftest import Etcdctl
from tests.integration.store.etcd_client import Client
from tests.support.prereq import require, require_root

pytestmark = pytest.mark.integration

NO_SPACE = "etcdserver: mvcc: database space exceeded"


def _dump_logs(c: StoreCluster) -> None:
    for name in c.members:
        print(f"----- {name}.log\n{c.log(name)[-4000:]}")


def _start_expecting_exit(c: StoreCluster, name: str, timeout: float = 30.0) -> tuple[int, str]:
    """Start a member that must refuse: its exit code and log."""
    c.start_member(name, wait=False)
    m = c.members[name]
    assert m.proc is not None
    try:
        code = m.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        c.kill(name)
        raise AssertionError(f"{name} started on damaged data instead of refusing:\n{c.log(name)[-3000:]}") from None
    m.proc = None
    return code, c.log(name)


def _flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x20]))


# ---------------------------------------------------------------- damaged journal and snapshot


def test_corrupt_committed_entry_refuses_to_start_until_repaired() -> None:
    with StoreCluster(3) as c:
        try:
            ep = c.client("s1")
            cl = Client(ep)
            for i in range(40):
                cl.put(b"/j/%03d" % i, b"v%d" % i)
            victim = "s2"
            repair = [sys.executable, "-m", "controlplane.store.repair", "--data-dir", c.members[victim].data_dir]
            busy = subprocess.run(repair, capture_output=True, text=True, timeout=60)
            assert busy.returncode != 0 and "is in use by another process" in busy.stderr  # never under a live member
            c.stop_member(victim)
            journal = os.path.join(c.members[victim].data_dir, "raft.journal")
            with open(journal, "rb") as f:
                scan = scan_journal(f.read())
            assert scan.damage is None and len(scan.entries) > 20
            # A committed entry in the middle of the journal (every put above was acknowledged).
            mid = len(scan.entries) // 2
            offset = scan.offsets[mid]
            _flip_byte(journal, offset + 24 + len(scan.entries[mid][0]) // 2)
            size = os.path.getsize(journal)

            code, log = _start_expecting_exit(c, victim)
            assert code != 0
            assert f"{journal}: checksum mismatch in the middle of the journal" in log
            assert f"at offset {offset}: refusing to start" in log
            assert "skiff-store-repair" in log
            assert os.path.getsize(journal) == size  # refusing changed nothing

            res = subprocess.run(repair, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
            assert f"cut at offset {offset}" in res.stdout and "entries kept" in res.stdout
            assert os.path.getsize(journal) == offset
            assert os.path.getsize(f"{journal}.damaged-at-{offset}") == size

            cl.put(b"/j/after", b"x")  # written while the victim was down
            c.start_member(victim)
            mine = Client(c.client(victim))
            deadline = time.monotonic() + 20
            want = [b"/j/%03d" % i for i in range(40)] + [b"/j/after"]
            got: list[bytes] = []
            while time.monotonic() < deadline:
                got = [kv.key for kv in mine.get(b"/j/", prefix=True, serializable=True).kvs]
                if got == want:
                    break
                time.sleep(0.2)
            assert got == want  # caught up from the leader: the cut entries came back
            mine.close()
            cl.close()
        except BaseException:
            _dump_logs(c)
            raise


def test_corrupt_snapshot_refuses_to_start() -> None:
    with StoreCluster(1, extra_args=["--snapshot-count", "20"]) as c:
        try:
            cl = Client(c.client("s1"))
            snap = os.path.join(c.members["s1"].data_dir, "snapshot")
            deadline = time.monotonic() + 30
            i = 0
            while time.monotonic() < deadline:
                cl.put(b"/s/%04d" % i, b"v" * 200)
                i += 1
                if os.path.exists(snap) and open(snap, "rb").read(len(SNAPSHOT_MAGIC)) == SNAPSHOT_MAGIC:
                    break
            else:
                raise AssertionError("no snapshot was written")
            cl.close()
            c.stop_member("s1")
            _flip_byte(snap, os.path.getsize(snap) // 2)
            code, log = _start_expecting_exit(c, "s1")
            assert code != 0
            assert f"{snap}: snapshot checksum mismatch" in log and "refusing to start" in log
        except BaseException:
            _dump_logs(c)
            raise


# ---------------------------------------------------------------- space: quota and full disk


def test_quota_raises_nospace_alarm_reads_and_deletes_work() -> None:
    with StoreCluster(3, extra_args=["--quota-backend-bytes", "100000"]) as c:
        try:
            ctl = Etcdctl(c.endpoints_str)
            first, other = c.client("s1"), c.client("s3")
            value = "q" * 10_000
            failed = None
            for i in range(30):
                res = ctl("put", f"/q/{i:02d}", value, check=False, endpoints=first)
                if res.returncode != 0:
                    failed = res
                    break
            assert failed is not None and NO_SPACE in failed.stderr, "the quota never stopped a put"
            assert 5 <= i <= 12  # about 100 kB of data, not before and not long after
            # The alarm is replicated: every member lists it and refuses writes.
            for ep in c.endpoints:
                assert re.fullmatch(r"memberID:\d+ alarm:NOSPACE ?\n", ctl("alarm", "list", endpoints=ep).stdout)
            res = ctl("put", "/q/small", "1", check=False, endpoints=other)
            assert res.returncode != 0 and NO_SPACE in res.stderr
            res = ctl("txn", check=False, endpoints=other, input='mod("/q/00") > "0"\n\nput /q/t 1\n\n\n')
            assert res.returncode != 0 and NO_SPACE in res.stderr
            # Reads and deletes keep working.
            assert ctl("get", "/q/00", "--print-value-only", endpoints=other).stdout.strip() == value
            assert ctl("del", "/q/", "--prefix").stdout.strip() == str(i)
            assert ctl("get", "/q/", "--prefix", "--keys-only").stdout == ""
            assert "NOSPACE" in ctl("endpoint", "status", "-w", "json", endpoints=first).stdout
            # Disarming while the history still holds the deleted values: the next put raises it again.
            ctl("alarm", "disarm")
            assert ctl("alarm", "list").stdout == ""
            res = ctl("put", "/q/again", "1", check=False)
            assert res.returncode != 0 and NO_SPACE in res.stderr
            assert "alarm:NOSPACE" in ctl("alarm", "list").stdout
            # Compaction frees the history; then disarm, and writes work again.
            rev = int(re.search(r'"revision":(\d+)', ctl("get", "x", "-w", "json").stdout).group(1))  # type: ignore[union-attr]
            ctl("compact", str(rev))
            disarmed = ctl("alarm", "disarm").stdout
            assert re.fullmatch(r"memberID:\d+ alarm:NOSPACE ?\n", disarmed)
            assert ctl("alarm", "list").stdout == ""
            ctl("put", "/q/ok", "1", endpoints=other)
            assert ctl("get", "/q/ok", "--print-value-only").stdout.strip() == "1"
        except BaseException:
            _dump_logs(c)
            raise


@pytest.fixture
def small_disk() -> Iterator[str]:
    """A 48 MiB tmpfs: a disk that really fills up."""
    require_root()
    d = tempfile.mkdtemp(prefix="skiff-small-disk-")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", d], capture_output=True,
                         text=True)
    require(res.returncode == 0, f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], check=False)
        os.rmdir(d)


def test_full_disk_raises_nospace_and_defrag_gives_space_back(small_disk: str) -> None:
    reserve = 16 << 20
    c = StoreCluster(1, base_dir=small_disk,
                     extra_args=["--quota-backend-bytes", "0", "--disk-reserve-bytes", str(reserve)])
    try:
        c.start()
        ctl = Etcdctl(c.endpoints_str)
        cl = Client(c.client("s1"))
        value = os.urandom(1 << 19)  # 512 KiB
        cl.put(b"/marker", b"1")
        refused = None
        for i in range(200):
            try:
                cl.put(b"/d/%03d" % i, value)
            except grpc.RpcError as e:
                refused = e
                break
        assert refused is not None, "the disk never filled"
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and refused.details() == NO_SPACE
        st = os.statvfs(small_disk)
        free = st.f_bavail * st.f_frsize
        assert reserve - (2 << 20) < free < reserve + (1 << 20)  # refused at the reserve, not at ENOSPC
        assert "alarm:NOSPACE" in ctl("alarm", "list").stdout
        assert cl.get(b"/d/000").kvs[0].value == value  # reads work
        assert c.members["s1"].running
        # Free the space: delete, compact the history, take a snapshot (cuts the journal). The
        # marker's delete moves the revision past the big delete, whose event (it holds the
        # deleted values for watchers) compaction can then drop.
        ctl("del", "/d/", "--prefix")
        ctl("del", "/marker")
        rev = cl.get(b"x").header.revision
        ctl("compact", str(rev))
        ctl("defrag", f"--endpoints={c.client('s1')}")
        st = os.statvfs(small_disk)
        assert st.f_bavail * st.f_frsize > reserve + (8 << 20)
        ctl("alarm", "disarm")
        cl.put(b"/d/ok", b"1")
        assert cl.get(b"/d/ok").kvs[0].value == b"1"
        cl.close()
    except BaseException:
        _dump_logs(c)
        raise
    finally:
        c.close()


# ---------------------------------------------------------------- bounded proposals


async def test_too_many_requests_instead_of_an_unbounded_queue() -> None:
    with StoreCluster(1, extra_args=["--max-pending-requests", "8"]) as c:
        async with grpc.aio.insecure_channel(c.client("s1")) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)

            async def put(i: int) -> str:
                try:
                    await kv.Put(rpc_pb2.PutRequest(key=b"/p/%04d" % i, value=b"v" * 100), timeout=30)
                    return "ok"
                except grpc.aio.AioRpcError as e:
                    return f"{e.code().name}: {e.details()}"

            results = await asyncio.gather(*(put(i) for i in range(400)))
            refused = [r for r in results if r != "ok"]
            assert refused, "400 concurrent puts never overflowed a queue of 8"
            assert set(refused) == {"RESOURCE_EXHAUSTED: etcdserver: too many requests"}
            assert results.count("ok") >= 8
            # Nothing stuck: the store answers normally afterwards, and the refused puts are absent.
            await kv.Put(rpc_pb2.PutRequest(key=b"/p/after", value=b"1"), timeout=10)
            got = await kv.Range(rpc_pb2.RangeRequest(key=b"/p/", range_end=b"/p0", count_only=True), timeout=10)
            assert got.count == results.count("ok") + 1


# ---------------------------------------------------------------- a failing fsync (in-process group)


class MemberStopped(Exception):
    pass


class FailingDisk:
    """This member's disk: syncs work until `fail` is set, then raise EIO.

    `failed` is set by the first sync that raised, in the member's own thread: an ack sent after
    it is a real violation, while one sent after `fail` was flipped (from the test's thread) may
    still rest on a sync that succeeded just before.
    """

    def __init__(self) -> None:
        self.fail = False
        self.failed = False

    def fsync(self, fd: int) -> None:
        self.fdatasync(fd)

    def fdatasync(self, fd: int) -> None:
        if self.fail:
            self.failed = True
            raise OSError(errno.EIO, "Input/output error")


async def test_fsync_failure_stops_the_member_and_no_ack_leaves(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    peers = [free_addr("127.0.0.1") for _ in range(3)]
    disk = FailingDisk()
    stops: list[str] = []

    def stop(message: str) -> NoReturn:
        stops.append(message)
        raise MemberStopped(message)

    sent_after_failure: list[str] = []
    orig_send = TCPTransport.send

    def send(self: TCPTransport, node: Any, message: Any) -> Any:
        if disk.failed and self._syncObj is victim.raft and isinstance(message, dict) and \
                message.get("type") in ("next_node_idx", "response_vote", "append_entries"):
            sent_after_failure.append(message["type"])
        return orig_send(self, node, message)

    monkeypatch.setattr(TCPTransport, "send", send)
    nodes = [RaftNode(self_addr=p, peers=peers, data_dir=str(tmp_path / str(i)), password="pw", loop=loop,
                      **({"sync": disk, "fatal": stop} if i == 2 else {}))
             for i, p in enumerate(peers)]
    victim = nodes[2]

    async def put(node: RaftNode, key: bytes) -> Any:
        for _ in range(100):
            try:
                return await node.propose(mvcc.cmd_put(mvcc.PutReq(key, b"v")))
            except Exception:
                await asyncio.sleep(0.1)
        raise AssertionError("no leader")

    try:
        await asyncio.gather(*(put(nodes[i % 2], b"/f/before/%d" % i) for i in range(20)))
        deadline = time.monotonic() + 10
        while (victim.is_leader() or nodes[0].leader_addr() is None) and time.monotonic() < deadline:
            if victim.is_leader():
                victim.raft.transferLeadership()  # this test is about a follower's acks
            await asyncio.sleep(0.2)
        assert not victim.is_leader()
        while victim.applied_index < nodes[0].commit_index and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        disk.fail = True
        # The other two still make a majority: writes go on, while the victim, whose disk can
        # no longer confirm anything, stops before acknowledging a single entry.
        await asyncio.gather(*(put(nodes[i % 2], b"/f/after/%d" % i) for i in range(20)))
        deadline = time.monotonic() + 5
        while not stops and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stops, "the failing fsync never stopped the member"
        assert "raft.journal failed: [Errno 5] Input/output error" in stops[0] and "without retrying" in stops[0]
        assert [t for t in sent_after_failure if t != "append_entries"] == []
        assert victim.journal.dirty  # nothing it appended after the failure counts as synced
        assert victim.journal.synced_index < nodes[0].commit_index
    finally:
        # The victim's tick thread ends on MemberStopped (in a real member: os._exit).
        monkeypatch.setattr(threading, "excepthook", lambda args: None)
        for n in nodes:
            with contextlib.suppress(MemberStopped):
                await asyncio.to_thread(n.destroy)
