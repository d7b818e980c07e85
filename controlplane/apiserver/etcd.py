"""The etcd v3 backend of `Store`: grpc.aio over the etcd v3 API subset in skiffpb.etcd.

It uses only the public v3 API (KV Range/Txn/Compact, Watch with start revision, prev_kv,
progress_notify, Lease grant), so it works the same against a real etcd cluster and the
embedded Skiff store.

What must hold:
- Calls go to one endpoint at a time; UNAVAILABLE (member down, no leader, leader changed,
  request timed out inside the cluster) moves to the next endpoint and retries with backoff
  until `retry_for` seconds have passed, then raises UnavailableStoreError. A write that may
  have been applied (deadline exceeded) is not retried: the caller gets UnavailableStoreError
  and, for creates and updates, checks the stored value itself.
- One endpoint is in use for every call and watch of an `EtcdStore`. A failure moves it to
  the next endpoint only if it is still the endpoint that failed (`_failed(index)`): calls and
  watches that fail together on a dead member move it once, not once each. (Moving once per
  failure let the api-server's 9 watch caches, failing together on one of 3 members, come
  back to the dead member together round after round: 9 moves are a full turn.)
- A watch ends only when closed or with an error (a call cancelled under it is an
  UnavailableStoreError), never by just stopping: its consumers treat the end as final.
- A watch survives the loss of its endpoint: it reconnects (to the endpoint in use) from the
  revision after the last one it delivered, so its consumer sees no gap and no duplicate. A
  store that does not confirm the watch within `timeout` counts as failed, so a connection
  that hangs cannot hold a watch forever. Watches carry `hasleader=true` so a member cut off
  from its cluster ends them rather than leaving them silently stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from controlplane.apiserver.storage import (
    KV,
    CompactedError,
    Compare,
    Delete,
    Event,
    NoSpaceError,
    Op,
    PrefixStatus,
    Put,
    RangeResult,
    StoreError,
    StoreOverloadedError,
    TxnResult,
    UnavailableStoreError,
    ValueTooLargeError,
    WatchBatch,
    prefix_end,
)
from skiff.client import open_channel
from skiff.retry import Backoff, Delays, retry
from skiff.tls import Credentials
from skiffpb.etcd import kv_pb2, rpc_pb2, rpc_pb2_grpc

log = logging.getLogger("skiff.apiserver.etcd")

R = TypeVar("R", bound=Message)

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),
)
WATCH_METADATA = (("hasleader", "true"),)
# Between store endpoints while they are unavailable: 50 ms doubling to 1 s, jittered so that
# the api-servers of a cluster do not come back to a recovering store in step.
STORE_BACKOFF = Backoff(initial=0.05, max=1.0, jitter=0.2)


def _b(text: str) -> bytes:
    return text.encode()


def _kv(kv: kv_pb2.KeyValue) -> KV:
    return KV(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision, kv.lease)


def split_endpoints(endpoints: Sequence[str] | str) -> list[str]:
    """"host:port" targets of endpoints given as host:port or http(s):// URLs (TLS is decided by
    the credentials, as kube-apiserver's --etcd-cafile/--etcd-certfile/--etcd-keyfile)."""
    raw = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    return [e.strip().removeprefix("https://").removeprefix("http://").rstrip("/") for e in raw if e.strip()]


class _Endpoint:
    def __init__(self, target: str, credentials: Credentials | None) -> None:
        self.target = target
        self.channel = open_channel(target, credentials, options=CHANNEL_OPTIONS)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)


