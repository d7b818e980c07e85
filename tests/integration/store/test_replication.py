"""Log replication on a real in-process 3-member Raft group (TCP on loopback, real journals).

Under a steady write load from every member, the leader sends each entry to each follower
once (no resend after a late acknowledgement), and no follower cuts back entries it has
already applied: pysyncobj's "truncating already-applied log entries" CRITICAL line is never
logged. Before `next_index_after_ack`, acks held for a follower's fsync arrived after the
next batch had left, pulled the leader's next index back, and both happened in every run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.transport import TCPTransport

from controlplane.store import mvcc
from controlplane.store.cluster import free_addr
from controlplane.store.raft import RaftNode

pytestmark = pytest.mark.integration


async def test_entries_are_sent_once_and_never_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    sent_up_to: dict[tuple[str, str, int], int] = {}  # (leader, follower, term) -> last index sent
    resent: list[str] = []
    appends = 0
    orig_send = TCPTransport.send

    def send(self: TCPTransport, node: Any, message: Any) -> Any:
        nonlocal appends
        if isinstance(message, dict) and message.get("type") == "append_entries" and message.get("entries"):
            appends += 1
            key = (self._selfNode.id, node.id, message["term"])
            first, last = message["entries"][0][1], message["entries"][-1][1]
            if first <= sent_up_to.get(key, 0):
                resent.append(f"{key}: entries {first}-{last} after {sent_up_to[key]}")
            sent_up_to[key] = max(last, sent_up_to.get(key, 0))
        return orig_send(self, node, message)

    monkeypatch.setattr(TCPTransport, "send", send)
    caplog.set_level(logging.WARNING, logger="pysyncobj")
    loop = asyncio.get_running_loop()
    peers = [free_addr("127.0.0.1") for _ in range(3)]
    nodes = [RaftNode(self_addr=p, peers=peers, data_dir=str(tmp_path / str(i)), password="pw", loop=loop)
             for i, p in enumerate(peers)]
    try:
        deadline = time.monotonic() + 30
        while not any(n.is_leader() and n.is_ready() for n in nodes):
            assert time.monotonic() < deadline, "no leader"
            await asyncio.sleep(0.05)
        stop = time.monotonic() + 3.0
        done = 0

        async def writer(i: int) -> None:
            nonlocal done
            node, k = nodes[i % 3], 0
            while time.monotonic() < stop:
                await node.propose(mvcc.cmd_put(mvcc.PutReq(b"k%d-%d" % (i, k), b"v" * 200)))
                k += 1
                done += 1

        await asyncio.gather(*(writer(i) for i in range(48)))
        assert done > 100 and appends > 20  # the load really ran through many append messages
        revision = max(n.state.revision for n in nodes)
        deadline = time.monotonic() + 10
        while any(n.state.revision != revision for n in nodes):
            assert time.monotonic() < deadline, "members did not converge"
            await asyncio.sleep(0.05)
        assert len({tuple(n.state.range(mvcc.RangeReq(b"k", b"l")).kvs) for n in nodes}) == 1
        assert resent == []
        assert [r.getMessage() for r in caplog.records if "already-applied" in r.getMessage()] == []
    finally:
        for n in nodes:
            await asyncio.to_thread(n.destroy)
