"""clusterdns the process: Service, Endpoints and Pod informers feed the zone the server answers from.

What must hold:
- the server gets its first zone only once all three informers have listed (before that,
  names of the cluster domain are SERVFAIL, never a false NXDOMAIN);
- every change rebuilds the whole zone from the caches (pure `build_zone`) and swaps it in
  at once, bursts merged by `min_rebuild_interval`; queries never wait for a rebuild;
- with the api-servers unreachable the informers keep their caches and retry, so the last
  zone keeps being served (this is what makes DNS survive an api-server outage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from clusterdns.server import DnsServer
from clusterdns.zone import build_zone
from skiff.client import ApiClient
from skiff.guard import guard
from skiff.informer import Informer, InformerFactory
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("clusterdns")


class ClusterDns:
    def __init__(self, client: ApiClient, server: DnsServer, *, min_rebuild_interval: float = 0.05) -> None:
        self.client = client
        self.server = server
        self.min_rebuild_interval = min_rebuild_interval
        self.factory = InformerFactory(client)
        self.services: Informer[t.Service] = self.factory.informer(t.Service)
        self.endpoints: Informer[t.Endpoints] = self.factory.informer(t.Endpoints)
        self.pods: Informer[t.Pod] = self.factory.informer(t.Pod)
        self._changed = asyncio.Event()
        self.rebuilds = 0
        for inf in (self.services, self.endpoints, self.pods):
            inf.add_handler(on_add=self._kick, on_update=self._kick, on_delete=self._kick)

    def _kick(self, *_: Any) -> None:
        self._changed.set()

    def rebuild(self) -> None:
        started = time.perf_counter()
        self.server.zone = build_zone(self.services.list(), self.endpoints.list(), self.pods.list(),
                                      self.server.config)
        self.rebuilds += 1
        log.debug("zone rebuilt: %d names in %.1f ms", len(self.server.zone.names),
                  (time.perf_counter() - started) * 1000)

    async def run(self) -> None:
        await self.factory.start()
        try:
            await self.factory.wait_synced()
            self._changed.clear()
            self.rebuild()
            log.info("caches synced: %d services, %d endpoints, %d pods; answering for %s",
                     len(self.services.keys()), len(self.endpoints.keys()), len(self.pods.keys()),
                     self.server.config.origin)
            while True:
                await self._changed.wait()
                await asyncio.sleep(self.min_rebuild_interval)
                self._changed.clear()
                self.rebuild()
        finally:
            await self.factory.stop()

    def start(self) -> asyncio.Task[Any]:
        return guard(self.run(), "clusterdns")
