"""The controller manager: builds the controllers over shared informers and runs them.

What must hold:
- all controllers share one informer per kind (one watch per kind on the api-server);
- workers start only after every cache has synced, so no controller acts on a partial view;
- the whole set runs under one leadership Lease (kube-system/skiff-controller-manager): when
  leadership is lost, everything is cancelled and rebuilt from scratch on the next term, so
  no state (expectations, CIDR map) outlives the term it was built in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.endpoints import EndpointsController
from controlplane.controllers.garbagecollector import GarbageCollector
from controlplane.controllers.nodeipam import NodeIpamController
from controlplane.controllers.nodelifecycle import EvictionOptions, NodeLifecycleController
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.controllers.resourcequota import ResourceQuotaController
from controlplane.controllers.serviceaccount import ServiceAccountController
from skiff import defaults
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock
from skiff.events import EventRecorder
from skiff.guard import guard
from skiff.informer import InformerFactory

log = logging.getLogger("skiff.controllers.manager")

ALL_CONTROLLERS = ("deployment", "replicaset", "endpoints", "nodelifecycle", "nodeipam", "garbagecollector",
                   "serviceaccount", "resourcequota")
COMPONENT = "controller-manager"


@dataclass
class Options:
    controllers: Sequence[str] = ALL_CONTROLLERS
    node_monitor_grace_period: float = 40.0
    node_monitor_period: float = 5.0
    eviction: EvictionOptions = field(default_factory=EvictionOptions)
    cluster_cidr: str = defaults.CLUSTER_CIDR
    node_cidr_mask_size: int = defaults.NODE_CIDR_MASK_SIZE
    workers: dict[str, int] = field(default_factory=lambda: {
        "deployment": 5, "replicaset": 5, "endpoints": 5, "nodeipam": 1, "garbagecollector": 10})


def build(client: ApiClient, factory: InformerFactory, options: Options, *, recorder: EventRecorder,
          clock: Clock) -> list[Any]:
    unknown = set(options.controllers) - set(ALL_CONTROLLERS)
    if unknown:
        raise ValueError(f"unknown controller(s): {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(ALL_CONTROLLERS)})")
    out: list[Any] = []
    wanted = set(options.controllers)
    # Events name the controller that wrote them, as Kubernetes' do ("From" in `skiff describe`).
    if "deployment" in wanted:
        out.append(DeploymentController(client, factory, recorder=recorder.scoped("deployment-controller"),
                                        clock=clock))
    if "replicaset" in wanted:
        out.append(ReplicaSetController(client, factory, recorder=recorder.scoped("replicaset-controller"),
                                        clock=clock))
    if "endpoints" in wanted:
        out.append(EndpointsController(client, factory))
    if "nodelifecycle" in wanted:
        out.append(NodeLifecycleController(client, factory, recorder=recorder.scoped("node-controller"), clock=clock,
                                           grace_period=options.node_monitor_grace_period,
                                           monitor_period=options.node_monitor_period,
                                           eviction=options.eviction))
    if "nodeipam" in wanted:
        out.append(NodeIpamController(client, factory, recorder=recorder.scoped("node-ipam-controller"),
                                      cluster_cidr=options.cluster_cidr,
                                      mask_size=options.node_cidr_mask_size))
    if "garbagecollector" in wanted:
        out.append(GarbageCollector(client, factory))
    if "serviceaccount" in wanted:
        out.append(ServiceAccountController(client, factory))
    if "resourcequota" in wanted:
        out.append(ResourceQuotaController(client, factory))
    return out


async def run(client: ApiClient, options: Options, *, clock: Clock | None = None,
              recorder: EventRecorder | None = None) -> None:
    """Run the controllers until cancelled (one leadership term)."""
    clock = clock or RealClock()
    recorder = recorder or EventRecorder(client, COMPONENT, clock=clock)
    factory = InformerFactory(client)
    controllers = build(client, factory, options, recorder=recorder, clock=clock)
    tasks: list[asyncio.Task[Any]] = []
    try:
        await factory.start()
        await factory.wait_synced()
        log.info("caches synced; starting %s", ", ".join(c.name for c in controllers))
        tasks.append(guard(recorder.run(), "event-recorder"))
        for c in controllers:
            tasks.append(guard(c.run(workers=options.workers.get(c.name, 1)), f"controller-{c.name}"))
        await asyncio.gather(*tasks)
    finally:
        for c in controllers:
            c.shutdown()
        recorder.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await factory.stop()
