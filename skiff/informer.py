"""Informers: a local, indexed cache of one kind kept current by list + watch.

What must hold:
- after `wait_synced()`, the cache holds every object of the last list plus every change
  the watch delivered since, in order;
- a dropped watch resumes from the last resourceVersion seen when a list or a bookmark gave it,
  and one revision earlier when an event did: objects written in one transaction share a
  revision (the api-server's batched binds), and a watch broken between two of its events
  would otherwise never bring the second; the events of that revision already applied are
  skipped, so each change still reaches the handlers once; a
  "too old resource version" (GoneError) or any unexpected error relists, and the difference
  between the old cache and the new list is delivered to handlers as adds, updates and
  deletes, so no handler misses a deletion that happened while disconnected;
- every retry backs off (`RELIST_BACKOFF`), relisting after a GoneError included: a cluster of
  informers never hammers an api-server that keeps failing them; a watch that brought anything
  before it failed (one the api-server closed because the informer lagged) starts the backoff
  over, so a lagging informer does not idle for ever longer waits;
- a list comes in pages of at most `page_size` objects (`limit`/`continue`, all at one
  revision), so no response holds a whole large collection; the cache changes only once the
  last page is in;
- `run()` never ends on its own: an informer that stops silently would leave its component
  acting on a frozen view of the cluster;
- cached objects are shared: callers must never mutate them (copy first);
- a `transform` (Kubernetes' SetTransform) is applied to every listed or watched object
  before it is cached or handed to a handler, so a component that needs a few fields of a
  large, numerous kind (the scheduler's bound pods) holds only those: handlers and readers
  see only transformed objects, and a component must never write back an object its
  transform shortened (it would write the dropped fields away);
- handlers run synchronously in the informer's task and should only enqueue keys.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from skiff import errors, kinds
from skiff.client import ApiClient
from skiff.guard import guard
from skiff.retry import Backoff, Delays

log = logging.getLogger("skiff.informer")

M = TypeVar("M", bound=Message)

Indexer = Callable[[Any], Iterable[str]]
Transform = Callable[[Any], Any]


def compact(obj: M) -> M:
    """A transform that caches `obj` as a deep copy in a message of its own: every field kept, in
    less memory. upb gives a message parsed from the wire an arena that grows in doubling blocks;
    a deep copy allocates less (measured with protobuf 7.36 on a Running scale-scenario pod, about
    1.2 kB encoded: 10.6 kB of malloc parsed, 5.2 kB copied; docs/scale.md). The saving comes in
    steps of those blocks, so it is not the same for every object size. The copy also holds
    nothing of what `obj` was parsed with (a watch event, or a List page whose one arena would
    stay alive while any of its objects is cached)."""
    out = type(obj)()
    out.CopyFrom(obj)
    return out

# After a failed list or watch: 0.2 s doubling to 5 s, jittered so that every informer of a
# cluster does not relist in the same instant after an api-server restart.
RELIST_BACKOFF = Backoff(initial=0.2, max=5.0, jitter=0.2)
# Objects per List page (client-go's reflector pages by 500 as well).
PAGE_SIZE = 500


def _revision(rv: str) -> int:
    """A resourceVersion as a number (Skiff's are store revisions); 0 when it is not one."""
    try:
        return int(rv)
    except ValueError:
        return 0


def object_key(obj: Message) -> str:
    """`namespace/name` for namespaced objects, `name` for cluster-scoped ones."""
    meta = obj.metadata  # type: ignore[attr-defined]
    return f"{meta.namespace}/{meta.name}" if meta.namespace else str(meta.name)


def split_key(key: str) -> tuple[str, str]:
    """(namespace, name) of a key made by object_key."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


def index_by_namespace(obj: Message) -> list[str]:
    return [obj.metadata.namespace]  # type: ignore[attr-defined]


@dataclass
class _Handler:
    on_add: Callable[[Any], None] | None
    on_update: Callable[[Any, Any], None] | None
    on_delete: Callable[[Any], None] | None


class Informer(Generic[M]):
    def __init__(self, client: ApiClient, cls: type[M], *, namespace: str = "", label_selector: str = "",
                 field_selector: str = "", resync_period: float = 0.0,
                 indexers: Mapping[str, Indexer] | None = None, page_size: int = PAGE_SIZE,
                 transform: Transform | None = None) -> None:
        self.client = client
        self.transform = transform
        self.page_size = page_size
        self.cls = cls
        self.kind = kinds.of_message(cls())
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.resource_version = ""
        # True when every event up to resource_version is known to be here (a list, a bookmark);
        # False after an event: other objects may share its revision (written in one transaction)
        # and a watch that broke in between would not have brought them yet.
        self._complete = False
        # While resuming one revision back: that revision, whose events already here are skipped.
        self._replaying = 0
        self._watch_delivered = False  # whether the current watch brought anything yet
        self._items: dict[str, M] = {}
        self._indexers: dict[str, Indexer] = {"namespace": index_by_namespace, **(indexers or {})}
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        self._handlers: list[_Handler] = []
        self._synced = asyncio.Event()

    # ------------------------------------------------------------------ reading

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        # asyncio.timeout, not wait_for: a cancellation that comes as the cache syncs is raised
        # (see wait_event in skiff/eventloop.py); a timeout raises TimeoutError.
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    def get(self, name: str, namespace: str = "") -> M | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def get_by_key(self, key: str) -> M | None:
        return self._items.get(key)

    def list(self, namespace: str | None = None) -> list[M]:
        if namespace is None:
            return list(self._items.values())
        return self.by_index("namespace", namespace)

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def by_index(self, index: str, value: str) -> builtins.list[M]:
        keys = self._indices[index].get(value, ())
        return [self._items[k] for k in keys]

    def index_size(self, index: str, value: str) -> int:
        """How many cached objects `by_index` would return, without building the list."""
        return len(self._indices[index].get(value, ()))

    def add_indexer(self, name: str, indexer: Indexer) -> None:
        if name in self._indexers:
            return
        self._indexers[name] = indexer
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._index(key, obj, indexer_names=(name,))

    # ------------------------------------------------------------------ handlers

    def add_handler(self, *, on_add: Callable[[M], None] | None = None,
                    on_update: Callable[[M, M], None] | None = None,
                    on_delete: Callable[[M], None] | None = None) -> None:
        """Register handlers; objects already cached are delivered to on_add at once."""
        handler = _Handler(on_add, on_update, on_delete)
        self._handlers.append(handler)
        if on_add is not None:
            for obj in list(self._items.values()):
                self._call(on_add, obj)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s informer: handler %s failed", self.kind.resource, getattr(fn, "__name__", fn))

    def _emit_add(self, obj: M) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                self._call(h.on_add, obj)

    def _emit_update(self, old: M, new: M) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                self._call(h.on_update, old, new)

    def _emit_delete(self, obj: M) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                self._call(h.on_delete, obj)

    # ------------------------------------------------------------------ cache

    def _index(self, key: str, obj: M, *, indexer_names: Iterable[str] | None = None) -> None:
        for name in indexer_names or self._indexers:
            for value in self._indexers[name](obj):
                self._indices[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: M) -> None:
        for name, indexer in self._indexers.items():
            for value in indexer(obj):
                keys = self._indices[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indices[name][value]

    def _store(self, obj: M) -> M | None:
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        self._index(key, obj)
        return old

    def _remove(self, obj: M) -> M | None:
        key = object_key(obj)
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def apply_event(self, event_type: str, obj: M) -> None:
        """Apply one watch event to the cache and tell the handlers (also used by tests)."""
        if event_type == "BOOKMARK":
            self.resource_version = obj.metadata.resource_version  # type: ignore[attr-defined]
            self._complete = True
            self._replaying = 0
            return
        rv = obj.metadata.resource_version  # type: ignore[attr-defined]
        if self._replaying:
            if _revision(rv) == self._replaying and self._seen(event_type, obj):
                return  # delivered before the watch broke
            if _revision(rv) > self._replaying:
                self._replaying = 0
        if self.transform is not None:
            obj = self.transform(obj)
        if event_type == "DELETED":
            self._remove(obj)
            self._emit_delete(obj)
        else:
            old = self._store(obj)
            if old is None:
                self._emit_add(obj)
            else:
                self._emit_update(old, obj)
        if rv:
            self.resource_version = rv
            self._complete = False

    def _seen(self, event_type: str, obj: M) -> bool:
        """Whether this event (at the revision being replayed) is already in the cache: a key
        changes at most once per revision, so the object at that revision (or its absence, for a
        deletion) says so."""
        held = self._items.get(object_key(obj))
        if event_type == "DELETED":
            return held is None
        return held is not None and held.metadata.resource_version == obj.metadata.resource_version  # type: ignore[attr-defined]

    def _resume_from(self) -> str:
        """Where the next watch starts: the last resourceVersion seen, or one revision earlier when
        that came from an event (its revision may hold more events than arrived; those already
        here are skipped as they come again)."""
        rv = self.resource_version
        revision = _revision(rv)
        if self._complete or revision <= 1:
            return rv
        self._replaying = revision
        return str(revision - 1)

    # ------------------------------------------------------------------ running

    async def _list_pages(self) -> tuple[builtins.list[M], str]:
        """Every object, one page at a time (a continue token keeps the pages at one revision)."""
        items: builtins.list[M] = []
        token = ""
        while True:
            page = await self.client.list(self.cls, namespace=self.namespace, label_selector=self.label_selector,
                                          field_selector=self.field_selector, limit=self.page_size,
                                          continue_token=token)
            items.extend(page.items if self.transform is None else map(self.transform, page.items))
            token = page.continue_token
            if not token:
                return items, page.resource_version

    async def _relist(self) -> None:
        listed, resource_version = await self._list_pages()
        fresh = {object_key(obj): obj for obj in listed}
        for key in [k for k in self._items if k not in fresh]:
            gone = self._items[key]
            self._remove(gone)
            self._emit_delete(gone)
        for key, obj in fresh.items():
            old = self._items.get(key)
            if old is None:
                self._store(obj)
                self._emit_add(obj)
            elif old.metadata.resource_version != obj.metadata.resource_version:  # type: ignore[attr-defined]
                self._store(obj)
                self._emit_update(old, obj)
        self.resource_version = resource_version
        self._complete = True
        self._replaying = 0
        self._synced.set()

    async def _watch_once(self) -> None:
        # A server-side timeout spreads re-watches out, as client-go does (5-10 minutes).
        timeout = random.randint(300, 600)
        async for event in self.client.watch(self.cls, namespace=self.namespace,
                                             label_selector=self.label_selector,
                                             field_selector=self.field_selector,
                                             resource_version=self._resume_from(), allow_bookmarks=True,
                                             timeout_seconds=timeout):
            self.apply_event(event.type, event.obj)
            self._watch_delivered = True

    async def run(self) -> None:
        """List and watch until cancelled."""
        delays = Delays(RELIST_BACKOFF)
        resync = guard(self._resync_loop(), f"{self.kind.resource}-resync") if self.resync_period > 0 else None
        try:
            while True:
                self._watch_delivered = False
                try:
                    if not self.resource_version or not self.synced:
                        await self._relist()
                    await self._watch_once()
                    delays.reset()
                except errors.GoneError as exc:
                    delay = delays.next()
                    log.info("%s informer: %s; relisting in %.1fs", self.kind.resource, exc, delay)
                    self.resource_version = ""
                    await asyncio.sleep(delay)
                except errors.SkiffError as exc:
                    if self._watch_delivered:
                        # The watch made progress before it failed (e.g. closed as too slow by the
                        # api-server): not a failing loop to back off from, and an informer that
                        # lags already must not idle for the backoff's longer waits.
                        delays.reset()
                    delay = delays.next()
                    log.warning("%s informer: %s; retrying in %.1fs", self.kind.resource, exc, delay)
                    await asyncio.sleep(delay)
                except Exception:
                    # Anything unexpected (a transport error the client did not translate, a bug):
                    # log it with its traceback and start over from a fresh list.
                    delay = delays.next()
                    log.exception("%s informer: unexpected error; relisting in %.1fs", self.kind.resource, delay)
                    self.resource_version = ""
                    await asyncio.sleep(delay)
        finally:
            if resync is not None:
                resync.cancel()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_period)
            for obj in list(self._items.values()):
                self._emit_update(obj, obj)


class InformerFactory:
    """One shared informer per (kind, namespace, selectors), so controllers share caches."""

    def __init__(self, client: ApiClient, *, resync_period: float = 0.0,
                 transforms: Mapping[type[Message], Transform] | None = None) -> None:
        """`transforms`: per message class, the transform of that kind's informers (one per
        process, since they are shared by every user of the factory)."""
        self.client = client
        self.resync_period = resync_period
        self.transforms = dict(transforms or {})
        self._informers: dict[tuple[str, str, str, str], Informer[Any]] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    def informer(self, cls: type[M], *, namespace: str = "", label_selector: str = "",
                 field_selector: str = "") -> Informer[M]:
        key = (cls.DESCRIPTOR.full_name, namespace, label_selector, field_selector)
        if key not in self._informers:
            self._informers[key] = Informer(self.client, cls, namespace=namespace, label_selector=label_selector,
                                            field_selector=field_selector, resync_period=self.resync_period,
                                            transform=self.transforms.get(cls))
        informer: Informer[M] = self._informers[key]
        return informer

    async def start(self) -> None:
        """Start every informer made so far that is not running yet."""
        running = len(self._tasks)
        for informer in list(self._informers.values())[running:]:
            self._tasks.append(guard(informer.run(), f"informer-{informer.kind.resource}"))

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i in self._informers.values())), timeout)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
