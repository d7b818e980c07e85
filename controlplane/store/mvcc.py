"""The store's state machine: an etcd-style MVCC key space with leases, driven by replicated commands.

Every member applies the same committed commands in the same order and must end in the same
state, so what must always hold:

- `apply()` is deterministic. It reads no clock, no randomness and nothing outside the state
  and the command. Lease IDs and expiries are decided before replication: the proposer stamps
  IDs, and the leader decides that a lease expired and replicates a `lease_expire` command.
- One global revision. A command that changes keys bumps it exactly once (a txn with many
  writes is one revision); a command that changes nothing (a delete of a missing key, a txn
  that only reads, a failed command) leaves it. A fresh store is at revision 1, like etcd.
- A failed command changes nothing: it is validated completely before the first mutation.
- History holds every event with revision >= compact_revision, oldest first. Reads and watches
  below compact_revision fail with etcd's "required revision has been compacted".
- Alarms are replicated state, raised and cleared by commands (like etcd's). While a NOSPACE
  alarm is active, applying a put, a txn with a put or a lease grant fails with etcd's
  "database space exceeded" on every member alike; reads, deletes and compaction still work.
  Whether the space is exhausted is decided by the proposer, outside the state machine.
- Stored records (KeyValue, Event) are immutable tuples, so a snapshot is a set of shallow
  container copies taken between two applies.

Requests and results are plain tuples (cheap to pickle into the Raft log); the gRPC layer
converts them to and from the etcd protobuf messages.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import grpc
from sortedcontainers import SortedList

from controlplane.store import errors
from controlplane.store.errors import EtcdError

PUT = 0
DELETE = 1

# etcd's bounds: leases shorter than the minimum are extended to it (etcd derives 2 s from its
# election timeout); longer than the maximum are refused.
MIN_LEASE_TTL = 2
MAX_LEASE_TTL = 9_000_000_000
MAX_TXN_OPS = 128

# RangeRequest.SortOrder / SortTarget and Compare.CompareResult / CompareTarget, as in rpc.proto.
SORT_NONE, SORT_ASCEND, SORT_DESCEND = 0, 1, 2
TARGET_KEY, TARGET_VERSION, TARGET_CREATE, TARGET_MOD, TARGET_VALUE = 0, 1, 2, 3, 4
CMP_EQUAL, CMP_GREATER, CMP_LESS, CMP_NOT_EQUAL = 0, 1, 2, 3
CMPT_VERSION, CMPT_CREATE, CMPT_MOD, CMPT_VALUE, CMPT_LEASE = 0, 1, 2, 3, 4

ALL_KEYS = b"\x00"  # as range_end: every key >= key

# AlarmType and AlarmRequest.AlarmAction, as in rpc.proto.
ALARM_NONE, ALARM_NOSPACE, ALARM_CORRUPT = 0, 1, 2
ALARM_GET, ALARM_ACTIVATE, ALARM_DEACTIVATE = 0, 1, 2


class KeyValue(NamedTuple):
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


class Event(NamedTuple):
    type: int  # PUT or DELETE
    kv: KeyValue  # for DELETE only key and mod_revision (the delete's revision) are set
    prev_kv: KeyValue | None


class Member(NamedTuple):
    """A member's published attributes (the Raft membership itself lives in the Raft layer)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


# ---------------------------------------------------------------- requests


class RangeReq(NamedTuple):
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: int = SORT_NONE
    sort_target: int = TARGET_KEY
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


class PutReq(NamedTuple):
    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


class DeleteReq(NamedTuple):
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


class Compare(NamedTuple):
    result: int
    target: int
    key: bytes
    value: Any  # int for VERSION/CREATE/MOD/LEASE, bytes for VALUE
    range_end: bytes = b""


class TxnReq(NamedTuple):
    compare: tuple[Compare, ...]
    success: tuple[Any, ...]  # RangeReq | PutReq | DeleteReq | TxnReq
    failure: tuple[Any, ...]


# ---------------------------------------------------------------- results


