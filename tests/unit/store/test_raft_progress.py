"""The leader's next index per follower (`next_index_after_ack`), the peer zlib level and `PeerFernet`.

The next index only moves back on a `reset` answer (the follower's log does not match);
an answer to an earlier append message never pulls it behind what was already sent, so
entries are not sent twice and a follower never cuts back entries it has applied.
"""

from __future__ import annotations

import base64
import zlib

import pytest
from cryptography.fernet import Fernet, InvalidToken

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
    pytest.param(b"\0" * (2 << 20), id="larger-than-any-window"),
])
def test_peer_messages_are_stored_deflate_that_any_reader_inflates(payload: bytes) -> None:
    import pysyncobj.tcp_connection as tcp_connection

    data = tcp_connection.zlib.compress(payload, 3)  # pysyncobj's own call, level 3
    assert PEER_COMPRESS_LEVEL == 0
    assert len(data) >= len(payload)  # stored blocks: what was asked for (3) is not what is done
    assert data[0] >> 4 == raft.PEER_WBITS - 8  # the header's window size (CINFO): the small state
    assert zlib.decompress(data) == payload  # members from before read it
    assert tcp_connection.zlib.decompress(zlib.compress(payload, 3)) == payload  # and we read theirs
    assert tcp_connection.zlib is raft._PeerZlib


def _tampered(token: bytes) -> bytes:
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[-40] ^= 1  # a ciphertext byte: the header still reads, the HMAC no longer matches
    return base64.urlsafe_b64encode(bytes(raw))


@pytest.mark.parametrize(("payload", "when"), [
    pytest.param(b"", 0, id="empty-at-zero"),
    pytest.param(b"heartbeat" * 16, 1_000, id="heartbeat"),
    pytest.param(bytes(range(256)) * 300, 2**40 + 7, id="append-batch-large-timestamp"),
])
def test_peer_fernet_reads_the_timestamp_once_and_still_verifies(payload: bytes, when: int) -> None:
    fernet = Fernet(Fernet.generate_key())
    peer = raft.PeerFernet(fernet)
    token = peer.encrypt_at_time(payload, when)
    assert peer.extract_timestamp(token) == fernet.extract_timestamp(token) == when
    assert peer.decrypt(token) == payload
    bad = _tampered(token)
    assert peer.extract_timestamp(bad) == when  # read from the header alone ...
    with pytest.raises(InvalidToken):
        peer.decrypt(bad)  # ... but the message is refused (and pysyncobj drops the connection)
    with pytest.raises(InvalidToken):
        raft.PeerFernet(Fernet(Fernet.generate_key())).decrypt(token)  # another cluster's password


@pytest.mark.parametrize("token", [
    pytest.param(b"", id="empty"),
    pytest.param(base64.urlsafe_b64encode(b"\x81" + bytes(40)), id="wrong-version"),
])
def test_peer_fernet_refuses_what_is_not_a_token(token: bytes) -> None:
    with pytest.raises(ValueError):
        raft.PeerFernet.extract_timestamp(token)
