"""The etcd v3 errors the store returns, with etcd's gRPC codes and exact messages.

Clients key on these strings (clientv3 turns "etcdserver: mvcc: required revision has been
compacted" into ErrCompacted, the api-server turns it into 410 Gone), so a message here must be
byte-for-byte the one etcd sends. These are values, not just exceptions: the state machine
returns them as per-command results inside a replicated batch.
"""

from __future__ import annotations

import grpc


class EtcdError(Exception):
    """An etcd-compatible failure: a gRPC status code and etcd's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[EtcdError], tuple[grpc.StatusCode, str]]:
        return (EtcdError, (self.code, self.message))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EtcdError) and (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


_C = grpc.StatusCode

EMPTY_KEY = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
REQUEST_TOO_LARGE = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: request is too large")
COMPACTED = EtcdError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = EtcdError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
LEASE_NOT_FOUND = EtcdError(_C.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXIST = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = EtcdError(_C.OUT_OF_RANGE, "etcdserver: too large lease TTL")
MEMBER_NOT_FOUND = EtcdError(_C.NOT_FOUND, "etcdserver: member not found")
PEER_URL_EXIST = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
LEARNER_NOT_SUPPORTED = EtcdError(_C.UNIMPLEMENTED, "etcdserver: learner members are not supported by this store")
NO_LEADER = EtcdError(_C.UNAVAILABLE, "etcdserver: no leader")
LEADER_CHANGED = EtcdError(_C.UNAVAILABLE, "etcdserver: leader changed")
TIMEOUT = EtcdError(_C.UNAVAILABLE, "etcdserver: request timed out")
TIMEOUT_LEADER_FAIL = EtcdError(
    _C.UNAVAILABLE, "etcdserver: request timed out, possibly due to previous leader failure"
)
NO_SPACE = EtcdError(_C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
TOO_MANY_REQUESTS = EtcdError(_C.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
STOPPING = EtcdError(_C.UNAVAILABLE, "etcdserver: server stopped")
