"""The api-server's verbs over the store: Create, Get, List, Update, UpdateStatus, Delete,
Bind and Watch, for every kind in skiff.kinds.

Storage layout: `/registry/<resource>/<namespace>/<name>` (cluster-scoped kinds:
`/registry/<resource>/<name>`); the value is the object's message, serialized
deterministically, without resourceVersion; resourceVersion is the key's mod revision.

Concurrency: every write is one store transaction guarded by a compare:
- Create: "the key does not exist" (create_revision == 0), plus the same for every
  ClusterIP/NodePort allocation key written with a Service;
- Update, UpdateStatus, Delete, Bind: "mod_revision is still the one read" (bind_many: up
  to MAX_TXN_BINDINGS pods' compares and puts in one transaction, so the pods bound together
  share one revision; a lost compare decides each of them again alone). With a
  client-given resourceVersion a lost race is ABORTED (conflict); without one (and for
  Delete and Bind) the registry re-reads and decides again. The first attempt of Update,
  UpdateStatus and Bind decides on the watch cache's copy instead of a read from the store
  (one store round trip per write, not two; kube-apiserver's GuaranteedUpdate does the
  same): the compare makes the write safe, and whatever a stale copy makes fail (a refusal,
  "unchanged", a lost compare) is decided again on a read from the store.
A write whose outcome was lost in a store failover is recognised on retry: the stored value
equals what we meant to write (it carries our fresh uid), so it is reported as done.

Decisions about the object (defaults, stamping, generation, graceful deletion, finalizers)
are the pure functions in defaults.py and strategy.py; this module reads, calls them, writes.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver import admission, caller, nodeauthz, strategy, warnings
from controlplane.apiserver import allocator as alloc
from controlplane.apiserver.defaults import DEFAULT_TOLERATION_SECONDS, apply_defaults, default_tolerations
from controlplane.apiserver.filters import Filter, make_filter
from controlplane.apiserver.storage import (
    KV,
    CompactedError,
    Compare,
    Delete,
    Op,
    Put,
    Store,
    StoreError,
    StoreOverloadedError,
    TxnResult,
    UnavailableStoreError,
    ValueTooLargeError,
)
from controlplane.apiserver.strategy import copy, meta_of, resource_name
from controlplane.apiserver.watchcache import (
    ADDED,
    DEFAULT_RING_BYTES,
    WATCH_BATCH_BYTES,
    TooOldForCache,
    WatchCache,
    Watcher,
    chunk_bytes,
    decode,
    encode_bookmark,
    encode_event,
    registry_prefix,
    watch_event,
)
from skiff import defaults, errors, kinds, podsecurity, quota
from skiff.convert import FieldError
from skiff.guard import guard, supervise
from skiff.validation import validate
from skiff.watchbatch import frame_batch
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.apiserver.registry")

DEFAULT_NAMESPACE = "default"
SYSTEM_NAMESPACES = defaults.SYSTEM_NAMESPACES
MAX_ATTEMPTS = 16
# One store transaction of bind_many carries at most this many bindings (etcd refuses a txn of
# more than 128 operations by default, --max-txn-ops, compares and puts counted apart) and this
# many bytes of pods (etcd's request limit is 1.5 MiB by default).
MAX_TXN_BINDINGS = 100
MAX_TXN_BYTES = 1024 * 1024
COMPACT_KEY = "/registry/compact_rev_key"


def store_error(exc: StoreError) -> errors.SkiffError:
    """The client-facing error for a storage failure."""
    if isinstance(exc, UnavailableStoreError):
        out: errors.SkiffError = errors.UnavailableError(str(exc))
    elif isinstance(exc, ValueTooLargeError):
        out = errors.InvalidError(str(exc))
    elif isinstance(exc, StoreOverloadedError):
        out = errors.TooManyRequestsError(str(exc))
    elif isinstance(exc, CompactedError):
        out = errors.GoneError(f"too old resource version: {exc.requested} ({exc.compact_revision})")
    else:
        out = errors.InternalError(f"storage error: {exc}")
    out.__cause__ = exc
    return out


def _admit(operation: str, obj: Message, old: Message | None, *, subresource: str = "") -> None:
    """Admission that depends on who writes (NodeRestriction, nodeauthz.py); the caller is the
    request's (caller.current()), so the registry's own maintenance is never restricted."""
    problem = nodeauthz.node_restriction(caller.current(), operation, obj, old, subresource=subresource)
    if problem is not None:
        kind = kinds.of_message(obj)
        raise errors.ForbiddenError(f'{resource_name(kind)} "{meta_of(obj).name}" is forbidden: {problem}')


def encode(obj: Message) -> bytes:
    """The stored form: deterministic (map order), without resourceVersion."""
    meta = meta_of(obj)
    rv = meta.resource_version
    meta.resource_version = ""
    try:
        return obj.SerializeToString(deterministic=True)
    finally:
        meta.resource_version = rv


QUOTA = kinds.of_message(t.ResourceQuota())


@dataclass
class _Turn:
    """One namespace's quota-charged creates on this api-server, taking turns (Registry._quota_turn)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _mod_revision(kv: KV | None) -> int:
    return 0 if kv is None else kv.mod_revision


def stamped(obj: Message, revision: int) -> Message:
    meta_of(obj).resource_version = str(revision)
    return obj


@dataclass(frozen=True)
class Options:
    watch_cache_size: int = 4096
    watch_cache_bytes: int = DEFAULT_RING_BYTES  # the stored values one resource's event ring refers to
    watcher_buffer: int = 4096
    watcher_buffer_bytes: int = 8 * 1024 * 1024
    # Seconds an event may wait for a watcher's client to take it before the watch is closed as
    # too slow (watchcache.Watcher.lag); 0: no such bound.
    watcher_max_lag: float = 10.0
    bookmark_interval: float = 5.0
    event_ttl: int = 3600
    compaction_interval: float = 300.0
    namespace_sweep_interval: float = 2.0
    fresh_read_timeout: float = 3.0  # how long a consistent read waits for the cache to catch up
    # DefaultTolerationSeconds admission (defaults.default_tolerations) for pods created here.
    default_not_ready_toleration_seconds: int = DEFAULT_TOLERATION_SECONDS
    default_unreachable_toleration_seconds: int = DEFAULT_TOLERATION_SECONDS
    # Pod Security Admission: the enforce level of a namespace without the label (skiff/podsecurity.py).
    pod_security_default: str = podsecurity.DEFAULT_LEVEL
    # ServiceAccount admission's token volume (admission.py): on when this api-server issues tokens.
    mount_service_account_tokens: bool = False


