"""bench/profile.py: py-spy's collapsed stacks summarised per function."""

from __future__ import annotations

import pytest

from bench.profile import STORE_SPLIT, frame_name, split, summarize


@pytest.mark.parametrize(("frame", "name"), [
    ("sync (nodeagent/worker.py:120)", "sync (nodeagent/worker.py)"),
    ("_run (/x/.venv/lib/python3.11/site-packages/grpc/aio/_call.py:10)", "_run (grpc/aio/_call.py)"),
    ("select (/usr/lib/python3.11/selectors.py:468)", "select (stdlib/selectors.py)"),
    ("<module> (bench.py)", "<module> (bench.py)"),
    ("weird", "weird"),
], ids=["project", "site-packages", "stdlib", "no-line", "unparsed"])
def test_frame_name(frame: str, name: str) -> None:
    assert frame_name(frame) == name


def test_summarize_self_and_total() -> None:
    lines = [
        "main (a.py:1);loop (a.py:5);put (s.py:9) 6",
        "main (a.py:1);loop (a.py:6);pickle (p.py:2) 3",
        "main (a.py:1);loop (a.py:5) 1",
        "",
        "garbage-without-count",
    ]
    samples, rows = summarize(lines)
    assert samples == 10
    by = {r.function: (round(r.self_share, 2), round(r.total_share, 2)) for r in rows}
    assert by["put (s.py)"] == (0.6, 0.6)
    assert by["pickle (p.py)"] == (0.3, 0.3)
    assert by["loop (a.py)"] == (0.1, 1.0)  # two lines of one function merged
    assert by["main (a.py)"] == (0.0, 1.0)
    assert [r.function for r in rows][:2] == ["put (s.py)", "pickle (p.py)"]


def test_summarize_recursion_counts_once_in_total() -> None:
    samples, rows = summarize(["f (a.py:1);f (a.py:1);f (a.py:1) 4"])
    assert samples == 4 and rows[0].total_share == 1.0 and rows[0].self_share == 1.0


def test_summarize_empty() -> None:
    assert summarize([]) == (0, [])


SPLIT_STACKS = [
    "run (a.py:1);_lease_loop (nodeagent/agent.py:540);renew_lease (nodeagent/agent.py:519);"
    "_invoke (grpc/aio/_call.py:9) 2",
    "run (a.py:1);run (nodeagent/worker.py:280);write_status (nodeagent/worker.py:560) 3",
    "run (a.py:1);run (nodeagent/worker.py:280);apply (nodeagent/worker.py:400) 1",
    "_run (asyncio/events.py:80);RunPodSandbox (nodeagent/fakecri.py:50);run (nodeagent/worker.py:1) 1",
    "_run (asyncio/events.py:80);relist_once (nodeagent/agent.py:370) 2",
    "_run (asyncio/events.py:80);select (stdlib/selectors.py:1) 1",
]


@pytest.mark.parametrize(("group", "share"), [
    ("Lease renewals", 0.2), ("pod status writes", 0.3), ("pod workers (CRI calls, plans)", 0.1),
    ("fake CRI server", 0.1), ("relist (CRI polling)", 0.2), ("other", 0.1), ("node status", 0.0),
], ids=["lease", "status-writes-before-workers", "workers", "server-side-first", "relist", "other", "absent"])
def test_agent_split_counts_each_sample_once(group: str, share: float) -> None:
    got = split(SPLIT_STACKS)
    assert round(got[group], 3) == share
    assert round(sum(got.values()), 6) == 1.0


def test_agent_split_empty() -> None:
    assert split(["", "garbage"]) == {}


STORE_STACKS = [
    # the loop thread: handler code, grpc.aio's asyncio helpers, C under the loop
    "main (controlplane/store/__main__.py:243);Runner.run (asyncio/runners.py:118);"
    "KVService.Put (controlplane/store/server.py:447);put_resp (controlplane/store/pbconv.py:30) 2",
    "main (controlplane/store/__main__.py:243);Runner.run (asyncio/runners.py:118);wait (asyncio/tasks.py:418) 1",
    "main (controlplane/store/__main__.py:243);Runner.run (asyncio/runners.py:118) 4",
    "main (controlplane/store/__main__.py:243);Runner.run (asyncio/runners.py:118);"
    "Store._housekeeping (controlplane/store/server.py:208);RaftNode.peers (controlplane/store/raft.py:790) 1",
    # the tick thread: journal inside the transport's ack flush counts as journal (first group wins)
    "Thread.run (threading.py:982);_Raft._onTick (controlplane/store/raft.py:291);"
    "_Transport.flush_acks (controlplane/store/raft.py:260);DurableJournal.sync (controlplane/store/journal.py:430) 3",
    "Thread.run (threading.py:982);_Raft._onTick (controlplane/store/raft.py:291);"
    "SyncObj._onTick (pysyncobj/syncobj.py:700);TcpConnection.send (pysyncobj/tcp_connection.py:146) 5",
    "Thread.run (threading.py:982);_Raft._onTick (controlplane/store/raft.py:291);"
    "SyncObj._onTick (pysyncobj/syncobj.py:690) 2",
    "Thread.run (threading.py:982);SyncObj._onTick (pysyncobj/syncobj.py:715);"
    "_Raft.apply_batch (controlplane/store/raft.py:480);RaftNode._apply (controlplane/store/raft.py:590);"
    "KVState.apply (controlplane/store/mvcc.py:300) 2",
]


@pytest.mark.parametrize(("group", "share"), [
    ("our handlers, pbconv, proposal and read batching", 0.1),
    ("grpc.aio's per-call asyncio helpers", 0.05),
    ("C under the event loop (grpc.aio, uvloop)", 0.2),
    ("housekeeping (every 0.25 s)", 0.05),
    ("journal (append, CRC, fdatasync)", 0.15),
    ("peer transport (pickle, deflate, Fernet, sockets)", 0.25),
    ("Raft bookkeeping (pysyncobj's tick and poll, ReadIndex)", 0.1),
    ("MVCC apply and watch publishing", 0.1),
    ("other", 0.0),
], ids=["handlers", "aio-helpers", "c-under-the-loop-last", "housekeeping-before-handlers",
        "journal-before-transport", "transport-before-tick", "tick", "apply-before-tick", "other"])
def test_store_split_counts_each_sample_once(group: str, share: float) -> None:
    got = split(STORE_STACKS, STORE_SPLIT)
    assert round(got[group], 3) == share
    assert round(sum(got.values()), 6) == 1.0
