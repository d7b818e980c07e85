"""netproxy the process: informers for Services, Endpoints and its own Node feed a sync runner.

Event handlers only note what changed and request a sync; a sync reads the informer caches,
builds a Snapshot and hands it to the Proxier. What must hold:
- rules are first written only after all informers have synced (a half-listed cluster would
  delete the rules of every Service not listed yet);
- network programming latency is measured per Endpoints change made after startup: from
  the `endpoints.kubernetes.io/last-change-trigger-time` annotation when the endpoints
  controller sets one (it is when the Pod change that caused it happened), else from when
  netproxy saw the change, to when the sync that included it finished applying; a change
  whose sync failed stays pending with its original time;
- each sync logs one line: kind, duration, what changed, the rule count;
- with an iptables for NetworkPolicy, the enforcer (netproxy/netpol) runs beside the proxier
  on the same informer factory, with its own runner: a slow policy sync never delays a
  Service change, nor the other way round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from netproxy.iptables.command import Iptables
from netproxy.metrics import Metrics
from netproxy.model import ServiceKey, ServicePortTable, node_ips
from netproxy.netpol.enforcer import NetpolEnforcer
from netproxy.proxier import Proxier, Snapshot
from netproxy.sync import SyncRunner
from skiff.client import ApiClient
from skiff.informer import Informer, InformerFactory, object_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("netproxy")

TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def trigger_time(eps: t.Endpoints) -> float | None:
    """The annotation's time as unix seconds, or None when absent or unreadable."""
    text = eps.metadata.annotations.get(TRIGGER_ANNOTATION, "")
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ChangeTracker:
    """Endpoints changes not yet applied, each with the earliest time it was triggered."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.pending: dict[str, float] = {}

    def changed(self, key: str, when: float | None = None) -> None:
        at = when if when is not None else self.clock()
        self.pending[key] = min(self.pending.get(key, at), at)

    def take(self) -> dict[str, float]:
        taken, self.pending = self.pending, {}
        return taken

    def give_back(self, taken: dict[str, float]) -> None:
        for key, at in taken.items():
            self.changed(key, at)


class NetProxy:
    def __init__(self, client: ApiClient, proxier: Proxier, *, node_name: str = "", min_sync_period: float = 1.0,
                 sync_period: float = 30.0, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time, netpol: Iptables | None = None) -> None:
        self.client = client
        self.proxier = proxier
        self.node_name = node_name
        self.metrics = metrics or Metrics(mode=proxier.mode)
        self.clock = clock
        self.changes = ChangeTracker(clock)
        self.runner = SyncRunner(self._sync, min_interval=min_sync_period, sync_period=sync_period)
        self.factory = InformerFactory(client)
        self.services: Informer[t.Service] = self.factory.informer(t.Service)
        self.endpoints: Informer[t.Endpoints] = self.factory.informer(t.Endpoints)
        # All Nodes rather than a field selector on ours: there are few, and every api-server
        # serves an unfiltered watch.
        self.nodes: Informer[t.Node] | None = self.factory.informer(t.Node) if node_name else None
        self.synced = asyncio.Event()  # set after the first successful sync
        self._problems: tuple[str, ...] = ()
        self._table = ServicePortTable(node_name)
        self._dirty: set[ServiceKey] = set()  # Services whose Service or Endpoints changed since the last snapshot
        self.netpol = (NetpolEnforcer(self.factory, netpol, node_name=node_name, min_sync_period=min_sync_period,
                                      sync_period=sync_period, clock=clock) if netpol is not None else None)

    # ------------------------------------------------------------------ events

    def _changed(self, obj: t.Service | t.Endpoints) -> None:
        self._dirty.add((obj.metadata.namespace, obj.metadata.name))

    def _on_endpoints(self, eps: t.Endpoints) -> None:
        self._changed(eps)
        if self.services.synced and self.endpoints.synced:
            self.changes.changed(object_key(eps), trigger_time(eps))
        self.runner.request()

    def _wire(self) -> None:
        request = self.runner.request

        def service_event(svc: t.Service) -> None:
            self._changed(svc)
            request()

        def service_update(old: t.Service, new: t.Service) -> None:
            if old.spec != new.spec:
                service_event(new)

        self.services.add_handler(on_add=service_event, on_update=service_update, on_delete=service_event)
        self.endpoints.add_handler(on_add=self._on_endpoints,
                                   on_update=lambda old, new: self._on_endpoints(new),
                                   on_delete=self._on_endpoints)
        if self.nodes is not None:
            def node_event(node: t.Node) -> None:
                if node.metadata.name == self.node_name:
                    request()

            def node_update(old: t.Node, new: t.Node) -> None:
                if new.metadata.name == self.node_name and list(old.status.addresses) != list(new.status.addresses):
                    request()

            self.nodes.add_handler(on_add=node_event, on_update=node_update, on_delete=node_event)

    # ------------------------------------------------------------------ syncing

    def snapshot(self, *, full: bool = True) -> Snapshot:
        """What to serve now; `full=False` recomputes only the Services changed since the last one."""
        dirty, self._dirty = self._dirty, set()
        if full:
            self._table.rebuild(self.services.list(), self.endpoints.list())
        else:
            for ns, name in dirty:
                self._table.refresh((ns, name), self.services.get(name, ns), self.endpoints.get(name, ns))
        problems = self._table.problems()
        if tuple(problems) != self._problems:
            for p in problems:
                log.warning("not proxied: %s", p)
            self._problems = tuple(problems)
        node = self.nodes.get(self.node_name) if self.nodes is not None else None
        return Snapshot(self._table.ports(), node_ips(node))

    async def _sync(self, full: bool) -> None:
        taken = self.changes.take()
        start = time.perf_counter()
        try:
            snap = self.snapshot(full=full)
            result = await self.proxier.sync(snap, full=full)
        except Exception:
            self.changes.give_back(taken)
            self.metrics.syncs.inc(kind="full" if full else "partial", result="error")
            raise
        elapsed = time.perf_counter() - start
        now = self.clock()
        for at in taken.values():
            self.metrics.programming_latency.observe(max(0.0, now - at))
        m = self.metrics
        m.sync_duration.observe(elapsed)
        m.syncs.inc(kind="full" if result.full else "partial", result="ok")
        m.restores.inc(result.restores)
        for table, count in result.rules.items():
            m.rules.set(count, table=table)
        m.service_ports.set(len(snap.service_ports))
        m.last_sync.set(now)
        self.synced.set()
        if result.changed or result.full:
            log.info("%s sync in %.1f ms: %d service ports, %s; rules %s%s", "full" if result.full else "partial",
                     elapsed * 1000, len(snap.service_ports), result.detail,
                     " ".join(f"{k}={v}" for k, v in sorted(result.rules.items())),
                     f"; {len(taken)} endpoints changes applied" if taken else "")

    async def run(self) -> None:
        """Watch and sync until cancelled."""
        self._wire()
        if self.netpol is not None:
            self.netpol.wire()
        await self.factory.start()
        try:
            await self.factory.wait_synced()
            log.info("informers synced: %d services, %d endpoints", len(self.services.list()),
                     len(self.endpoints.list()))
            if self.netpol is None:
                await self.runner.run()
            else:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.runner.run(), name="netproxy-services")
                    tg.create_task(self.netpol.run(self.factory), name="netproxy-netpol")
        finally:
            await self.factory.stop()