class RangeResult(NamedTuple):
    kvs: list[KeyValue]
    more: bool
    count: int  # type: ignore[assignment]  # shadows tuple.count, as etcd names it


class PutResult(NamedTuple):
    prev_kv: KeyValue | None


class DeleteResult(NamedTuple):
    deleted: int
    prev_kvs: list[KeyValue]


class TxnResult(NamedTuple):
    succeeded: bool
    responses: list[Any]


class LeaseGrantResult(NamedTuple):
    id: int
    ttl: int


class Applied:
    """What applying one batch produced, for the layers around the state machine.

    `results` (one (result, revision after it) per command; the result is an EtcdError for a
    failed command) only when asked for: members
    that did not propose the batch skip building them. `refreshed`/`revoked` feed the lessor
    (which tracks expiry deadlines outside the state machine); `transfers` asks the named
    member, if it leads, to hand leadership over.
    """

    __slots__ = ("events", "refreshed", "results", "revision", "revoked", "transfers")

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.events: list[Event] = []
        self.refreshed: list[tuple[int, int]] = []
        self.revoked: list[int] = []
        self.transfers: list[int] = []
        self.revision = 0


# ---------------------------------------------------------------- commands (what the log carries)


def cmd_put(req: PutReq) -> tuple[str, PutReq]:
    return ("put", req)


def cmd_delete(req: DeleteReq) -> tuple[str, DeleteReq]:
    return ("delete", req)


def cmd_txn(req: TxnReq) -> tuple[str, TxnReq]:
    return ("txn", req)


def cmd_compact(revision: int) -> tuple[str, int]:
    return ("compact", revision)


def cmd_lease_grant(lease_id: int, ttl: int) -> tuple[str, int, int]:
    return ("lease_grant", lease_id, ttl)


def cmd_lease_revoke(lease_id: int) -> tuple[str, int]:
    return ("lease_revoke", lease_id)


def cmd_lease_expire(lease_ids: Iterable[int]) -> tuple[str, tuple[int, ...]]:
    return ("lease_expire", tuple(lease_ids))


def cmd_lease_keepalive(lease_id: int) -> tuple[str, int]:
    return ("lease_keepalive", lease_id)


def cmd_publish(member: Member) -> tuple[str, Member]:
    return ("publish", member)


def cmd_forget_member(member_id: int) -> tuple[str, int]:
    return ("forget_member", member_id)


def cmd_set_cluster_id(cluster_id: int) -> tuple[str, int]:
    return ("cluster_id", cluster_id)


def cmd_transfer_leadership(member_id: int) -> tuple[str, int]:
    return ("transfer", member_id)


def cmd_alarm(action: int, member_id: int, alarm: int) -> tuple[str, int, int, int]:
    """Raise (ALARM_ACTIVATE) or clear (ALARM_DEACTIVATE) an alarm; member 0 / ALARM_NONE match any
    when clearing. The result is the list of (member_id, alarm) pairs that changed."""
    return ("alarm", action, member_id, alarm)


def txn_has_put(req: TxnReq) -> bool:
    """Whether a txn writes a key in either branch (nested txns included)."""
    return any(isinstance(op, PutReq) or (isinstance(op, TxnReq) and txn_has_put(op))
               for op in (*req.success, *req.failure))


def event_bytes(ev: Event) -> int:
    """What an event in history holds on to: its key and value, or the deleted value."""
    if ev.type == DELETE:
        return len(ev.kv.key) + (len(ev.prev_kv.value) if ev.prev_kv is not None else 0)
    return len(ev.kv.key) + len(ev.kv.value)


# ---------------------------------------------------------------- request checks (pure, pre-replication)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """Whether `key` falls in etcd's [start, end) with end "" = only start, "\\0" = to the end."""
    if not end:
        return key == start
    if end == ALL_KEYS:
        return key >= start
    return start <= key < end


