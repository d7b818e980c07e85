"""The store member's Prometheus metrics, named as etcd names them (so etcd's dashboards and
alerts apply): leader, proposals, WAL fsync latency, database size, keys; and, Skiff's own, the
time a proposal spends in each hop of its way through Raft (`PROPOSAL_HOPS`).

What must hold:
- counters and histograms here are incremented where the event happens (the journal's
  fdatasync on the tick thread, a proposal's end on the loop); prometheus_client is thread-safe;
- gauges that mirror state (leader, indexes, sizes) are read at scrape time by
  `StoreCollector`, never copied on a timer, so a scrape shows the state of that moment;
- reading them takes the member's lock only for O(1) reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from controlplane.store.server import Store

# etcd's buckets for disk latencies: 1 ms doubling to about 8 s.
DISK_BUCKETS = tuple(0.001 * 2 ** i for i in range(14))

WAL_FSYNC = Histogram("etcd_disk_wal_fsync_duration_seconds",
                      "The latency distributions of fsync called by WAL (the member's journal).",
                      buckets=DISK_BUCKETS)
PROPOSALS_FAILED = Counter("etcd_server_proposals_failed",
                           "The total number of failed proposals seen (no leader, timeout, too many requests).")
LEADER_CHANGES = Counter("etcd_server_leader_changes_seen", "The number of leader changes seen.")

# A put's hops take tens of microseconds to tens of milliseconds: 50 us doubling to about 1.6 s.
HOP_BUCKETS = tuple(0.00005 * 2 ** i for i in range(16))
PROPOSAL_HOPS = Histogram(
    "skiff_store_proposal_hop_seconds",
    "Time a proposal spends in one hop of its way through Raft, as seen by this member (see docs/store.md).",
    ["hop"], buckets=HOP_BUCKETS)


class Hop:
    """The hops of a proposal, in the order it takes them, each timed on one member's own clock
    (the member named first measures it). Two members' hops never share a clock reading, so the
    time between them -- a message in flight, a poll that has not returned yet -- is what the
    proposer's `total` leaves over after its own hops."""

    QUEUE = PROPOSAL_HOPS.labels("queue")  # proposer: request in -> its batch handed to Raft (group commit)
    TO_TICK = PROPOSAL_HOPS.labels("to_tick")  # proposer: handed to Raft -> the tick thread appends or forwards it
    FORWARDED_TO_APPEND = PROPOSAL_HOPS.labels("forwarded_to_append")  # leader: a forwarded batch read -> appended
    APPEND_TO_SEND = PROPOSAL_HOPS.labels("append_to_send")  # leader: appended -> sent to the followers
    SEND_TO_QUORUM = PROPOSAL_HOPS.labels("send_to_quorum")  # leader: sent -> the ack completing a majority read
    # follower: entries read -> ack sent (after its fdatasync)
    FOLLOWER_APPEND_TO_ACK = PROPOSAL_HOPS.labels("follower_append_to_ack")
    QUORUM_TO_COMMIT = PROPOSAL_HOPS.labels("quorum_to_commit")  # leader: majority ack read -> committing tick starts
    COMMIT_TO_APPLY = PROPOSAL_HOPS.labels("commit_to_apply")  # any member: known committed -> applied
    REPLICATE = PROPOSAL_HOPS.labels("replicate")  # proposer: appended or forwarded -> applied here
    APPLY_TO_ANSWER = PROPOSAL_HOPS.labels("apply_to_answer")  # proposer: applied (tick thread) -> answered on the loop
    TOTAL = PROPOSAL_HOPS.labels("total")  # proposer: request in -> answered


class StoreCollector(Collector):
    """The state gauges of one member, read at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> Iterator[Metric]:
        # Nothing up front: the registry then does not reserve the names, so a test process may
        # hold several of these (one per server it runs) and unregister each when it stops.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        node = self.store.node
        leader = node.leader_addr()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.",
                    1 if leader else 0)
        yield gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                    1 if node.is_leader() else 0)
        yield gauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.",
                    node.commit_index)
        yield gauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.",
                    node.applied_index)
        yield gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.",
                    node.pending())
        yield gauge("etcd_server_term", "The Raft term of this member.", node.term)
        size = node.journal.stats()["bytes"]
        try:
            size += os.path.getsize(node.snapshots.path)
        except OSError:
            pass
        yield gauge("etcd_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes (journal and snapshot).",
                    size)
        state = node.state
        yield gauge("etcd_mvcc_db_total_size_in_use_in_bytes",
                    "Total size of the underlying database logically in use in bytes.", state.size_bytes)
        yield gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.", len(state))
        yield gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.", state.revision)
        yield gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
                    state.compact_revision)
        yield gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.",
                    sum(len(s.watchers) for s in self.store.hub.streams))
        yield gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.",
                    len(self.store.hub.streams))
