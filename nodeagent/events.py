"""Events about pods, posted to the api-server without blocking the pod workers.

Posting is best effort (an Event lost while the api-server is away is acceptable, a stuck
worker is not): events go through a bounded queue to one background task. The same (pod,
reason, message) within `dedup_window` seconds is posted once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from skiff import errors
from skiff.client import ApiClient
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("nodeagent.events")


class EventRecorder:
    def __init__(self, client: ApiClient, node: str, *, clock: Callable[[], float] = time.time,
                 dedup_window: float = 60.0, max_queue: int = 1000) -> None:
        self.client = client
        self.node = node
        self.clock = clock
        self.dedup_window = dedup_window
        self.queue: asyncio.Queue[t.Event] = asyncio.Queue(max_queue)
        self._recent: dict[tuple[str, str, str], float] = {}
        self.posted: list[t.Event] = []  # kept (bounded) for tests and debugging

    def emit(self, pod: t.Pod, reason: str, message: str, *, warning: bool = False) -> None:
        now = self.clock()
        key = (pod.metadata.uid, reason, message)
        if now - self._recent.get(key, -1e18) < self.dedup_window:
            return
        if len(self._recent) > 10000:
            self._recent = {k: v for k, v in self._recent.items() if now - v < self.dedup_window}
        self._recent[key] = now
        ev = t.Event(api_version="v1", kind="Event", reason=reason, message=message,
                     type="Warning" if warning else "Normal", count=1, reporting_component="skiff-nodeagent",
                     source=t.EventSource(component="skiff-nodeagent", host=self.node),
                     involved_object=t.ObjectReference(kind="Pod", namespace=pod.metadata.namespace,
                                                       name=pod.metadata.name, uid=pod.metadata.uid,
                                                       api_version="v1"))
        ev.metadata.name = f"{pod.metadata.name}.{uuid.uuid4().hex[:16]}"
        ev.metadata.namespace = pod.metadata.namespace
        ev.first_timestamp.FromNanoseconds(int(now * 1e9))
        ev.last_timestamp.FromNanoseconds(int(now * 1e9))
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            log.warning("event queue full; dropping %s %s", reason, message)

    async def run(self) -> None:
        while True:
            ev = await self.queue.get()
            try:
                await self.client.create(ev)
                self.posted.append(ev)
                if len(self.posted) > 500:
                    del self.posted[:250]
            except errors.SkiffError as exc:
                log.debug("could not post event %s: %s", ev.reason, exc)