def check_txn(req: TxnReq) -> None:
    """etcd's request checks for a txn: op count and duplicate keys per branch (raises)."""
    if len(req.compare) > MAX_TXN_OPS or len(req.success) > MAX_TXN_OPS or len(req.failure) > MAX_TXN_OPS:
        raise errors.TOO_MANY_OPS
    _check_ops(req.success)
    _check_ops(req.failure)


def _check_ops(ops: tuple[Any, ...]) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """Puts and delete intervals of one branch; a put overlapping another put or a delete is refused."""
    dels = [(op.key, op.range_end) for op in ops if isinstance(op, DeleteReq)]
    for op in ops:
        if isinstance(op, PutReq | DeleteReq) and not op.key:
            raise errors.EMPTY_KEY
    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnReq):
            continue
        check_txn(op)
        puts_then, dels_then = _check_ops(op.success)
        puts_else, dels_else = _check_ops(op.failure)
        for k in puts_then:
            if k in puts or any(in_range(k, s, e) for s, e in dels):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        for k in puts_else:
            # then/else exclude each other: a key put in both nested branches is fine.
            if (k in puts and k not in puts_then) or any(in_range(k, s, e) for s, e in dels):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if not isinstance(op, PutReq):
            continue
        if op.key in puts or any(in_range(op.key, s, e) for s, e in dels):
            raise errors.DUPLICATE_KEY
        puts.add(op.key)
    return puts, dels


def check_put(req: PutReq) -> None:
    if not req.key:
        raise errors.EMPTY_KEY
    if req.ignore_value and req.value:
        raise errors.VALUE_PROVIDED
    if req.ignore_lease and req.lease:
        raise errors.LEASE_PROVIDED


class _Lease:
    __slots__ = ("id", "keys", "ttl")

    def __init__(self, lease_id: int, ttl: int, keys: Iterable[bytes] = ()) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.keys: set[bytes] = set(keys)


class LeaseInfo(NamedTuple):
    id: int
    ttl: int
    keys: tuple[bytes, ...]


# ---------------------------------------------------------------- the state machine


