"""ReadIndex on a real in-process 3-member Raft group (TCP on loopback, real journals).

A linearizable read, on the leader or on a follower (which asks the leader), writes nothing to
the log and sees every write acknowledged before it, and a leader cut off from the
majority (it still believes it leads: its fallback timeout is long) never serves one after
the others elected a new leader and committed a newer value. The cut drops every message
between the isolated member and the others at send time, like etcd/raft's `isolate`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.transport import TCPTransport

from controlplane.store import errors, mvcc
from controlplane.store.cluster import free_addr
from controlplane.store.raft import RaftNode, RaftTimings

pytestmark = pytest.mark.integration


class Cut:
    """Drops every message to or from the isolated members."""

    def __init__(self) -> None:
        self.isolated: set[str] = set()
        self.no_appends_to: set[str] = set()  # these members get no log entries (they lag), all else passes

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        orig = TCPTransport.send
        cut = self

        def send(self: TCPTransport, node: Any, message: Any) -> Any:
            if cut.isolated and (node.id in cut.isolated) != (self._selfNode.id in cut.isolated):
                return True
            if node.id in cut.no_appends_to and isinstance(message, dict) and message.get("type") == "append_entries":
                return True
            return orig(self, node, message)

        monkeypatch.setattr(TCPTransport, "send", send)


@pytest.fixture
async def group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[list[RaftNode], Cut]]:
    cut = Cut()
    cut.install(monkeypatch)
    loop = asyncio.get_running_loop()
    peers = [free_addr("127.0.0.1") for _ in range(3)]
    # A long fallback: a cut-off leader keeps believing it leads for the whole test.
    timings = RaftTimings(leader_fallback=60.0)
    nodes = [RaftNode(self_addr=p, peers=peers, data_dir=str(tmp_path / str(i)), password="pw", loop=loop,
                      timings=timings, request_timeout=2.0) for i, p in enumerate(peers)]
    try:
        yield nodes, cut
    finally:
        for n in nodes:
            await asyncio.to_thread(n.destroy)


async def _leader(nodes: list[RaftNode], *, other_than: RaftNode | None = None, timeout: float = 15.0) -> RaftNode:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for n in nodes:
            if n is not other_than and n.is_leader() and (other_than is None or n.term > other_than.term):
                return n
        await asyncio.sleep(0.05)
    raise AssertionError("no leader elected")


async def _put(node: RaftNode, key: bytes, value: bytes) -> None:
    end = time.monotonic() + 15
    while True:
        try:
            await node.propose(mvcc.cmd_put(mvcc.PutReq(key, value)))
            return
        except errors.EtcdError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)


def _value(node: RaftNode, key: bytes) -> bytes | None:
    with node.lock:
        kv = node.state.get(key)
    return None if kv is None else kv.value


@pytest.mark.parametrize("reader", ["leader", "follower"])
async def test_reads_do_not_write_the_log(group: tuple[list[RaftNode], Cut], reader: str) -> None:
    nodes, _ = group
    leader = await _leader(nodes)
    await _put(leader, b"k", b"v1")
    followers = [n for n in nodes if n is not leader]
    node = leader if reader == "leader" else followers[0]
    await _put(followers[1], b"k", b"v2")  # through the other follower: acknowledged there
    before = (leader.commit_index, leader.applied_batches)
    await asyncio.gather(*(node.linearizable_read() for _ in range(50)))
    assert _value(node, b"k") == b"v2", "a linearizable read missed an acknowledged write"
    for i in range(20):  # one after another: each its own round, each after a new write elsewhere
        await _put(followers[1] if reader == "follower" else followers[0], b"n", b"%d" % i)
        await node.linearizable_read()
        assert _value(node, b"n") == b"%d" % i
    writes = 20
    assert leader.commit_index - before[0] <= writes and leader.applied_batches - before[1] <= writes, \
        "a ReadIndex read appended to the log"
    assert leader.raft.read_round >= 20


async def test_deposed_leader_cannot_serve_a_stale_linearizable_read(group: tuple[list[RaftNode], Cut]) -> None:
    nodes, cut = group
    old = await _leader(nodes)
    await _put(old, b"k", b"v1")
    await asyncio.sleep(0.3)  # every member applied v1
    cut.isolated = {old.self_addr}
    new = await _leader([n for n in nodes if n is not old], other_than=old)
    await _put(new, b"k", b"v2")
    # The scenario is the dangerous one: the old leader still believes it leads, and holds v1.
    assert old.is_leader()
    assert _value(old, b"k") == b"v1"
    with pytest.raises(errors.EtcdError) as exc:
        await old.linearizable_read()
    assert exc.value is errors.TIMEOUT
    assert _value(old, b"k") == b"v1"  # nothing was served, and nothing newer arrived meanwhile
    # Healed: the old leader learns the new term, and its next linearizable read sees v2.
    cut.isolated = set()
    end = time.monotonic() + 15
    while True:
        try:
            await old.linearizable_read()
            break
        except errors.EtcdError:
            if time.monotonic() > end:
                raise
    assert not old.is_leader()
    assert _value(old, b"k") == b"v2"


async def test_lagging_follower_waits_for_its_own_apply(group: tuple[list[RaftNode], Cut]) -> None:
    nodes, cut = group
    leader = await _leader(nodes)
    await _put(leader, b"k", b"v1")
    await asyncio.sleep(0.3)
    lagging = next(n for n in nodes if n is not leader)
    assert _value(lagging, b"k") == b"v1"
    cut.no_appends_to = {lagging.self_addr}  # it still talks to the leader, but learns of no new entry
    await _put(leader, b"k", b"v2")  # committed by the leader and the other follower
    with pytest.raises(errors.EtcdError):  # the leader confirms an index the lagging member has not applied
        await lagging.linearizable_read()
    assert _value(lagging, b"k") == b"v1"
    cut.no_appends_to = set()
    await lagging.linearizable_read()
    assert _value(lagging, b"k") == b"v2"


@pytest.mark.parametrize(("reader", "concurrency"), [
    pytest.param("leader", 1, id="leader-1"),
    pytest.param("leader", 64, id="leader-64"),
    pytest.param("follower", 1, id="follower-1"),
    pytest.param("follower", 64, id="follower-64"),
])
async def test_batched_reads_see_every_write_acknowledged_before_they_began(
        group: tuple[list[RaftNode], Cut], reader: str, concurrency: int) -> None:
    """Readers join one batch (one answer) while the tick thread has not taken it; a read that
    begins after a write was acknowledged (on another member) must still see that write."""
    nodes, _ = group
    leader = await _leader(nodes)
    followers = [n for n in nodes if n is not leader]
    node = leader if reader == "leader" else followers[0]
    writer_node = followers[1]
    await _put(writer_node, b"n", b"0")
    acknowledged = 0  # the highest value whose write was acknowledged
    stop = time.monotonic() + 2.0
    reads = 0
    stale: list[str] = []

    async def writer() -> None:
        nonlocal acknowledged
        i = 0
        while time.monotonic() < stop:
            i += 1
            await _put(writer_node, b"n", b"%d" % i)
            acknowledged = i

    async def read_loop() -> None:
        nonlocal reads
        while time.monotonic() < stop:
            floor = acknowledged
            await node.linearizable_read()
            seen = int(_value(node, b"n") or b"0")
            reads += 1
            if seen < floor:
                stale.append(f"read began after {floor} was acknowledged, saw {seen}")

    rounds_before = leader.raft.read_round
    await asyncio.gather(writer(), *(read_loop() for _ in range(concurrency)))
    assert stale == []
    assert acknowledged > 3 and reads > concurrency
    rounds = leader.raft.read_round - rounds_before
    assert rounds > 0
    if concurrency > 1:  # reads shared rounds: far fewer rounds than reads
        assert rounds * 4 < reads, f"{reads} reads took {rounds} rounds"


async def test_a_cancelled_reader_does_not_cancel_its_batch(group: tuple[list[RaftNode], Cut]) -> None:
    nodes, _ = group
    leader = await _leader(nodes)
    await _put(leader, b"k", b"v")
    tasks = [asyncio.create_task(leader.linearizable_read()) for _ in range(10)]
    await asyncio.sleep(0)  # all ten joined one batch
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [None] * 9
