"""Fuzzing the store's etcd v3 API on a real store process (`python -m controlplane.store`, one
member, over gRPC on loopback): random Put, Range, DeleteRange, Txn (nested too), Compact and
LeaseGrant/Revoke requests, built from the etcd protobuf descriptors, so every field takes odd
values (empty and binary keys, range ends below the key, "\\0", negative and huge revisions and
limits, unknown leases, duplicate keys in a transaction, ...).

What must hold: every request is answered within its deadline, either with a response or with an
etcd-style error (INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND, FAILED_PRECONDITION,
RESOURCE_EXHAUSTED) carrying a message; never UNKNOWN or INTERNAL (a crash inside the server), never a
hang; and after each example the store still reads back what it just wrote.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from controlplane.store.cluster import StoreCluster
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.fuzz.strategies import message

pytestmark = pytest.mark.integration

DEADLINE = 10.0
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
KEYS = st.one_of(st.sampled_from([b"", b"\x00", b"a", b"a/b", b"/registry/pods/default/web", b"\xff\xff"]),
                 st.binary(max_size=12))


@st.composite
def keyed(draw: st.DrawFn, cls: type[Message]) -> Message:
    """A random request whose key fields are mostly short keys that collide (so ranges find things)."""
    msg = draw(message(cls.DESCRIPTOR, 3))
    for field in ("key", "range_end"):
        if field in cls.DESCRIPTOR.fields_by_name and draw(st.booleans()):
            setattr(msg, field, draw(KEYS))
    return msg


@st.composite
def txn(draw: st.DrawFn) -> rpc_pb2.TxnRequest:
    req = rpc_pb2.TxnRequest()
    for _ in range(draw(st.integers(0, 3))):
        c = req.compare.add()
        c.CopyFrom(draw(message(rpc_pb2.Compare.DESCRIPTOR, 2)))
        c.key = draw(KEYS)
    for ops in (req.success, req.failure):
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["request_range", "request_put", "request_delete_range", "request_txn"]))
            op = ops.add()
            if kind == "request_txn":
                op.request_txn.CopyFrom(draw(message(rpc_pb2.TxnRequest.DESCRIPTOR, 3)))
            else:
                cls = {"request_range": rpc_pb2.RangeRequest, "request_put": rpc_pb2.PutRequest,
                       "request_delete_range": rpc_pb2.DeleteRangeRequest}[kind]
                getattr(op, kind).CopyFrom(draw(keyed(cls)))
    return req


REQUESTS = st.one_of(
    st.tuples(st.just("Put"), keyed(rpc_pb2.PutRequest)),
    st.tuples(st.just("Range"), keyed(rpc_pb2.RangeRequest)),
    st.tuples(st.just("DeleteRange"), keyed(rpc_pb2.DeleteRangeRequest)),
    st.tuples(st.just("Txn"), txn()),
    st.tuples(st.just("Compact"), message(rpc_pb2.CompactionRequest.DESCRIPTOR, 1)),
    st.tuples(st.just("LeaseGrant"), message(rpc_pb2.LeaseGrantRequest.DESCRIPTOR, 1)),
    st.tuples(st.just("LeaseRevoke"), message(rpc_pb2.LeaseRevokeRequest.DESCRIPTOR, 1)),
)


class Stubs:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)

    def call(self, method: str, request: Message) -> Message:
        stub = self.lease if method.startswith("Lease") else self.kv
        return getattr(stub, method)(request, timeout=DEADLINE)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def store() -> Iterator[Stubs]:
    with StoreCluster(1) as cluster:
        stubs = Stubs(cluster.endpoints[0])
        try:
            yield stubs
        finally:
            stubs.channel.close()


@given(st.lists(REQUESTS, min_size=1, max_size=5), st.binary(min_size=1, max_size=8))
def test_random_etcd_requests(store: Stubs, requests: list[tuple[str, Message]], probe: bytes) -> None:
    for method, request in requests:
        try:
            store.call(method, request)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            assert code in REFUSALS, f"{method}({request}) -> {code}: {exc.details()}"  # type: ignore[attr-defined]
            assert exc.details(), f"{method}: {code} without a message"  # type: ignore[attr-defined]
    key = b"/fuzz/probe/" + probe
    put = store.call("Put", rpc_pb2.PutRequest(key=key, value=probe))
    got = store.call("Range", rpc_pb2.RangeRequest(key=key))
    assert [(kv.key, kv.value, kv.mod_revision) for kv in got.kvs] == [(key, probe, put.header.revision)]  # type: ignore[attr-defined]
