"""The store member: the etcd v3 gRPC services over a Raft-replicated KVState.

`Store` wires the pieces — RaftNode (replication), WatchHub (fan-out), Lessor (expiry
deadlines) — and runs the member's housekeeping: leader-only duties (lease expiry, automatic
compaction, the cluster ID), publishing this member's name and client URL, and logging each
change of leader or peer reachability once. What must hold:

- Writes go through the log; the response header carries the revision of that write.
- Range and read-only Txn are linearizable unless `serializable`: on the leader a ReadIndex
  (no log write), elsewhere a read barrier through the log (raft.py).
- Errors reach clients with etcd's gRPC codes and messages (errors.py).
- Space: a write (put, txn with a put, lease grant) that would take the data past
  `quota_bytes` (etcd's --quota-backend-bytes), or arrives while the data dir's filesystem has
  less than `disk_reserve_bytes` free, raises the NOSPACE alarm (a replicated command, like
  etcd) and fails with "etcdserver: mvcc: database space exceeded". Once raised, the state
  machine refuses such writes on every member until `etcdctl alarm disarm`; reads, deletes and
  compaction keep working (the reserve leaves room for them in the journal). Housekeeping
  raises the alarm too when this member's disk runs low, whoever the writes came from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from controlplane.store import errors, mvcc, pbconv
from controlplane.store.auth import AuthInterceptor
from controlplane.store.errors import EtcdError
from controlplane.store.lessor import Lessor
from controlplane.store.metrics import LEADER_CHANGES
from controlplane.store.raft import MAX_PENDING, RETRY_MAX, RETRY_MIN, RaftNode, RaftTimings, member_id_for
from controlplane.store.watch import WatchHub, WatchStream
from skiff.guard import guard
from skiff.tls import ServerTLS
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger("skiff.store")

API_VERSION = "3.4.0"  # the etcd API level served (etcdctl prints it in `endpoint status`)
MAX_REQUEST_BYTES = (3 << 19)  # 1.5 MiB, etcd's default --max-request-bytes
DEFAULT_QUOTA_BYTES = 2 << 30  # etcd's default --quota-backend-bytes
# Free disk below which NOSPACE is raised: room left for deletes, compaction and the alarm itself
# to reach the journal (an append that fails for want of space stops the member).
DEFAULT_DISK_RESERVE_BYTES = 64 << 20
KV_OVERHEAD = 256  # bytes a put costs beyond its key and value (etcd counts the same)
LEASE_OVERHEAD = 64  # what a lease grant costs against the quota (etcd's figure)


@dataclass
class StoreConfig:
    name: str
    data_dir: str
    listen_client: str
    listen_peer: str
    initial_cluster: dict[str, str]  # name -> peer address (host:port)
    cluster_state: str = "new"  # "new" or "existing" (joining after MemberAdd)
    cluster_token: str = "skiff-store"
    password: str | None = None
    request_timeout: float = 5.0
    # Off by default, as in etcd: the api-server owns compaction (every 5 minutes, as
    # kube-apiserver); these are for a store used on its own.
    compaction_revisions: int = 0  # keep at least this many revisions of history (0: off)
    compaction_seconds: float = 0.0  # and/or this much time of history (0: off)
    progress_notify_interval: float = 600.0
    timings: RaftTimings = field(default_factory=RaftTimings)
    snapshot_every: int = 20000  # log entries between snapshots
    quota_bytes: int = DEFAULT_QUOTA_BYTES  # live data + history (0: no quota)
    disk_reserve_bytes: int = DEFAULT_DISK_RESERVE_BYTES  # NOSPACE below this much free disk
    max_pending: int = MAX_PENDING  # requests waiting for the log before "too many requests"
    # Mutual TLS on the client port (auth.py decides among certified callers); None: plaintext.
    tls: ServerTLS | None = None

    @property
    def initial_cluster_id(self) -> int:
        members = ",".join(f"{n}={a}" for n, a in sorted(self.initial_cluster.items()))
        return member_id_for(f"cluster:{self.cluster_token}:{members}")


def url_to_addr(url: str) -> str:
    """'http://127.0.0.1:2380' or '127.0.0.1:2380' -> '127.0.0.1:2380'."""
    u = url.strip()
    for scheme in ("http://", "https://", "unix://"):
        if u.startswith(scheme):
            u = u[len(scheme):]
    return u.rstrip("/")


class Store:
    def __init__(self, cfg: StoreConfig, *, peers: list[str]) -> None:
        self.cfg = cfg
        self.loop = asyncio.get_running_loop()
        self.lessor = Lessor(grace=cfg.timings.election_max + 1.0)
        self.hub = WatchHub(history=self._history, compact_revision=self._compact_revision,
                            header=self.header, revision=1)
        self.node = RaftNode(
            self_addr=cfg.listen_peer, peers=peers, data_dir=cfg.data_dir, password=cfg.password,
            loop=self.loop, timings=cfg.timings, request_timeout=cfg.request_timeout,
            snapshot_every=cfg.snapshot_every, max_pending=cfg.max_pending,
            on_applied=self._on_applied, on_restored=self._on_restored,
        )
        self.member_id = self.node.member_id
        self.server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._was_leader = False
        self._leader_seen: str | None = "?"
        self._peer_up: dict[str, bool] = {}
        self._inflight: set[str] = set()
        self._rev_samples: deque[tuple[float, int]] = deque()
        self._saved: tuple[list[str], int] = ([], 0)
        self._disk_checked = (0.0, 0)  # (when, free bytes)

    # ------------------------------------------------------------ tick thread -> loop

    def _on_applied(self, applied: mvcc.Applied) -> None:
        if applied.events or applied.refreshed or applied.revoked:
            self.loop.call_soon_threadsafe(self._after_apply, applied)

    def _after_apply(self, applied: mvcc.Applied) -> None:
        for lease_id, ttl in applied.refreshed:
            self.lessor.refreshed(lease_id, ttl)
        for lease_id in applied.revoked:
            self.lessor.revoked(lease_id)
        if applied.events:
            self.hub.publish(applied.events, applied.revision)

    def _on_restored(self, st: mvcc.KVState) -> None:
        def reset() -> None:
            self.lessor.reset((le.id, le.ttl) for le in st.leases())
            self.hub.reset(st.revision)

        self.loop.call_soon_threadsafe(reset)

    def _history(self, start: int, until: int) -> list[mvcc.Event]:
        with self.node.lock:
            return self.node.state.events_since(start, until=until)

    def _compact_revision(self) -> int:
        return self.node.state.compact_revision

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        st = self.node.state
        return rpc_pb2.ResponseHeader(
            cluster_id=st.cluster_id or self.cfg.initial_cluster_id, member_id=self.member_id,
            revision=st.revision if revision is None else revision, raft_term=self.node.term,
        )

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        server = grpc.aio.server(interceptors=[AuthInterceptor()] if self.cfg.tls is not None else [], options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES + (512 << 10)),
            ("grpc.max_send_message_length", (1 << 31) - 1),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.so_reuseport", 0),
        ])
        rpc_pb2_grpc.add_KVServicer_to_server(KVService(self), server)
        rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(self), server)
        rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(self), server)
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(self), server)
        watch = WatchService(self)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("etcdserverpb.Watch", {
            "Watch": grpc.stream_stream_rpc_method_handler(
                watch.Watch, request_deserializer=rpc_pb2.WatchRequest.FromString,
                response_serializer=_identity),
        }),))
        try:
            port = (server.add_insecure_port(self.cfg.listen_client) if self.cfg.tls is None
                    else server.add_secure_port(self.cfg.listen_client, self.cfg.tls.server_credentials()))
        except RuntimeError as e:
            raise SystemExit(f"cannot listen for clients on {self.cfg.listen_client}: {e}") from None
        if not port:
            raise SystemExit(f"cannot listen for clients on {self.cfg.listen_client} (address in use?)")
        await server.start()
        self.server = server
        self._tasks.append(guard(self._housekeeping(), "store-housekeeping"))
        log.info("member %s (%x) serving clients on %s, peers on %s", self.cfg.name, self.member_id,
                 self.cfg.listen_client, self.cfg.listen_peer)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.server is not None:
            await self.server.stop(grace=0.5)
        await asyncio.to_thread(self.node.destroy)

    # ------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        last_progress = time.monotonic()
        last_compact_check = 0.0
        last_publish = 0.0
        while True:
            await asyncio.sleep(0.25)
            try:
                now = time.monotonic()
                self._log_changes()
                leader = self.node.is_leader()
                if leader and not self._was_leader:
                    self.lessor.promote()
                self._was_leader = leader
                if leader:
                    self._leader_duties(now)
                    if now - last_compact_check > 1.0:
                        last_compact_check = now
                        self._auto_compact(now)
                if self.node.is_ready() and now - last_publish > 2.0:
                    last_publish = now
                    self._publish_self()
                self._save_peers()
                if self._disk_low() and (self.member_id, mvcc.ALARM_NOSPACE) not in self.node.state.alarms:
                    self._raise_nospace("free disk space below the reserve")
                tick = min(self.cfg.progress_notify_interval, 1.0)
                if now - last_progress >= tick:
                    last_progress = now
                    self.hub.progress_tick(self.cfg.progress_notify_interval)
            except Exception:
                log.exception("housekeeping failed")

    def _spawn(self, key: str, cmd: tuple[Any, ...]) -> None:
        """Propose an internal command unless one with this key is still in flight."""
        if key in self._inflight:
            return
        self._inflight.add(key)

        async def run() -> None:
            try:
                await self.node.propose(cmd)
            except EtcdError as e:
                log.debug("%s: %s", key, e.message)
            finally:
                self._inflight.discard(key)

        guard(run(), f"store-{key}", forever=False)

    def _leader_duties(self, now: float) -> None:
        st = self.node.state
        if not st.cluster_id and self.cfg.cluster_state == "new":
            self._spawn("cluster-id", mvcc.cmd_set_cluster_id(self.cfg.initial_cluster_id))
        expired = self.lessor.expired()
        if expired:
            self._spawn("lease-expire", mvcc.cmd_lease_expire(expired))

    def _auto_compact(self, now: float) -> None:
        st = self.node.state
        rev, compacted = st.revision, st.compact_revision
        self._rev_samples.append((now, rev))
        targets = []
        n = self.cfg.compaction_revisions
        if n > 0:
            targets.append(rev - n if rev - compacted > n + max(1, n // 10) else 0)
        secs = self.cfg.compaction_seconds
        if secs > 0:
            while len(self._rev_samples) > 1 and self._rev_samples[1][0] <= now - secs:
                self._rev_samples.popleft()
            first_t, first_rev = self._rev_samples[0]
            targets.append(first_rev if first_t <= now - secs else 0)
        else:
            self._rev_samples.clear()
        if targets:
            target = min(targets)
            if target > compacted:
                log.info("auto-compacting history to revision %d", target)
                self._spawn("compact", mvcc.cmd_compact(target))

    def _publish_self(self) -> None:
        me = mvcc.Member(self.member_id, self.cfg.name, (f"http://{self.cfg.listen_peer}",),
                         (f"http://{self.cfg.listen_client}",))
        if self.node.state.members.get(self.member_id) != me:
            self._spawn("publish", mvcc.cmd_publish(me))

    def _save_peers(self) -> None:
        """Keep member.json's membership and cluster ID current (used on restart)."""
        now = (self.node.peers(), self.node.state.cluster_id)
        if now != self._saved:
            self._saved = now
            update_member_file(self.cfg.data_dir, peers=now[0], cluster_id=now[1])

    def _log_changes(self) -> None:
        leader = self.node.leader_addr()
        if leader != self._leader_seen:
            if leader is None:
                log.warning("no leader (term %d)", self.node.term)
            else:
                who = "this member" if leader == self.cfg.listen_peer else leader
                log.info("leader is %s (term %d)", who, self.node.term)
                LEADER_CHANGES.inc()
            self._leader_seen = leader
        for addr in self.node.peers():
            if addr == self.cfg.listen_peer:
                continue
            up = self.node.connected(addr)
            if self._peer_up.get(addr) != up:
                if up:
                    log.info("peer %s connected", addr)
                elif addr in self._peer_up:
                    log.warning("peer %s unreachable; retrying with backoff (%.1f-%.0fs)", addr, RETRY_MIN, RETRY_MAX)
                else:
                    log.info("peer %s not reachable yet; retrying with backoff (%.1f-%.0fs)", addr, RETRY_MIN,
                             RETRY_MAX)
                self._peer_up[addr] = up

    # ------------------------------------------------------------ space

    def _disk_low(self) -> bool:
        """Whether the data dir's filesystem has less than the reserve free. Far from the
        reserve it is checked at most every 0.1 s (a statvfs per request would be wasted);
        closer than twice the reserve, on every call, so writes stop near the line."""
        now = time.monotonic()
        when, free = self._disk_checked
        reserve = self.cfg.disk_reserve_bytes
        if now - when < 0.1 and free > 2 * reserve:
            return False
        try:
            st = os.statvfs(self.cfg.data_dir)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = 1 << 62
        self._disk_checked = (now, free)
        return free < reserve

    def _raise_nospace(self, why: str) -> None:
        if "alarm-nospace" not in self._inflight:
            log.warning("raising the NOSPACE alarm: %s", why)
        self._spawn("alarm-nospace", mvcc.cmd_alarm(mvcc.ALARM_ACTIVATE, self.member_id, mvcc.ALARM_NOSPACE))

    def space_error(self, cost: int) -> EtcdError | None:
        """NO_SPACE if a write of `cost` bytes must be refused (raising the alarm), else None."""
        st = self.node.state
        if st.alarms and st.no_space():
            return errors.NO_SPACE
        quota = self.cfg.quota_bytes
        if quota > 0 and st.size_bytes + cost > quota:
            self._raise_nospace(f"data ({st.size_bytes} bytes) + request ({cost}) over the quota ({quota})")
            return errors.NO_SPACE
        if self._disk_low():
            self._raise_nospace("free disk space below the reserve")
            return errors.NO_SPACE
        return None

    async def check_space(self, cost: int, context: grpc.aio.ServicerContext) -> None:
        err = self.space_error(cost)
        if err is not None:
            await context.abort(err.code, err.message)

    # ------------------------------------------------------------ helpers for services

    async def write(self, cmd: tuple[Any, ...], context: grpc.aio.ServicerContext) -> tuple[Any, int]:
        try:
            res, rev = await self.node.propose(cmd)
        except EtcdError as e:
            await context.abort(e.code, e.message)
        if isinstance(res, EtcdError):
            await context.abort(res.code, res.message)
        return res, rev

    async def linearize(self, serializable: bool, context: grpc.aio.ServicerContext) -> None:
        if serializable:
            return
        try:
            await self.node.linearizable_read()
        except EtcdError as e:
            await context.abort(e.code, e.message)

    def members(self) -> list[rpc_pb2.Member]:
        out = []
        known = self.node.state.members
        for addr in self.node.peers():
            mid = member_id_for(addr)
            m = known.get(mid)
            out.append(rpc_pb2.Member(
                ID=mid, name=m.name if m else "", peerURLs=[f"http://{addr}"],
                clientURLs=list(m.client_urls) if m else [],
            ))
        return out


