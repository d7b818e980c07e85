"""The real api-server in this process: `InProcessApi` is skiff.client.ApiClient over a
`Registry` on an in-memory store, for controller, scheduler, informer and agent tests and for
benchmarks that want no processes.

What must hold:
- Every call goes through the registry the api-server serves (defaults, validation,
  resourceVersions, conflicts, graceful deletion, finalizers, the watch cache with its
  bookmarks and selector rules): a test passing here exercises what the cluster runs. There
  is no second implementation of any verb here, only the client-side conventions of
  skiff.client.Client (namespace defaulting, the Binding built by `bind`).
- Objects cross as they would over gRPC: every result is serialized and parsed again, so a
  caller never shares a message with the registry's caches (and a field the wire drops is
  dropped here too). Errors are the same skiff.errors types the gRPC client raises.
- `tests/unit/controlplane/apiserver/test_client_contract.py` runs the same checks against
  this and against skiff.client.Client over gRPC to the api-server service.

Each call runs as `user` (default: the admin), as the front ends run a request as its caller:
it is authorized with the api-server's authorizer (modes `authorization_modes`, default
Node,RBAC; the bootstrap policy is reconciled before a non-admin user's first call) and the
registry runs inside `caller.acting_as(user)`, so NodeRestriction sees it too. `as_user(user)`
is a second client of the same api-server acting as someone else (a component's identity).

For tests it also records every call in `actions` as (verb, resource, namespace, name),
can fail the next matching call (`fail_next`), read the stored objects synchronously
(`objects`), compact the store (`compact`) and wait until every watch has been handed every
write (`settle`). The registry starts on first use (or `await start()`); `close()` stops it.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from controlplane.apiserver import bootstrappolicy, caller
from controlplane.apiserver.allocator import Allocator
from controlplane.apiserver.authorizer import DEFAULT_MODES, Authorizer, kind_attributes
from controlplane.apiserver.filters import selected_name
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import Options, Registry
from controlplane.apiserver.watchcache import decode, registry_prefix
from skiff import defaults, errors, identity, kinds
from skiff.client import DEFAULT_NAMESPACE, ObjectList, WatchEvent, namespace_for
from skiff.identity import UserInfo
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t

M = TypeVar("M", bound=Message)

# No background compaction (tests compact when they mean to); namespaces are emptied promptly.
DEFAULT_OPTIONS = Options(compaction_interval=0.0, namespace_sweep_interval=0.5)


def _wire(obj: Message, cls: type[M]) -> M:
    """`obj` as the gRPC client would receive it: a fresh message of `cls`."""
    return _as(kinds.unwrap(t.Object.FromString(kinds.wrap(obj).SerializeToString())), cls)


def _as(inner: Message, cls: type[M]) -> M:
    if not isinstance(inner, cls):
        raise errors.InternalError(f"api-server returned a {type(inner).__name__}, expected a {cls.__name__}")
    return inner


class InProcessApi:
    """skiff.client.ApiClient over a Registry and a MemoryStore in this process."""

    def __init__(self, *, clock: Callable[[], float] = time.time, options: Options = DEFAULT_OPTIONS,
                 service_cidr: str = defaults.SERVICE_CIDR, node_port_range: str = defaults.NODE_PORT_RANGE,
                 store: MemoryStore | None = None, user: UserInfo = identity.INSECURE_ADMIN,
                 authorization_modes: tuple[str, ...] = DEFAULT_MODES) -> None:
        """`store`: share one store between several api-servers (or successive connections,
        each in its own event loop); by default the api-server has a store of its own."""
        self.user = user
        self.clock = clock
        self._owns_store = store is None
        self.store = store if store is not None else MemoryStore(clock=clock)
        self.registry = Registry(self.store, allocator=Allocator(service_cidr, node_port_range), options=options,
                                 clock=clock)
        self.authorizer = Authorizer.over_caches(self.registry.caches, modes=authorization_modes, clock=clock)
        self.actions: list[tuple[str, str, str, str]] = []
        self._failures: list[tuple[str, str, errors.SkiffError]] = []
        self._started = False
        self._starting: asyncio.Lock | None = None
        self._root: InProcessApi | None = None  # set on the views as_user() makes
        self._policy_ready = False
        self._policy_lock: asyncio.Lock | None = None

    def as_user(self, user: UserInfo) -> InProcessApi:
        """A client of this same api-server (registry, store, recorded actions) acting as `user`."""
        view = copy.copy(self)
        view.user = user
        view._root = self._root or self
        return view

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Fill the registry's caches and create the system namespaces (once); reconcile the
        bootstrap RBAC policy before the first call of a user who is not the admin."""
        if self._root is not None:
            await self._root.start()
            if not self.user.in_group(identity.MASTERS):
                await self._root.ensure_policy()
            return
        if not self.user.in_group(identity.MASTERS):
            await self.ensure_policy()
        if self._started:
            return
        await self._start_registry()

    async def ensure_policy(self) -> None:
        """Reconcile the bootstrap policy (as an api-server does at start) and wait until the
        authorizer's watch caches hold it."""
        if self._root is not None:
            await self._root.ensure_policy()
            return
        if self._policy_lock is None:
            self._policy_lock = asyncio.Lock()
        async with self._policy_lock:
            if self._policy_ready:
                return
            await self._start_registry()
            await bootstrappolicy.reconcile(self.registry)
            await self.settle()
            self._policy_ready = True

    async def _start_registry(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not self._started:
                await self.registry.start()
                self._started = True

    async def close(self) -> None:
        if self._root is not None:
            return
        if self._started:
            self._started = False
            await self.registry.stop()
            if self._owns_store:
                await self.store.close()

    async def __aenter__(self) -> InProcessApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ test helpers

    def fail_next(self, verb: str, resource: str, error: errors.SkiffError) -> None:
        """Make the next `verb` ("create", "update", "bind", ...) on `resource` raise `error`."""
        self._failures.append((verb, resource, error))

    def count(self, verb: str, resource: str = "") -> int:
        return sum(1 for a in self.actions if a[0] == verb and (not resource or a[1] == resource))

    def objects(self, cls: type[M]) -> builtins.list[M]:
        """Every stored object of `cls`, in key order, read from the store now (not the caches)."""
        kind = kinds.of_message(cls())
        out = [_wire(decode(kind, kv.value, kv.mod_revision, kv.key), cls)
               for kv in self.store.current(registry_prefix(kind))]
        return out

    async def compact(self, revision: int | None = None) -> None:
        """Compact the store at `revision` (default: now). A watch from before it gets GoneError once
        the watch cache's window (Options.watch_cache_size events) no longer reaches back to it."""
        await self.start()
        await self.store.compact(revision if revision is not None else self.store.current_revision)

    def _quiet(self) -> bool:
        if self.store.pending_batches():
            return False
        return all(not w.queue for cache in self.registry.caches.values() for w in cache.watchers())

    async def settle(self, *, max_steps: int = 10_000) -> None:
        """Return once every open watch has taken every event written so far (a few loop steps
        later, so that what the watchers do with them has run too)."""
        for _ in range(max_steps):
            if self._quiet():
                break
            await asyncio.sleep(0)
        for _ in range(3):
            await asyncio.sleep(0)

    def _record(self, verb: str, resource: str, namespace: str, name: str) -> None:
        self.actions.append((verb, resource, namespace, name))
        for i, (v, r, err) in enumerate(self._failures):
            if v == verb and r == resource:
                del self._failures[i]
                raise err

    def _authorize(self, verb: str, kind: kinds.Kind, namespace: str, name: str = "", subresource: str = "") -> None:
        """As the front ends do before any verb (server.request_attributes): ForbiddenError unless
        `user` may."""
        if verb == "create" and not subresource:
            name = ""  # a create names no object, as in Kubernetes
        self.authorizer.check(self.user, kind_attributes(verb, kind, namespace, name, subresource))

    # ------------------------------------------------------------------ ApiClient

    async def create(self, obj: M, *, namespace: str = "", dry_run: bool = False) -> M:
        kind = kinds.of_message(obj)
        meta = obj.metadata  # type: ignore[attr-defined]
        ns = (meta.namespace or namespace or DEFAULT_NAMESPACE) if kind.namespaced else ""
        self._record("create", kind.resource, ns, meta.name)
        await self.start()
        self._authorize("create", kind, ns, meta.name)
        with caller.acting_as(self.user):
            created = await self.registry.create(obj, namespace=namespace, dry_run=dry_run)
        return _wire(created, type(obj))

    async def get(self, cls: type[M], name: str, namespace: str = "") -> M:
        kind = kinds.of_message(cls())
        ns = namespace_for(kind, namespace)
        self._record("get", kind.resource, ns, name)
        await self.start()
        self._authorize("get", kind, ns, name)
        with caller.acting_as(self.user):
            return _wire(await self.registry.get(kind.resource, ns, name), cls)

    async def list(self, cls: type[M], *, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "") -> ObjectList[M]:
        kind = kinds.of_message(cls())
        ns = namespace if kind.namespaced else ""
        self._record("list", kind.resource, ns, "")
        await self.start()
        self._authorize("list", kind, ns, selected_name(field_selector))
        with caller.acting_as(self.user):
            items, rv, token = await self.registry.list(kind.resource, namespace=ns, label_selector=label_selector,
                                                        field_selector=field_selector, limit=limit,
                                                        continue_token=continue_token)
        return ObjectList([_wire(o, cls) for o in items], rv, token)

    async def update(self, obj: M) -> M:
        return await self._update(obj, status=False)

    async def update_status(self, obj: M) -> M:
        return await self._update(obj, status=True)

    async def _update(self, obj: M, *, status: bool) -> M:
        kind = kinds.of_message(obj)
        meta = obj.metadata  # type: ignore[attr-defined]
        self._record("update_status" if status else "update", kind.resource, namespace_for(kind, meta.namespace),
                     meta.name)
        await self.start()
        self._authorize("update", kind, namespace_for(kind, meta.namespace), meta.name, "status" if status else "")
        with caller.acting_as(self.user):
            return _wire(await self.registry.update(obj, status=status), type(obj))

    async def delete(self, cls: type[M], name: str, namespace: str = "", *,
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     preconditions: api.Preconditions | None = None) -> M:
        kind = kinds.of_message(cls())
        ns = namespace_for(kind, namespace)
        self._record("delete", kind.resource, ns, name)
        await self.start()
        self._authorize("delete", kind, ns, name)
        with caller.acting_as(self.user):
            deleted = await self.registry.delete(kind.resource, ns, name, grace_period=grace_period_seconds,
                                                 propagation_policy=propagation_policy, preconditions=preconditions)
        return _wire(deleted, cls)

    async def watch(self, cls: type[M], *, namespace: str = "", label_selector: str = "",  # type: ignore[override]
                    field_selector: str = "", resource_version: str = "", send_initial_events: bool = False,
                    allow_bookmarks: bool = False, timeout_seconds: int = 0) -> AsyncIterator[WatchEvent[M]]:
        kind = kinds.of_message(cls())
        ns = namespace if kind.namespaced else ""
        self._record("watch", kind.resource, ns, "")
        await self.start()
        self._authorize("watch", kind, ns, selected_name(field_selector))
        # The watch is authorized here; the registry's watch reads no caller, so the stream is
        # iterated in the consumer's own context.
        stream = self.registry.watch(kind.resource, namespace=ns, label_selector=label_selector,
                                     field_selector=field_selector, resource_version=resource_version,
                                     send_initial_events=send_initial_events, allow_bookmarks=allow_bookmarks,
                                     timeout_seconds=timeout_seconds)
        try:
            async for data in stream:
                event = api.WatchEvent.FromString(data)
                yield WatchEvent(event.type, _as(kinds.unwrap(event.object), cls))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str = "") -> t.Pod:
        ns = namespace or DEFAULT_NAMESPACE
        self._record("bind", "pods", ns, pod)
        await self.start()
        self._authorize("create", kinds.by_resource("pods"), ns, pod, "binding")  # type: ignore[arg-type]
        binding = t.Binding(api_version="v1", kind="Binding", metadata=t.ObjectMeta(name=pod, namespace=ns, uid=uid),
                            target=t.ObjectReference(kind="Node", name=node))
        with caller.acting_as(self.user):
            return _wire(await self.registry.bind(binding), t.Pod)

    async def bind_batch(self, bindings: Sequence[t.Binding]) -> builtins.list[errors.SkiffError | None]:
        """As the server's BindBatch: each binding recorded ("bind", where a failure can be
        injected) and authorized on its own, then the admitted ones applied together
        (`Registry.bind_many`). The call itself is recorded as "bindbatch"."""
        self._record("bindbatch", "pods", "", "")
        await self.start()
        outcomes: builtins.list[errors.SkiffError | None] = [None] * len(bindings)
        admitted: builtins.list[int] = []
        for i, b in enumerate(bindings):
            ns = b.metadata.namespace or DEFAULT_NAMESPACE
            try:
                self._record("bind", "pods", ns, b.metadata.name)
                self._authorize("create", kinds.by_resource("pods"), ns, b.metadata.name,  # type: ignore[arg-type]
                                "binding")
            except errors.SkiffError as exc:
                outcomes[i] = exc
                continue
            admitted.append(i)
        wanted = [t.Binding(api_version="v1", kind="Binding",
                            metadata=t.ObjectMeta(name=bindings[i].metadata.name,
                                                  namespace=bindings[i].metadata.namespace or DEFAULT_NAMESPACE,
                                                  uid=bindings[i].metadata.uid),
                            target=t.ObjectReference(kind="Node", name=bindings[i].target.name)) for i in admitted]
        with caller.acting_as(self.user):
            results = await self.registry.bind_many(wanted) if wanted else []
        for i, result in zip(admitted, results, strict=True):
            outcomes[i] = result if isinstance(result, errors.SkiffError) else None
        return outcomes
