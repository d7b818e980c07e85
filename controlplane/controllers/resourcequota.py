"""The resource quota controller: keeps each ResourceQuota's status (hard, used) current.

What must hold:
- status.hard is spec.hard; status.used has one entry per hard resource: what the namespace's
  objects use now (skiff/quota.py, the same accounting the api-server's admission enforces);
- usage is counted from a fresh List of the kinds the quota names (pods for compute resources),
  so counts of kinds this controller does not watch are right too; pods and quota events
  trigger a sync at once, everything else within `resync_period`;
- the status is written only when it changes.
"""

from __future__ import annotations

import asyncio
import logging

from controlplane.controllers.base import QueueController
from skiff import kinds, quota
from skiff.client import ApiClient
from skiff.guard import guard
from skiff.informer import InformerFactory, split_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.resourcequota")
COMPUTE_NAMES = frozenset(name for name, _, _ in quota.POD_RESOURCES)


def kinds_for(hard: list[str]) -> list[kinds.Kind]:
    """The kinds whose objects a quota with these `hard` names counts."""
    out: dict[str, kinds.Kind] = {}
    for name in hard:
        resource = name.removeprefix("count/").split(".", 1)[0]
        if name in COMPUTE_NAMES:
            resource = "pods"
        kind = kinds.by_resource(resource)
        if kind is not None and kind.namespaced:
            out[kind.resource] = kind
    return list(out.values())


class ResourceQuotaController(QueueController):
    name = "resourcequota"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, resync_period: float = 10.0) -> None:
        super().__init__()
        self.client = client
        self.resync_period = resync_period
        self.quotas = factory.informer(t.ResourceQuota)
        self.pods = factory.informer(t.Pod)
        self.quotas.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.pods.add_handler(on_add=self._pod_changed, on_update=lambda old, new: self._pod_changed(new),
                              on_delete=self._pod_changed)

    def _pod_changed(self, pod: t.Pod) -> None:
        for q in self.quotas.list(pod.metadata.namespace):
            self.enqueue(q)

    async def run(self, *, workers: int = 1) -> None:
        async def resync() -> None:
            while True:
                await asyncio.sleep(self.resync_period)
                for q in self.quotas.list():
                    self.enqueue(q)

        ticker = guard(resync(), f"{self.name}-resync")
        try:
            await super().run(workers=workers)
        finally:
            ticker.cancel()

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        current = self.quotas.get(name, namespace)
        if current is None:
            return
        objs = []
        for kind in kinds_for(list(current.spec.hard)):
            objs.extend((await self.client.list(kind.message, namespace=namespace)).items)  # type: ignore[type-var]
        status = quota.quota_status(current, quota.namespace_usage(objs))
        if status == current.status:
            return
        new = t.ResourceQuota()
        new.CopyFrom(current)
        new.status.CopyFrom(status)
        await self.client.update_status(new)