class KVState:
    """The replicated state: keys, history, leases, member attributes, cluster id."""

    def __init__(self) -> None:
        self.revision = 1
        self.compact_revision = 0
        self.cluster_id = 0
        self._kvs: dict[bytes, KeyValue] = {}
        self._index: SortedList = SortedList()
        self._events: list[Event] = []
        self._event_revs: list[int] = []
        self._leases: dict[int, _Lease] = {}
        self.members: dict[int, Member] = {}
        self.alarms: set[tuple[int, int]] = set()  # (member_id, alarm type)
        self.live_bytes = 0
        self.history_bytes = 0

    @property
    def size_bytes(self) -> int:
        """The data the space quota counts: live keys and values plus retained history."""
        return self.live_bytes + self.history_bytes

    def no_space(self) -> bool:
        return any(a == ALARM_NOSPACE for _, a in self.alarms)

    # ------------------------------------------------------------ apply

    def apply(self, cmds: Iterable[tuple[Any, ...]], *, want_results: bool = True) -> Applied:
        """Apply a batch of commands in order; each is all-or-nothing and gets its own revision."""
        out = Applied()
        for cmd in cmds:
            try:
                res = self._apply_one(cmd, out, want_results)
            except EtcdError as e:
                res = e
            if want_results:
                out.results.append((res, self.revision))
        out.revision = self.revision
        return out

    def _apply_one(self, cmd: tuple[Any, ...], out: Applied, want: bool) -> Any:
        op = cmd[0]
        if self.alarms and self.no_space() and (
                op in ("put", "lease_grant") or (op == "txn" and txn_has_put(cmd[1]))):
            raise errors.NO_SPACE
        if op == "put":
            req: PutReq = cmd[1]
            self._check_put_now(req)
            rev = self.revision + 1
            res: Any = self._put(req, rev, out.events)
            self._commit(rev, out.events, 1)
            return res
        if op == "delete":
            dreq: DeleteReq = cmd[1]
            if not dreq.key:
                raise errors.EMPTY_KEY
            rev = self.revision + 1
            before = len(out.events)
            res = self._delete(dreq, rev, out.events)
            self._commit(rev, out.events, len(out.events) - before)
            return res
        if op == "txn":
            return self._txn(cmd[1], out, want)
        if op == "compact":
            self._compact(cmd[1])
            return None
        if op == "lease_grant":
            return self._lease_grant(cmd[1], cmd[2], out)
        if op == "lease_revoke":
            if cmd[1] not in self._leases:
                raise errors.LEASE_NOT_FOUND
            self._revoke(cmd[1], out)
            return None
        if op == "lease_expire":
            for lease_id in cmd[1]:
                if lease_id in self._leases:
                    self._revoke(lease_id, out)
            return None
        if op == "lease_keepalive":
            lease = self._leases.get(cmd[1])
            if lease is None:
                return 0
            out.refreshed.append((lease.id, lease.ttl))
            return lease.ttl
        if op == "publish":
            m: Member = cmd[1]
            self.members[m.id] = m
            return None
        if op == "forget_member":
            self.members.pop(cmd[1], None)
            return None
        if op == "cluster_id":
            if not self.cluster_id:
                self.cluster_id = cmd[1]
            return self.cluster_id
        if op == "transfer":
            out.transfers.append(cmd[1])
            return None
        if op == "alarm":
            return self._alarm(cmd[1], cmd[2], cmd[3])
        raise EtcdError(grpc.StatusCode.INTERNAL, f"etcdserver: unknown command {op!r}")

    def _commit(self, rev: int, events: list[Event], changed: int) -> None:
        """Record the last `changed` events in history and bump the revision if anything changed."""
        if not changed:
            return
        self.revision = rev
        new = events[len(events) - changed :]
        self._events.extend(new)
        self._event_revs.extend([rev] * len(new))
        self.history_bytes += sum(event_bytes(ev) for ev in new)

    def _alarm(self, action: int, member_id: int, alarm: int) -> list[tuple[int, int]]:
        if action == ALARM_ACTIVATE:
            if alarm != ALARM_NOSPACE or not member_id:
                # CORRUPT is etcd's too, but nothing here would act on it: refuse rather than pretend.
                raise EtcdError(grpc.StatusCode.INVALID_ARGUMENT,
                                "etcdserver: only a member's NOSPACE alarm can be raised")
            if (member_id, alarm) in self.alarms:
                return []
            self.alarms.add((member_id, alarm))
            return [(member_id, alarm)]
        if action == ALARM_DEACTIVATE:
            gone = sorted((m, a) for m, a in self.alarms
                          if (not member_id or m == member_id) and (alarm == ALARM_NONE or a == alarm))
            self.alarms.difference_update(gone)
            return gone
        raise EtcdError(grpc.StatusCode.INVALID_ARGUMENT, f"etcdserver: unknown alarm action {action}")

    def alarm_list(self, alarm: int = ALARM_NONE) -> list[tuple[int, int]]:
        return sorted((m, a) for m, a in self.alarms if alarm == ALARM_NONE or a == alarm)

    def _check_put_now(self, req: PutReq) -> None:
        check_put(req)
        if req.lease and req.lease not in self._leases:
            raise errors.LEASE_NOT_FOUND
        if (req.ignore_value or req.ignore_lease) and req.key not in self._kvs:
            raise errors.KEY_NOT_FOUND

    def _put(self, req: PutReq, rev: int, events: list[Event]) -> PutResult:
        key = req.key
        prev = self._kvs.get(key)
        value = req.value
        lease = req.lease
        if prev is not None:
            if req.ignore_value:
                value = prev.value
            if req.ignore_lease:
                lease = prev.lease
            kv = KeyValue(key, value, prev.create_revision, rev, prev.version + 1, lease)
            self.live_bytes += len(value) - len(prev.value)
            if prev.lease != lease and prev.lease in self._leases:
                self._leases[prev.lease].keys.discard(key)
        else:
            kv = KeyValue(key, value, rev, rev, 1, lease)
            self._index.add(key)
            self.live_bytes += len(key) + len(value)
        self._kvs[key] = kv
        if lease:
            self._leases[lease].keys.add(key)
        events.append(Event(PUT, kv, prev))
        return PutResult(prev if req.prev_kv else None)

    def _delete(self, req: DeleteReq, rev: int, events: list[Event]) -> DeleteResult:
        keys = list(self._keys_in(req.key, req.range_end))
        prevs = []
        for key in keys:
            prev = self._kvs.pop(key)
            self._index.remove(key)
            self.live_bytes -= len(key) + len(prev.value)
            if prev.lease and prev.lease in self._leases:
                self._leases[prev.lease].keys.discard(key)
            events.append(Event(DELETE, KeyValue(key, b"", 0, rev, 0, 0), prev))
            prevs.append(prev)
        return DeleteResult(len(keys), prevs if req.prev_kv else [])

    def _txn(self, req: TxnReq, out: Applied, want: bool) -> TxnResult | None:
        check_txn(req)
        # Like etcd: pick the whole path (nested compares included) against the state before
        # any write, check it, then execute it as one revision.
        path = self._txn_path(req)
        self._check_path(req, path)
        rev = self.revision + 1
        before = len(out.events)
        res = self._exec_txn(req, path, rev, out.events, want)
        self._commit(rev, out.events, len(out.events) - before)
        return res if want else None

    def _txn_path(self, req: TxnReq) -> list[Any]:
        """[succeeded, nested paths...] for the branch the compares select."""
        ok = all(self._compare(c) for c in req.compare)
        ops = req.success if ok else req.failure
        return [ok, *[self._txn_path(op) if isinstance(op, TxnReq) else None for op in ops]]

    def _check_path(self, req: TxnReq, path: list[Any]) -> None:
        ops = req.success if path[0] else req.failure
        for op, sub in zip(ops, path[1:], strict=True):
            if isinstance(op, PutReq):
                self._check_put_now(op)
            elif isinstance(op, RangeReq):
                self._check_rev(op.revision)
            elif isinstance(op, TxnReq):
                self._check_path(op, sub)

    def _exec_txn(self, req: TxnReq, path: list[Any], rev: int, events: list[Event], want: bool) -> TxnResult:
        ops = req.success if path[0] else req.failure
        responses: list[Any] = []
        for op, sub in zip(ops, path[1:], strict=True):
            if isinstance(op, PutReq):
                r: Any = self._put(op, rev, events)
            elif isinstance(op, DeleteReq):
                r = self._delete(op, rev, events)
            elif isinstance(op, TxnReq):
                r = self._exec_txn(op, sub, rev, events, want)
            else:
                r = self.range(op) if want else None
            responses.append(r)
        return TxnResult(bool(path[0]), responses)

    def _compare(self, c: Compare) -> bool:
        kvs = [self._kvs[k] for k in self._keys_in(c.key, c.range_end)]
        if not kvs:
            if c.target == CMPT_VALUE:
                return False  # etcd: a value compare on a missing key always fails
            kvs = [KeyValue(c.key, b"", 0, 0, 0, 0)]
        return all(_compare_kv(c, kv) for kv in kvs)

    def _compact(self, rev: int) -> None:
        if rev <= self.compact_revision:
            raise errors.COMPACTED
        if rev > self.revision:
            raise errors.FUTURE_REV
        self.compact_revision = rev
        cut = bisect.bisect_left(self._event_revs, rev)
        self.history_bytes -= sum(event_bytes(ev) for ev in self._events[:cut])
        del self._events[:cut]
        del self._event_revs[:cut]

    def _lease_grant(self, lease_id: int, ttl: int, out: Applied) -> LeaseGrantResult:
        if lease_id <= 0:
            raise errors.LEASE_NOT_FOUND
        if ttl > MAX_LEASE_TTL:
            raise errors.LEASE_TTL_TOO_LARGE
        if lease_id in self._leases:
            raise errors.LEASE_EXIST
        ttl = max(ttl, MIN_LEASE_TTL)
        self._leases[lease_id] = _Lease(lease_id, ttl)
        out.refreshed.append((lease_id, ttl))
        return LeaseGrantResult(lease_id, ttl)

    def _revoke(self, lease_id: int, out: Applied) -> None:
        lease = self._leases.pop(lease_id)
        out.revoked.append(lease_id)
        rev = self.revision + 1
        before = len(out.events)
        for key in sorted(lease.keys):
            prev = self._kvs.get(key)
            if prev is None:
                continue
            self._delete(DeleteReq(key), rev, out.events)
        self._commit(rev, out.events, len(out.events) - before)

    # ------------------------------------------------------------ reads (no mutation)

    def _keys_in(self, key: bytes, end: bytes) -> Iterator[bytes]:
        if not end:
            return iter((key,)) if key in self._kvs else iter(())
        if end == ALL_KEYS:
            return iter(self._index.irange(minimum=key))
        return iter(self._index.irange(key, end, inclusive=(True, False)))

    def _count_in(self, key: bytes, end: bytes) -> int:
        if not end:
            return 1 if key in self._kvs else 0
        lo = self._index.bisect_left(key)
        hi = len(self._index) if end == ALL_KEYS else self._index.bisect_left(end)
        return max(0, hi - lo)

    def _check_rev(self, rev: int) -> None:
        if rev > self.revision:
            raise errors.FUTURE_REV
        if 0 < rev < self.compact_revision:
            raise errors.COMPACTED

    def range(self, req: RangeReq) -> RangeResult:
        """etcd's Range: [key, range_end) at `revision` (<= 0: now), filtered, sorted, limited."""
        if not req.key:
            raise errors.EMPTY_KEY
        self._check_rev(req.revision)
        filtered = bool(
            req.min_mod_revision or req.max_mod_revision or req.min_create_revision or req.max_create_revision
        )
        sort_order = req.sort_order
        if req.sort_target != TARGET_KEY and sort_order == SORT_NONE:
            sort_order = SORT_ASCEND
        historical = 0 < req.revision < self.revision
        if historical:
            kvs = self._range_at(req.key, req.range_end, req.revision)
            count = len(kvs)
        else:
            count = self._count_in(req.key, req.range_end)
            if req.count_only and not filtered:
                return RangeResult([], False, count)
            keys = self._keys_in(req.key, req.range_end)
            if req.limit > 0 and sort_order == SORT_NONE and not filtered:
                kvs = []
                for k in keys:
                    kvs.append(self._kvs[k])
                    if len(kvs) > req.limit:
                        break
            else:
                kvs = [self._kvs[k] for k in keys]
        if filtered:
            kvs = [kv for kv in kvs if _passes_filters(req, kv)]
        if req.count_only:
            return RangeResult([], False, count)
        if sort_order != SORT_NONE:
            kvs.sort(key=_SORT_KEYS[req.sort_target], reverse=sort_order == SORT_DESCEND)
        more = False
        if req.limit > 0 and len(kvs) > req.limit:
            kvs = kvs[: req.limit]
            more = True
        if req.keys_only:
            kvs = [kv._replace(value=b"") for kv in kvs]
        return RangeResult(kvs, more, count)

    def _range_at(self, key: bytes, end: bytes, rev: int) -> list[KeyValue]:
        """The keys in range as of `rev`: today's, with every later event undone newest first."""
        result = {k: self._kvs[k] for k in self._keys_in(key, end)}
        start = bisect.bisect_right(self._event_revs, rev)
        for ev in reversed(self._events[start:]):
            k = ev.kv.key
            if not in_range(k, key, end):
                continue
            if ev.prev_kv is None:
                result.pop(k, None)
            else:
                result[k] = ev.prev_kv
        return [result[k] for k in sorted(result)]

    def get(self, key: bytes) -> KeyValue | None:
        return self._kvs.get(key)

    def __len__(self) -> int:
        return len(self._kvs)

    def events_since(self, rev: int, *, until: int | None = None) -> list[Event]:
        """History events with start <= revision <= until; raises COMPACTED below compact_revision."""
        if rev < self.compact_revision:
            raise errors.COMPACTED
        lo = bisect.bisect_left(self._event_revs, rev)
        hi = len(self._events) if until is None else bisect.bisect_right(self._event_revs, until)
        return self._events[lo:hi]

    def lease(self, lease_id: int) -> LeaseInfo | None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return None
        return LeaseInfo(lease.id, lease.ttl, tuple(sorted(lease.keys)))

    def leases(self) -> list[LeaseInfo]:
        return [LeaseInfo(le.id, le.ttl, tuple(sorted(le.keys))) for le in self._leases.values()]

    def history_len(self) -> int:
        return len(self._events)

    # ------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy, cheap to take (shallow: records are immutable) and safe to pickle
        from another thread while applies go on."""
        return {
            "format": 1,
            "revision": self.revision,
            "compact_revision": self.compact_revision,
            "cluster_id": self.cluster_id,
            "kvs": list(self._kvs.values()),
            "events": list(self._events),
            "event_revs": list(self._event_revs),
            "leases": [(le.id, le.ttl, tuple(le.keys)) for le in self._leases.values()],
            "members": list(self.members.values()),
            "alarms": sorted(self.alarms),
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> KVState:
        if snap.get("format") != 1:
            raise ValueError(f"unknown snapshot format {snap.get('format')!r}")
        st = cls()
        st.revision = snap["revision"]
        st.compact_revision = snap["compact_revision"]
        st.cluster_id = snap["cluster_id"]
        # The loaded KeyValues themselves: history shares them (snapshot.py loads equal records as one).
        st._kvs = {kv.key: kv if type(kv) is KeyValue else KeyValue(*kv) for kv in snap["kvs"]}
        st._index = SortedList(st._kvs)
        st._events = list(snap["events"])
        st._event_revs = list(snap["event_revs"])
        st._leases = {i: _Lease(i, ttl, keys) for i, ttl, keys in snap["leases"]}
        st.members = {m.id: Member(*m) for m in snap["members"]}
        st.alarms = {(m, a) for m, a in snap.get("alarms", ())}
        st.live_bytes = sum(len(kv.key) + len(kv.value) for kv in st._kvs.values())
        st.history_bytes = sum(event_bytes(ev) for ev in st._events)
        return st


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    t = c.target
    if t == CMPT_VALUE:
        a: Any = kv.value
        b: Any = c.value or b""
    elif t == CMPT_VERSION:
        a, b = kv.version, c.value or 0
    elif t == CMPT_CREATE:
        a, b = kv.create_revision, c.value or 0
    elif t == CMPT_MOD:
        a, b = kv.mod_revision, c.value or 0
    else:
        a, b = kv.lease, c.value or 0
    r = c.result
    if r == CMP_EQUAL:
        return bool(a == b)
    if r == CMP_NOT_EQUAL:
        return bool(a != b)
    if r == CMP_GREATER:
        return bool(a > b)
    return bool(a < b)


def _passes_filters(req: RangeReq, kv: KeyValue) -> bool:
    if req.max_mod_revision and kv.mod_revision > req.max_mod_revision:
        return False
    if req.min_mod_revision and kv.mod_revision < req.min_mod_revision:
        return False
    if req.max_create_revision and kv.create_revision > req.max_create_revision:
        return False
    return not (req.min_create_revision and kv.create_revision < req.min_create_revision)


_SORT_KEYS: dict[int, Any] = {
    TARGET_KEY: lambda kv: kv.key,
    TARGET_VERSION: lambda kv: kv.version,
    TARGET_CREATE: lambda kv: kv.create_revision,
    TARGET_MOD: lambda kv: kv.mod_revision,
    TARGET_VALUE: lambda kv: kv.value,
}