class Registry:
    def __init__(self, store: Store, *, allocator: alloc.Allocator | None = None, options: Options | None = None,
                 clock: Callable[[], float] = time.time, new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.allocator = allocator or alloc.Allocator()
        self.options = options or Options()
        self.clock = clock
        self.new_uid = new_uid
        self.rng = rng or random.Random()
        self.caches: dict[str, WatchCache] = {
            k.resource: WatchCache(store, k, capacity=self.options.watch_cache_size,
                                   capacity_bytes=self.options.watch_cache_bytes,
                                   watcher_limit=self.options.watcher_buffer,
                                   watcher_bytes=self.options.watcher_buffer_bytes,
                                   watcher_max_lag=self.options.watcher_max_lag or None,
                                   bookmark_interval=self.options.bookmark_interval)
            for k in kinds.KINDS
        }
        self._taken_ips: set[str] = set()
        self._taken_ports: set[int] = set()
        self._event_lease: tuple[int, float] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._namespace_kick = asyncio.Event()
        self._quota_turns: dict[str, _Turn] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, background: bool = True) -> None:
        """Fill the watch caches, make sure the system namespaces exist, start maintenance."""
        for cache in self.caches.values():
            cache.start()
        await asyncio.gather(*(c.ready.wait() for c in self.caches.values()))
        for name in SYSTEM_NAMESPACES:
            try:
                await self.create(t.Namespace(metadata=t.ObjectMeta(name=name)))
            except errors.AlreadyExistsError:
                pass
        if background:
            self._tasks.append(supervise(self._namespace_sweeper, "namespace-finalizer"))
            if self.options.compaction_interval > 0:
                self._tasks.append(supervise(self._compactor, "compactor"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in self.caches.values()))

    # ------------------------------------------------------------------ helpers

    def kind(self, resource: str) -> kinds.Kind:
        kind = kinds.by_resource(resource)
        if kind is None:
            known = ", ".join(k.resource for k in kinds.KINDS)
            raise errors.InvalidError(f'unknown resource "{resource}" (known: {known})')
        return kind

    @staticmethod
    def key(kind: kinds.Kind, namespace: str, name: str) -> str:
        if kind.namespaced:
            return f"/registry/{kind.resource}/{namespace}/{name}"
        return f"/registry/{kind.resource}/{name}"

    @staticmethod
    def _namespace(kind: kinds.Kind, namespace: str) -> str:
        return (namespace or DEFAULT_NAMESPACE) if kind.namespaced else ""

    async def _txn(self, compares: list[Compare], ops: list[Op]) -> TxnResult:
        try:
            return await self.store.txn(compares, ops)
        except StoreError as exc:
            raise store_error(exc) from exc

    async def _get_kv(self, kind: kinds.Kind, namespace: str, name: str) -> KV:
        if not name:
            raise errors.InvalidError("a name is required")
        try:
            kv = await self.store.get(self.key(kind, namespace, name))
        except StoreError as exc:
            raise store_error(exc) from exc
        if kv is None:
            raise errors.NotFoundError(f'{resource_name(kind)} "{name}" not found')
        return kv

    def _decode(self, kind: kinds.Kind, kv: KV) -> Message:
        try:
            return decode(kind, kv.value, kv.mod_revision, kv.key)
        except StoreError as exc:
            raise errors.InternalError(str(exc)) from exc

    @staticmethod
    def _check_type_meta(obj: Message, kind: kinds.Kind) -> None:
        api_version, kind_name = obj.api_version, obj.kind  # type: ignore[attr-defined]
        if kind_name and kind_name != kind.kind:
            raise errors.InvalidError(f'kind: "{kind_name}" does not match the object sent (a {kind.kind})')
        if api_version and api_version != kind.api_version:
            raise errors.InvalidError(f'apiVersion: {kind.kind} is served as "{kind.api_version}", '
                                      f'not "{api_version}"')

    async def _check_namespace(self, namespace: str, *, fresh: bool = False) -> int:
        """The namespace's mod revision, if it exists and is not terminating.

        Creates compare on it in their transaction, so a namespace marked Terminating (or
        removed) after this check makes the create fail and check again: nothing is ever
        created in a namespace that is being emptied.
        """
        key = f"/registry/namespaces/{namespace}"
        ns = None if fresh else self.caches["namespaces"].objects.get(key)
        if ns is None:
            try:
                kv = await self.store.get(key)  # the cache may not have seen a new namespace yet
            except StoreError as exc:
                raise store_error(exc) from exc
            if kv is None:
                raise errors.NotFoundError(f'namespaces "{namespace}" not found')
            ns = self._decode(kinds.by_kind("Namespace"), kv)  # type: ignore[arg-type]
        if meta_of(ns).HasField("deletion_timestamp"):
            raise errors.ForbiddenError(f'unable to create new content in namespace {namespace} '
                                        "because it is being terminated")
        return int(meta_of(ns).resource_version)

    async def _lease_for(self, kind: kinds.Kind) -> int:
        """Events expire: they are written with a lease shared by the events of one minute."""
        if kind.kind != "Event" or self.options.event_ttl <= 0:
            return 0
        now = self.clock()
        if self._event_lease is None or now - self._event_lease[1] > 60:
            try:
                lease = await self.store.grant_lease(self.options.event_ttl + 60)
            except StoreError as exc:
                raise store_error(exc) from exc
            self._event_lease = (lease, now)
        return self._event_lease[0]

    def _random_suffix(self) -> str:
        return "".join(self.rng.choice(strategy.GENERATE_NAME_ALPHABET) for _ in range(5))

    # ------------------------------------------------------------------ create

    async def create(self, obj: Message, *, namespace: str = "", dry_run: bool = False) -> Message:
        kind = kinds.of_message(obj)
        if kind is kinds.BINDING:
            raise errors.InvalidError("a Binding is not created: use Bind (pods/binding)")
        obj = copy(obj)
        self._check_type_meta(obj, kind)
        meta = meta_of(obj)
        if kind.namespaced:
            if meta.namespace and namespace and meta.namespace != namespace:
                raise errors.InvalidError(f'metadata.namespace: the namespace of the object ("{meta.namespace}") '
                                          f'does not match the namespace of the request ("{namespace}")')
            meta.namespace = meta.namespace or namespace or DEFAULT_NAMESPACE
        strategy.check_size(obj, kind)
        problems = strategy.create_problems(obj)
        generated = not meta.name and bool(meta.generate_name)
        if generated:
            meta.name = strategy.generate_name(meta.generate_name, self._random_suffix())
        strategy.prepare_create(obj, now=self.clock(), uid=self.new_uid(), requester=caller.current())
        apply_defaults(obj)
        if isinstance(obj, t.Pod):
            default_tolerations(obj.spec, not_ready_seconds=self.options.default_not_ready_toleration_seconds,
                                unreachable_seconds=self.options.default_unreachable_toleration_seconds)
            problems += await self._limit_ranges(obj)
            if self.options.mount_service_account_tokens:
                await self._service_account(obj)
        if isinstance(obj, t.PersistentVolumeClaim):
            await self._admit_claim(obj)
        if isinstance(obj, t.PersistentVolume):
            admission.protect_volume(obj)
        problems += validate(obj)
        if problems:
            raise strategy.invalid(kind, meta.name or meta.generate_name, problems)
        _admit("create", obj, None)
        ns_key, ns_revision = "", 0
        if kind.namespaced:
            ns_key = f"/registry/namespaces/{meta.namespace}"
            ns_revision = await self._check_namespace(meta.namespace)
            await self._pod_security(obj, meta.namespace)
        if isinstance(obj, t.Service):
            self._check_requested_allocations(obj)
        async with self._quota_turn(meta.namespace if kind.namespaced else ""):
            charges = await self._check_quotas(obj, meta.namespace) if kind.namespaced else []
            if dry_run:
                return obj
            return await self._create_in_store(kind, obj, ns_key=ns_key, ns_revision=ns_revision, charges=charges,
                                               generated=generated)

    async def _create_in_store(self, kind: kinds.Kind, obj: Message, *, ns_key: str, ns_revision: int,
                               charges: builtins.list[t.ResourceQuota], generated: bool) -> Message:
        """Write an admitted create in one transaction with the quotas it is charged to; decide
        again after a lost compare (a namespace being deleted, a name or an allocation taken,
        a quota another create charged first)."""
        meta = meta_of(obj)
        lease = await self._lease_for(kind)
        collisions = 0
        for _ in range(MAX_ATTEMPTS):
            key = self.key(kind, meta.namespace, meta.name)
            candidate = copy(obj)
            alloc_keys: list[str] = []
            if isinstance(candidate, t.Service):
                alloc_keys = await self._assign(candidate, held=set())
            value = encode(candidate)
            compares = [Compare(key, 0), *(Compare(k, 0) for k in alloc_keys)]
            if ns_key:
                compares.append(Compare(ns_key, ns_revision))
            quota_keys = {self.key(QUOTA, q.metadata.namespace, q.metadata.name): int(q.metadata.resource_version)
                          for q in charges}
            compares += [Compare(k, rv) for k, rv in quota_keys.items()]
            owner = alloc.owner_value(candidate) if isinstance(candidate, t.Service) else b""
            ops: list[Op] = [Put(key, value, lease), *(Put(k, owner) for k in alloc_keys),
                             *(Put(k, encode(q)) for k, q in zip(quota_keys, charges, strict=True))]
            result = await self._txn(compares, ops)
            if result.succeeded:
                self._note_allocations(added=alloc_keys)
                return stamped(candidate, result.revision)
            existing = result.current.get(key)
            if existing is not None and existing.value == value:  # our write, applied before a lost response
                return stamped(candidate, existing.mod_revision)
            if ns_key and (result.current.get(ns_key) is None
                           or result.current[ns_key].mod_revision != ns_revision):  # type: ignore[union-attr]
                ns_revision = await self._check_namespace(meta.namespace, fresh=True)
                continue
            if existing is not None:
                if generated:
                    meta.name = strategy.generate_name(meta.generate_name, self._random_suffix())
                    continue
                raise errors.AlreadyExistsError(f'{resource_name(kind)} "{meta.name}" already exists')
            if any(_mod_revision(result.current.get(k)) != rv for k, rv in quota_keys.items()):
                charges = await self._check_quotas(obj, meta.namespace, fresh=True)  # count again, after the winner
                continue
            if self._allocation_lost(candidate, obj, result):
                collisions += 1
                if collisions >= 2:
                    await self._refresh_taken()  # our picture of the range is stale: read it
        raise errors.UnavailableError(f'could not create {resource_name(kind)} "{meta.name}": '
                                      f"too many concurrent writers (allocations, quota); retry")

    @contextlib.asynccontextmanager
    async def _quota_turn(self, namespace: str) -> AsyncIterator[None]:
        """Creates in a namespace with ResourceQuotas take turns on this api-server, so that N
        concurrent ones cost N transactions rather than up to N² lost compares (and none runs out
        of attempts). Only an optimisation: the quota compares in the create's transaction are
        what makes racing creates (on any api-server) safe, so the watch cache's word that the
        namespace has quotas is good enough here."""
        if not namespace or not self.caches[QUOTA.resource].count(registry_prefix(QUOTA, namespace)):
            yield
            return
        turn = self._quota_turns.setdefault(namespace, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._quota_turns[namespace]

    # ------------------------------------------------------------------ namespace admission

    async def _current(self, resource: str, namespace: str) -> builtins.list[Message]:
        """A consistent list (as List without a resourceVersion): a LimitRange or ResourceQuota created
        just before applies to the next create, whatever the watch cache has seen yet."""
        items, _, _ = await self.list(resource, namespace=namespace)
        return items

    async def _limit_ranges(self, pod: t.Pod) -> builtins.list[FieldError]:
        """LimitRange defaults and bounds (admission.py); the pod's qosClass follows its final resources."""
        ranges = await self._current("limitranges", pod.metadata.namespace)
        if not ranges:
            return []
        problems = admission.apply_limit_ranges(pod, ranges)  # type: ignore[arg-type]
        strategy.set_qos_class(pod)
        return problems

    async def _pod_security(self, obj: Message, namespace: str, old: Message | None = None) -> None:
        """Pod Security Admission (skiff/podsecurity.py): refuse a pod its namespace's enforce level
        forbids; warn (and log for the audit) about pods and workload pod templates that the warn
        and audit levels forbid. An update is judged only when the pod template changed."""
        templates = podsecurity.pod_specs(obj)
        if not templates:
            return
        if old is not None and podsecurity.pod_specs(old) == templates:
            return
        ns = await self._namespace_object(namespace)
        policy = podsecurity.policy_for(namespace, ns.metadata.labels if ns is not None else {},
                                        default_level=self.options.pod_security_default)
        decision = podsecurity.decide(policy, *templates[0], enforce=isinstance(obj, t.Pod))
        kind = kinds.of_message(obj)
        if decision.forbidden:
            raise errors.ForbiddenError(f'{resource_name(kind)} "{meta_of(obj).name}" is forbidden: '
                                        f"{decision.forbidden}")
        for text in decision.warnings:
            warnings.add(text)
        for text in decision.audit:
            log.info("pod-security audit: %s %s/%s: %s", kind.resource, namespace, meta_of(obj).name, text)

    async def _namespace_object(self, namespace: str) -> t.Namespace | None:
        key = f"/registry/namespaces/{namespace}"
        ns = self.caches["namespaces"].objects.get(key)
        if ns is None:
            try:
                kv = await self.store.get(key)
            except StoreError as exc:
                raise store_error(exc) from exc
            ns = None if kv is None else self._decode(kinds.by_kind("Namespace"), kv)  # type: ignore[arg-type]
        return ns if isinstance(ns, t.Namespace) else None

    async def _service_account(self, pod: t.Pod) -> None:
        """The ServiceAccount admission plugin's token volume (admission.py)."""
        try:
            account = await self.get("serviceaccounts", pod.metadata.namespace, pod.spec.service_account_name)
        except errors.NotFoundError:
            account = None
        assert account is None or isinstance(account, t.ServiceAccount)
        admission.mount_service_account_token(pod, account, self._random_suffix())

    async def _admit_claim(self, pvc: t.PersistentVolumeClaim) -> None:
        """DefaultStorageClass (a claim without storageClassName gets the default class) and
        StorageObjectInUseProtection (the pvc-protection finalizer), as Kubernetes' admission does."""
        if not pvc.spec.HasField("storage_class_name"):
            classes, _, _ = await self.list("storageclasses")
            admission.default_storage_class(pvc, classes)  # type: ignore[arg-type]
        admission.protect_claim(pvc)

    async def _check_quotas(self, obj: Message, namespace: str, *, old: Message | None = None,
                            fresh: bool = False) -> builtins.list[t.ResourceQuota]:
        """Refuse a create (an update of `old`) its namespace's quotas have no room for; the quotas
        it is charged to, with their new status.used (admission.charged_quotas), to be written
        with it. An update that adds nothing any quota names is not looked at further. An Event
        reads the quotas from the watch cache (`_cached_quotas`) unless `fresh` (after a lost
        compare on a quota: the cache may not hold the winner's write yet)."""
        wanted = set(admission.quota_delta(obj, old))
        if old is not None and not wanted:
            return []
        quotas = self._cached_quotas(namespace) if isinstance(obj, t.Event) and not fresh else None
        if quotas is None:
            quotas = await self._current("resourcequotas", namespace)
        if not quotas:
            return []
        kind = kinds.of_message(obj)
        if not any(wanted & set(q.spec.hard) for q in quotas) and (old is not None or not isinstance(obj, t.Pod)):  # type: ignore[attr-defined]
            return []
        used = quota.namespace_usage(await self._current(kind.resource, namespace))
        admission.check_quotas(obj, quotas, used, old)  # type: ignore[arg-type]
        return admission.charged_quotas(obj, quotas, used, old)  # type: ignore[arg-type]

    def _cached_quotas(self, namespace: str) -> builtins.list[Message] | None:
        """The namespace's ResourceQuotas as the watch cache holds them (None until it is filled).

        Events read their quotas here, not with a consistent list: an Event is advisory and the
        most frequent create (the scheduler writes one per pod placed), and the consistent list
        is a store round trip of its own, as many as the Event's write. Kubernetes' quota
        admission reads every kind's quotas from its informer the same way. What stays exact:
        a quota the cache holds is charged with a compare on its revision in the Event's
        transaction; only a quota created a moment before (not yet in the cache) can let an
        Event past it, and the quota controller counts that Event."""
        cache = self.caches[QUOTA.resource]
        if not cache.ready.is_set():
            return None
        return cache.snapshot(make_filter(QUOTA, namespace=namespace))

    # ------------------------------------------------------------------ service allocations

    def _check_requested_allocations(self, svc: t.Service) -> None:
        ip = svc.spec.cluster_ip
        if ip and ip != "None":
            problem = self.allocator.check_ip(ip)
            if problem:
                raise errors.InvalidError(f'Service "{svc.metadata.name}" is invalid: spec.clusterIP: {problem}')
        seen: set[int] = set()
        for i, port in enumerate(svc.spec.ports):
            if not port.node_port:
                continue
            problem = self.allocator.check_node_port(port.node_port)
            if problem is None and port.node_port in seen:
                problem = f"{port.node_port}: duplicate nodePort"
            if problem:
                raise errors.InvalidError(f'Service "{svc.metadata.name}" is invalid: spec.ports[{i}].nodePort: '
                                          f"{problem}")
            seen.add(port.node_port)

    async def _refresh_taken(self) -> None:
        try:
            ips = await self.store.range(alloc.IP_PREFIX)
            ports = await self.store.range(alloc.PORT_PREFIX)
        except StoreError as exc:
            raise store_error(exc) from exc
        self._taken_ips = alloc.parse_ip_keys(kv.key for kv in ips.kvs)
        self._taken_ports = alloc.parse_port_keys(kv.key for kv in ports.kvs)

    async def _assign(self, svc: t.Service, *, held: set[str]) -> list[str]:
        """Pick a ClusterIP and NodePorts where needed; the allocation keys to create (not in `held`)."""
        if alloc.needs_ip(svc):
            ip = self.allocator.pick_ip(self._taken_ips)
            if ip is None:
                await self._refresh_taken()
                ip = self.allocator.pick_ip(self._taken_ips)
            if ip is None:
                raise errors.TooManyRequestsError(f"no ClusterIP left in the service range "
                                                  f"{self.allocator.network.with_prefixlen}")
            svc.spec.cluster_ip = ip
        if svc.spec.cluster_ip:
            del svc.spec.cluster_ips[:]
            svc.spec.cluster_ips.append(svc.spec.cluster_ip)
        used = {p.node_port for p in svc.spec.ports if p.node_port}
        for i in alloc.ports_needing_allocation(svc):
            port = self.allocator.pick_port(self._taken_ports | used)
            if port is None:
                await self._refresh_taken()
                port = self.allocator.pick_port(self._taken_ports | used)
            if port is None:
                r = self.allocator.node_ports
                raise errors.TooManyRequestsError(f"no NodePort left in the range {r.start}-{r.stop - 1}")
            svc.spec.ports[i].node_port = port
            used.add(port)
        return sorted(alloc.allocation_keys(svc) - held)

    def _note_allocations(self, *, added: Iterable[str] = (), released: Iterable[str] = ()) -> None:
        """Keep this api-server's picture of the ranges current with its own writes."""
        added, released = list(added), list(released)
        self._taken_ips |= alloc.parse_ip_keys(added)
        self._taken_ports |= alloc.parse_port_keys(added)
        self._taken_ips -= alloc.parse_ip_keys(released)
        self._taken_ports -= alloc.parse_port_keys(released)

    def _allocation_lost(self, candidate: t.Service | Message, requested: Message, result: TxnResult) -> bool:
        """After a failed transaction: refuse taken explicit values, remember taken picked ones.

        True when a picked value turned out to be taken (another api-server got it first).
        """
        if not isinstance(candidate, t.Service) or not isinstance(requested, t.Service):
            return False
        lost = False
        for key, kv in result.current.items():
            if kv is None:
                continue
            if key.startswith(alloc.IP_PREFIX):
                ip = key[len(alloc.IP_PREFIX):]
                if requested.spec.cluster_ip == ip:
                    raise errors.InvalidError(f'Service "{requested.metadata.name}" is invalid: spec.clusterIP: '
                                              f'"{ip}": provided IP is already allocated')
                self._taken_ips.add(ip)
                lost = True
            elif key.startswith(alloc.PORT_PREFIX):
                port = int(key[len(alloc.PORT_PREFIX):])
                for i, p in enumerate(requested.spec.ports):
                    if p.node_port == port:
                        raise errors.InvalidError(f'Service "{requested.metadata.name}" is invalid: '
                                                  f"spec.ports[{i}].nodePort: {port}: provided port is already "
                                                  "allocated")
                self._taken_ports.add(port)
                lost = True
        return lost

    # ------------------------------------------------------------------ get / list

    async def get(self, resource: str, namespace: str, name: str) -> Message:
        kind = self.kind(resource)
        kv = await self._get_kv(kind, self._namespace(kind, namespace), name)
        return self._decode(kind, kv)

    async def list(self, resource: str, *, namespace: str = "", label_selector: str = "", field_selector: str = "",
                   limit: int = 0, continue_token: str = "", resource_version: str = "",
                   ) -> tuple[builtins.list[Message], str, str]:
        """(items, resourceVersion, continue token)."""
        kind = self.kind(resource)
        filt = make_filter(kind, namespace=namespace, label_selector=label_selector, field_selector=field_selector)
        if limit < 0:
            raise errors.InvalidError(f"limit: must be greater than or equal to 0, got {limit}")
        cache = self.caches[kind.resource]
        if not continue_token and not limit and resource_version in ("", "0") and cache.ready.is_set():
            at: int | None = cache.revision
            if resource_version == "":  # a consistent read: prove the cache holds the store's state
                try:
                    at = await cache.consistent_revision(registry_prefix(kind, filt.namespace),
                                                         self.options.fresh_read_timeout)
                except StoreError as exc:
                    raise store_error(exc) from exc
            if at is not None:
                items = cache.snapshot(filt)
                return items, str(max(at, cache.revision)), ""
        revision, start = 0, ""
        if continue_token:
            revision, start = _parse_continue(continue_token)
        elif resource_version not in ("", "0"):
            revision = _parse_rv(resource_version)
        return await self._list_from_store(kind, filt, revision=revision, start=start, limit=limit)

    async def _list_from_store(self, kind: kinds.Kind, filt: Filter, *, revision: int, start: str,
                               limit: int) -> tuple[builtins.list[Message], str, str]:
        prefix = registry_prefix(kind, filt.namespace)
        items: builtins.list[Message] = []
        page_size = max(limit, 500)
        while True:
            try:
                page = await self.store.range(prefix, revision=revision, start=start, limit=page_size)
            except CompactedError as exc:
                if start:
                    raise errors.GoneError(f"the continue token has expired (revision {exc.requested} was "
                                           "compacted); list again without it") from exc
                raise store_error(exc) from exc
            except StoreError as exc:
                raise store_error(exc) from exc
            revision = page.revision
            for i, kv in enumerate(page.kvs):
                obj = self._decode(kind, kv)
                if filt.matches(obj):
                    items.append(obj)
                if limit and len(items) == limit and (page.more or i < len(page.kvs) - 1):
                    return items, str(revision), _make_continue(revision, kv.key + "\0")
            if not page.more or not page.kvs:
                return items, str(revision), ""
            start = page.kvs[-1].key + "\0"

    # ------------------------------------------------------------------ update

    async def update(self, obj: Message, *, status: bool = False) -> Message:
        kind = kinds.of_message(obj)
        if kind is kinds.BINDING:
            raise errors.InvalidError("a Binding cannot be updated")
        obj = copy(obj)
        self._check_type_meta(obj, kind)
        if status and not strategy.has_status(obj):
            raise errors.InvalidError(f"{kind.kind} has no status: use Update")
        meta = meta_of(obj)
        if not meta.name:
            raise errors.InvalidError("metadata.name: required")
        namespace = self._namespace(kind, meta.namespace)
        meta.namespace = namespace
        strategy.check_size(obj, kind)
        if not status:
            apply_defaults(obj)
        wanted_rv = meta.resource_version
        if wanted_rv:
            _parse_rv(wanted_rv)
        key = self.key(kind, namespace, meta.name)
        fast = await self._update_from_cache(kind, key, obj, wanted_rv=wanted_rv, status=status)
        if fast is not None:
            return fast
        for _ in range(MAX_ATTEMPTS):
            kv = await self._get_kv(kind, namespace, meta.name)
            old = self._decode(kind, kv)
            if wanted_rv and wanted_rv != str(kv.mod_revision):
                raise _conflict(kind, meta.name)
            if meta.uid and meta.uid != meta_of(old).uid:
                raise errors.ConflictError(f'conflict: {resource_name(kind)} "{meta.name}": precondition failed: '
                                           f"uid in the request {meta.uid}, uid of the object {meta_of(old).uid}")
            new = strategy.prepare_status_update(old, obj) if status else strategy.prepare_update(old, obj)
            problems = validate(new) + strategy.update_problems(old, new)
            if problems:
                raise strategy.invalid(kind, meta.name, problems)
            _admit("update", new, old, subresource="status" if status else "")
            if not status and not isinstance(new, t.Pod):
                await self._pod_security(new, namespace, old)
            if strategy.should_remove(new):
                done = await self._remove(kind, key, kv, old)
                if done is not None:
                    return stamped(new, done)
                if wanted_rv:
                    raise _conflict(kind, meta.name)
                continue
            value = encode(new)
            if value == kv.value:
                return old  # nothing changed: no write, same resourceVersion
            # Quota admission on UPDATE: what the update adds is checked and charged in this
            # transaction, guarded by each quota's revision, as a create is.
            charges = await self._check_quotas(new, namespace, old=old) \
                if kind.namespaced and not status else []
            quota_keys = {self.key(QUOTA, q.metadata.namespace, q.metadata.name): int(q.metadata.resource_version)
                          for q in charges}
            compares = [Compare(key, kv.mod_revision), *(Compare(k, rv) for k, rv in quota_keys.items())]
            charged: list[Op] = [Put(k, encode(q)) for k, q in zip(quota_keys, charges, strict=True)]
            ops: list[Op] = [Put(key, value, kv.lease), *charged]
            if isinstance(new, t.Service) and isinstance(old, t.Service):
                held = alloc.allocation_keys(old)
                fresh_keys = await self._assign(new, held=held)
                value = encode(new)
                ops = [Put(key, value, kv.lease), *(Put(k, alloc.owner_value(new)) for k in fresh_keys),
                       *(Delete(k) for k in sorted(held - alloc.allocation_keys(new))), *charged]
                compares += [Compare(k, 0) for k in fresh_keys]
            result = await self._txn(compares, ops)
            if result.succeeded:
                if isinstance(new, t.Service) and isinstance(old, t.Service):
                    self._note_allocations(added=alloc.allocation_keys(new) - alloc.allocation_keys(old),
                                           released=alloc.allocation_keys(old) - alloc.allocation_keys(new))
                return stamped(new, result.revision)
            current = result.current.get(key)
            if current is not None and current.value == value:
                return stamped(new, current.mod_revision)
            if current is None:
                raise errors.NotFoundError(f'{resource_name(kind)} "{meta.name}" not found')
            if current.mod_revision != kv.mod_revision:
                if wanted_rv:
                    raise _conflict(kind, meta.name)
                continue
            if any(_mod_revision(result.current.get(k)) != rv for k, rv in quota_keys.items()):
                continue  # another write charged the quota first: count again
            self._allocation_lost(new, obj, result)
        raise _conflict(kind, meta.name)

    async def _update_from_cache(self, kind: kinds.Kind, key: str, obj: Message, *, wanted_rv: str,
                                 status: bool) -> Message | None:
        """The update decided on the watch cache's copy and written if that copy is still the
        stored one (the compare on its mod_revision), saving the linearizable read; None when the
        copy cannot decide it alone, and the caller decides on a read from the store. What must
        hold: nothing is refused, and no write skipped as unchanged, on the strength of a copy
        that may be stale: every refusal, every "unchanged", a deletion (finalizers done) and
        a Service (allocations) go the store's way; so does every copy a write already replaced."""
        if kind.kind in ("Event", "Service"):  # Events carry a lease; Services allocate
            return None
        cache = self.caches.get(kind.resource)
        cached = cache.objects.get(key) if cache is not None else None
        if cached is None:
            return None
        meta, old_meta = meta_of(obj), meta_of(cached)
        if (wanted_rv and wanted_rv != old_meta.resource_version) or (meta.uid and meta.uid != old_meta.uid):
            return None
        try:
            new = strategy.prepare_status_update(cached, obj) if status else strategy.prepare_update(cached, obj)
            if validate(new) + strategy.update_problems(cached, new):
                return None
            _admit("update", new, cached, subresource="status" if status else "")
            if not status and not isinstance(new, t.Pod):
                await self._pod_security(new, old_meta.namespace, cached)
        except errors.SkiffError:
            return None
        if strategy.should_remove(new):
            return None
        if not status and kind.namespaced and \
                self.caches[QUOTA.resource].count(registry_prefix(QUOTA, old_meta.namespace)) and \
                admission.quota_delta(new, cached):
            return None  # the update adds to its namespace's usage: quota admission reads the store
        value = encode(new)
        if value == encode(cached):
            return None
        result = await self._txn([Compare(key, int(old_meta.resource_version))], [Put(key, value)])
        return stamped(new, result.revision) if result.succeeded else None

    async def update_status(self, obj: Message) -> Message:
        return await self.update(obj, status=True)

    async def _remove(self, kind: kinds.Kind, key: str, kv: KV, old: Message) -> int | None:
        """Delete the key if unchanged since `kv`, releasing allocations; the revision, or None if it changed."""
        ops: list[Op] = [Delete(key)]
        if isinstance(old, t.Service):
            ops += [Delete(k) for k in sorted(alloc.allocation_keys(old))]
        result = await self._txn([Compare(key, kv.mod_revision)], ops)
        if not result.succeeded:
            return None
        if isinstance(old, t.Service):
            self._note_allocations(released=alloc.allocation_keys(old))
        return result.revision

    # ------------------------------------------------------------------ delete

    async def delete(self, resource: str, namespace: str, name: str, *, grace_period: int | None = None,
                     propagation_policy: str = "", preconditions: api.Preconditions | None = None) -> Message:
        kind = self.kind(resource)
        namespace = self._namespace(kind, namespace)
        key = self.key(kind, namespace, name)
        for _ in range(MAX_ATTEMPTS):
            kv = await self._get_kv(kind, namespace, name)
            old = self._decode(kind, kv)
            if preconditions is not None:
                _check_preconditions(kind, old, preconditions)
            _admit("delete", old, old)
            if isinstance(old, t.Namespace):
                marked = strategy.plan_namespace_delete(old, now=self.clock())
                if marked is None:
                    return old
                result = await self._txn([Compare(key, kv.mod_revision)], [Put(key, encode(marked))])
                if result.succeeded:
                    self._namespace_kick.set()
                    return stamped(marked, result.revision)
                continue
            plan = strategy.plan_delete(old, grace_period=grace_period, propagation_policy=propagation_policy,
                                        now=self.clock())
            if plan.action == "none":
                return old
            if plan.action == "delete":
                if await self._remove(kind, key, kv, old) is not None:
                    return old
                continue
            result = await self._txn([Compare(key, kv.mod_revision)], [Put(key, encode(plan.obj), kv.lease)])
            if result.succeeded:
                return stamped(plan.obj, result.revision)
        raise _conflict(kind, name)

    # ------------------------------------------------------------------ bind

    def _plan_bind_from_cache(self, binding: t.Binding) -> tuple[str, int, t.Pod] | None:
        """(key, mod_revision of the cached copy, the pod bound) planned on the watch cache's copy,
        or None when there is no copy or it refuses (then only the store's state decides)."""
        pods = kinds.by_kind("Pod")
        assert pods is not None
        name = binding.metadata.name
        if not name:
            return None
        key = self.key(pods, binding.metadata.namespace or DEFAULT_NAMESPACE, name)
        cached = self.caches[pods.resource].objects.get(key)
        if not isinstance(cached, t.Pod):
            return None
        try:
            planned = strategy.plan_bind(cached, binding, now=self.clock())
        except errors.SkiffError:
            return None
        return key, int(cached.metadata.resource_version or 0), planned

    async def bind(self, binding: t.Binding) -> t.Pod:
        name = binding.metadata.name
        if not name:
            raise errors.InvalidError("metadata.name: required: the pod to bind")
        pods = kinds.by_kind("Pod")
        assert pods is not None
        namespace = binding.metadata.namespace or DEFAULT_NAMESPACE
        key = self.key(pods, namespace, name)
        # The first attempt starts from the watch cache's copy instead of a linearizable read (as
        # kube-apiserver's GuaranteedUpdate does): the compare on its mod_revision makes the write
        # safe, and a scheduler binds a pod it has just seen, so the copy is nearly always current.
        # Anything that copy makes fail (a stale copy: the compare, or plan_bind's refusal) is
        # decided again on the store's state: a refusal is only ever answered from that.
        plan = self._plan_bind_from_cache(binding)
        if plan is not None:
            _, rv, planned = plan
            result = await self._txn([Compare(key, rv)], [Put(key, encode(planned))])  # pods carry no lease
            if result.succeeded:
                out = stamped(planned, result.revision)
                assert isinstance(out, t.Pod)
                return out
        for _ in range(MAX_ATTEMPTS):
            kv = await self._get_kv(pods, namespace, name)
            pod = self._decode(pods, kv)
            assert isinstance(pod, t.Pod)
            new = strategy.plan_bind(pod, binding, now=self.clock())
            result = await self._txn([Compare(key, kv.mod_revision)], [Put(key, encode(new), kv.lease)])
            if result.succeeded:
                out = stamped(new, result.revision)
                assert isinstance(out, t.Pod)
                return out
        raise _conflict(pods, name)

    async def bind_many(self, bindings: Sequence[t.Binding]) -> builtins.list[t.Pod | errors.SkiffError]:
        """Each binding's outcome, as `bind` would give it, with the bindings that the watch
        cache's copies allow committed together: one store transaction per group of at most
        MAX_TXN_BINDINGS (and MAX_TXN_BYTES), comparing every pod's mod_revision and putting
        every bound pod, so the group shares one revision. A group whose transaction fails (a
        compare lost, or the store refused it as a whole) is decided again one `bind` each, so
        exactly the bindings that conflict fail; a binding the cache cannot plan (no copy, a
        refusal) is a `bind` of its own from the start; a pod named again, after the others."""
        outcomes: builtins.list[t.Pod | errors.SkiffError | None] = [None] * len(bindings)
        alone: builtins.list[int] = []
        again: builtins.list[int] = []  # a pod named twice: after the first, as in batch order
        groups: builtins.list[builtins.list[tuple[int, str, int, t.Pod, bytes]]] = [[]]
        size = 0
        seen: set[str] = set()
        for i, binding in enumerate(bindings):
            plan = self._plan_bind_from_cache(binding)
            if plan is None or plan[0] in seen:
                (alone if plan is None else again).append(i)
                continue
            key, rv, planned = plan
            seen.add(key)
            value = encode(planned)
            if len(groups[-1]) >= MAX_TXN_BINDINGS or (groups[-1] and size + len(value) > MAX_TXN_BYTES):
                groups.append([])
                size = 0
            groups[-1].append((i, key, rv, planned, value))
            size += len(value)

        async def one(i: int) -> None:
            try:
                outcomes[i] = await self.bind(bindings[i])
            except errors.SkiffError as exc:
                outcomes[i] = exc
            except Exception as exc:  # a bug in one binding fails that binding, as a Bind call would
                log.exception("binding %s", bindings[i].metadata.name)
                outcomes[i] = errors.InternalError(f"internal error: {type(exc).__name__}: {exc}")

        async def group(members: builtins.list[tuple[int, str, int, t.Pod, bytes]]) -> None:
            try:
                result = await self.store.txn([Compare(key, rv) for _, key, rv, _, _ in members],
                                              [Put(key, value) for _, key, _, _, value in members])
            except (UnavailableStoreError, StoreOverloadedError) as exc:
                # Each bind alone would meet the same store: answer each with it, without
                # sending it the same writes again one by one.
                for i, *_ in members:
                    outcomes[i] = store_error(exc)
                return
            except StoreError:
                result = None  # refused as a whole (too large?): one bind each decides
            if result is not None and result.succeeded:
                for i, _, _, planned, _ in members:
                    out = stamped(planned, result.revision)
                    assert isinstance(out, t.Pod)
                    outcomes[i] = out
                return
            await asyncio.gather(*(one(i) for i, *_ in members))

        await asyncio.gather(*(group(g) if len(g) > 1 else one(g[0][0]) for g in groups if g),
                             *(one(i) for i in alone))
        for i in again:
            await one(i)
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    # ------------------------------------------------------------------ watch

    async def watch(self, resource: str, *, namespace: str = "", label_selector: str = "", field_selector: str = "",
                    resource_version: str = "", send_initial_events: bool = False, allow_bookmarks: bool = False,
                    timeout_seconds: int = 0, batched: bool = False) -> AsyncIterator[bytes]:
        """Encoded WatchEvents (see watchcache.py for the guarantees); `batched`: encoded
        WatchEventBatches instead, each holding the events waiting when it was made."""
        kind = self.kind(resource)
        filt = make_filter(kind, namespace=namespace, label_selector=label_selector, field_selector=field_selector)
        cache = self.caches[kind.resource]
        try:
            async with asyncio.timeout(10.0):
                await cache.ready.wait()
        except TimeoutError:
            raise errors.UnavailableError(f"the {kind.resource} watch cache is not ready (store unreachable?); "
                                          "retry") from None
        initial = send_initial_events or resource_version == "0"
        start: int | None = None
        if resource_version not in ("", "0"):
            start = _parse_rv(resource_version)
        if initial:
            if resource_version != "0":
                # Initial state at least as fresh as what a List now would return (if the cache
                # cannot show that in time, it starts from what it has: later events follow).
                try:
                    await cache.consistent_revision(registry_prefix(kind, filt.namespace),
                                                    self.options.fresh_read_timeout)
                except StoreError as exc:
                    raise store_error(exc) from exc
            start = None
        pump: asyncio.Task[Any] | None = None
        objs: list[Message] = []
        try:
            w, objs = cache.register(filt, start_revision=start, allow_bookmarks=allow_bookmarks, initial=initial)
        except TooOldForCache as too_old:
            # Served from a store watch of its own, paced by the client (`_pump_store_watch`):
            # no event bound applies, so a backlog larger than the bound is still delivered.
            w = Watcher(kind, filt, too_old.requested, limit=2**62, max_bytes=2**62, allow_bookmarks=allow_bookmarks)
            pump = guard(self._pump_store_watch(kind, filt, w), f"store-watch-{kind.resource}", forever=False)
        handle = None
        if timeout_seconds > 0:
            handle = asyncio.get_running_loop().call_later(timeout_seconds, w.expire)
        try:
            if batched:
                initial_events = [encode_event(ADDED, obj) for obj in objs]
                if send_initial_events:
                    initial_events.append(encode_bookmark(kind, w.start_revision))
                for chunk in chunk_bytes(initial_events, WATCH_BATCH_BYTES):
                    yield frame_batch(chunk)
                w.start_lag_clock()
                while True:
                    batch = await w.next_batch()
                    if batch is None:
                        return
                    yield frame_batch(batch)
            for obj in objs:
                yield encode_event(ADDED, obj)
            if send_initial_events:
                yield encode_bookmark(kind, w.start_revision)
            w.start_lag_clock()
            while True:
                data = await w.next()
                if data is None:
                    return
                yield data
        finally:
            if handle is not None:
                handle.cancel()
            w.close()
            if pump is not None:
                pump.cancel()

    async def _pump_store_watch(self, kind: kinds.Kind, filt: Filter, w: Watcher) -> None:
        """Serve a watch older than the cache window straight from a store watch.

        Paced by the client: the next batch is read from the store only once the client's queue
        is below the watcher bounds (the store holds the rest: a stream that is not read turns
        slow there and catches up from history). Closing such a watch for being slow, as the
        cache does, livelocked a client whose backlog was larger than the bound: it resumed from
        the same resourceVersion, was replayed the same backlog and was closed again, until
        compaction. The watch always ends with an error the client sees (it never just stops):
        GoneError when compacted, the store's error, or UnavailableError when the store watch
        ended or this task failed.
        """
        prefix = registry_prefix(kind, filt.namespace)
        ending: errors.SkiffError = errors.UnavailableError(
            f"watch of {kind.resource} closed: the store watch ended; watch again from the last resourceVersion "
            "received")
        try:
            watch = self.store.watch(prefix, start_revision=w.start_revision + 1)
            try:
                async for batch in watch:
                    await w.room(self.options.watcher_buffer, self.options.watcher_buffer_bytes)
                    if w.error is not None or w.expired:
                        return
                    for ev in batch.events:
                        # The store tells the previous value (prev_kv); the cache knows it itself.
                        prev = decode(kind, ev.prev_value, ev.revision, ev.key) if ev.prev_value is not None else None
                        cached = watch_event(kind, ev, prev)
                        if cached is not None:
                            w.offer(cached)
                    if not batch.events:
                        w.bookmark(batch.revision)
            finally:
                await watch.close()
        except CompactedError as exc:
            ending = errors.GoneError(f"too old resource version: {w.start_revision} ({exc.compact_revision})")
        except StoreError as exc:
            ending = store_error(exc)
        except Exception as exc:
            log.exception("store watch of %s failed", kind.resource)
            ending = errors.UnavailableError(f"watch of {kind.resource} closed: {type(exc).__name__}: {exc}; "
                                             "watch again from the last resourceVersion received")
        finally:
            if w.error is None and not w.expired:
                w.fail(ending)

    # ------------------------------------------------------------------ maintenance

    async def finalize_namespaces(self) -> None:
        """Empty every Terminating namespace, and remove it once nothing is left in it.

        Contents are read from the store, not the caches (which may lag): once a namespace is
        Terminating no create can succeed in it (creates compare on the namespace key), so an
        empty read is final.
        """
        for ns in list(self.caches["namespaces"].objects.values()):
            if not meta_of(ns).HasField("deletion_timestamp"):
                continue
            name = meta_of(ns).name
            remaining = 0
            try:
                for kind in kinds.KINDS:
                    if not kind.namespaced:
                        continue
                    page = await self.store.range(registry_prefix(kind, name))
                    remaining += len(page.kvs)
                    for kv in page.kvs:
                        obj = self._decode(kind, kv)
                        if meta_of(obj).HasField("deletion_timestamp"):
                            continue
                        try:
                            await self.delete(kind.resource, name, meta_of(obj).name)
                        except errors.NotFoundError:
                            pass
                if remaining == 0:
                    ns_kv = await self.store.get(f"/registry/namespaces/{name}")
                    if ns_kv is not None:
                        await self._txn([Compare(ns_kv.key, ns_kv.mod_revision)], [Delete(ns_kv.key)])
                        log.info("namespace %s removed", name)
            except StoreError as exc:
                log.warning("emptying namespace %s: %s", name, exc)

    async def _namespace_sweeper(self) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: wait_for can swallow a cancellation (3.11),
                # and this loop would then never stop.
                async with asyncio.timeout(self.options.namespace_sweep_interval):
                    await self._namespace_kick.wait()
            except TimeoutError:
                pass
            self._namespace_kick.clear()
            try:
                await self.finalize_namespaces()
            except errors.SkiffError as exc:
                log.warning("namespace finalizer: %s", exc)

    async def compact_once(self, previous: int) -> int:
        """Compact to `previous` (the revision seen one interval ago) unless another api-server just did.

        A marker key serialises api-servers: only the one whose compare-and-swap on it wins
        compacts. Returns the current revision, to pass next time.
        """
        current = await self.store.revision()
        if previous <= 0:
            return current
        marker = await self.store.get(COMPACT_KEY)
        seen = marker.mod_revision if marker is not None else 0
        if marker is not None and int(marker.value or b"0") >= previous:
            return current
        result = await self.store.txn([Compare(COMPACT_KEY, seen)], [Put(COMPACT_KEY, str(previous).encode())])
        if result.succeeded:
            try:
                await self.store.compact(previous)
                log.info("compacted the store at revision %d", previous)
            except CompactedError:
                pass
        return current

    async def _compactor(self) -> None:
        previous = 0
        while True:
            await asyncio.sleep(self.options.compaction_interval)
            try:
                previous = await self.compact_once(previous)
            except StoreError as exc:
                log.warning("compaction skipped: %s", exc)


def _conflict(kind: kinds.Kind, name: str) -> errors.ConflictError:
    return errors.ConflictError(
        f'conflict: Operation cannot be fulfilled on {resource_name(kind)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again")


def _check_preconditions(kind: kinds.Kind, obj: Message, pre: api.Preconditions) -> None:
    meta = meta_of(obj)
    if pre.uid and pre.uid != meta.uid:
        raise errors.ConflictError(f'conflict: {resource_name(kind)} "{meta.name}": precondition failed: '
                                   f"uid in precondition {pre.uid}, uid of the object {meta.uid}")
    if pre.resource_version and pre.resource_version != meta.resource_version:
        raise errors.ConflictError(f'conflict: {resource_name(kind)} "{meta.name}": precondition failed: '
                                   f"resourceVersion in precondition {pre.resource_version}, "
                                   f"resourceVersion of the object {meta.resource_version}")


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise errors.InvalidError(f'invalid resourceVersion "{text}": expected a number') from None
    if value < 0:
        raise errors.InvalidError(f'invalid resourceVersion "{text}": must not be negative')
    return value


def _make_continue(revision: int, start: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"rv": revision, "start": start}).encode()).decode()


def _parse_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError):
        raise errors.InvalidError("continue: not a continue token returned by a previous List") from None
