"""The ConfigMaps, Secrets, PersistentVolumeClaims and PersistentVolumes of this node's pods,
each fetched and watched on its own.

As the kubelet's `configMapAndSecretChangeDetectionStrategy: Watch`: the agent never lists or
watches these kinds cluster-wide (the Node authorizer refuses a node that; see
controlplane/apiserver/nodeauthz.py), only the objects the pods bound to it refer to.

What must hold:
- exactly the objects some owner refers to are watched, each by one informer of its own (its
  namespace, fieldSelector `metadata.name=<name>`), started when the first owner referring to
  it appears and stopped when the last one goes. Owners: each tracked pod (its references,
  skiff/podrefs.py), each watched claim (the PersistentVolume it is bound to, `spec.volumeName`:
  a pod reaches its volume through its claim, as in the node graph), and whatever the agent
  adds with `set_refs` (its local-path volumes, to reclaim them);
- an object is synced once its informer has listed, whether or not it exists; `synced_for(pod)`
  holds when every object the pod refers to is, and the volume of each of its bound claims:
  the pod's worker creates no container and pulls no image before (so a container never
  starts without a ConfigMap that was only not fetched yet, and "not found" means not found);
- every change of a watched object, and the first list of each (even when it found nothing),
  is reported to every subscriber as (resource, namespace, name);
- pods are keyed by uid, so one instance may serve many agents of one process (hollow nodes):
  each agent tracks and forgets its own pods and picks out its own pods on a change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from skiff import podrefs
from skiff.client import ApiClient
from skiff.guard import guard
from skiff.informer import Informer
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("nodeagent.configrefs")

Ref = tuple[str, str, str]  # (resource, namespace ("" for volumes), name)
Subscriber = Callable[[str, str, str], None]
CLAIMS, VOLUMES = "persistentvolumeclaims", "persistentvolumes"
_CLASSES: dict[str, type[Message]] = {"configmaps": t.ConfigMap, "secrets": t.Secret,
                                      CLAIMS: t.PersistentVolumeClaim, VOLUMES: t.PersistentVolume}


def refs_of(pod: t.Pod) -> set[Ref]:
    """The (resource, namespace, name) of every ConfigMap, Secret and claim `pod` refers to."""
    ns = pod.metadata.namespace
    return {(resource, ns, name) for resource in podrefs.RESOURCES for name in podrefs.referenced(pod, resource)}


def _claim_owner(ref: Ref) -> str:
    return f"claim:{ref[1]}/{ref[2]}"


@dataclass
class _Watch:
    informer: Informer[Any]
    task: asyncio.Task[Any]


class ConfigRefs:
    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._pods: dict[str, set[Ref]] = {}  # pod uid -> what it refers to
        self._users: dict[Ref, int] = {}  # how many tracked pods refer to it
        self._watches: dict[Ref, _Watch] = {}
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    # ------------------------------------------------------------------ pods

    def track(self, pod: t.Pod) -> None:
        """Watch what `pod` refers to now (a pod's references can change: ephemeral containers)."""
        self.set_refs(pod.metadata.uid, refs_of(pod))

    def forget(self, uid: str) -> None:
        """The pod is gone from this node: stop watching what only it referred to."""
        self.set_refs(uid, set())

    def set_refs(self, owner: str, refs: set[Ref]) -> None:
        """What `owner` (a pod uid, or another key of the caller's) refers to now; empty: nothing."""
        old = self._pods.get(owner, set())
        if refs == old and (owner in self._pods or not refs):
            return
        if refs:
            self._pods[owner] = refs
        else:
            self._pods.pop(owner, None)
        for ref in refs - old:
            self._users[ref] = self._users.get(ref, 0) + 1
            if ref not in self._watches:
                self._start(ref)
        self._release(old - refs)

    def _release(self, refs: set[Ref]) -> None:
        for ref in refs:
            self._users[ref] -= 1
            if self._users[ref] <= 0:
                del self._users[ref]
                watch = self._watches.pop(ref, None)
                if watch is not None:
                    watch.task.cancel()
                if ref[0] == CLAIMS:
                    self.set_refs(_claim_owner(ref), set())  # its volume, unless someone else uses it

    # ------------------------------------------------------------------ reading

    def get(self, resource: str, namespace: str, name: str) -> Message | None:
        watch = self._watches.get((resource, namespace, name))
        return watch.informer.get(name, namespace) if watch is not None else None

    def synced_for(self, pod: t.Pod) -> bool:
        refs = refs_of(pod)
        for ref in [r for r in refs if r[0] == CLAIMS]:
            refs |= self._pods.get(_claim_owner(ref), set())  # the volume a bound claim names
        for ref in refs:
            watch = self._watches.get(ref)
            if watch is None or not watch.informer.synced:
                return False
        return True

    def watched(self) -> set[Ref]:
        return set(self._watches)

    # ------------------------------------------------------------------ watches

    def _start(self, ref: Ref) -> None:
        resource, namespace, name = ref
        informer: Informer[Any] = Informer(self.client, _CLASSES[resource], namespace=namespace,
                                           field_selector=f"metadata.name={name}")

        def changed(*_: Any) -> None:
            self._notify(ref)

        informer.add_handler(on_add=changed, on_update=changed, on_delete=changed)
        task = guard(self._follow(ref, informer), f"nodeagent-{resource}-{namespace}/{name}")
        self._watches[ref] = _Watch(informer, task)

    async def _follow(self, ref: Ref, informer: Informer[Any]) -> None:
        runner = asyncio.ensure_future(informer.run())
        synced = asyncio.ensure_future(informer.wait_synced())
        try:
            await asyncio.wait({runner, synced}, return_when=asyncio.FIRST_COMPLETED)
            if informer.synced:
                self._notify(ref)  # also when it found nothing: "not found" is now an answer
            await runner
        finally:
            runner.cancel()
            synced.cancel()

    def _notify(self, ref: Ref) -> None:
        if ref[0] == CLAIMS and ref in self._watches:
            claim = self.get(*ref)
            volume = claim.spec.volume_name if isinstance(claim, t.PersistentVolumeClaim) else ""
            self.set_refs(_claim_owner(ref), {(VOLUMES, "", volume)} if volume else set())
        for subscriber in list(self._subscribers):
            subscriber(*ref)

    async def close(self) -> None:
        tasks = [w.task for w in self._watches.values()]
        self._watches.clear()
        self._users.clear()
        self._pods.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