def _identity(b: bytes) -> bytes:
    return b


async def _abort(context: grpc.aio.ServicerContext, e: EtcdError) -> None:
    await context.abort(e.code, e.message)


def _txn_readonly(req: mvcc.TxnReq) -> bool:
    for op in (*req.success, *req.failure):
        if isinstance(op, mvcc.PutReq | mvcc.DeleteReq):
            return False
        if isinstance(op, mvcc.TxnReq) and not _txn_readonly(op):
            return False
    return True


def _txn_put_bytes(req: mvcc.TxnReq) -> int:
    total = 0
    for op in (*req.success, *req.failure):
        if isinstance(op, mvcc.PutReq):
            total += len(op.key) + len(op.value) + KV_OVERHEAD
        elif isinstance(op, mvcc.TxnReq):
            total += _txn_put_bytes(op)
    return total


def _txn_serializable(request: rpc_pb2.TxnRequest) -> bool:
    """etcd's rule: serializable only if every op (both branches) is a serializable range."""
    for op in (*request.success, *request.failure):
        if op.WhichOneof("request") != "request_range" or not op.request_range.serializable:
            return False
    return True


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(self, store: Store) -> None:
        self.s = store

    async def Range(self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext) -> Any:
        req = pbconv.range_req(request)
        await self.s.linearize(request.serializable, context)
        node = self.s.node
        try:
            with node.lock:
                res = node.state.range(req)
                rev = node.state.revision
        except EtcdError as e:
            await _abort(context, e)
        return pbconv.range_resp(res, self.s.header(rev))

    async def Put(self, request: rpc_pb2.PutRequest, context: grpc.aio.ServicerContext) -> Any:
        req = pbconv.put_req(request)
        try:
            mvcc.check_put(req)
        except EtcdError as e:
            await _abort(context, e)
        await self.s.check_space(len(req.key) + len(req.value) + KV_OVERHEAD, context)
        res, rev = await self.s.write(mvcc.cmd_put(req), context)
        return pbconv.put_resp(res, self.s.header(rev))

    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest,
                          context: grpc.aio.ServicerContext) -> Any:
        if not request.key:
            await _abort(context, errors.EMPTY_KEY)
        res, rev = await self.s.write(mvcc.cmd_delete(pbconv.delete_req(request)), context)
        return pbconv.delete_resp(res, self.s.header(rev))

    async def Txn(self, request: rpc_pb2.TxnRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            req = pbconv.txn_req(request)
            mvcc.check_txn(req)
        except EtcdError as e:
            await _abort(context, e)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"etcdserver: {e}")
        if _txn_readonly(req):
            await self.s.linearize(_txn_serializable(request), context)
            node = self.s.node
            with node.lock:
                applied = node.state.apply([mvcc.cmd_txn(req)], want_results=True)
            res, rev = applied.results[0]
            if isinstance(res, EtcdError):
                await _abort(context, res)
        else:
            if mvcc.txn_has_put(req):
                await self.s.check_space(_txn_put_bytes(req), context)
            res, rev = await self.s.write(mvcc.cmd_txn(req), context)
        return pbconv.txn_resp(res, self.s.header(rev))

    async def Compact(self, request: rpc_pb2.CompactionRequest, context: grpc.aio.ServicerContext) -> Any:
        _, rev = await self.s.write(mvcc.cmd_compact(request.revision), context)
        return rpc_pb2.CompactionResponse(header=self.s.header(rev))


