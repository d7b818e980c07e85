"""Store writes by kind and by writer: what each pod costs the store, and who pays it.

Every write is one store revision, carried through gRPC, Raft and every watcher; the scale
scenario (bench/scale.py) divides the revisions it saw by its pods. This module says which
writes they were: a watch on the whole `/registry/` keyspace from a revision on, with the
previous value of every key, turned by the pure `classify` into (resource, writer) rows.

What must hold:
- `classify` reads only the stored values (before and after a write), never a clock or the
  cluster: the same write gives the same row. The writer is named from what changed (a pod's
  create is its owner controller's, `spec.nodeName` appearing is the scheduler's bind, a status
  change of a bound pod is its node agent's) or from what the object says (an Event's
  `source.component`), since the store does not record who wrote;
- a value that does not decode is still counted (writer "?"), so the total equals the number
  of revisions the watch saw;
- `WriteCounter.table(pods)` divides by the pods of the run: a row of 1.0 is one write per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from skiff import kinds
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger("bench.writes")
PREFIX = b"/registry/"

# Who writes each kind of change of a kind that several components write (the rest: the
# change's name alone, e.g. "leases: update").
WRITERS: dict[tuple[str, str], str] = {
    ("replicasets", "create"): "deployment-controller",
    ("replicasets", "spec"): "deployment-controller",
    ("replicasets", "status"): "replicaset-controller",
    ("deployments", "status"): "deployment-controller",
    ("endpoints", "create"): "endpoints-controller",
    ("endpoints", "spec"): "endpoints-controller",
    ("nodes", "status"): "node agent (node status)",
    ("leases", "spec"): "lease holder (renewal)",
    ("pods", "bind"): "scheduler (bind)",
    ("pods", "status"): "node agent (pod status)",
    ("pods", "status-unbound"): "scheduler (pod status)",
}


def _decode(resource: str, value: bytes) -> Message | None:
    kind = kinds.by_resource(resource)
    if kind is None:
        return None
    msg = kind.message()
    try:
        msg.ParseFromString(value)
    except DecodeError:
        return None
    return msg


def _without(msg: Message, *fields: str) -> bytes:
    out = type(msg)()
    out.CopyFrom(msg)
    out.metadata.resource_version = ""  # type: ignore[attr-defined]
    for name in fields:
        if out.DESCRIPTOR.fields_by_name.get(name) is not None:
            out.ClearField(name)
    return out.SerializeToString(deterministic=True)


def change(resource: str, prev: Message | None, cur: Message | None) -> str:
    """What a write did: create, delete, bind, spec (anything but status), status, or no-op."""
    if cur is None:
        return "delete"
    if prev is None:
        return "create"
    if resource == "pods":
        assert isinstance(prev, t.Pod) and isinstance(cur, t.Pod)
        if not prev.spec.node_name and cur.spec.node_name:
            return "bind"
        if not prev.metadata.HasField("deletion_timestamp") and cur.metadata.HasField("deletion_timestamp"):
            return "delete (graceful)"
    if _without(prev, "status") != _without(cur, "status"):
        return "spec"
    if _without(prev) != _without(cur):
        if resource == "pods" and not cur.spec.node_name:  # type: ignore[attr-defined]
            return "status-unbound"
        return "status"
    return "no-op"


def writer(resource: str, what: str, prev: Message | None, cur: Message | None) -> str:
    """Who made this change (see the module docstring for how it is told)."""
    if resource == "events" and cur is not None:
        assert isinstance(cur, t.Event)
        source = cur.source.component or cur.reporting_component or "?"
        return f"{source} ({'new' if prev is None else 'count+1'}: {cur.reason})"
    if resource == "pods" and what == "create" and cur is not None:
        owners = [o.kind for o in cur.metadata.owner_references if o.controller]  # type: ignore[attr-defined]
        return f"{owners[0].lower()}-controller (create)" if owners else "create"
    named = WRITERS.get((resource, what))
    if named is None:
        return what
    return named if "(" in named else f"{named} ({what})"


def classify(key: bytes, prev_value: bytes, value: bytes, *, deleted: bool = False) -> tuple[str, str]:
    """(resource, writer) of one write of `key` from `prev_value` (b"": none) to `value`."""
    parts = key[len(PREFIX):].decode(errors="replace").split("/") if key.startswith(PREFIX) else ["?"]
    resource = parts[0]
    prev = _decode(resource, prev_value) if prev_value else None
    cur = None if deleted else _decode(resource, value)
    if not deleted and cur is None:
        return resource, "?"
    if prev_value and prev is None and cur is not None:
        prev = type(cur)()  # an undecodable previous value: compare with an empty one
    what = change(resource, prev, cur)
    return resource, writer(resource, what, prev, cur)


class WriteCounter:
    """Counts every write under /registry/ from `start_revision` on, by (resource, writer)."""

    def __init__(self, endpoint: str, start_revision: int) -> None:
        self.endpoint = endpoint
        self.start_revision = start_revision
        self.rows: list[tuple[int, tuple[str, str]]] = []  # (revision, (resource, writer)) in order
        self.last_revision = 0

    def add(self, ev: Any) -> None:
        deleted = ev.type == 1  # DELETE
        row = classify(ev.kv.key, ev.prev_kv.value if ev.HasField("prev_kv") else b"", ev.kv.value, deleted=deleted)
        self.rows.append((ev.kv.mod_revision, row))
        self.last_revision = max(self.last_revision, ev.kv.mod_revision)

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.endpoint, options=[("grpc.max_receive_message_length", 64 << 20)]) \
                as ch:
            create = rpc_pb2.WatchCreateRequest(key=PREFIX, range_end=PREFIX[:-1] + b"0",
                                                start_revision=self.start_revision, prev_kv=True)
            call = rpc_pb2_grpc.WatchStub(ch).Watch(metadata=(("hasleader", "true"),))
            await call.write(rpc_pb2.WatchRequest(create_request=create))
            async for resp in call:  # the request side stays open: the watch lives as long as it
                if resp.canceled:
                    log.warning("write counter's watch canceled: %s", resp.cancel_reason)
                    return
                for ev in resp.events:
                    self.add(ev)

    async def until(self, revision: int, timeout: float = 30.0) -> None:
        """Wait until the watch has delivered every write up to `revision` (or `timeout`)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.last_revision < revision:
                    await asyncio.sleep(0.2)

    def counts(self, first: int = 0, last: int | None = None) -> Counter[tuple[str, str]]:
        """Writes by (resource, writer) of the revisions first..last (inclusive)."""
        return Counter(row for rev, row in self.rows if rev >= first and (last is None or rev <= last))

    def table(self, pods: int, first: int = 0, last: int | None = None) -> dict[str, Any]:
        """Writes per pod by resource and writer (revisions first..last), most first; totals per resource."""
        counts = self.counts(first, last)
        rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        by_resource: Counter[str] = Counter()
        for (resource, _), n in rows:
            by_resource[resource] += n
        total = sum(counts.values())
        return {"writes": total, "pods": pods, "per_pod": round(total / max(pods, 1), 2),
                "by_resource": {r: round(n / max(pods, 1), 2) for r, n in by_resource.most_common()},
                "by_writer": [[r, w, n, round(n / max(pods, 1), 2)] for (r, w), n in rows]}
