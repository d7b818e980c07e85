"""What every queue-driven controller shares: a work queue, workers, and claiming of dependents.

What must hold:
- event handlers only turn objects into keys (`enqueue`); all work happens in `sync(key)`,
  which may be called any number of times for a key and raises to be retried with backoff;
- batched writes (`WriteBatcher`, kube-proxy's bounded-frequency runner per object): with a
  period > 0, a controller writes an object's status at once when it wrote none within the last
  period, else at the period's end, carrying every change since in one write; a change others
  wait on (`urgent`) is never held back;
- claiming (Kubernetes' ControllerRefManager): an owner adopts matching objects that have no
  controller, releases the ones it controls that no longer match, and never touches objects
  controlled by someone else; adoption first re-reads the owner from the api-server, so a
  stale cache never makes a deleted (or replaced) owner adopt anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import Message

from controlplane.common.podutil import (
    CONTROLLER_UID_INDEX,
    ORPHAN_INDEX,
    controller_ref,
    copy,
    owner_reference,
    pod_key,
)
from skiff import errors, labels
from skiff.client import ApiClient
from skiff.events import WARNING, Recorder
from skiff.informer import Informer, object_key
from skiff.workqueue import WorkQueue, run_workers

log = logging.getLogger("skiff.controllers")

M = TypeVar("M", bound=Message)


def batch_wait(last: float | None, now: float, period: float) -> float:
    """Seconds a write must still wait: none when nothing was written within `period` before `now`."""
    if last is None or period <= 0:
        return 0.0
    return max(0.0, last + period - now)


@dataclass
class WriteBatcher:
    """When each key was last written, so its next write can be held to one per `period`.

    Why: every write is paid through the api-server, Raft and every watcher; a ReplicaSet whose
    50 pods become ready one after another needs the last count written, not all 50. The
    queue already folds changes that arrive while a key waits; this folds the ones that arrive
    while its last write is fresh."""

    period: float = 0.0
    max_keys: int = 4096
    # Monotonic, as the queue's add_after: the period is real time even under a test's fake clock.
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)

    def wait(self, key: str, now: float) -> float:
        return batch_wait(self._last.get(key), now, self.period)

    def wrote(self, key: str, now: float) -> None:
        if self.period <= 0:
            return
        self._last[key] = now
        if len(self._last) > self.max_keys:  # only the keys written within a period matter
            self._last = {k: at for k, at in self._last.items() if at + self.period > now}


def condition_states(conds: Sequence[Any]) -> list[tuple[str, str, str]]:
    """What a list of conditions says, without its timestamps and messages: a change here is one
    a reader waits on (urgent), a change of timestamps alone is not."""
    return sorted((c.type, c.status, c.reason) for c in conds)


class QueueController:
    name = "controller"

    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 300.0, batch_period: float = 0.0) -> None:
        self.queue = WorkQueue(name=self.name, base_delay=base_delay, max_delay=max_delay)
        self.batches = WriteBatcher(batch_period)

    def hold_write(self, key: str, *, urgent: bool = False) -> bool:
        """True when the write of `key` waits for its batch period (the key is queued for its end);
        False when it goes now (and is noted as written)."""
        now = self.batches.clock()
        wait = 0.0 if urgent else self.batches.wait(key, now)
        if wait > 0:
            self.queue.add_after(key, wait)
            return True
        self.batches.wrote(key, now)
        return False

    async def sync(self, key: str) -> None:
        raise NotImplementedError

    def enqueue(self, obj: Any) -> None:
        self.queue.add(object_key(obj))

    def enqueue_controllers_of(self, dependents: Informer[Any], owner_kind: str) -> None:
        """Any change of a dependent (added, updated, deleted) queues the `owner_kind` that controls it."""
        def changed(obj: Any) -> None:
            ref = controller_ref(obj)
            if ref is not None and ref.kind == owner_kind:
                self.queue.add(f"{obj.metadata.namespace}/{ref.name}")
        dependents.add_handler(on_add=changed, on_update=lambda old, new: changed(new), on_delete=changed)

    async def run(self, *, workers: int = 1) -> None:
        await run_workers(self.queue, self.sync, workers=workers)

    def shutdown(self) -> None:
        self.queue.shutdown()


def live_controller(owners: Informer[M], obj: Any, owner_kind: str) -> M | None:
    """The `owner_kind` in `owners`' cache that controls `obj` — the same uid, so a deleted and
    re-created owner of the same name is not taken for the old one; None when there is none."""
    ref = controller_ref(obj)
    if ref is None or ref.kind != owner_kind:
        return None
    owner = owners.get(ref.name, obj.metadata.namespace)
    return owner if owner is not None and owner.metadata.uid == ref.uid else None  # type: ignore[attr-defined]


def selector_or_event(owner: Any, recorder: Recorder) -> labels.Selector | None:
    """The owner's label selector; None (after an InvalidSelector warning on the owner) when it cannot be parsed."""
    try:
        return labels.from_label_selector(owner.spec.selector)
    except labels.SelectorError as exc:
        recorder.event(owner, WARNING, "InvalidSelector", str(exc))
        return None


