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
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.controllers.cronjob import CronJobController
from controlplane.controllers.csrsigning import CsrSigningController
from controlplane.controllers.daemonset import DaemonSetController
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.endpoints import EndpointsController
from controlplane.controllers.garbagecollector import GarbageCollector
from controlplane.controllers.job import JobController
from controlplane.controllers.kubernetesservice import KubernetesServiceController, version_probe
from controlplane.controllers.nodeipam import NodeIpamController
from controlplane.controllers.nodelifecycle import EvictionOptions, NodeLifecycleController
from controlplane.controllers.persistentvolume import PersistentVolumeController
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.controllers.resourcequota import ResourceQuotaController
from controlplane.controllers.rootcacert import RootCACertPublisher
from controlplane.controllers.serviceaccount import ServiceAccountController
from controlplane.controllers.statefulset import StatefulSetController
from skiff import defaults
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock
from skiff.events import EventRecorder
from skiff.guard import supervise
from skiff.informer import InformerFactory, Transform, compact
from skiff.tls import Credentials
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.manager")

ALL_CONTROLLERS = ("deployment", "replicaset", "endpoints", "nodelifecycle", "nodeipam", "garbagecollector",
                   "serviceaccount", "resourcequota", "kubernetesservice", "job", "cronjob", "daemonset",
                   "statefulset", "csrsigning", "persistentvolume", "rootcacertpublisher")
COMPONENT = "controller-manager"
# Seconds between two writes of one Endpoints, or of one ReplicaSet's or Deployment's status,
# while changes keep coming (the first goes at once; docs/controllers.md, "Batched writes").
BATCH_PERIOD = 1.0

# What the shared informers hold of each kind (skiff.informer's transforms). Pods are the most
# numerous objects the controller manager caches (30,000 at full size, docs/scale.md) and are
# kept as compact deep copies: every field stays, so every controller decides and writes back as
# from the decoded object (adoption, release, the garbage collector's owner updates and the node
# lifecycle controller's NotReady status are written from cached pods), at half the memory.
INFORMER_TRANSFORMS: dict[type[Any], Transform] = {t.Pod: compact}


@dataclass
class Options:
    controllers: Sequence[str] = ALL_CONTROLLERS
    node_monitor_grace_period: float = 40.0
    node_monitor_period: float = 5.0
    eviction: EvictionOptions = field(default_factory=EvictionOptions)
    endpoint_updates_batch_period: float = BATCH_PERIOD
    status_updates_batch_period: float = BATCH_PERIOD
    cluster_cidr: str = defaults.CLUSTER_CIDR
    node_cidr_mask_size: int = defaults.NODE_CIDR_MASK_SIZE
    # default/kubernetes: kept only when the service CIDR is known (its ClusterIP is the first address).
    service_cidr: str = ""
    api_servers: Sequence[str] = ()
    # Their HTTPS (Kubernetes REST) endpoints, in the same order: default/kubernetes leads there.
    kubernetes_service_endpoints: Sequence[str] = ()
    # How the kubernetesservice controller's probes reach each api-server (None: plaintext).
    credentials: Credentials | None = None
    # The CA that signs node certificates (csrsigning runs only with both).
    cluster_signing_cert_file: str = ""
    cluster_signing_key_file: str = ""
    # The CA bundle published as kube-root-ca.crt in every namespace (rootcacertpublisher runs only with it).
    root_ca_file: str = ""
    workers: dict[str, int] = field(default_factory=lambda: {
        "deployment": 5, "replicaset": 5, "endpoints": 5, "nodeipam": 1, "garbagecollector": 10,
        "job": 5, "cronjob": 5, "daemonset": 2, "statefulset": 5, "persistentvolume": 2})


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
                                        clock=clock, status_batch_period=options.status_updates_batch_period))
    if "replicaset" in wanted:
        out.append(ReplicaSetController(client, factory, recorder=recorder.scoped("replicaset-controller"),
                                        clock=clock, status_batch_period=options.status_updates_batch_period))
    if "endpoints" in wanted:
        out.append(EndpointsController(client, factory, batch_period=options.endpoint_updates_batch_period))
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
    if "kubernetesservice" in wanted and options.service_cidr and options.api_servers:
        out.append(KubernetesServiceController(client, factory, api_servers=options.api_servers,
                                               service_cidr=options.service_cidr,
                                               https_endpoints=options.kubernetes_service_endpoints,
                                               probe=functools.partial(version_probe,
                                                                       credentials=options.credentials)))
    if "job" in wanted:
        out.append(JobController(client, factory, recorder=recorder.scoped("job-controller"), clock=clock))
    if "cronjob" in wanted:
        out.append(CronJobController(client, factory, recorder=recorder.scoped("cronjob-controller"), clock=clock))
    if "daemonset" in wanted:
        out.append(DaemonSetController(client, factory, recorder=recorder.scoped("daemonset-controller"),
                                       clock=clock))
    if "statefulset" in wanted:
        out.append(StatefulSetController(client, factory, recorder=recorder.scoped("statefulset-controller"),
                                         clock=clock))
    if "csrsigning" in wanted and options.cluster_signing_cert_file and options.cluster_signing_key_file:
        out.append(CsrSigningController(client, factory, ca_cert_file=options.cluster_signing_cert_file,
                                        ca_key_file=options.cluster_signing_key_file, clock=clock))
    if "persistentvolume" in wanted:
        out.append(PersistentVolumeController(client, factory,
                                              recorder=recorder.scoped("persistentvolume-controller")))
    if "rootcacertpublisher" in wanted and options.root_ca_file:
        out.append(RootCACertPublisher(client, factory, root_ca_file=options.root_ca_file))
    return out


async def run(client: ApiClient, options: Options, *, clock: Clock | None = None,
              recorder: EventRecorder | None = None) -> None:
    """Run the controllers until cancelled (one leadership term)."""
    clock = clock or RealClock()
    recorder = recorder or EventRecorder(client, COMPONENT, clock=clock)
    factory = InformerFactory(client, transforms=INFORMER_TRANSFORMS)
    controllers = build(client, factory, options, recorder=recorder, clock=clock)
    tasks: list[asyncio.Task[Any]] = []
    try:
        await factory.start()
        await factory.wait_synced()
        log.info("caches synced; starting %s", ", ".join(c.name for c in controllers))
        tasks.append(supervise(recorder.run, "event-recorder"))
        for c in controllers:
            tasks.append(supervise(lambda c=c: c.run(workers=options.workers.get(c.name, 1)),  # type: ignore[misc]
                                   f"controller-{c.name}"))
        await asyncio.gather(*tasks)
    finally:
        for c in controllers:
            c.shutdown()
        recorder.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await factory.stop()
