"""Replication of the state machine through pysyncobj, with durable acknowledgements and batching.

Threads: pysyncobj runs Raft on its own tick thread (sockets, journal, applying entries); the
gRPC server runs on the asyncio loop. They meet in three places: proposals (a thread-safe
queue into pysyncobj), apply callbacks (posted back to the loop), and the state machine,
guarded by `lock` (applies on the tick thread, reads on the loop).

What must hold:

- Durability before acknowledgement (pysyncobj itself never fsyncs; see journal.py):
  the journal is fdatasync'ed at the start of every tick — before the leader counts its own log
  in a commit decision — and at its end, and no `next_node_idx` (a follower's append ack) or
  vote leaves before the entries it covers are synced. Entries appended during one tick share
  one fdatasync (group commit); a follower holds the acks for everything it read in one poll
  and sends them after one sync; the leader sends new entries before syncing its own copy, so
  its fdatasync overlaps the followers'. tests/integration/store/test_durability.py checks this.
- One log entry carries a batch of commands from one member (`(proposer_id, commands)`):
  every request that arrives while the previous batch is being proposed rides in the next one.
  Only the proposer builds results; other members only mutate state.
- A linearizable read is a ReadIndex, as in etcd, and writes nothing to the log: the leader
  notes its commit index once an entry of its own term is committed, starts a read round,
  and the round is confirmed once a majority (itself included) answered an append message
  sent after the round started, in its current term. Append messages carry the round (`ri`);
  a follower echoes the round and the term of the append message it answers (`ri`, `rt`), so
  an answer counts only for a message sent after the round began: a deposed leader that a
  majority no longer answers never confirms one. Reads arriving together share one round. A
  follower asks the leader (`skiff_read_index`), which answers with the confirmed index. The
  read is served once this member has applied up to that index. With no reachable leader, or
  leadership lost before the round confirmed, the read falls back to a read barrier through
  the log: it waits for a batch proposed after the read arrived to be applied on this member
  (batches are shared by all waiting reads).
- The requests waiting for the log are bounded (`max_pending` of them, MAX_PENDING_BYTES in
  all); past that new ones fail at once with etcd's "too many requests" (RESOURCE_EXHAUSTED).
- A proposal is retried only when pysyncobj says it was never appended (no leader, not
  leader, discarded, queue full). When the outcome is unknown (leader changed after
  forwarding), or after `request_timeout`, the client gets UNAVAILABLE, like etcd's
  "request timed out". Followers forward proposals to the leader (pysyncobj's apply_command)
  and answer once the entry is applied locally, so a follower's answer is read-your-writes.
- A member judges its peers' silence (a follower's election deadline, a leader's check-quorum)
  only after reading what they sent: a tick that runs late (a starved CPU, the GIL, an fsync)
  reads its sockets first (`_read_if_late`), so a late follower does not depose a live leader.
  tests/integration/store/test_starved.py checks this.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import pickle
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pysyncobj.syncobj
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from controlplane.store import errors, mvcc
from controlplane.store.disk import OS_SYNC, Fatal, FileSync, stop_member
from controlplane.store.errors import EtcdError
from controlplane.store.journal import DurableJournal
from controlplane.store.metrics import PROPOSALS_FAILED, Hop
from controlplane.store.snapshot import SnapshotStore, read_header, verify_snapshot

log = logging.getLogger("skiff.store.raft")

_ACK_MESSAGES = frozenset({"next_node_idx", "response_vote", "request_vote"})
_RI_REQ, _RI_RESP = "skiff_read_index", "skiff_read_index_resp"  # follower <-> leader ReadIndex
def _answer_reads(waiting: list[Callable[[bool], None]], ok: bool) -> None:
    for done in waiting:
        done(ok)


READ_INDEX_WAIT = 2.0  # seconds a follower waits for the leader's answer before using the log
_ReadDone = Callable[[bool], None]  # called on the loop; True: serve the read now; False: use the log
_HELD_ACKS = frozenset({"next_node_idx", "response_vote"})
# Requests waiting for the log (not yet in a batch) beyond which new ones are refused with
# RESOURCE_EXHAUSTED "etcdserver: too many requests" (etcd refuses past a gap of 5000 between
# its committed and applied index).
MAX_PENDING = 5000
MAX_PENDING_BYTES = 128 << 20  # and beyond this many bytes of them (5000 puts of 1.5 MiB would be 7 GiB)
RETRY_MIN, RETRY_MAX = 0.5, 5.0  # seconds between connection attempts to an unreachable peer
_RETRYABLE = frozenset({FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER, FAIL_REASON.DISCARDED,
                        FAIL_REASON.QUEUE_FULL, FAIL_REASON.REQUEST_DENIED})


def _use_fast_pickle() -> None:
    # pysyncobj pickles log entries and peer messages with protocol 2 (for Python 2 peers),
    # which turns every bytes object into a latin-1 text round trip: 4-5x slower and ~30%
    # larger than protocol 5 on our batches. Every member runs this same code, and loads()
    # reads any protocol, so raising it is safe for journals written before.
    import pysyncobj.pickle as pysyncobj_pickle

    pysyncobj_pickle.__dict__["__protocol"] = pickle.HIGHEST_PROTOCOL


_use_fast_pickle()

# zlib level for peer messages. pysyncobj deflates every message at level 3; measured on a batch
# of 64 puts of 256 random bytes (what bench/store.py writes) that is ~2 ms per copy for a 10%
# saving, paid once per follower on the leader, and 60-90 us even for a 140-byte heartbeat
# (docs/scale.md). Level 0 writes stored blocks (a copy and a checksum): the links are loopback
# or a LAN, where CPU, not bandwidth, bounds the store. Any zlib reader inflates level 0, so
# members running the code from before this change still read what these send.
PEER_COMPRESS_LEVEL = 0


class _PeerZlib:
    """The zlib pysyncobj's TcpConnection sees: its fixed level replaced by PEER_COMPRESS_LEVEL."""

    decompress = staticmethod(zlib.decompress)

    @staticmethod
    def compress(data: bytes, _level: int = -1) -> bytes:
        return zlib.compress(data, PEER_COMPRESS_LEVEL)