class WatchService:
    def __init__(self, store: Store) -> None:
        self.s = store

    async def Watch(self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        hub = self.s.hub
        stream = hub.open()
        reader = asyncio.create_task(self._read(request_iterator, stream), name="watch-reader")
        try:
            async for data in stream.responses():
                yield data
        finally:
            reader.cancel()
            hub.close(stream)

    async def _read(self, requests: AsyncIterator[rpc_pb2.WatchRequest], stream: WatchStream) -> None:
        hub = self.s.hub
        async for req in requests:
            which = req.WhichOneof("request_union")
            if which == "create_request":
                hub.create(stream, req.create_request)
            elif which == "cancel_request":
                hub.cancel(stream, req.cancel_request.watch_id)
            elif which == "progress_request":
                hub.request_progress(stream)


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, store: Store) -> None:
        self.s = store

    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, context: grpc.aio.ServicerContext) -> Any:
        # The ID is stamped here, before replication, so every member applies the same one.
        lease_id = request.ID or random.getrandbits(63) or 1
        await self.s.check_space(LEASE_OVERHEAD, context)
        res, rev = await self.s.write(mvcc.cmd_lease_grant(lease_id, request.TTL), context)
        return rpc_pb2.LeaseGrantResponse(header=self.s.header(rev), ID=res.id, TTL=res.ttl)

    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, context: grpc.aio.ServicerContext) -> Any:
        _, rev = await self.s.write(mvcc.cmd_lease_revoke(request.ID), context)
        return rpc_pb2.LeaseRevokeResponse(header=self.s.header(rev))

    async def LeaseKeepAlive(self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
                             context: grpc.aio.ServicerContext) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        async for req in request_iterator:
            try:
                ttl, rev = await self.s.node.propose(mvcc.cmd_lease_keepalive(req.ID))
            except EtcdError as e:
                await _abort(context, e)
            yield rpc_pb2.LeaseKeepAliveResponse(header=self.s.header(rev), ID=req.ID, TTL=ttl)

    async def LeaseTimeToLive(self, request: rpc_pb2.LeaseTimeToLiveRequest,
                              context: grpc.aio.ServicerContext) -> Any:
        await self.s.linearize(False, context)
        with self.s.node.lock:
            info = self.s.node.state.lease(request.ID)
        if info is None:
            return rpc_pb2.LeaseTimeToLiveResponse(header=self.s.header(), ID=request.ID, TTL=-1)
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=self.s.header(), ID=request.ID, TTL=self.s.lessor.remaining(request.ID),
            grantedTTL=info.ttl, keys=list(info.keys) if request.keys else [],
        )

    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.s.linearize(False, context)
        with self.s.node.lock:
            leases = self.s.node.state.leases()
        return rpc_pb2.LeaseLeasesResponse(header=self.s.header(),
                                           leases=[rpc_pb2.LeaseStatus(ID=le.id) for le in leases])


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, store: Store) -> None:
        self.s = store

    async def MemberList(self, request: rpc_pb2.MemberListRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.linearizable:
            await self.s.linearize(False, context)
        return rpc_pb2.MemberListResponse(header=self.s.header(), members=self.s.members())

    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.isLearner:
            await _abort(context, errors.LEARNER_NOT_SUPPORTED)
        if len(request.peerURLs) != 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: exactly one peer URL is supported")
        addr = url_to_addr(request.peerURLs[0])
        if addr in self.s.node.peers():
            await _abort(context, errors.PEER_URL_EXIST)
        try:
            await self.s.node.change_membership("add", addr, timeout=self.s.cfg.request_timeout * 2)
        except EtcdError as e:
            await _abort(context, e)
        member = rpc_pb2.Member(ID=member_id_for(addr), peerURLs=[f"http://{addr}"])
        return rpc_pb2.MemberAddResponse(header=self.s.header(), member=member, members=self.s.members())

    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest,
                           context: grpc.aio.ServicerContext) -> Any:
        s = self.s
        addr = next((a for a in s.node.peers() if member_id_for(a) == request.ID), None)
        if addr is None:
            await _abort(context, errors.MEMBER_NOT_FOUND)
        if addr == s.cfg.listen_peer:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "etcdserver: a member cannot remove itself here; send MemberRemove to another member")
        assert addr is not None
        try:
            if s.node.leader_addr() == addr:
                # pysyncobj refuses to let a leader remove itself: ask it (through the log) to
                # hand leadership over first, then remove it as a follower.
                await s.node.propose(mvcc.cmd_transfer_leadership(request.ID))
                deadline = time.monotonic() + s.cfg.request_timeout
                while s.node.leader_addr() in (addr, None) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            await s.node.change_membership("remove", addr, timeout=s.cfg.request_timeout * 2)
            await s.node.propose(mvcc.cmd_forget_member(request.ID))
        except EtcdError as e:
            await _abort(context, e)
        return rpc_pb2.MemberRemoveResponse(header=s.header(), members=s.members())


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, store: Store) -> None:
        self.s = store

    async def Alarm(self, request: rpc_pb2.AlarmRequest, context: grpc.aio.ServicerContext) -> Any:
        s = self.s
        if request.action == mvcc.ALARM_GET:
            await s.linearize(False, context)
            with s.node.lock:
                alarms = s.node.state.alarm_list(request.alarm)
        else:
            alarms, _ = await s.write(mvcc.cmd_alarm(request.action, request.memberID, request.alarm), context)
            if request.action == mvcc.ALARM_DEACTIVATE and alarms:
                log.info("alarms disarmed: %s", ", ".join(f"{m:x}:{rpc_pb2.AlarmType.Name(a)}" for m, a in alarms))
        return rpc_pb2.AlarmResponse(header=s.header(), alarms=[
            rpc_pb2.AlarmMember(memberID=m, alarm=rpc_pb2.AlarmType.Name(a)) for m, a in alarms])

    async def Defragment(self, request: rpc_pb2.DefragmentRequest, context: grpc.aio.ServicerContext) -> Any:
        """Nothing to defragment here; what gives disk space back is a snapshot, after which
        the journal is cut: take one now and wait for it (space freed by compaction and
        deletes then leaves the disk, as `etcdctl defrag` does for etcd)."""
        node = self.s.node
        before = node.snapshots.completed
        node.raft.forceLogCompaction()
        node.raft.wake()
        deadline = time.monotonic() + 4 * self.s.cfg.request_timeout
        idle = 0  # pysyncobj takes no snapshot when nothing was applied since the last one
        while node.snapshots.completed == before and idle < 2:
            if time.monotonic() > deadline:
                await _abort(context, errors.TIMEOUT)
            await asyncio.sleep(0.05)
            pending = node.raft._SyncObj__forceLogCompaction or node.snapshots.busy
            idle = 0 if pending else idle + 1
        return rpc_pb2.DefragmentResponse(header=self.s.header())

    async def Status(self, request: rpc_pb2.StatusRequest, context: grpc.aio.ServicerContext) -> Any:
        node = self.s.node
        leader = node.leader_addr()
        size = node.journal.stats()["bytes"]
        try:
            size += os.path.getsize(node.snapshots.path)
        except OSError:
            pass
        return rpc_pb2.StatusResponse(
            header=self.s.header(), version=API_VERSION, dbSize=size,
            leader=member_id_for(leader) if leader else 0, raftIndex=node.commit_index,
            raftTerm=node.term, raftAppliedIndex=node.applied_index,
            errors=([] if leader else ["etcdserver: no leader"]) + [
                f"memberID:{m} alarm:{rpc_pb2.AlarmType.Name(a)} " for m, a in node.state.alarm_list()],
            dbSizeInUse=node.state.size_bytes,
        )