def claim_candidates(dependents: Informer[M], owner: Any) -> list[M]:
    """What `claim` looks at: the dependents `owner` controls and the orphans of its namespace
    (both from the informer's indexes, which the controller registers)."""
    return [*dependents.by_index(CONTROLLER_UID_INDEX, owner.metadata.uid),
            *dependents.by_index(ORPHAN_INDEX, owner.metadata.namespace)]


def _deleting(obj: Any) -> bool:
    return bool(obj.metadata.HasField("deletion_timestamp"))


async def claim(client: ApiClient, owner: Any, candidates: Sequence[M], selector: labels.Selector) -> list[M]:
    """The candidates `owner` controls after adopting matching orphans and releasing non-matching ones."""
    uid = owner.metadata.uid
    owned: list[M] = []
    adoption_checked = False
    for obj in candidates:
        meta = obj.metadata  # type: ignore[attr-defined]
        ref = controller_ref(obj)
        matches = labels.matches(selector, meta.labels)
        if ref is not None:
            if ref.uid != uid:
                continue
            if matches:
                owned.append(obj)
            elif not _deleting(owner):
                await release(client, owner, obj)
            continue
        if _deleting(owner) or _deleting(obj) or not matches:
            continue
        if not adoption_checked:
            await _check_can_adopt(client, owner)
            adoption_checked = True
        adopted = await adopt(client, owner, obj)
        if adopted is not None:
            owned.append(adopted)
    return owned


async def _check_can_adopt(client: ApiClient, owner: Any) -> None:
    kind_cls = type(owner)
    try:
        fresh = await client.get(kind_cls, owner.metadata.name, owner.metadata.namespace)
    except errors.NotFoundError as exc:
        raise errors.ConflictError(f"{owner.metadata.name} is gone; not adopting") from exc
    if fresh.metadata.uid != owner.metadata.uid:
        raise errors.ConflictError(f"original {owner.metadata.name} is gone: got uid {fresh.metadata.uid}, "
                                   f"wanted {owner.metadata.uid}")
    if _deleting(fresh):
        raise errors.ConflictError(f"{owner.metadata.name} is being deleted; not adopting")


async def adopt(client: ApiClient, owner: Any, obj: M) -> M | None:
    new = copy(obj)
    new.metadata.owner_references.append(owner_reference(owner))  # type: ignore[attr-defined]
    try:
        return await client.update(new)
    except errors.NotFoundError:
        return None


async def release(client: ApiClient, owner: Any, obj: M) -> None:
    new = copy(obj)
    refs = [r for r in new.metadata.owner_references if r.uid != owner.metadata.uid]  # type: ignore[attr-defined]
    del new.metadata.owner_references[:]  # type: ignore[attr-defined]
    new.metadata.owner_references.extend(refs)  # type: ignore[attr-defined]
    try:
        await client.update(new)
    except errors.NotFoundError:
        pass
    log.info("%s released %s", owner.metadata.name, object_key(obj))


async def write_status(client: ApiClient, obj: M, status: Message) -> None:
    """Write `status` onto `obj`; on a conflict (the cache lagging behind our own last write) once more
    onto the object as the api-server has it, unless that is another object of the same name.

    Only for status a single controller owns, computed from what it observed."""
    updated = copy(obj)
    updated.status.CopyFrom(status)  # type: ignore[attr-defined]
    try:
        await client.update_status(updated)
    except errors.NotFoundError:
        return
    except errors.ConflictError:
        meta = obj.metadata  # type: ignore[attr-defined]
        try:
            fresh = await client.get(type(obj), meta.name, meta.namespace)
        except errors.NotFoundError:
            return
        if fresh.metadata.uid != meta.uid:  # type: ignore[attr-defined]
            return
        fresh.status.CopyFrom(status)  # type: ignore[attr-defined]
        await client.update_status(fresh)


class ExpectingPodHandlers:
    """Pod event handlers of a controller that owns pods directly and keeps create/delete
    expectations (Job, DaemonSet): an owned pod seen added, being deleted or gone is observed
    against its owner's expectations and the owner is looked at again.

    The controller provides `_owner(pod)` (its live owner, None when not ours), `expectations`
    and `enqueue`.
    """

    expectations: Any

    def _owner(self, pod: Any) -> Message | None:
        raise NotImplementedError

    def enqueue(self, obj: Message) -> None:
        raise NotImplementedError

    def _pod_added(self, pod: Any) -> None:
        owner = self._owner(pod)
        if owner is not None:
            self.expectations.creation_observed(object_key(owner))
            self.enqueue(owner)

    def _pod_updated(self, old: Any, new: Any) -> None:
        owner = self._owner(new)
        if owner is not None:
            if new.metadata.HasField("deletion_timestamp") and not old.metadata.HasField("deletion_timestamp"):
                self.expectations.deletion_observed(object_key(owner), pod_key(new))
            self.enqueue(owner)

    def _pod_deleted(self, pod: Any) -> None:
        owner = self._owner(pod)
        if owner is not None:
            self.expectations.deletion_observed(object_key(owner), pod_key(pod))
            self.enqueue(owner)
