"""bench/writes.py: each store write is told apart by resource and writer from its values alone."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from bench.writes import WriteCounter, classify
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.etcd import kv_pb2


def _pod(*, node: str = "", phase: str = "", owner: str = "ReplicaSet", deleting: bool = False, rv: str = "1") -> t.Pod:
    p = t.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.resource_version = "p", "scale", rv
    if owner:
        p.metadata.owner_references.add(kind=owner, name="rs", controller=True)
    p.spec.containers.add(name="c", image="i")
    p.spec.node_name = node
    p.status.phase = phase
    if deleting:
        p.metadata.deletion_timestamp.seconds = 5
    return p


def _rs(replicas: int, ready: int) -> t.ReplicaSet:
    r = t.ReplicaSet()
    r.metadata.name, r.metadata.namespace = "rs", "scale"
    r.spec.replicas = replicas
    r.status.ready_replicas = ready
    return r


def _event(count: int, component: str = "kubelet", reason: str = "Started") -> t.Event:
    e = t.Event(reason=reason, count=count)
    e.metadata.name, e.metadata.namespace = "p.1", "scale"
    e.source.component = component
    return e


def _b(m: Message | None) -> bytes:
    return m.SerializeToString() if m is not None else b""


POD, RS, EV = b"/registry/pods/scale/p", b"/registry/replicasets/scale/rs", b"/registry/events/scale/p.1"


@pytest.mark.parametrize(("key", "prev", "cur", "deleted", "expected"), [
    (POD, None, _pod(), False, ("pods", "replicaset-controller (create)")),
    (POD, None, _pod(owner=""), False, ("pods", "create")),
    (POD, _pod(), _pod(node="n1"), False, ("pods", "scheduler (bind)")),
    (POD, _pod(node="n1"), _pod(node="n1", phase="Running"), False, ("pods", "node agent (pod status)")),
    (POD, _pod(), _pod(phase="Pending"), False, ("pods", "scheduler (pod status)")),
    (POD, _pod(node="n1", rv="1"), _pod(node="n1", rv="2"), False, ("pods", "no-op")),
    (POD, _pod(node="n1"), _pod(node="n1", deleting=True), False, ("pods", "delete (graceful)")),
    (POD, _pod(node="n1"), None, True, ("pods", "delete")),
    (RS, _rs(3, 0), _rs(3, 1), False, ("replicasets", "replicaset-controller (status)")),
    (RS, _rs(3, 0), _rs(4, 0), False, ("replicasets", "deployment-controller (spec)")),
    (EV, None, _event(1), False, ("events", "kubelet (new: Started)")),
    (EV, _event(1), _event(2), False, ("events", "kubelet (count+1: Started)")),
    (b"/registry/leases/kube-node-lease/n1", None, t.Lease(), False, ("leases", "create")),
    (b"/registry/pods/scale/p", None, None, False, ("pods", "?")),
], ids=["pod-create-by-owner", "pod-create-bare", "bind", "pod-status-by-agent", "pod-status-unbound",
        "pod-no-op", "graceful-delete", "delete", "rs-status", "rs-scale", "event-new", "event-count",
        "other-kind-create", "undecodable"])
def test_classify(key: bytes, prev: Message | None, cur: Message | None, deleted: bool,
                  expected: tuple[str, str]) -> None:
    value = b"\xff\xff" if cur is None and not deleted else _b(cur)
    assert classify(key, _b(prev), value, deleted=deleted) == expected


def test_table_divides_by_pods_and_counts_every_revision() -> None:
    counter = WriteCounter("127.0.0.1:1", 1)
    writes = [(POD, None, _pod()), (POD, _pod(), _pod(node="n1")), (EV, None, _event(1)), (EV, _event(1), _event(2))]
    for rev, (key, prev, cur) in enumerate(writes, start=1):
        ev = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=key, value=_b(cur), mod_revision=rev))
        if prev is not None:
            ev.prev_kv.CopyFrom(kv_pb2.KeyValue(key=key, value=_b(prev)))
        counter.add(ev)
    table = counter.table(pods=2)
    assert (table["writes"], table["per_pod"], counter.last_revision) == (4, 2.0, 4)
    assert table["by_resource"] == {"events": 1.0, "pods": 1.0}
    assert ["pods", "scheduler (bind)", 1, 0.5] in table["by_writer"]
    assert counter.table(pods=2, first=3)["by_resource"] == {"events": 1.0}
    assert counter.table(pods=2, last=2)["by_resource"] == {"pods": 1.0}