# ---------------------------------------------------------------- data dir

MEMBER_FILE = "member.json"


def read_member_file(data_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(data_dir, MEMBER_FILE)) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except FileNotFoundError:
        return None


def update_member_file(data_dir: str, **changes: Any) -> None:
    from controlplane.store.journal import write_durably

    data = read_member_file(data_dir) or {}
    changed = {k: v for k, v in changes.items() if v and data.get(k) != v}
    if changed:
        data.update(changed)
        write_durably(os.path.join(data_dir, MEMBER_FILE), json.dumps(data, indent=1).encode())


def prepare_data_dir(cfg: StoreConfig) -> list[str]:
    """Check (or initialise) the data dir for this member; the Raft peers to start with.

    Refuses a data dir made for another member or another cluster, like etcd does.
    """
    os.makedirs(cfg.data_dir, exist_ok=True)
    meta = read_member_file(cfg.data_dir)
    if meta is None:
        if os.path.exists(os.path.join(cfg.data_dir, "raft.journal")):
            raise SystemExit(f"data dir {cfg.data_dir} has a journal but no {MEMBER_FILE}: refusing to guess")
        update_member_file(cfg.data_dir, name=cfg.name, peer=cfg.listen_peer,
                           initial_cluster_id=cfg.initial_cluster_id if cfg.cluster_state == "new" else 0,
                           cluster_state=cfg.cluster_state)
        return sorted(cfg.initial_cluster.values())
    if meta.get("name") != cfg.name or meta.get("peer") != cfg.listen_peer:
        raise SystemExit(
            f"data dir {cfg.data_dir} belongs to member {meta.get('name')!r} (peer {meta.get('peer')}), "
            f"not {cfg.name!r} (peer {cfg.listen_peer}): use that member's flags or another --data-dir")
    known = meta.get("cluster_id") or meta.get("initial_cluster_id")
    if cfg.cluster_state == "new" and known and known != cfg.initial_cluster_id:
        raise SystemExit(
            f"data dir {cfg.data_dir} belongs to cluster {known:x}, but --initial-cluster/--initial-cluster-token "
            f"describe cluster {cfg.initial_cluster_id:x}: use the original flags or another --data-dir")
    peers: list[str] = meta.get("peers") or sorted(cfg.initial_cluster.values())
    return peers
