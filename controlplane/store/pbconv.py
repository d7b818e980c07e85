"""Conversions between the etcd protobuf messages and the state machine's plain tuples.

Kept in one place so the state machine never sees protobuf and the server never builds
records by hand. The hot paths (Put, watch events) avoid per-field Python work where they can:
events are encoded once to bytes and reused for every watcher.
"""

from __future__ import annotations

from typing import Any

from controlplane.store import mvcc
from skiffpb.etcd import kv_pb2, rpc_pb2


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(tag: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag byte (field << 3 | 2), length, payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def kv_pb(kv: mvcc.KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key, value=kv.value, create_revision=kv.create_revision,
        mod_revision=kv.mod_revision, version=kv.version, lease=kv.lease,
    )


def encode_event(ev: mvcc.Event, *, with_prev: bool) -> bytes:
    """mvccpb.Event bytes; prev_kv (field 3) appended only when asked for and present."""
    data = kv_pb2.Event(type=ev.type, kv=kv_pb(ev.kv)).SerializeToString()  # type: ignore[arg-type]
    if with_prev and ev.prev_kv is not None:
        data += field_bytes(0x1A, kv_pb(ev.prev_kv).SerializeToString())
    return data


def range_req(r: rpc_pb2.RangeRequest) -> mvcc.RangeReq:
    return mvcc.RangeReq(
        r.key, r.range_end, r.limit, r.revision, r.sort_order, r.sort_target, r.keys_only, r.count_only,
        r.min_mod_revision, r.max_mod_revision, r.min_create_revision, r.max_create_revision,
    )


def put_req(r: rpc_pb2.PutRequest) -> mvcc.PutReq:
    return mvcc.PutReq(r.key, r.value, r.lease, r.prev_kv, r.ignore_value, r.ignore_lease)


def delete_req(r: rpc_pb2.DeleteRangeRequest) -> mvcc.DeleteReq:
    return mvcc.DeleteReq(r.key, r.range_end, r.prev_kv)


_CMP_FIELD = {0: "version", 1: "create_revision", 2: "mod_revision", 3: "value", 4: "lease"}


def compare(c: rpc_pb2.Compare) -> mvcc.Compare:
    return mvcc.Compare(c.result, c.target, c.key, getattr(c, _CMP_FIELD.get(c.target, "version")), c.range_end)


def request_op(op: rpc_pb2.RequestOp) -> Any:
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_req(op.request_range)
    if which == "request_put":
        return put_req(op.request_put)
    if which == "request_delete_range":
        return delete_req(op.request_delete_range)
    if which == "request_txn":
        return txn_req(op.request_txn)
    raise ValueError("empty RequestOp")


def txn_req(t: rpc_pb2.TxnRequest) -> mvcc.TxnReq:
    return mvcc.TxnReq(
        tuple(compare(c) for c in t.compare),
        tuple(request_op(o) for o in t.success),
        tuple(request_op(o) for o in t.failure),
    )


def range_resp(res: mvcc.RangeResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(header=header, kvs=[kv_pb(kv) for kv in res.kvs], more=res.more, count=res.count)


def put_resp(res: mvcc.PutResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.PutResponse:
    if res.prev_kv is None:
        return rpc_pb2.PutResponse(header=header)
    return rpc_pb2.PutResponse(header=header, prev_kv=kv_pb(res.prev_kv))


def delete_resp(res: mvcc.DeleteResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(header=header, deleted=res.deleted, prev_kvs=[kv_pb(kv) for kv in res.prev_kvs])


def txn_resp(res: mvcc.TxnResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.TxnResponse:
    out = rpc_pb2.TxnResponse(header=header, succeeded=res.succeeded)
    for r in res.responses:
        op = out.responses.add()
        if isinstance(r, mvcc.RangeResult):
            op.response_range.CopyFrom(range_resp(r, header))
        elif isinstance(r, mvcc.PutResult):
            op.response_put.CopyFrom(put_resp(r, header))
        elif isinstance(r, mvcc.DeleteResult):
            op.response_delete_range.CopyFrom(delete_resp(r, header))
        elif isinstance(r, mvcc.TxnResult):
            op.response_txn.CopyFrom(txn_resp(r, header))
    return out
