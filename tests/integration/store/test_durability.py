"""The fsync-before-ack rule, checked on a real in-process 3-member Raft group.

pysyncobj acknowledges appended entries with a `next_node_idx` message (and votes with
`response_vote`). Every such message must leave only when the member's journal has nothing
unsynced; and every entry a leader counts in a commit must be durable on it. Both are
observed here on the real code paths (TCP on loopback, the real journal).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.transport import TCPTransport

from controlplane.store import mvcc
from controlplane.store.cluster import free_addr
from controlplane.store.journal import DurableJournal
from controlplane.store.raft import RaftNode, _Raft

pytestmark = pytest.mark.integration


async def test_acks_and_commits_only_after_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    violations: list[str] = []
    acks = 0
    orig_send = TCPTransport.send

    def send(self: TCPTransport, node: Any, message: Any) -> Any:
        nonlocal acks
        if isinstance(message, dict) and message.get("type") in ("next_node_idx", "response_vote"):
            acks += 1
            if self._syncObj._journal.dirty:
                violations.append(f"{message['type']} sent with an unsynced journal")
        return orig_send(self, node, message)

    owners: dict[int, _Raft] = {}
    commits = 0
    orig_commit = DurableJournal.setRaftCommitIndex

    def set_commit(self: DurableJournal, index: int) -> None:
        nonlocal commits
        raft = owners.get(id(self))
        if raft is not None and raft._isLeader():
            commits += 1
            if index > self.synced_index:
                violations.append(f"leader committed {index} with only {self.synced_index} on disk")
        orig_commit(self, index)

    monkeypatch.setattr(TCPTransport, "send", send)
    monkeypatch.setattr(DurableJournal, "setRaftCommitIndex", set_commit)
    loop = asyncio.get_running_loop()
    peers = [free_addr("127.0.0.1") for _ in range(3)]
    nodes = [RaftNode(self_addr=p, peers=peers, data_dir=str(tmp_path / str(i)), password="pw", loop=loop)
             for i, p in enumerate(peers)]
    owners.update({id(n.journal): n.raft for n in nodes})
    try:
        async def put(i: int) -> Any:
            node = nodes[i % 3]
            for _ in range(100):
                try:
                    return await node.propose(mvcc.cmd_put(mvcc.PutReq(b"k%d" % i, b"v")))
                except Exception:
                    await asyncio.sleep(0.1)
            raise AssertionError("no leader")

        results = await asyncio.gather(*(put(i) for i in range(300)))
        assert len({rev for _, rev in results}) == 300
        assert acks > 0 and commits > 0
        assert violations == []
        for n in nodes:
            assert n.journal.stats()["syncs"] > 0
    finally:
        for n in nodes:
            await asyncio.to_thread(n.destroy)
