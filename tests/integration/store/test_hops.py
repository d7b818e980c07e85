"""A put's hops through Raft, timed by real members (`skiff_store_proposal_hop_seconds`).

Puts written one at a time through a follower of a real 3-member cluster: the follower times
its own hops (queue, to_tick, replicate, apply_to_answer, total), the leader times the entry's
(forwarded_to_append, append_to_send, send_to_quorum, quorum_to_commit, commit_to_apply), and
the hops nest as the path says: a request's own hops fit in its total, and everything the
leader did with the entry happened while the follower waited for it (`replicate`).
"""

from __future__ import annotations

import time

import grpc
import pytest

from bench.store_hops import hop_delta, scrape
from controlplane.store.cluster import StoreCluster
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc

pytestmark = pytest.mark.integration

PUTS = 50
PROPOSER_HOPS = ("queue", "to_tick", "replicate", "apply_to_answer", "total")
LEADER_HOPS = ("forwarded_to_append", "append_to_send", "send_to_quorum", "quorum_to_commit", "commit_to_apply")


def test_hops_of_puts_through_a_follower(cluster: StoreCluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.members if n != leader)
    time.sleep(1.0)  # the members' startup proposals (publishing themselves) are done
    before = {n: scrape(m.metrics) for n, m in cluster.members.items()}
    with grpc.insecure_channel(cluster.client(follower)) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(PUTS):
            kv.Put(rpc_pb2.PutRequest(key=b"/hops/%d" % i, value=b"v"), timeout=10)
    after = {n: scrape(m.metrics) for n, m in cluster.members.items()}
    proposer = hop_delta(before[follower], after[follower])
    lead = hop_delta(before[leader], after[leader])

    for hop in PROPOSER_HOPS:
        assert proposer.get(hop, {}).get("count", 0) >= PUTS, (hop, proposer)
    for hop in LEADER_HOPS:
        assert lead.get(hop, {}).get("count", 0) >= PUTS, (hop, lead)
    assert "to_tick" not in lead  # the leader proposed nothing itself
    assert proposer["commit_to_apply"]["count"] >= PUTS  # the follower learned each commit from the leader

    def mean(hops: dict[str, dict[str, float]], *names: str) -> float:
        return sum(hops[n]["mean_ms"] for n in names)

    # One put per batch: a request's own hops are parts of its total.
    assert mean(proposer, "queue", "to_tick", "replicate", "apply_to_answer") <= proposer["total"]["mean_ms"]
    # The leader appended, sent, committed and applied the entry while the follower waited for it.
    assert mean(lead, "append_to_send", "send_to_quorum", "quorum_to_commit", "commit_to_apply") \
        <= proposer["replicate"]["mean_ms"]
