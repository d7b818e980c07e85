"""A member whose Raft thread runs late must not depose a leader that is alive.

On a starved machine a member's tick thread runs late: it waits for the CPU, for the GIL held
by the event loop, or for an fdatasync. pysyncobj judged a follower's election deadline at the
start of a tick, before reading the heartbeats waiting in its sockets, so a follower whose tick
came late became a candidate in a higher term and the leader stepped down (the scale scenario
saw the store re-elect every 1-2 minutes). Here one follower of a real in-process 3-member group
(TCP on loopback, the real journal) is made late, under a steady write load, and the leader
and term must stay what they were.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from controlplane.store import mvcc
from controlplane.store.cluster import free_addr
from controlplane.store.raft import RaftNode, RaftTimings

pytestmark = pytest.mark.integration

# The store's default election timing (0.8-1.6 s); the late follower is late by more than the
# longest election timeout, every tick. The connection timeout stays above a late tick (a peer
# silent for longer is dropped and reconnected, which is another matter).
TIMINGS = RaftTimings(heartbeat=0.1, election_min=0.8, election_max=1.6, leader_fallback=3.0,
                      connection_timeout=10.0)
LATE = 2.0
RUN = 10.0


class LateSync:
    """The real fsync, after `delay` seconds (set once a leader is known)."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.tick_delay = 0.0

    def fsync(self, fd: int) -> None:
        time.sleep(self.delay)
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        time.sleep(self.delay)
        os.fdatasync(fd)


def _late_fsync(node: RaftNode, sync: LateSync) -> None:
    sync.delay = LATE


def _late_after_poll(node: RaftNode, sync: LateSync) -> None:
    # The tick thread loses the CPU (or the GIL) for LATE seconds right after each tick's poll,
    # the worst moment: what arrives meanwhile is not read before the next tick's decisions.
    poller = node.raft._poller
    poll = poller.poll

    def late_poll(timeout: float) -> None:
        poll(timeout)
        if timeout:  # the tick's own poll, not a read of what is waiting
            time.sleep(sync.tick_delay)

    poller.poll = late_poll
    sync.tick_delay = LATE


@pytest.mark.parametrize("make_late", [_late_fsync, _late_after_poll],
                         ids=["follower-fsync-late", "follower-tick-late"])
async def test_late_follower_keeps_the_leader(tmp_path: Path, make_late: object) -> None:
    loop = asyncio.get_running_loop()
    peers = [free_addr("127.0.0.1") for _ in range(3)]
    syncs = [LateSync() for _ in peers]
    nodes = [RaftNode(self_addr=p, peers=peers, data_dir=str(tmp_path / str(i)), password="pw", loop=loop,
                      timings=TIMINGS, sync=syncs[i]) for i, p in enumerate(peers)]
    try:
        async def put(key: bytes, via: int = 0) -> None:
            for _ in range(100):
                try:
                    await nodes[via].propose(mvcc.cmd_put(mvcc.PutReq(key, b"v")))
                    return
                except Exception:
                    await asyncio.sleep(0.1)
            raise AssertionError("no leader")

        await put(b"first")
        await asyncio.sleep(1.0)  # let every member learn the leader
        leaders = [i for i, n in enumerate(nodes) if n.raft._isLeader()]
        assert len(leaders) == 1
        leader = leaders[0]
        term = nodes[leader].raft.raftCurrentTerm
        late = (leader + 1) % 3
        make_late(nodes[late], syncs[late])  # type: ignore[operator]
        end = time.monotonic() + RUN
        i = 0
        while time.monotonic() < end:  # a steady write load, so the late follower has entries to sync
            await put(b"k%d" % i, leader)
            i += 1
            await asyncio.sleep(0.05)
        await asyncio.sleep(2 * LATE)  # the late follower's last ticks end
        terms = [n.raft.raftCurrentTerm for n in nodes]
        assert terms == [term] * 3, f"term changed from {term}: {terms} (a late follower started an election)"
        assert nodes[leader].raft._isLeader()
        assert nodes[late].raft.late_reads > 0  # the late ticks were seen (and read their sockets first)
        assert i > 30  # the writes went on meanwhile
    finally:
        for sync in syncs:
            sync.delay = sync.tick_delay = 0.0
        for n in nodes:
            await asyncio.to_thread(n.destroy)