class EtcdStore:
    def __init__(self, endpoints: Sequence[str] | str, *, timeout: float = 5.0, retry_for: float = 10.0,
                 credentials: Credentials | None = None) -> None:
        """`credentials`: mutual TLS with the store (its CA, the api-server's client certificate)."""
        self.credentials = credentials
        self.targets = split_endpoints(endpoints)
        if not self.targets:
            raise ValueError("no store endpoint given (--store-endpoints HOST:PORT[,HOST:PORT...])")
        self.timeout = timeout
        self.retry_for = retry_for
        self._endpoints: list[_Endpoint | None] = [None] * len(self.targets)
        self._current = 0
        self._healthy = True
        self.moves = 0  # times the endpoint in use changed after a failure (for tests and status)

    def _endpoint(self, index: int) -> _Endpoint:
        ep = self._endpoints[index]
        if ep is None:
            ep = self._endpoints[index] = _Endpoint(self.targets[index], self.credentials)
        return ep

    def _failed(self, index: int) -> None:
        """Endpoint `index` failed: use the next one, unless another failure moved on already."""
        if index == self._current:
            self._current = (index + 1) % len(self.targets)
            self.moves += 1

    def _state(self, healthy: bool, detail: str = "") -> None:
        """Log once per change between reachable and unreachable."""
        if healthy != self._healthy:
            self._healthy = healthy
            if healthy:
                log.info("store reachable again at %s", self.targets[self._current])
            else:
                log.warning("store unreachable (%s); retrying across %s", detail, ",".join(self.targets))

    async def _call(self, pick: Callable[[_Endpoint], Any], request: R, *, idempotent: bool) -> Any:
        target = ""
        index = self._current

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, grpc.aio.AioRpcError) and (exc.code() == grpc.StatusCode.UNAVAILABLE or (
                idempotent and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED))

        async def attempt() -> Any:
            nonlocal target, index
            index = self._current
            ep = self._endpoint(index)
            target = ep.target
            response = await pick(ep)(request, timeout=self.timeout)
            self._state(True)
            return response

        def next_endpoint(exc: BaseException, delay: float) -> None:
            self._state(False, _describe(exc, target))
            self._failed(index)

        try:
            return await retry(attempt, retryable=retryable, backoff=STORE_BACKOFF, budget=self.retry_for,
                               on_retry=next_endpoint, clock=asyncio.get_running_loop().time)
        except grpc.aio.AioRpcError as exc:
            if not retryable(exc):
                raise _translate(exc, target) from exc
            self._state(False, _describe(exc, target))
            raise UnavailableStoreError(f"store unavailable: {_describe(exc, target)}") from exc

    # ------------------------------------------------------------------ Store

    async def get(self, key: str) -> KV | None:
        resp = await self._call(lambda ep: ep.kv.Range, rpc_pb2.RangeRequest(key=_b(key)), idempotent=True)
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: str, *, revision: int = 0, start: str = "", limit: int = 0) -> RangeResult:
        req = rpc_pb2.RangeRequest(key=_b(max(prefix, start)), range_end=_b(prefix_end(prefix)), limit=limit,
                                   revision=revision)
        resp = await self._call(lambda ep: ep.kv.Range, req, idempotent=True)
        return RangeResult([_kv(kv) for kv in resp.kvs], resp.header.revision, resp.more)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        req = rpc_pb2.TxnRequest()
        for c in compares:
            if c.mod_revision == 0:
                req.compare.add(key=_b(c.key), target=rpc_pb2.Compare.CREATE,
                                result=rpc_pb2.Compare.EQUAL, create_revision=0)
            else:
                req.compare.add(key=_b(c.key), target=rpc_pb2.Compare.MOD,
                                result=rpc_pb2.Compare.EQUAL, mod_revision=c.mod_revision)
            req.failure.add(request_range=rpc_pb2.RangeRequest(key=_b(c.key)))
        for op in ops:
            if isinstance(op, Put):
                req.success.add(request_put=rpc_pb2.PutRequest(key=_b(op.key), value=op.value, lease=op.lease))
            elif isinstance(op, Delete):
                req.success.add(request_delete_range=rpc_pb2.DeleteRangeRequest(key=_b(op.key)))
        resp = await self._call(lambda ep: ep.kv.Txn, req, idempotent=False)
        if resp.succeeded:
            return TxnResult(True, resp.header.revision)
        current: dict[str, KV | None] = {}
        for c, r in zip(compares, resp.responses, strict=False):
            kvs = r.response_range.kvs
            current[c.key] = _kv(kvs[0]) if kvs else None
        return TxnResult(False, resp.header.revision, current)

    async def prefix_status(self, prefix: str, *, modified_after: int) -> PrefixStatus:
        # Two reads in one transaction, so both see the same revision. The second uses a filter,
        # which etcd applies before `limit`; count_only would ignore the filter.
        end = _b(prefix_end(prefix))
        req = rpc_pb2.TxnRequest()
        req.success.add(request_range=rpc_pb2.RangeRequest(key=_b(prefix), range_end=end, count_only=True))
        req.success.add(request_range=rpc_pb2.RangeRequest(key=_b(prefix), range_end=end, keys_only=True, limit=1,
                                                           min_mod_revision=modified_after + 1))
        resp = await self._call(lambda ep: ep.kv.Txn, req, idempotent=True)
        count = resp.responses[0].response_range.count
        modified = bool(resp.responses[1].response_range.kvs)
        return PrefixStatus(int(resp.header.revision), int(count), modified)

    async def revision(self) -> int:
        req = rpc_pb2.RangeRequest(key=b"/", keys_only=True, limit=1)
        resp = await self._call(lambda ep: ep.kv.Range, req, idempotent=True)
        return int(resp.header.revision)

    def watch(self, prefix: str, *, start_revision: int) -> EtcdWatch:
        return EtcdWatch(self, prefix, start_revision)

    async def compact(self, revision: int) -> None:
        await self._call(lambda ep: ep.kv.Compact, rpc_pb2.CompactionRequest(revision=revision), idempotent=True)

    async def grant_lease(self, ttl: int) -> int:
        resp = await self._call(lambda ep: ep.lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=ttl), idempotent=False)
        if resp.error:
            raise StoreError(f"lease grant refused: {resp.error}")
        return int(resp.ID)

    async def close(self) -> None:
        for ep in self._endpoints:
            if ep is not None:
                await ep.channel.close(None)
        self._endpoints = [None] * len(self.targets)

    def describe(self) -> str:
        return "etcd3 " + ",".join(self.targets)


