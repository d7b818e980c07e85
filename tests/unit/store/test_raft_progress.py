"""The leader's next index per follower (`next_index_after_ack`), the peer zlib level, and the
index a majority holds (`majority_index`, which times a put's `send_to_quorum` hop).

The next index only moves back on a `reset` answer (the follower's log does not match);
an answer to an earlier append message never pulls it behind what was already sent, so
entries are not sent twice and a follower never cuts back entries it has applied.
"""

from __future__ import annotations

import zlib

import pytest

from controlplane.store import raft
from controlplane.store.raft import PEER_COMPRESS_LEVEL, next_index_after_ack

CASES = [
    # (next index before the answer, the answer's next_node_idx, success, reset, expected)
    pytest.param(21, 11, True, False, 21, id="late-ack-does-not-pull-back"),
    pytest.param(11, 21, True, False, 21, id="ack-beyond-moves-forward"),
    pytest.param(21, 21, True, False, 21, id="ack-of-everything-sent"),
    pytest.param(21, 5, False, True, 5, id="reset-takes-the-followers-index"),
    pytest.param(21, 30, False, True, 30, id="reset-forward-too"),
    pytest.param(21, 11, False, False, 21, id="failure-without-reset-changes-nothing"),
]


@pytest.mark.parametrize(("next_index", "ack_next", "success", "reset", "expected"), CASES)
def test_next_index_after_ack(next_index: int, ack_next: int, success: bool, reset: bool, expected: int) -> None:
    assert next_index_after_ack(next_index, ack_next, success=success, reset=reset) == expected


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty"),
    pytest.param(b"heartbeat" * 10, id="small"),
    pytest.param(bytes(range(256)) * 400, id="large"),
])
def test_peer_messages_are_stored_deflate_that_any_reader_inflates(payload: bytes) -> None:
    import pysyncobj.tcp_connection as tcp_connection

    data = tcp_connection.zlib.compress(payload, 3)  # pysyncobj's own call, level 3
    assert PEER_COMPRESS_LEVEL == 0
    assert data == zlib.compress(payload, 0)  # what was asked for (3) is not what is done
    assert zlib.decompress(data) == payload  # members from before read it
    assert tcp_connection.zlib.decompress(zlib.compress(payload, 3)) == payload  # and we read theirs
    assert tcp_connection.zlib is raft._PeerZlib


MAJORITY_CASES = [
    # (leader's last index, followers' match indexes, the highest index a majority holds)
    pytest.param(10, [], 10, id="alone"),
    pytest.param(10, [7, 3], 7, id="three-one-follower-enough"),
    pytest.param(10, [3, 7], 7, id="three-order-does-not-matter"),
    pytest.param(10, [10, 10], 10, id="three-all-caught-up"),
    pytest.param(10, [0, 0], 0, id="three-no-follower-yet"),
    pytest.param(10, [9, 8, 2], 8, id="four-needs-three"),
    pytest.param(10, [9, 8, 2, 1], 8, id="five-needs-three"),
]


@pytest.mark.parametrize(("own_last", "matches", "expected"), MAJORITY_CASES)
def test_majority_index(own_last: int, matches: list[int], expected: int) -> None:
    assert raft.majority_index(own_last, matches) == expected
