"""The garbage collector: cascading deletion through ownerReferences.

What must hold (Kubernetes' garbage collector semantics):
- background: a dependent none of whose owners exists any more is deleted; owners that
  are gone are removed from a dependent that still has a live owner;
- foreground: an owner with a deletionTimestamp and the `foregroundDeletion` finalizer has
  its dependents deleted first; the finalizer is removed (letting the owner go) once no
  dependent with blockOwnerDeletion is left;
- orphan: an owner with the `orphan` finalizer has its ownerReference removed from every
  dependent, then the finalizer is removed; the dependents live on;
- "gone" is decided by the api-server, never by a cache alone: an owner missing from (or
  different in) the cache is looked up live by name and uid before anything is deleted, so
  a cache that has not synced yet never causes a deletion; deletions carry a uid
  precondition so a re-created object of the same name is never hit.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.message import Message

from controlplane.common import podutil
from controlplane.controllers.base import QueueController
from skiff import errors, kinds
from skiff.client import ApiClient
from skiff.informer import Informer, InformerFactory
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.gc")

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
OWNER_UID_INDEX = "owner-uid"
# Kinds whose objects can own or be owned. Events are left to their own expiry.
GC_KINDS: tuple[type[Message], ...] = (t.Deployment, t.ReplicaSet, t.Pod, t.Service, t.Endpoints, t.Lease, t.Node,
                                       t.Job, t.CronJob, t.DaemonSet, t.StatefulSet, t.ControllerRevision,
                                       t.PersistentVolumeClaim)  # StatefulSets' retention policy


def index_owner_uids(obj: Any) -> list[str]:
    return [ref.uid for ref in obj.metadata.owner_references]


def item_key(obj: Any) -> str:
    kind = kinds.of_message(obj).kind
    return f"{kind}/{obj.metadata.namespace}/{obj.metadata.name}"


def parse_key(key: str) -> tuple[str, str, str]:
    kind, namespace, name = key.split("/", 2)
    return kind, namespace, name


def deleting(obj: Any) -> bool:
    return bool(obj.metadata.HasField("deletion_timestamp"))


class GarbageCollector(QueueController):
    name = "garbagecollector"

    def __init__(self, client: ApiClient, factory: InformerFactory) -> None:
        super().__init__()
        self.client = client
        self.informers: dict[str, Informer[Any]] = {}
        for cls in GC_KINDS:
            informer = factory.informer(cls)
            informer.add_indexer(OWNER_UID_INDEX, index_owner_uids)
            informer.add_handler(on_add=self._changed, on_update=self._updated, on_delete=self._deleted)
            self.informers[kinds.of_message(cls()).kind] = informer

    # ------------------------------------------------------------------ handlers

    def _interesting(self, obj: Any) -> bool:
        meta = obj.metadata
        return bool(meta.owner_references) or (deleting(obj) and (FOREGROUND in meta.finalizers
                                                                  or ORPHAN in meta.finalizers))

    def _changed(self, obj: Any) -> None:
        if self._interesting(obj):
            self.queue.add(item_key(obj))

    def _updated(self, old: Any, new: Any) -> None:
        o, n = old.metadata, new.metadata
        if (o.owner_references != n.owner_references or o.finalizers != n.finalizers
                or o.HasField("deletion_timestamp") != n.HasField("deletion_timestamp")):
            self._changed(new)

    def _deleted(self, obj: Any) -> None:
        # Its dependents may now be orphans; owners waiting in foreground may now be free.
        for dep in self.dependents(obj.metadata.uid):
            self.queue.add(item_key(dep))
        for ref in obj.metadata.owner_references:
            kind = kinds.by_kind(ref.kind)
            if kind is not None and kind.kind in self.informers:
                self.queue.add(f"{kind.kind}/{obj.metadata.namespace if kind.namespaced else ''}/{ref.name}")

    def dependents(self, uid: str) -> list[Any]:
        out: list[Any] = []
        for informer in self.informers.values():
            out.extend(informer.by_index(OWNER_UID_INDEX, uid))
        return out

    # ------------------------------------------------------------------ sync

    async def sync(self, key: str) -> None:
        kind_name, namespace, name = parse_key(key)
        informer = self.informers.get(kind_name)
        if informer is None:
            return
        obj = informer.get(name, namespace)
        if obj is None:
            return
        if deleting(obj):
            if FOREGROUND in obj.metadata.finalizers:
                await self._delete_dependents(obj)
            elif ORPHAN in obj.metadata.finalizers:
                await self._orphan_dependents(obj)
            return
        if obj.metadata.owner_references:
            await self._check_owners(obj)

    async def _owner_state(self, ref: t.OwnerReference, namespace: str) -> str:
        """"absent", "waiting" (being deleted in foreground), "present" or "unknown"."""
        kind = kinds.by_kind(ref.kind)
        if kind is None:
            return "unknown"
        ns = namespace if kind.namespaced else ""
        informer = self.informers.get(kind.kind)
        owner: Any = informer.get(ref.name, ns) if informer is not None else None
        if owner is None or owner.metadata.uid != ref.uid:
            try:
                owner = await self.client.get(kind.message, ref.name, ns)
            except errors.NotFoundError:
                return "absent"
            if owner.metadata.uid != ref.uid:
                return "absent"
        if deleting(owner) and FOREGROUND in owner.metadata.finalizers:
            return "waiting"
        return "present"

    async def _check_owners(self, obj: Any) -> None:
        namespace = obj.metadata.namespace
        states = {ref.uid: await self._owner_state(ref, namespace) for ref in obj.metadata.owner_references}
        solid = [uid for uid, s in states.items() if s in ("present", "unknown")]
        if solid:
            stale = {uid for uid, s in states.items() if s == "absent"}
            if stale:
                await self._remove_refs(obj, stale)
            return
        waiting = [uid for uid, s in states.items() if s == "waiting"]
        has_dependents = bool(self.dependents(obj.metadata.uid))
        if waiting and has_dependents:
            policy = "Foreground"  # the owner waits for us, so we wait for ours
        elif ORPHAN in obj.metadata.finalizers:
            policy = "Orphan"
        elif FOREGROUND in obj.metadata.finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        await self._delete(obj, policy)

    async def _delete(self, obj: Any, policy: str) -> None:
        kind = kinds.of_message(obj)
        try:
            await self.client.delete(type(obj), obj.metadata.name, obj.metadata.namespace, propagation_policy=policy,
                                     preconditions=api.Preconditions(uid=obj.metadata.uid))
        except errors.NotFoundError:
            return
        except errors.ConflictError:
            return  # a different object of that name now: not ours to delete
        log.info("deleted %s %s/%s (%s): its owners are gone", kind.kind, obj.metadata.namespace,
                 obj.metadata.name, policy)

    async def _remove_refs(self, obj: Any, uids: set[str]) -> None:
        new = podutil.copy(obj)
        keep = [r for r in new.metadata.owner_references if r.uid not in uids]
        del new.metadata.owner_references[:]
        new.metadata.owner_references.extend(keep)
        try:
            await self.client.update(new)
        except errors.NotFoundError:
            pass

    async def _delete_dependents(self, owner: Any) -> None:
        uid = owner.metadata.uid
        deps = self.dependents(uid)
        blocking = []
        for dep in deps:
            ref = next((r for r in dep.metadata.owner_references if r.uid == uid), None)
            if ref is not None and ref.block_owner_deletion:
                blocking.append(dep)
            if not deleting(dep):
                policy = "Foreground" if self.dependents(dep.metadata.uid) else "Background"
                await self._delete(dep, policy)
        if not blocking:
            await self._remove_finalizer(owner, FOREGROUND)

    async def _orphan_dependents(self, owner: Any) -> None:
        uid = owner.metadata.uid
        for dep in self.dependents(uid):
            await self._remove_refs(dep, {uid})
        await self._remove_finalizer(owner, ORPHAN)

    async def _remove_finalizer(self, obj: Any, finalizer: str) -> None:
        try:
            fresh = await self.client.get(type(obj), obj.metadata.name, obj.metadata.namespace)
        except errors.NotFoundError:
            return
        if fresh.metadata.uid != obj.metadata.uid or finalizer not in fresh.metadata.finalizers:
            return
        keep = [f for f in fresh.metadata.finalizers if f != finalizer]
        del fresh.metadata.finalizers[:]
        fresh.metadata.finalizers.extend(keep)
        try:
            await self.client.update(fresh)
        except errors.NotFoundError:
            pass