def _describe(exc: BaseException, target: str) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{target}: {exc.code().name.lower()}: {exc.details() or ''}"
    return f"{target}: {exc}"


# etcd's status messages are its error identities (clientv3's rpctypes maps them to typed errors
# the same way): compared whole, never searched for words.
ETCD_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
ETCD_REQUEST_TOO_LARGE = "etcdserver: request is too large"
ETCD_NO_SPACE = "etcdserver: mvcc: database space exceeded"
ETCD_TOO_MANY_REQUESTS = "etcdserver: too many requests"


def _translate(exc: grpc.aio.AioRpcError, target: str) -> StoreError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.OUT_OF_RANGE or details == ETCD_COMPACTED:
        return CompactedError(0, 0)
    # RESOURCE_EXHAUSTED carries three different refusals; etcd's own client tells them apart by message.
    if details == ETCD_NO_SPACE:
        return NoSpaceError(f"store {target} refused the write: {details} (an operator must free space "
                            "and run `etcdctl alarm disarm`)")
    if details == ETCD_TOO_MANY_REQUESTS:
        return StoreOverloadedError(f"store {target} is overloaded: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED or details == ETCD_REQUEST_TOO_LARGE:
        return ValueTooLargeError(f"store refused the request as too large: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UnavailableStoreError(f"store {target} did not answer in time; the outcome is unknown")
    return StoreError(f"store {target}: {code.name.lower()}: {details}")


class _WatchCanceled(Exception):
    """The store ended a watch for a reason other than compaction (e.g. "no leader")."""


class EtcdWatch:
    """One etcd watch on a prefix, resumed across endpoints (see the module docstring)."""

    def __init__(self, store: EtcdStore, prefix: str, start_revision: int) -> None:
        self.store = store
        self.prefix = prefix
        self.next_revision = start_revision  # 0: from now, fixed by the first "created" response
        self._call: Any = None
        self._index = store._current  # the endpoint of the current (or last) attempt
        self._closed = False

    async def _open(self) -> Any:
        self._index = self.store._current
        ep = self.store._endpoint(self._index)
        call = ep.watch.Watch(metadata=WATCH_METADATA)
        self._call = call
        create = rpc_pb2.WatchCreateRequest(key=_b(self.prefix), range_end=_b(prefix_end(self.prefix)),
                                            start_revision=self.next_revision, prev_kv=True, progress_notify=True)
        async with asyncio.timeout(self.store.timeout):
            await call.write(rpc_pb2.WatchRequest(create_request=create))
        return call

    async def __aiter__(self) -> AsyncIterator[WatchBatch]:
        delays = Delays(STORE_BACKOFF)
        while not self._closed:
            try:
                self._call = await self._open()
                async for batch in self._read(self._call):
                    delays.reset()
                    yield batch
                if self._closed:
                    return
                detail = "stream ended"
            except _WatchCanceled as exc:
                detail = f"watch canceled by the store: {exc}"
            except TimeoutError:
                detail = f"the watch was not confirmed within {self.store.timeout:g}s"
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                if exc.code() == grpc.StatusCode.CANCELLED:
                    # Not cancelled by us (close() sets _closed first): the call or its channel was
                    # ended under us. Returning would end the watch as if it were complete, and a
                    # consumer that serves a client from it would leave that client waiting forever.
                    raise UnavailableStoreError(f"watch {self.prefix} on {self.store.targets[self._index]} "
                                                f"was cancelled: {exc.details()}") from exc
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                      grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                    raise _translate(exc, self.store.targets[self._index]) from exc
                detail = f"{exc.code().name.lower()}: {exc.details()}"
            finally:
                if self._call is not None:
                    self._call.cancel()
                    self._call = None
            self.store._state(False, f"watch {self.prefix} on {self.store.targets[self._index]}: {detail}")
            self.store._failed(self._index)
            await asyncio.sleep(delays.next())

    async def _read(self, call: Any) -> AsyncIterator[WatchBatch]:
        watch_id: int | None = None
        while True:
            if watch_id is None:
                async with asyncio.timeout(self.store.timeout):
                    resp = await call.read()
            else:
                resp = await call.read()
            if resp is grpc.aio.EOF:  # type: ignore[attr-defined]
                return
            assert isinstance(resp, rpc_pb2.WatchResponse)
            if resp.canceled:
                if resp.compact_revision:
                    raise CompactedError(self.next_revision, resp.compact_revision)
                raise _WatchCanceled(resp.cancel_reason or "no reason given")
            if resp.created:
                self.store._state(True)
                watch_id = resp.watch_id
                if self.next_revision == 0:
                    self.next_revision = resp.header.revision + 1
                if not resp.events:
                    continue
            if not resp.events:
                # Progress: everything up to header.revision has been delivered -- when it is
                # the periodic notification of this watch (ordered with its events). Answers to
                # RequestProgress (watch_id -1) can overtake events in etcd < 3.4.25: ignored.
                if resp.watch_id == watch_id and resp.header.revision >= self.next_revision - 1:
                    self.next_revision = resp.header.revision + 1
                    yield WatchBatch((), resp.header.revision)
                continue
            for batch in _batches(resp.events):
                if batch.revision < self.next_revision:
                    continue  # already delivered before a reconnect
                self.next_revision = batch.revision + 1
                yield batch

    async def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()


def _batches(events: Sequence[kv_pb2.Event]) -> list[WatchBatch]:
    """Group one response's events by revision, in order."""
    out: list[WatchBatch] = []
    current: list[Event] = []
    revision = 0
    for ev in events:
        rev = ev.kv.mod_revision
        if current and rev != revision:
            out.append(WatchBatch(tuple(current), revision))
            current = []
        revision = rev
        prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
        if ev.type == kv_pb2.Event.DELETE:
            current.append(Event("DELETE", ev.kv.key.decode(), b"", prev, rev))
        else:
            current.append(Event("PUT", ev.kv.key.decode(), ev.kv.value, prev, rev))
    if current:
        out.append(WatchBatch(tuple(current), revision))
    return out
