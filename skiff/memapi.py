"""An in-memory api-server for unit tests: the ApiClient contract without processes.

It keeps what controllers and agents rely on: resourceVersions from one counter, conflicts
on a stale resourceVersion, uid/creationTimestamp/generation stamping, Update ignoring
status and UpdateStatus ignoring spec, finalizers holding deletion, watch from a
resourceVersion with history (and GoneError once `compact()` dropped it), selectors, and
the Kubernetes rule that an object leaving a watcher's selector is seen as DELETED.
It does not validate or default: that is the real api-server's job.

Every call is recorded in `actions` as (verb, resource, namespace, name) so tests can count
creates and deletes; `fail_next()` injects an error into the next matching call.
"""

from __future__ import annotations

import asyncio
import random
import string
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import Message

from skiff import errors, kinds, labels
from skiff.client import DEFAULT_NAMESPACE, ObjectList, WatchEvent, namespace_for
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t

M = TypeVar("M", bound=Message)


@dataclass
class _Watcher:
    resource: str
    namespace: str
    selector: labels.Selector
    fields: tuple[labels.FieldRequirement, ...]
    queue: asyncio.Queue[tuple[str, Message, Message | None]] = field(default_factory=asyncio.Queue)


def _copy(msg: M) -> M:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


class MemoryApi:
    def __init__(self, *, graceful_pod_deletion: bool = False, clock: Any = time.time) -> None:
        self.graceful_pod_deletion = graceful_pod_deletion
        self.clock = clock
        self.revision = 1
        self.compacted = 0
        self.actions: list[tuple[str, str, str, str]] = []
        self._objects: dict[tuple[str, str, str], Message] = {}
        # (revision, type, object, previous object) for watches from a resourceVersion.
        self._history: list[tuple[int, str, Message, Message | None]] = []
        self._watchers: list[_Watcher] = []
        self._failures: list[tuple[str, str, errors.SkiffError]] = []

    # ------------------------------------------------------------------ test helpers

    def fail_next(self, verb: str, resource: str, error: errors.SkiffError) -> None:
        """Make the next `verb` ("create", "update", ...) on `resource` raise `error`."""
        self._failures.append((verb, resource, error))

    def count(self, verb: str, resource: str = "") -> int:
        return sum(1 for a in self.actions if a[0] == verb and (not resource or a[1] == resource))

    def objects(self, cls: type[M]) -> list[M]:
        kind = kinds.of_message(cls())
        return [_copy(o) for (r, _, _), o in sorted(self._objects.items()) if r == kind.resource]  # type: ignore[misc]

    def compact(self, revision: int | None = None) -> None:
        """Forget history up to `revision` (default: now): older watches get GoneError."""
        self.compacted = self.revision if revision is None else revision
        self._history = [h for h in self._history if h[0] > self.compacted]

    # ------------------------------------------------------------------ internals

    def _record(self, verb: str, kind: kinds.Kind, namespace: str, name: str) -> None:
        self.actions.append((verb, kind.resource, namespace, name))
        for i, (v, r, err) in enumerate(self._failures):
            if v == verb and r == kind.resource:
                del self._failures[i]
                raise err

    def _now(self) -> t.ObjectMeta:
        meta = t.ObjectMeta()
        meta.creation_timestamp.FromNanoseconds(int(self.clock() * 1e9))
        return meta

    def _bump(self, obj: Message) -> None:
        self.revision += 1
        obj.metadata.resource_version = str(self.revision)  # type: ignore[attr-defined]

    def _notify(self, event_type: str, kind: kinds.Kind, obj: Message, old: Message | None) -> None:
        self._history.append((self.revision, event_type, _copy(obj), _copy(old) if old is not None else None))
        for w in self._watchers:
            if w.resource == kind.resource:
                w.queue.put_nowait((event_type, _copy(obj), _copy(old) if old is not None else None))

    @staticmethod
    def _matches(w: _Watcher, obj: Message | None) -> bool:
        if obj is None:
            return False
        meta = obj.metadata  # type: ignore[attr-defined]
        if w.namespace and meta.namespace != w.namespace:
            return False
        return labels.matches(w.selector, meta.labels) and labels.fields_match(w.fields, obj)

    @staticmethod
    def _translate(w: _Watcher, event_type: str, obj: Message, old: Message | None) -> str | None:
        """The event type this watcher sees, or None (Kubernetes' selector semantics)."""
        now, before = MemoryApi._matches(w, obj), MemoryApi._matches(w, old)
        if event_type == "DELETED":
            return "DELETED" if now else None
        if event_type == "ADDED":
            return "ADDED" if now else None
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        return "DELETED" if before else None

    def _key(self, kind: kinds.Kind, namespace: str, name: str) -> tuple[str, str, str]:
        return (kind.resource, namespace_for(kind, namespace), name)

    def _remove(self, kind: kinds.Kind, key: tuple[str, str, str]) -> Message:
        obj = self._objects.pop(key)
        self._bump(obj)
        self._notify("DELETED", kind, obj, None)
        return obj

    # ------------------------------------------------------------------ ApiClient

    async def create(self, obj: M, *, namespace: str = "") -> M:
        kind = kinds.of_message(obj)
        new = _copy(obj)
        meta = new.metadata  # type: ignore[attr-defined]
        if kind.namespaced:
            meta.namespace = meta.namespace or namespace or DEFAULT_NAMESPACE
        if not meta.name and meta.generate_name:
            meta.name = meta.generate_name + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        self._record("create", kind, meta.namespace, meta.name)
        if not meta.name:
            raise errors.InvalidError("metadata.name: name or generateName is required")
        key = self._key(kind, meta.namespace, meta.name)
        if key in self._objects:
            raise errors.AlreadyExistsError(f'{kind.resource} "{meta.name}" already exists')
        new.api_version, new.kind = kind.api_version, kind.kind  # type: ignore[attr-defined]
        meta.uid = str(uuid.uuid4())
        meta.creation_timestamp.CopyFrom(self._now().creation_timestamp)
        if "spec" in new.DESCRIPTOR.fields_by_name:
            meta.generation = 1
        self._bump(new)
        self._objects[key] = new
        self._notify("ADDED", kind, new, None)
        return _copy(new)

    async def get(self, cls: type[M], name: str, namespace: str = "") -> M:
        kind = kinds.of_message(cls())
        self._record("get", kind, namespace, name)
        obj = self._objects.get(self._key(kind, namespace, name))
        if obj is None:
            raise errors.NotFoundError(f'{kind.resource} "{name}" not found')
        return _copy(obj)  # type: ignore[return-value]

    async def list(self, cls: type[M], *, namespace: str = "", label_selector: str = "",
                   field_selector: str = "") -> ObjectList[M]:
        kind = kinds.of_message(cls())
        self._record("list", kind, namespace, "")
        w = _Watcher(kind.resource, namespace, labels.parse(label_selector), labels.parse_fields(field_selector))
        items = [_copy(o) for (r, _, _), o in sorted(self._objects.items()) if r == kind.resource
                 and self._matches(w, o)]
        return ObjectList(items, str(self.revision))  # type: ignore[arg-type]

    async def _replace(self, obj: M, *, status: bool) -> M:
        kind = kinds.of_message(obj)
        meta = obj.metadata  # type: ignore[attr-defined]
        self._record("update_status" if status else "update", kind, meta.namespace, meta.name)
        key = self._key(kind, meta.namespace, meta.name)
        current = self._objects.get(key)
        if current is None:
            raise errors.NotFoundError(f'{kind.resource} "{meta.name}" not found')
        cur_meta = current.metadata  # type: ignore[attr-defined]
        if meta.resource_version and meta.resource_version != cur_meta.resource_version:
            raise errors.ConflictError(
                f'Operation cannot be fulfilled on {kind.resource} "{meta.name}": the object has been modified; '
                "please apply your changes to the latest version and try again")
        has_status = "status" in current.DESCRIPTOR.fields_by_name
        if status:
            new = _copy(current)
            if has_status:
                new.status.CopyFrom(obj.status)  # type: ignore[attr-defined]
        else:
            new = _copy(obj)
            new.api_version, new.kind = kind.api_version, kind.kind  # type: ignore[attr-defined]
            if has_status:
                new.ClearField("status")
                if current.HasField("status"):
                    new.status.CopyFrom(current.status)  # type: ignore[attr-defined]
            m = new.metadata  # type: ignore[attr-defined]
            m.uid, m.namespace, m.generation = cur_meta.uid, cur_meta.namespace, cur_meta.generation
            m.creation_timestamp.CopyFrom(cur_meta.creation_timestamp)
            m.ClearField("deletion_timestamp")
            if cur_meta.HasField("deletion_timestamp"):
                m.deletion_timestamp.CopyFrom(cur_meta.deletion_timestamp)
            if "spec" in current.DESCRIPTOR.fields_by_name and new.spec != current.spec:  # type: ignore[attr-defined]
                m.generation = cur_meta.generation + 1
        self._bump(new)
        new_meta = new.metadata  # type: ignore[attr-defined]
        if new_meta.HasField("deletion_timestamp") and not new_meta.finalizers and not self._graceful(kind, new):
            self._objects.pop(key)
            self._notify("DELETED", kind, new, current)
            return _copy(new)  # type: ignore[return-value]
        self._objects[key] = new
        self._notify("MODIFIED", kind, new, current)
        return _copy(new)  # type: ignore[return-value]

    async def update(self, obj: M) -> M:
        return await self._replace(obj, status=False)

    async def update_status(self, obj: M) -> M:
        return await self._replace(obj, status=True)

    def _graceful(self, kind: kinds.Kind, obj: Message) -> bool:
        """Whether deleting `obj` waits for its node agent (a bound pod, when enabled)."""
        return self.graceful_pod_deletion and kind.kind == "Pod" and bool(obj.spec.node_name)  # type: ignore[attr-defined]

    async def delete(self, cls: type[M], name: str, namespace: str = "", *,
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     preconditions: api.Preconditions | None = None) -> M:
        kind = kinds.of_message(cls())
        self._record("delete", kind, namespace_for(kind, namespace), name)
        key = self._key(kind, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise errors.NotFoundError(f'{kind.resource} "{name}" not found')
        meta = current.metadata  # type: ignore[attr-defined]
        if preconditions is not None:
            if preconditions.uid and preconditions.uid != meta.uid:
                raise errors.ConflictError(f'precondition failed: uid in precondition: {preconditions.uid}, '
                                           f"uid in object meta: {meta.uid}")
            if preconditions.resource_version and preconditions.resource_version != meta.resource_version:
                raise errors.ConflictError("precondition failed: resourceVersion mismatch")
        finalizers = list(meta.finalizers)
        if propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if propagation_policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        graceful = self._graceful(kind, current) and grace_period_seconds != 0
        if not finalizers and not graceful:
            return self._remove(kind, key)  # type: ignore[return-value]
        if meta.HasField("deletion_timestamp") and list(meta.finalizers) == finalizers:
            return _copy(current)  # type: ignore[return-value]
        new = _copy(current)
        new_meta = new.metadata  # type: ignore[attr-defined]
        del new_meta.finalizers[:]
        new_meta.finalizers.extend(finalizers)
        if not new_meta.HasField("deletion_timestamp"):
            new_meta.deletion_timestamp.FromNanoseconds(int(self.clock() * 1e9))
            grace = grace_period_seconds if grace_period_seconds is not None else 30
            new_meta.deletion_grace_period_seconds = grace
        self._bump(new)
        self._objects[key] = new
        self._notify("MODIFIED", kind, new, current)
        return _copy(new)  # type: ignore[return-value]

    async def watch(self, cls: type[M], *, namespace: str = "", label_selector: str = "",  # type: ignore[override]
                    field_selector: str = "", resource_version: str = "", send_initial_events: bool = False,
                    allow_bookmarks: bool = False, timeout_seconds: int = 0) -> AsyncIterator[WatchEvent[M]]:
        kind = kinds.of_message(cls())
        self._record("watch", kind, namespace, "")
        w = _Watcher(kind.resource, namespace, labels.parse(label_selector), labels.parse_fields(field_selector))
        backlog: list[tuple[str, Message, Message | None]] = []
        if resource_version and int(resource_version) < self.compacted:
            raise errors.GoneError(f"too old resource version: {resource_version} ({self.compacted})")
        if send_initial_events and not resource_version:
            for (r, _, _), o in sorted(self._objects.items()):
                if r == kind.resource:
                    backlog.append(("ADDED", _copy(o), None))
        elif resource_version:
            start = int(resource_version)
            backlog.extend((typ, obj, old) for rev, typ, obj, old in self._history
                           if rev > start and kinds.of_message(obj).resource == kind.resource)
        self._watchers.append(w)
        try:
            for typ, obj, old in backlog:
                seen = self._translate(w, typ, obj, old)
                if seen is not None:
                    yield WatchEvent(seen, obj)  # type: ignore[arg-type]
            if send_initial_events and not resource_version:
                bookmark = kinds.new(kind)
                bookmark.metadata.resource_version = str(self.revision)  # type: ignore[attr-defined]
                yield WatchEvent("BOOKMARK", bookmark)  # type: ignore[arg-type]
            while True:
                typ, obj, old = await w.queue.get()
                seen = self._translate(w, typ, obj, old)
                if seen is not None:
                    yield WatchEvent(seen, obj)  # type: ignore[arg-type]
        finally:
            self._watchers.remove(w)

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str = "") -> t.Pod:
        kind = kinds.by_kind("Pod")
        assert kind is not None
        self._record("bind", kind, namespace or DEFAULT_NAMESPACE, pod)
        key = self._key(kind, namespace, pod)
        current = self._objects.get(key)
        if current is None:
            raise errors.NotFoundError(f'pods "{pod}" not found')
        assert isinstance(current, t.Pod)
        if uid and current.metadata.uid != uid:
            raise errors.ConflictError(f'pod "{pod}" was replaced (uid changed)')
        if current.spec.node_name:
            raise errors.PodAlreadyAssignedError(f'pod "{pod}" is already assigned to node "{current.spec.node_name}"')
        new = _copy(current)
        new.spec.node_name = node
        cond = new.status.conditions.add(type="PodScheduled", status="True")
        cond.last_transition_time.FromNanoseconds(int(self.clock() * 1e9))
        self._bump(new)
        self._objects[key] = new
        self._notify("MODIFIED", kind, new, current)
        return _copy(new)

    async def close(self) -> None:
        return None