def _use_cheap_compression() -> None:
    import pysyncobj.tcp_connection as tcp_connection

    tcp_connection.zlib = _PeerZlib


_use_cheap_compression()


def next_index_after_ack(next_index: int, ack_next: int, *, success: bool, reset: bool) -> int:
    """The leader's next index for a follower once it answered an append message (etcd's
    progress rule). pysyncobj sets it to the answer's `next_node_idx` on every success, but it
    sends optimistically (the next index moves past each batch as it leaves), so an answer to an
    earlier message pulled it back and the entries already sent went out again; the follower
    then cut its log back to them, already-applied entries included, and wrote them again (the
    "truncating already-applied log entries" CRITICAL line). A success only moves it forward:
    messages to a follower travel in order on one connection, and one lost with a broken
    connection leaves a gap the follower answers with `reset` (its own next index), which is
    taken as it is."""
    if reset:
        return ack_next
    if success:
        return max(next_index, ack_next)
    return next_index


def majority_index(own_last: int, matches: list[int]) -> int:
    """The highest log index a majority of the members holds: the leader's own last index and
    each follower's match index, the leader counted like any member."""
    held = sorted([own_last, *matches], reverse=True)
    return held[len(held) // 2]


class _EntryClock:
    """When the leader appended one log entry, sent it, and read the ack that gave it a majority."""

    __slots__ = ("appended", "index", "quorum", "sent")

    def __init__(self, index: int, appended: float) -> None:
        self.index = index
        self.appended = appended
        self.sent: float | None = None
        self.quorum: float | None = None


_MAX_CLOCKED = 10000  # entries the leader keeps times for (ones never committed are dropped past this)


def member_id_for(peer_addr: str) -> int:
    """A stable uint64 member ID for a peer address (etcd hashes peer URLs the same way)."""
    h = int.from_bytes(hashlib.sha256(b"skiff-member:" + peer_addr.encode()).digest()[:8], "big")
    return h or 1


@contextlib.contextmanager
def _inject_journal(journal: DurableJournal) -> Iterator[None]:
    # pysyncobj has no way to pass a journal object: SyncObj.__init__ calls the module-level
    # createJournal(conf.journalFile). Swap that one factory while our SyncObj is constructed.
    orig = pysyncobj.syncobj.createJournal
    pysyncobj.syncobj.createJournal = lambda _path: journal
    try:
        yield
    finally:
        pysyncobj.syncobj.createJournal = orig


class _Transport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport, made to persist the journal before any acknowledgement.

    Acks produced while handling received messages (inside the poller) are held back and
    sent together at the start of the next tick, after one fdatasync: several append
    messages read in one poll share one sync (group commit on followers).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held: list[tuple[Any, Any]] = []
        self._answering: tuple[int, int] | None = None  # (read round, term) of the append being handled
        self._retry: dict[Any, tuple[float, float]] = {}  # node -> (next attempt, current delay)
        self._entries_read_at: float | None = None  # follower: the first append with entries since the last ack
        super().__init__(*args, **kwargs)

    def _connectIfNecessarySingle(self, node: Any) -> bool:
        # pysyncobj retries an unreachable peer at a fixed interval; back off exponentially
        # (RETRY_MIN .. RETRY_MAX) instead, and start over once it is connected again.
        conn = self._connections.get(node)
        if conn is not None and conn.state != CONNECTION_STATE.DISCONNECTED:
            if conn.state == CONNECTION_STATE.CONNECTED:
                self._retry.pop(node, None)
            return True
        now = time.monotonic()
        next_at, delay = self._retry.get(node, (0.0, RETRY_MIN / 2))
        if now < next_at:
            return False
        self._retry[node] = (now + min(RETRY_MAX, delay * 2), min(RETRY_MAX, delay * 2))
        return bool(super()._connectIfNecessarySingle(node))

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries":
            # Whatever next_node_idx this produces answers this message: echo its round and term.
            self._answering = (int(message.get("ri", 0)), int(message["term"]))
            now = time.monotonic()
            if message.get("entries") and self._entries_read_at is None:
                self._entries_read_at = now
            committed = self._syncObj.raftCommitIndex
            try:
                super()._onMessageReceived(node, message)
            finally:
                self._answering = None
            if self._syncObj.raftCommitIndex > committed:
                self._syncObj.clock_commit_seen(now)
            return
        if kind == "apply_command":
            self._syncObj.forwarded_at.append(time.monotonic())
            super()._onMessageReceived(node, message)
            return
        if kind == _RI_REQ:
            self._syncObj.read_index_request(node, int(message["id"]))
            return
        if kind == _RI_RESP:
            index = message.get("index")
            self._syncObj.read_index_response(int(message["id"]), None if index is None else int(index))
            return
        if kind != "next_node_idx":
            super()._onMessageReceived(node, message)
            return
        raft = self._syncObj
        sent = raft.next_index(node)
        super()._onMessageReceived(node, message)
        raft.keep_next_index(node, sent, message)
        raft.clock_acks()
        if "ri" in message:
            raft.read_ack(node, int(message["ri"]), int(message["rt"]))

    def send(self, node: Any, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries":
            message = {**message, "ri": self._syncObj.read_round}
        elif kind == "next_node_idx" and self._answering is not None:
            message = {**message, "ri": self._answering[0], "rt": self._answering[1]}
        if kind in _HELD_ACKS:
            self._held.append((node, message))
            return True
        if kind in _ACK_MESSAGES:
            self._syncObj._journal.sync()
        return bool(super().send(node, message))

    def flush_acks(self) -> None:
        """Sync the journal, then send the held acknowledgements (tick thread)."""
        if not self._held:
            return
        self._syncObj._journal.sync()
        held, self._held = self._held, []
        for node, message in held:
            super().send(node, message)
        if self._entries_read_at is not None:
            Hop.FOLLOWER_APPEND_TO_ACK.observe(time.monotonic() - self._entries_read_at)
            self._entries_read_at = None


class _Raft(SyncObj):  # type: ignore[misc]
    def __init__(self, node: RaftNode, self_addr: str, others: list[str], conf: SyncObjConf,
                 journal: DurableJournal) -> None:
        self._node = node
        self._journal = journal
        self._wakeup: PipeNotifier | None = None
        self._sent = (0, 0)
        self._force_send = False
        # ReadIndex (tick thread, except `read_waiting`, which the loop appends to under `read_lock`).
        self.read_lock = threading.Lock()
        self.read_waiting: list[_ReadDone] = []
        self.read_round = 0
        self._read_acks: dict[str, tuple[int, int]] = {}  # peer -> (term, round) of its latest answer
        # Leader: rounds waiting for a majority: (round, index, local reads, followers' (node, request id)).
        self._confirming: list[tuple[int, int, list[_ReadDone], list[tuple[Any, int]]]] = []
        self._remote_requests: list[tuple[Any, int]] = []  # followers' requests not in a round yet
        # Any role: confirmed reads waiting until this member applied up to their index.
        self._confirmed: list[tuple[int, list[_ReadDone]]] = []
        # Follower: requests sent to the leader: id -> (leader id, reads).
        self._remote_pending: dict[int, tuple[str, list[_ReadDone], float]] = {}
        self._remote_seq = 0
        self._next_round = False
        self.late_reads = 0  # ticks that read their sockets before deciding on an election (late ticks)
        self._tick_at = time.monotonic()
        # Hop times (metrics.Hop). `submitted`: the loop's batches handed to pysyncobj's queue, not
        # taken yet; `forwarded_at`: when followers' forwarded batches were read; the leader's
        # entries not applied yet; a follower's commit indexes as it learned them.
        self.submitted: collections.deque[_Pending] = collections.deque()
        self.forwarded_at: list[float] = []
        self._clocked: collections.deque[_EntryClock] = collections.deque()
        self._commits_seen: collections.deque[tuple[int, float]] = collections.deque()
        self._tick_began = time.monotonic()
        with _inject_journal(journal):
            super().__init__(self_addr, others, conf, transportClass=_Transport)
        self.addOnTickCallback(self._end_of_tick)

    def wake(self) -> None:
        """Interrupt the tick thread's poll so a new proposal is handled now (any thread)."""
        w = self._wakeup
        if w is not None:
            with contextlib.suppress(BlockingIOError):
                w.notify()

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if self._wakeup is None:
            self._wakeup = PipeNotifier(self._poller)  # registered from the tick thread itself
        # Everything appended since the last tick (including inside the poller) becomes
        # durable before this tick's commit decision (the leader counts itself), and the
        # acknowledgements held back by the transport leave only after that.
        self._journal.sync()
        self._transport().flush_acks()
        self._read_if_late()
        self._start_read_round()
        self._tick_began = time.monotonic()  # a leader's commit decision is the first thing pysyncobj's tick does
        super()._onTick(timeToWait)

    # ------------------------------------------------------------ hop times (tick thread)

    def _checkCommandsToApply(self) -> None:
        # pysyncobj's tick takes every queued batch here: a leader appends it, a follower forwards it.
        now = time.monotonic()
        while self.submitted:
            p = self.submitted.popleft()
            p.taken = now
            Hop.TO_TICK.observe(now - p.submitted)
        forwarded, self.forwarded_at = self.forwarded_at, []
        leader = self._isLeader()
        if not leader and self._leader_unreachable():
            self._refuse_queued(FAIL_REASON.MISSING_LEADER)
            self._clocked.clear()
            return
        before = self._SyncObj__getCurrentLogIndex()
        super()._checkCommandsToApply()
        if not leader:
            self._clocked.clear()
            return
        now = time.monotonic()
        for t in forwarded:
            Hop.FORWARDED_TO_APPEND.observe(now - t)
        for index in range(before + 1, self._SyncObj__getCurrentLogIndex() + 1):
            self._clocked.append(_EntryClock(index, now))
        while len(self._clocked) > _MAX_CLOCKED:
            self._clocked.popleft()

    def _leader_unreachable(self) -> bool:
        """A follower still names a leader whose connection is down (it died; no election yet)."""
        target = self._getLeader()
        return target is not None and not self.isNodeConnected(target)

    def _refuse_queued(self, reason: int) -> None:
        """Answer every queued batch with `reason` instead of forwarding it.

        pysyncobj would hand a batch to a transport whose connection to the leader is down: the
        batch is dropped unsent, and the election that follows answers it LEADER_CHANGED -- an
        unknown outcome, which a write cannot retry. Nothing was sent, so the outcome is known:
        refused as leaderless, the proposal retries until the next leader takes it or its deadline.
        """
        pending = self._SyncObj__commandsQueue
        while True:
            try:
                _command, callback = pending.get_nowait()
            except queue.Empty:
                return
            self._SyncObj__callErrCallback(reason, callback)

    def _clock_sent(self) -> None:
        now = time.monotonic()
        for e in self._clocked:
            if e.sent is None:
                e.sent = now
                Hop.APPEND_TO_SEND.observe(now - e.appended)

    def clock_acks(self) -> None:
        """A follower's ack was read (leader): the entries it gave a majority have their quorum time."""
        if not self._clocked or not self._isLeader():
            return
        match: dict[Any, int] = self._SyncObj__raftMatchIndex
        held = majority_index(self._SyncObj__getCurrentLogIndex(), [match.get(n, 0) for n in self.otherNodes])
        now = time.monotonic()
        for e in self._clocked:
            if e.index > held:
                break
            if e.quorum is None and e.sent is not None:
                e.quorum = now
                Hop.SEND_TO_QUORUM.observe(now - e.sent)

    def clock_commit_seen(self, now: float) -> None:
        """A follower learned a higher commit index from the leader at `now`."""
        self._commits_seen.append((int(self.raftCommitIndex), now))

    def clock_applied(self) -> None:
        """The entry being applied now (pysyncobj counts it applied right after)."""
        index = int(self.raftLastApplied) + 1
        now = time.monotonic()
        clocked = self._clocked
        while clocked and clocked[0].index < index:
            clocked.popleft()
        if clocked and clocked[0].index == index:
            e = clocked.popleft()
            if e.quorum is not None:
                Hop.QUORUM_TO_COMMIT.observe(max(0.0, self._tick_began - e.quorum))
                Hop.COMMIT_TO_APPLY.observe(now - self._tick_began)
            return
        seen = self._commits_seen
        while seen and seen[0][0] < index:
            seen.popleft()
        if seen:
            Hop.COMMIT_TO_APPLY.observe(now - seen[0][1])

    def _read_if_late(self) -> None:
        """Read what the peers sent before pysyncobj's tick judges their silence.

        pysyncobj decides at the start of a tick, before reading its sockets, that a follower's
        election deadline passed (it becomes a candidate in a higher term, and the leader, seeing
        that term, steps down) or that a leader has not heard from a majority (it steps down).
        A tick that starts late -- this thread waited for the CPU on a starved machine, for the
        GIL held by the event loop, or for an fdatasync -- would judge by a stale view, with the
        leader's heartbeats or the followers' answers unread in the sockets, and depose a leader
        that is alive. So a late tick (or one about to start an election) reads first; only the
        silence left after reading counts.
        """
        now = time.monotonic()
        late = now - self._tick_at > self._SyncObj__conf.raftMinTimeout / 2
        self._tick_at = now
        if not self.otherNodes:
            return
        if late or (not self._isLeader() and self._SyncObj__raftElectionDeadline < now):
            self.late_reads += 1
            self._poller.poll(0)

    # ------------------------------------------------------------ ReadIndex (tick thread)

    def _start_read_round(self) -> None:
        # One round (or, on a follower, one request to the leader) in flight at a time: reads
        # arriving meanwhile wait and share the next one, so a burst of reads costs one
        # heartbeat per round trip instead of one per read (each peer message is pickled,
        # compressed and encrypted).
        leader = self._isLeader()
        if self._confirming if leader else self._leader_unchanged():
            return
        with self.read_lock:
            new, self.read_waiting = self.read_waiting, []
        remote, self._remote_requests = self._remote_requests, []
        if not leader:
            for node, rid in remote:  # asked while we led; no longer ours to answer
                self._transport().send(node, {"type": _RI_RESP, "id": rid, "index": None})
            self._ask_leader(new)
            return
        if not new and not remote:
            return
        # The commit index is only known to be current once an entry of this term is committed
        # (the no-op a new leader appends); until then the reads wait for a later tick.
        noop = self._SyncObj__noopIDx
        if noop is None or self.raftCommitIndex < noop:
            with self.read_lock:
                self.read_waiting[:0] = new
            self._remote_requests[:0] = remote
            return
        self.read_round += 1
        self._confirming.append((self.read_round, int(self.raftCommitIndex), new, remote))
        self._force_send = True  # a heartbeat carrying the new round leaves at the end of this tick
        self._check_reads()

    def _deliver(self, waiting: list[_ReadDone], ok: bool) -> None:
        """Answer reads on the event loop: one cross-thread call for a whole round."""
        if waiting:
            self._node.loop.call_soon_threadsafe(_answer_reads, waiting, ok)

    def _leader_unchanged(self) -> bool:
        """Whether a request to the leader is still in flight. One sent to another member than
        the current leader, or more than READ_INDEX_WAIT ago, may never be answered: it is
        failed, and its reads go through the log."""
        leader = self._getLeader()
        now = time.monotonic()
        for rid, (leader_id, waiting, sent) in list(self._remote_pending.items()):
            if leader is None or leader.id != leader_id or now - sent > READ_INDEX_WAIT:
                del self._remote_pending[rid]
                self._deliver(waiting, False)
        return bool(self._remote_pending)

    def _ask_leader(self, new: list[_ReadDone]) -> None:
        """A follower's reads: the leader confirms its leadership and sends back its commit index."""
        self._leader_unchanged()
        leader = self._getLeader()
        if not new:
            return
        if leader is None or not self.isNodeConnected(leader):
            self._deliver(new, False)
            return
        self._remote_seq += 1
        self._remote_pending[self._remote_seq] = (leader.id, new, time.monotonic())
        self._transport().send(leader, {"type": _RI_REQ, "id": self._remote_seq})

    def read_index_request(self, node: Any, rid: int) -> None:
        """A follower asks for a read index (transport, tick thread); answered once a round confirms."""
        self._remote_requests.append((node, rid))
        self.wake()

    def read_index_response(self, rid: int, index: int | None) -> None:
        """The leader's answer to our request `rid` (transport, tick thread)."""
        entry = self._remote_pending.pop(rid, None)
        if entry is None:
            return
        if index is None:
            self._deliver(entry[1], False)
            return
        self._confirmed.append((index, entry[1]))
        self._drain_confirmed()
        self._start_read_round()  # the reads that waited for this answer

    def next_index(self, node: Any) -> int | None:
        """The leader's next index for `node` (tick thread); None when it has none."""
        nxt: dict[Any, int] = self._SyncObj__raftNextIndex
        return nxt.get(node)

    def keep_next_index(self, node: Any, sent: int | None, ack: dict[str, Any]) -> None:
        """After pysyncobj handled an append answer from `node`: its next index by
        next_index_after_ack, `sent` being the one before the answer (tick thread)."""
        nxt: dict[Any, int] = self._SyncObj__raftNextIndex
        if sent is None or node not in nxt or not self._isLeader():
            return
        nxt[node] = next_index_after_ack(sent, int(ack["next_node_idx"]), success=bool(ack.get("success")),
                                         reset=bool(ack.get("reset")))

    def read_ack(self, node: Any, round_: int, term: int) -> None:
        """A follower answered an append message of `round_` sent in `term` (transport, tick thread)."""
        if term == self.raftCurrentTerm and self._isLeader():
            self._read_acks[node.id] = (term, round_)
            self._check_reads()

    def _check_reads(self) -> None:
        term = self.raftCurrentTerm
        voters = [n.id for n in self.otherNodes]
        while self._confirming:
            round_, index, local, remote = self._confirming[0]
            acks = 1 + sum(1 for peer in voters if self._read_acks.get(peer, (0, 0)) >= (term, round_))
            if acks * 2 <= len(voters) + 1:
                break
            self._confirming.pop(0)
            self._next_round = True  # the reads that waited for this round start the next one
            if local:
                self._confirmed.append((index, local))
            for node, rid in remote:
                self._transport().send(node, {"type": _RI_RESP, "id": rid, "index": index})
        self._drain_confirmed()
        if self._next_round and not self._confirming:
            self._next_round = False
            self._start_read_round()

    def _drain_confirmed(self) -> None:
        """Serve the confirmed reads this member has applied far enough for (any role: the
        index was confirmed by a leader after the read arrived, so it stays valid)."""
        if not self._confirmed:
            return
        applied = self.raftLastApplied
        keep, ready = [], []
        for index, waiting in self._confirmed:
            if index <= applied:
                ready += waiting
            else:
                keep.append((index, waiting))
        self._confirmed = keep
        self._deliver(ready, True)

    def _lost_leadership(self) -> None:
        """Rounds not confirmed yet cannot be: local reads go through the log, followers are told."""
        for _, _, local, remote in self._confirming:
            self._deliver(local, False)
            for node, rid in remote:
                self._transport().send(node, {"type": _RI_RESP, "id": rid, "index": None})
        self._confirming.clear()

    def _end_of_tick(self) -> None:
        # pysyncobj in batch mode appends every queued proposal without sending; send them
        # (and any new commit index) in one message per follower, then sync our own copy
        # while the followers write theirs.
        if self._isLeader():
            now = (self._SyncObj__getCurrentLogIndex(), self.raftCommitIndex)
            if now != self._sent or self._force_send:
                self._sent = now
                self._force_send = False
                self._SyncObj__sendAppendEntries()
                self._clock_sent()
                if not self.otherNodes:
                    self.wake()  # alone: no ack will wake the poller, and the commit is ours to make
        elif self._confirming:
            self._lost_leadership()
        self._drain_confirmed()  # entries applied during this tick may complete confirmed reads
        self._journal.sync()

    def _transport(self) -> _Transport:
        t: _Transport = self._SyncObj__transport
        return t

    @replicated  # type: ignore[misc]
    def apply_batch(self, batch: tuple[int, tuple[tuple[Any, ...], ...]]) -> Any:
        self.clock_applied()
        return self._node._apply(batch)


@dataclass
class RaftTimings:
    """Raft timing, in seconds: heartbeats every `heartbeat`; a follower that heard nothing for
    `election_min` to `election_max` (chosen at random each time) starts an election; a leader that
    heard from no majority for `leader_fallback` steps down (etcd's check-quorum)."""

    heartbeat: float = 0.1
    election_min: float = 0.8
    election_max: float = 1.6
    leader_fallback: float = 3.0  # a leader without a majority steps down after this
    connection_timeout: float = 3.5


class _ReadBatch:
    """The linearizable reads that arrived on the loop since the tick thread last took
    `read_waiting`: they wait on one future for one answer (a ReadIndex round, or the leader's
    answer on a follower), so a burst of reads costs one entry in the round, one cross-thread
    call and one timer instead of one of each per read.

    A read joins the batch only while the batch is still in `read_waiting` (checked under
    `read_lock`, under which the tick thread takes the list to start a round): once taken, the
    round's index was noted before any later read arrived, and such a read opens a new batch.
    Called on the loop with the answer (True: serve now; False: use the log; None: timed out).
    """

    __slots__ = ("fut", "reads", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.fut: asyncio.Future[bool | None] = loop.create_future()
        self.reads = 0
        self.timer = loop.call_later(timeout, self, None)

    def __call__(self, ok: bool | None) -> None:
        self.timer.cancel()
        if not self.fut.done():
            self.fut.set_result(ok)


class _Pending:
    __slots__ = ("applied", "cmds", "deadline", "futs", "last_error", "reads", "submitted", "taken", "timer")

    def __init__(self, cmds: list[tuple[Any, ...]], futs: list[asyncio.Future[Any]],
                 reads: list[asyncio.Future[Any]], deadline: float) -> None:
        self.cmds = cmds
        self.futs = futs
        self.reads = reads
        self.deadline = deadline
        self.last_error: int | None = None
        self.timer: asyncio.TimerHandle | None = None
        # Hop times: handed to pysyncobj (loop), taken by its tick, applied here (tick thread).
        self.submitted = 0.0
        self.taken: float | None = None
        self.applied: float | None = None


class RaftNode:
    """One member's Raft replica of a KVState, proposing batches from the asyncio loop."""

    def __init__(self, *, self_addr: str, peers: list[str], data_dir: str, password: str | None,
                 loop: asyncio.AbstractEventLoop, timings: RaftTimings | None = None,
                 request_timeout: float = 5.0, max_batch: int = 1000, max_inflight: int = 1,
                 max_batch_bytes: int = 1 << 20, max_pending: int = MAX_PENDING,
                 snapshot_every: int = 20000, snapshot_bytes: int = 64 << 20,
                 on_applied: Callable[[mvcc.Applied], None] | None = None,
                 on_restored: Callable[[mvcc.KVState], None] | None = None,
                 sync: FileSync = OS_SYNC, fatal: Fatal = stop_member, read_index: bool = True) -> None:
        self.self_addr = self_addr
        self.read_index = read_index  # False: every linearizable read goes through the log (measurements)
        self.member_id = member_id_for(self_addr)
        self.loop = loop
        self.lock = threading.Lock()
        self.state = mvcc.KVState()
        self.request_timeout = request_timeout
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._max_pending = max_pending
        self.rejected = 0  # proposals and reads refused with "too many requests"
        self._snapshot_bytes = snapshot_bytes
        self._on_applied = on_applied
        self._on_restored = on_restored
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any], float]] = []  # (cmd, its future, arrived)
        self._queue_bytes = 0
        self._reads: list[asyncio.Future[Any]] = []
        self._flush_scheduled = False
        self._inflight = 0
        self._max_inflight = max_inflight
        self.applied_batches = 0
        t = timings or RaftTimings()
        os.makedirs(data_dir, exist_ok=True)
        journal_path = os.path.join(data_dir, "raft.journal")
        snap_path = os.path.join(data_dir, "snapshot")
        # Both raise CorruptData (refuse to start) on a checksum failure; pysyncobj, given a
        # corrupt dump, would log it and start without it.
        verify_snapshot(snap_path)
        self.journal = DurableJournal(journal_path, sync=sync, fatal=fatal)
        header = read_header(snap_path)
        if header is not None:
            self.journal.align_to_snapshot(header["prev"], header["last"])
        self.snapshots = SnapshotStore(snap_path, take=self._take_snapshot, restore=self._restore_snapshot,
                                       sync=sync, fatal=fatal)
        conf = SyncObjConf(
            password=password,
            autoTick=True,
            autoTickPeriod=0.05,
            appendEntriesUseBatch=True,  # one append message per tick; _end_of_tick sends it at once
            appendEntriesPeriod=t.heartbeat,
            appendEntriesBatchSizeBytes=2 << 20,
            raftMinTimeout=t.election_min,
            raftMaxTimeout=t.election_max,
            leaderFallbackTimeout=t.leader_fallback,
            connectionTimeout=t.connection_timeout,
            connectionRetryTime=0.1,  # the real pacing is _Transport's exponential backoff
            commandsWaitLeader=False,  # fail fast (MISSING_LEADER) and let us retry until a deadline
            dynamicMembershipChange=True,
            journalFile=journal_path,
            fullDumpFile=snap_path,
            serializer=self.snapshots.serialize,
            deserializer=self.snapshots.deserialize,
            serializeChecker=self.snapshots.check,
            logCompactionMinEntries=snapshot_every,
            logCompactionMinTime=3600,
            logCompactionBatchSize=1 << 20,
            bindAddress=self_addr,
            maxBindRetries=3,
            bindRetryTime=0.5,
            useFork=False,
            tcp_keepalive=(5, 2, 3),
        )
        self.raft = _Raft(self, self_addr, [p for p in peers if p != self_addr], conf, self.journal)

    # ------------------------------------------------------------ tick thread side

    def _apply(self, batch: tuple[int, tuple[tuple[Any, ...], ...]]) -> Any:
        proposer, cmds = batch
        want = proposer == self.member_id
        with self.lock:
            applied = self.state.apply(cmds, want_results=want)
        self.applied_batches += 1
        for target in applied.transfers:
            if target == self.member_id and self.raft._isLeader():
                log.info("transferring leadership away (this member is being removed)")
                self.raft.transferLeadership()
        if self._on_applied is not None:
            self._on_applied(applied)
        if self.journal.stats()["bytes"] > self._snapshot_bytes and not self.snapshots.busy:
            self.raft.forceLogCompaction()
        return applied.results if want else None

    def _take_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.state.snapshot()

    def _restore_snapshot(self, snap: dict[str, Any]) -> None:
        st = mvcc.KVState.from_snapshot(snap)
        with self.lock:
            self.state = st
        log.info("loaded snapshot at revision %d (%d keys)", st.revision, len(st))
        if self._on_restored is not None:
            self._on_restored(st)

    # ------------------------------------------------------------ loop side: proposals

    def pending(self) -> int:
        """Requests waiting for the log or being replicated (loop side)."""
        return len(self._queue) + len(self._reads) + self._inflight

    def _admit(self) -> None:
        """Refuse new work when `max_pending` requests already wait for the log (etcd's
        "too many requests"): a client that outruns the disk gets an error, not a queue that
        grows until the process runs out of memory."""
        if len(self._queue) + len(self._reads) >= self._max_pending or self._queue_bytes >= MAX_PENDING_BYTES:
            self.rejected += 1
            PROPOSALS_FAILED.inc()
            raise errors.TOO_MANY_REQUESTS

    async def propose(self, cmd: tuple[Any, ...], *, timeout: float | None = None) -> Any:
        """Replicate one command; its result, or raise its EtcdError."""
        self._admit()
        fut: asyncio.Future[Any] = self.loop.create_future()
        arrived = time.monotonic()
        self._queue.append((cmd, fut, arrived))
        self._queue_bytes += _approx_size(cmd)
        self._schedule_flush()
        try:
            res = await fut
        finally:
            Hop.TOTAL.observe(time.monotonic() - arrived)
        if isinstance(res, EtcdError):
            raise res
        return res

    async def linearizable_read(self) -> None:
        """Return once this member may serve a linearizable read: a ReadIndex (asked of the
        leader on a follower), else (no leader reachable, leadership lost meanwhile) a read
        barrier through the log."""
        if not self.read_index:
            await self.read_barrier()
            return
        self._admit()
        with self.raft.read_lock:
            waiting = self.raft.read_waiting
            batch = waiting[-1] if waiting else None
            if not isinstance(batch, _ReadBatch):
                batch = _ReadBatch(self.loop, self.request_timeout)
                waiting.append(batch)
                first = len(waiting) == 1
            else:
                first = False
            batch.reads += 1
        if first:  # later ones ride in the same round; an answer in flight starts the next one
            self.raft.wake()
        # shield: one reader cancelled (its client went away) must not cancel its batch's answer
        ok = await asyncio.shield(batch.fut)
        if ok is None:
            raise errors.TIMEOUT
        if not ok:
            await self.read_barrier()

    async def read_barrier(self) -> None:
        """Return once a log entry proposed after this call has been applied here."""
        self._admit()
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._reads.append(fut)
        self._schedule_flush()
        await fut

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        # Group commit: while `max_inflight` batches are being replicated, new requests wait
        # and then leave together as the next batch (one log entry, one fsync per member).
        while (self._queue or self._reads) and self._inflight < self._max_inflight:
            take = min(len(self._queue), self._max_batch)
            if self._queue_bytes > self._max_batch_bytes:
                size, take = 0, 0
                for cmd, _, _ in self._queue:
                    size += _approx_size(cmd)
                    take += 1
                    if size > self._max_batch_bytes or take >= self._max_batch:
                        break
            items = self._queue[:take]
            del self._queue[:take]
            self._queue_bytes = sum(_approx_size(c) for c, _, _ in self._queue) if self._queue else 0
            reads, self._reads = self._reads, []
            now = time.monotonic()
            for _, _, arrived in items:
                Hop.QUEUE.observe(now - arrived)
            p = _Pending([c for c, _, _ in items], [f for _, f, _ in items], reads, now + self.request_timeout)
            p.timer = self.loop.call_later(self.request_timeout, self._expire, p)
            self._inflight += 1
            self._submit(p)

    def _submit(self, p: _Pending) -> None:
        batch = (self.member_id, tuple(p.cmds))
        loop = self.loop

        def done(res: Any, err: int) -> None:  # tick thread
            p.applied = time.monotonic()
            if p.taken is not None and err == FAIL_REASON.SUCCESS:
                Hop.REPLICATE.observe(p.applied - p.taken)
            loop.call_soon_threadsafe(self._done, p, res, err)

        try:
            p.submitted, p.taken = time.monotonic(), None
            self.raft.submitted.append(p)
            self.raft.apply_batch(batch, callback=done)
            self.raft.wake()
        except Exception as e:  # e.g. the pipe notifier full; treat like a full queue
            log.warning("proposal not queued: %s", e)
            self._done(p, None, FAIL_REASON.QUEUE_FULL)

    def _done(self, p: _Pending, res: Any, err: int) -> None:
        if p.timer is None:
            return  # already answered (timed out)
        if err == FAIL_REASON.SUCCESS:
            if p.applied is not None:
                Hop.APPLY_TO_ANSWER.observe(time.monotonic() - p.applied)
            self._finish(p, res, None)
            return
        p.last_error = err
        unknown = err in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME)
        if (err in _RETRYABLE or (unknown and not p.cmds)) and time.monotonic() < p.deadline - 0.05:
            self.loop.call_later(0.05, self._submit, p)
            return
        if unknown:
            self._finish(p, None, errors.TIMEOUT_LEADER_FAIL)
        elif err == FAIL_REASON.MISSING_LEADER:
            self._finish(p, None, errors.NO_LEADER)
        else:
            self._finish(p, None, errors.TIMEOUT)

    def _expire(self, p: _Pending) -> None:
        if p.timer is None:
            return
        err = errors.NO_LEADER if p.last_error == FAIL_REASON.MISSING_LEADER else errors.TIMEOUT
        self._finish(p, None, err)

    def _finish(self, p: _Pending, results: Any, err: EtcdError | None) -> None:
        if err is not None:
            PROPOSALS_FAILED.inc()
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
            self._inflight -= 1
            if self._queue or self._reads:
                self._schedule_flush()
        for i, fut in enumerate(p.futs):
            if fut.done():
                continue
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(results[i] if results is not None else None)
        for fut in p.reads:
            if not fut.done():
                if err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(None)

    # ------------------------------------------------------------ membership

    async def change_membership(self, op: str, addr: str, *, timeout: float = 10.0) -> None:
        """Add or remove a Raft member; retried while another change is in flight."""
        deadline = time.monotonic() + timeout
        while True:
            fut: asyncio.Future[int] = self.loop.create_future()
            def done(_res: Any, err: int, fut: asyncio.Future[int] = fut,
                     loop: asyncio.AbstractEventLoop = self.loop) -> None:
                def deliver() -> None:
                    if not fut.done():
                        fut.set_result(err)

                loop.call_soon_threadsafe(deliver)

            if op == "add":
                self.raft.addNodeToCluster(addr, callback=done)
            else:
                self.raft.removeNodeFromCluster(addr, callback=done)
            self.raft.wake()
            try:
                err = await asyncio.wait_for(fut, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise errors.TIMEOUT from None
            if err == FAIL_REASON.SUCCESS:
                return
            if time.monotonic() > deadline:
                raise errors.NO_LEADER if err == FAIL_REASON.MISSING_LEADER else errors.TIMEOUT
            await asyncio.sleep(0.2)

    # ------------------------------------------------------------ status (read from the loop)

    def peers(self) -> list[str]:
        """Every Raft member's peer address, this one included, sorted."""
        try:
            others = [n.id for n in self.raft.otherNodes]
        except RuntimeError:
            others = []
        return sorted([self.self_addr, *others])

    def connected(self, addr: str) -> bool:
        for n in self.raft.otherNodes:
            if n.id == addr:
                return bool(self.raft.isNodeConnected(n))
        return False

    def leader_addr(self) -> str | None:
        leader = self.raft._getLeader()
        return None if leader is None else str(leader.id)

    def is_leader(self) -> bool:
        return bool(self.raft._isLeader())

    @property
    def term(self) -> int:
        return int(self.raft.raftCurrentTerm)

    @property
    def commit_index(self) -> int:
        return int(self.raft.raftCommitIndex)

    @property
    def applied_index(self) -> int:
        return int(self.raft.raftLastApplied)

    def is_ready(self) -> bool:
        return bool(self.raft.isReady())

    def destroy(self) -> None:
        self.raft.destroy_synchronous()


def _approx_size(cmd: tuple[Any, ...]) -> int:
    req = cmd[1] if len(cmd) > 1 else None
    if isinstance(req, mvcc.PutReq):
        return len(req.key) + len(req.value) + 32
    return 64
