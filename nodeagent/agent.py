"""The node agent: registers its Node, renews its Lease, runs one worker per pod bound to it.

Loops (each started through skiff.guard: the agent's own loops are supervised, restarted with
backoff after an unexpected error; an informer that ends stops the process non-zero; each runs
once per agent; the periodic ones wait their period +/- PERIOD_JITTER, the polling ones first a
random part of one period, so many agents in one process do not poll in step; with a `tick`
(hollow nodes) each wait ends on the process's grid of that step, so the agents' polls are
spread over period/tick groups, each group's calls sent in one loop pass):
- pod informer (field selector spec.nodeName=<node>): events only kick the pod's worker;
- node informer: routes to other nodes' podCIDRs, and this node's own podCIDR for CNI;
- service informer: the Service environment variables of new containers; pods start only after
  it has listed (or 10 s passed), so the first containers do not miss them;
- relist (every `relist_period`, 1 s): lists sandboxes and containers once, kicks the worker of
  every pod whose runtime state changed (a container that died without any event), starts a
  teardown worker for sandboxes of pods that no longer exist (only after the pod informer has
  synced: a restarted agent adopts running pods instead of killing them), and records whether
  the runtime answers; its container list is kept for log rotation;
- log rotation (every `log_rotation_period`, 10 s): the kubelet's container log manager; a
  running container's log that reached `container_log_max_size` is renamed and the runtime
  reopens it (ReopenContainerLog); at most `container_log_max_files` files are kept (logs.py);
  the running containers are the relist's listing when it is at most a relist period old, and
  a container's log path is asked once (CRI fixes it at create), so a pass costs no CRI call;
- configmaps, secrets, persistentvolumeclaims and persistentvolumes (configrefs.py): only the
  objects this node's pods refer to (a volume through the claim bound to it), each watched on
  its own (fieldSelector metadata.name), as the kubelet's Watch strategy, plus the local-path
  volumes whose directories are on this node (to reclaim them); env and volumes read them from
  those caches; a change kicks the workers of the pods that refer to the object (their volume
  files are rewritten; a claim just bound lets its pod start); a pod's worker creates no
  container and pulls no image until every object its pod refers to has been fetched once; a
  local-path volume of this node that is Released with policy Delete is reclaimed: its
  directory removed, then the PersistentVolume deleted (volumes.reclaimable);
- service-account tokens (tokens.py): each pod worker requests and renews its pod's tokens
  (gRPC CreateToken, with the node's own credentials) before writing its volumes;
- node status: the Ready condition from CRI Status, written when it changes or differs from the
  stored one (and every `node_status_period` as a heartbeat): the agent is the one writer of
  Ready=True/False, the node lifecycle controller only sets Unknown when it falls silent; the
  MemoryPressure, DiskPressure and PIDPressure conditions from the host (pressure.py), written
  when one changes; Lease renewed every `lease_period` (10 s).

Pod workers: one per pod; nothing the agent keeps per pod (its worker, fingerprint, cached
Events) outlives the pod and its teardown, so pods coming and going leave no trace in memory
(tests/unit/nodeagent/test_agent_churn.py). A worker that crashes (an unexpected exception, not a CRI or API error
it retries itself) is started again after `WORKER_CRASH_BACKOFF` (per pod, doubling while it
keeps crashing; a worker that ran `skiff.guard.HEALTHY_AFTER` seconds starts again from 1 s),
never in a hot loop, and its pod is never abandoned.

The node and service informers are cluster-wide (no per-node filter), so
many agents in one process (hollow nodes, nodeagent/hollow.py) may share one set of them
(`ClusterInformers`): each agent sees exactly what its own copy would show. The ConfigMap and
Secret (claim, volume) watches (ConfigRefs) are shared the same way: they are kept per pod uid, and each agent
tracks its own pods. The pod informer (filtered by spec.nodeName), the Node, the Lease, the
workers and every status write stay per agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodeagent import cri as rt
from nodeagent import logs, metrics, pressure
from nodeagent import node as nodeobj
from nodeagent import plan as P
from nodeagent.configrefs import CLAIMS, VOLUMES, ConfigRefs
from nodeagent.dns import DnsSettings
from nodeagent.netns import NodeNetwork
from nodeagent.network import NetworkManager, RouteTable
from nodeagent.podconfig import PodConfigSettings
from nodeagent.stats import Sampler
from nodeagent.tokens import TokenClient, TokenManager
from nodeagent.volumes import VolumeManager, reclaimable
from nodeagent.worker import PodWorker, WorkerContext, is_own_echo, runtime_fingerprint
from skiff import conditions, errors, podrefs, storage
from skiff.client import ApiClient
from skiff.clock import stamp
from skiff.eventloop import wait_event
from skiff.events import EventRecorder
from skiff.guard import HEALTHY_AFTER, guard, supervise
from skiff.informer import Informer
from skiff.retry import Backoff, Delays, jittered
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

log = logging.getLogger("nodeagent")
# Registering the Node until the api-server takes it: 0.2 s doubling to 5 s, jittered.
REGISTER_BACKOFF = Backoff(initial=0.2, max=5.0, jitter=0.2)
# A pod worker that crashed: restarted after 1 s doubling to 60 s while it keeps crashing.
WORKER_CRASH_BACKOFF = Backoff(initial=1.0, max=60.0, jitter=0.2)
COMPONENT = "skiff-nodeagent"  # source.component of the Events the agent records (kubelet's is "kubelet")


@dataclass
class AgentConfig:
    node_name: str
    node_ip: str = ""
    pod_log_dir: str = "/var/log/skiff/pods"
    volume_dir: str = ""  # pod volumes (<dir>/<pod uid>/<volume>); empty: pods with volumes cannot run
    cgroup_parent: str = ""
    cni_conf_dir: str = ""
    ipam_dir: str = ""
    pod_cidr: str = ""
    manage_network: bool = True
    manage_sysctls: bool = True
    relist_period: float = 1.0
    stats_period: float = 10.0  # between two usage samples (cAdvisor's housekeeping interval)
    lease_period: float = 10.0
    node_status_period: float = 60.0
    status_check_period: float = 1.0
    network_sync_period: float = 30.0
    port: int = 0  # published as daemonEndpoints.kubeletEndpoint.port
    capacity: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[t.Taint] = field(default_factory=list)  # set when the Node is created
    plan: P.PlanConfig = field(default_factory=P.PlanConfig)
    dns: DnsSettings = field(default_factory=DnsSettings)
    pod_dir: str = ""  # per-pod files (managed /etc/hosts); empty: containers keep the runtime's
    container_log_max_size: int = 10 * 1024 * 1024  # the kubelet's containerLogMaxSize (10Mi)
    container_log_max_files: int = 5  # the kubelet's containerLogMaxFiles, the live file included
    log_rotation_period: float = 10.0  # how often logs are checked (the kubelet's monitor period)
    host_pressure: bool = True  # Memory/Disk/PIDPressure from this host (off for simulated nodes)
    local_path_dir: str = ""  # local-path PersistentVolumes of this node (published as a Node annotation)
    # Periodic loops wake on a grid of this step (seconds; 0: anywhere in time): many agents in
    # one process (hollow nodes) then poll in the same loop passes. One agent gains nothing.
    tick: float = 0.0


@dataclass
class ClusterInformers:
    """The cluster-wide caches an agent reads. Made and run by the agent itself, or made once
    by a process running many agents and shared by them (`NodeAgent(shared=...)`): the
    owner runs them and waits for them to sync before the agents start."""

    nodes: Informer[t.Node]
    services: Informer[t.Service]
    config: ConfigRefs  # not an informer: the agents' pods start and stop its watches

    @classmethod
    def create(cls, client: ApiClient) -> ClusterInformers:
        return cls(Informer(client, t.Node), Informer(client, t.Service), ConfigRefs(client))

    def all(self) -> list[Informer[Any]]:
        """The informers the owner runs and waits for."""
        return [self.nodes, self.services]


@dataclass(frozen=True)
class _FuncClock:
    """The agent's plain `() -> seconds` clock as the Clock the event recorder takes."""

    now: Callable[[], float]


STOP_TIMEOUT = 15.0  # seconds the agent's tasks get to end once cancelled
# Periodic loops wait their period +/- this fraction (skiff.retry.jittered), and the polling
# loops (relist, runtime status, usage, log rotation) first wait a random part of one period:
# hundreds of agents started within seconds (hollow nodes) would otherwise poll in step.
PERIOD_JITTER = 0.1


# Where this process's tick grid lies (AgentConfig.tick): a random part of one tick, so that
# processes of many agents side by side (the scale scenario runs four) do not wake together.
TICK_OFFSET = random.random()


def on_tick(now: float, delay: float, tick: float, offset: float) -> float:
    """How long to wait from `now` so as to wake `delay` later, moved on to the next point of the
    grid `offset + k * tick` (tick 0: no grid, `delay` itself)."""
    if tick <= 0:
        return delay
    k = math.ceil((now + delay - offset) / tick)
    return max(0.0, k * tick + offset - now)


class NodeAgent:
    def __init__(self, client: ApiClient, runtime: rt.Runtime, config: AgentConfig, *,
                 net: NodeNetwork | None = None, routes: RouteTable | None = None,
                 clock: Callable[[], float] = time.time, shared: ClusterInformers | None = None) -> None:
        self.client = client
        self.runtime = runtime
        self.config = config
        self.clock = clock
        self.net = net or NodeNetwork()
        self.events = EventRecorder(client, COMPONENT, host=config.node_name, clock=_FuncClock(clock))
        self.pods_by_uid: dict[str, t.Pod] = {}
        self.workers: dict[str, PodWorker] = {}
        self.worker_tasks: dict[str, asyncio.Task[Any]] = {}
        self.worker_crashes: dict[str, Delays] = {}  # pods whose worker crashed, until one ends cleanly
        self._restarts: dict[str, asyncio.TimerHandle] = {}
        self.pod_informer: Informer[t.Pod] = Informer(client, t.Pod,
                                                      field_selector=f"spec.nodeName={config.node_name}")
        self._owns_informers = shared is None
        cluster = shared or ClusterInformers.create(client)
        self.node_informer: Informer[t.Node] = cluster.nodes
        self.config_refs = cluster.config
        self._reclaiming: set[str] = set()
        self.volumes = VolumeManager(config.volume_dir) if config.volume_dir else None
        self.service_informer: Informer[t.Service] = cluster.services
        self.network: NetworkManager | None = None
        if config.manage_network:
            from nodeagent.network import NetlinkRoutes

            self.network = NetworkManager(node_name=config.node_name, net=self.net,
                                          routes=routes or NetlinkRoutes(self.net),
                                          cni_conf_dir=config.cni_conf_dir, ipam_dir=config.ipam_dir,
                                          pod_cidr=config.pod_cidr, manage_sysctls=config.manage_sysctls)
        self.ctx = WorkerContext(
            client=client, runtime=runtime, net=self.net, events=self.events,
            pod_settings=PodConfigSettings(pod_log_dir=config.pod_log_dir, cgroup_parent=config.cgroup_parent,
                                           dns=config.dns, pod_dir=config.pod_dir),
            plan_config=config.plan, host_ip=config.node_ip, pod=self.pods_by_uid.get, clock=clock,
            config=self, volumes=self.volumes, node_allocatable=self._capacity,
            services=self.service_informer.list, claims=self, config_synced=self.config_refs.synced_for,
            tokens=TokenManager(client, clock=clock) if isinstance(client, TokenClient) else None)
        self.runtime_status: cri.StatusResponse | None = None
        self.runtime_error = "not checked yet"
        self.runtime_version = ""
        self.ready: t.NodeCondition | None = None
        self.pressure: list[t.NodeCondition] = []
        self._last_node_write = 0.0
        self._lease: t.Lease | None = None  # the node's Lease as this agent last wrote it
        self._fingerprints: dict[str, tuple[Any, ...]] = {}
        # The last relist's container list and when (monotonic): log rotation reads it instead
        # of listing again; and each container's log path, which CRI fixes at create.
        self._relisted: tuple[float, list[cri.Container]] | None = None
        self._log_paths: dict[str, str] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._network_kick = asyncio.Event()
        self.registered = asyncio.Event()
        # Set by stop(): a worker ending as it is cancelled must not start a new one for its pod
        # (which then ran on with the runtime closed under it: "Channel is closed" crashes).
        self._stopping = False
        self.started = asyncio.Event()
        self.sampler = Sampler(runtime, node_name=config.node_name)

    # ------------------------------------------------------------ pods -> workers

    def _on_pod(self, pod: t.Pod) -> None:
        uid = pod.metadata.uid
        self.pods_by_uid[uid] = pod
        self.config_refs.track(pod)
        self.ensure_worker(uid)

    def _on_pod_update(self, old: t.Pod, new: t.Pod) -> None:
        if old.metadata.uid != new.metadata.uid:
            self._on_pod_delete(old)
        worker = self.workers.get(new.metadata.uid)
        if worker is not None and old.metadata.uid == new.metadata.uid and is_own_echo(new, worker.pending_echoes):
            self.pods_by_uid[new.metadata.uid] = new  # the echo of the worker's own status write
            return
        self._on_pod(new)

    def _on_pod_delete(self, pod: t.Pod) -> None:
        uid = pod.metadata.uid
        self.pods_by_uid.pop(uid, None)
        self.config_refs.forget(uid)
        self.ensure_worker(uid)

    def ensure_worker(self, uid: str) -> None:
        if uid in self._restarts or self._stopping:
            return  # its worker crashed: it comes back when its backoff has passed; or the agent stops
        worker = self.workers.get(uid)
        if worker is None:
            worker = self.workers[uid] = PodWorker(self.ctx, uid)
            task = asyncio.get_running_loop().create_task(self._run_worker(worker), name=f"pod-{uid[:8]}")
            self.worker_tasks[uid] = task
        worker.kick()

    async def _run_worker(self, worker: PodWorker) -> None:
        delay: float | None = None
        started = time.monotonic()
        try:
            await worker.run()
            self.worker_crashes.pop(worker.uid, None)
        except Exception:
            crashes = self.worker_crashes.setdefault(worker.uid, Delays(WORKER_CRASH_BACKOFF))
            if time.monotonic() - started >= HEALTHY_AFTER:
                crashes.reset()  # it ran well for a while: this is a new failure, not the same one
            delay = crashes.next()
            log.exception("pod worker %s crashed; restarting it in %.1fs", worker.uid, delay)
        finally:
            worker.stop_probes()
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]
                self.worker_tasks.pop(worker.uid, None)
                self._fingerprints.pop(worker.uid, None)
                if delay is not None:
                    # Whether or not the pod still exists: a new worker also finishes a teardown.
                    self._restarts[worker.uid] = asyncio.get_running_loop().call_later(
                        delay, self._restart_worker, worker.uid)
                elif worker.uid in self.pods_by_uid:
                    self.ensure_worker(worker.uid)  # the pod came back while this worker was finishing
                else:
                    # Gone, and nothing of it left on the node: no event will be about it again.
                    self.events.forget(worker.uid)

    def _restart_worker(self, uid: str) -> None:
        self._restarts.pop(uid, None)
        self.ensure_worker(uid)

    # ------------------------------------------------------------ configmaps, secrets (ConfigSource)

    def config_map(self, namespace: str, name: str) -> t.ConfigMap | None:
        obj = self.config_refs.get("configmaps", namespace, name)
        return obj if isinstance(obj, t.ConfigMap) else None

    def secret(self, namespace: str, name: str) -> t.Secret | None:
        obj = self.config_refs.get("secrets", namespace, name)
        return obj if isinstance(obj, t.Secret) else None

    def _config_changed(self, resource: str, namespace: str, name: str) -> None:
        if resource == VOLUMES:
            self._volume_changed(name)
            return
        for uid, pod in list(self.pods_by_uid.items()):
            if pod.metadata.namespace == namespace and name in podrefs.referenced(pod, resource):
                self.ensure_worker(uid)

    # ------------------------------------------------------------ claims and volumes (ClaimSource)

    def claim(self, namespace: str, name: str) -> t.PersistentVolumeClaim | None:
        obj = self.config_refs.get(CLAIMS, namespace, name)
        return obj if isinstance(obj, t.PersistentVolumeClaim) else None

    def persistent_volume(self, name: str) -> t.PersistentVolume | None:
        obj = self.config_refs.get(VOLUMES, "", name)
        return obj if isinstance(obj, t.PersistentVolume) else None

    def _track_local_volumes(self) -> None:
        """Watch the local-path volumes whose directories are on this node, used or not: a
        Released one is this node's to reclaim, when no pod's claim leads to it any more."""
        base = self.config.local_path_dir
        if not base:
            return
        try:
            names = {entry.split("_", 1)[0] for entry in os.listdir(base) if "_" in entry}
        except OSError:
            names = set()
        self.config_refs.set_refs(f"local-path:{self.config.node_name}", {(VOLUMES, "", n) for n in names})

    def _volume_changed(self, name: str) -> None:
        pv = self.persistent_volume(name)
        if pv is None:
            return
        for uid, pod in list(self.pods_by_uid.items()):
            claims = podrefs.claims(pod)
            if any((c := self.claim(pod.metadata.namespace, n)) is not None and c.spec.volume_name == name
                   for n in claims):
                self.ensure_worker(uid)
        if name in self._reclaiming or not reclaimable(pv, node_name=self.config.node_name,
                                                       local_path_dir=self.config.local_path_dir):
            return
        self._reclaiming.add(name)
        task = asyncio.get_running_loop().create_task(self._reclaim(pv), name=f"reclaim-{name}")
        self._tasks.append(task)
        task.add_done_callback(lambda done: self._tasks.remove(done) if done in self._tasks else None)

    async def _reclaim(self, pv: t.PersistentVolume) -> None:
        """Remove a Released local-path volume's directory, then its PersistentVolume object."""
        name = pv.metadata.name
        try:
            VolumeManager.reclaim(pv)
            log.info("reclaimed volume %s: removed %s", name, pv.spec.local.path)
            await self.client.delete(t.PersistentVolume, name)
        except errors.NotFoundError:
            pass
        except (OSError, errors.SkiffError) as exc:
            log.warning("reclaiming volume %s: %s", name, exc)
        finally:
            self._reclaiming.discard(name)

    def _remove_orphan_volumes(self) -> None:
        """Volume directories of pods that are gone and have no worker (e.g. removed while the agent was down)."""
        if self.volumes is None or not self.pod_informer.synced:
            return
        for uid in self.volumes.pod_uids():
            if uid not in self.pods_by_uid and uid not in self.workers and uid not in self._fingerprints:
                log.info("removing volumes of pod %s, which no longer exists", uid)
                self.volumes.teardown(uid)

    # ------------------------------------------------------------ relist (PLEG)

    async def relist_once(self) -> None:
        started = time.perf_counter()
        try:
            sandboxes = await self.runtime.list_pod_sandbox()
            containers = await self.runtime.list_containers()
        except rt.CriError as exc:
            self.runtime_error = str(exc)
            self.runtime_status = None
            return
        metrics.PLEG_RELIST.observe(time.perf_counter() - started)
        self._relisted = (time.monotonic(), containers)
        metrics.PLEG_LAST_SEEN.set(time.time())
        metrics.RUNNING_PODS.set(sum(1 for s in sandboxes if s.state == cri.SANDBOX_READY))
        states = dict.fromkeys(metrics.CONTAINER_STATES, 0)
        for c in containers:
            state = cri.ContainerState.Name(c.state).removeprefix("CONTAINER_").lower()
            states[state if state in states else "unknown"] += 1
        for state, n in states.items():
            metrics.RUNNING_CONTAINERS.labels(state).set(n)
        prints: dict[str, list[tuple[str, int]]] = {}
        for s in sandboxes:
            uid = s.labels.get(rt.LABEL_POD_UID)
            if uid:
                prints.setdefault(uid, []).append((s.id, s.state))
        for c in containers:
            uid = c.labels.get(rt.LABEL_POD_UID)
            if uid:
                prints.setdefault(uid, []).append((c.id, c.state))
        fingerprints = {uid: runtime_fingerprint(v) for uid, v in prints.items()}
        for uid, fp in fingerprints.items():
            if self._fingerprints.get(uid) != fp:
                if uid in self.workers:
                    # Not when the worker's own last observe listed this already (its own actions,
                    # mostly): during a burst that was one more sync pass per pod and relist.
                    if self.workers[uid].observed != fp:
                        self.workers[uid].kick()
                elif uid not in self.pods_by_uid and self.pod_informer.synced:
                    log.info("removing sandboxes/containers of pod %s, which no longer exists", uid)
                    self.ensure_worker(uid)
        for uid in set(self._fingerprints) - set(fingerprints):
            if uid in self.workers:
                self.workers[uid].kick()
        self._fingerprints = fingerprints

    async def _relist_loop(self) -> None:
        passes = 0
        await self._phase(self.config.relist_period)
        while True:
            await self.relist_once()
            self._track_local_volumes()
            if passes % 30 == 0:
                try:
                    self._remove_orphan_volumes()
                except OSError as exc:
                    log.warning("removing orphaned volumes: %s", exc)
            passes += 1
            await self._period(self.config.relist_period)

    async def _stats_loop(self) -> None:
        await self._phase(self.config.stats_period)
        while True:
            try:
                await self.sampler.sample()
            except rt.CriError as exc:
                log.debug("usage sample failed: %s", exc)
            await self._period(self.config.stats_period)

    # ------------------------------------------------------------ node, lease

    async def _period(self, period: float) -> None:
        """One period of a periodic loop, +/- PERIOD_JITTER, ended on the process's tick grid."""
        await self._sleep(jittered(period, PERIOD_JITTER, random.random()))

    async def _phase(self, period: float) -> None:
        """A random part of one period: where this agent's polling loop falls within the period."""
        await self._sleep(period * random.random())

    async def _sleep(self, delay: float) -> None:
        # On a grid (hollow nodes), the loops of the process's agents that fall due within one
        # tick wake in one loop pass: their CRI and api-server calls go out together and share
        # gRPC's wake-ups (its poller thread, the loop's epoll), which cost more than the calls
        # themselves when each call comes alone (docs/scale.md: half the CPU for the same polls).
        tick = self.config.tick
        await asyncio.sleep(on_tick(asyncio.get_running_loop().time(), delay, tick, TICK_OFFSET * tick))

    async def check_runtime(self) -> None:
        try:
            self.runtime_status = await self.runtime.status()
            if not self.runtime_version:
                v = await self.runtime.version()
                self.runtime_version = f"{v.runtime_name}://{v.runtime_version}"
            self.runtime_error = ""
        except rt.CriError as exc:
            self.runtime_status = None
            self.runtime_error = str(exc)

    def _capacity(self) -> dict[str, str]:
        return {**nodeobj.host_capacity(), **self.config.capacity}

    async def register(self) -> None:
        """Create the Node, or take over an existing one (its spec, e.g. podCIDR, is kept)."""
        await self.check_runtime()
        now = self.clock()
        self.ready = nodeobj.compute_ready_condition(self.runtime_status, self.runtime_error, [], now)
        info = nodeobj.system_info(self.runtime_version)
        delays = Delays(REGISTER_BACKOFF)
        while True:
            try:
                try:
                    current = await self.client.get(t.Node, self.config.node_name)
                except errors.NotFoundError:
                    node = nodeobj.build_node(self.config.node_name, node_ip=self.config.node_ip,
                                              capacity=self._capacity(), info=info, port=self.config.port,
                                              ready=self.ready, labels=self.config.labels)
                    node.spec.taints.extend(self.config.taints)
                    if self.config.local_path_dir:
                        node.metadata.annotations[storage.NODE_PATH_ANNOTATION] = self.config.local_path_dir
                    current = await self.client.create(node)
                    log.info("registered node %s", self.config.node_name)
                if self.config.local_path_dir and \
                        current.metadata.annotations.get(storage.NODE_PATH_ANNOTATION) != self.config.local_path_dir:
                    updated = t.Node()
                    updated.CopyFrom(current)
                    updated.metadata.annotations[storage.NODE_PATH_ANNOTATION] = self.config.local_path_dir
                    current = await self.client.update(updated)
                self.ready = nodeobj.compute_ready_condition(self.runtime_status, self.runtime_error,
                                                             list(current.status.conditions), now)
                await self.write_node_status(current)
                self.registered.set()
                return
            except errors.SkiffError as exc:
                delay = delays.next()
                log.warning("registering node %s: %s; retrying in %.1fs", self.config.node_name, exc, delay)
                await asyncio.sleep(delay)

    async def write_node_status(self, current: t.Node | None = None) -> None:
        if current is None:
            current = self.node_informer.get(self.config.node_name)
        if current is None:
            current = await self.client.get(t.Node, self.config.node_name)
        node = t.Node()
        node.CopyFrom(current)
        assert self.ready is not None
        for key, value in self.config.labels.items():
            node.metadata.labels[key] = value
        nodeobj.set_status(node, node_ip=self.config.node_ip, capacity=self._capacity(),
                           info=nodeobj.system_info(self.runtime_version), port=self.config.port, ready=self.ready,
                           hostname=self.config.node_name)
        node.status.allocatable.clear()
        node.status.allocatable.update(pressure.allocatable(self._capacity()))
        if self.pressure:
            pressure.merge_conditions(node, self.pressure)
        node.metadata.resource_version = ""
        await self.client.update_status(node)
        self._last_node_write = self.clock()

    async def _node_status_loop(self) -> None:
        await self._phase(self.config.status_check_period)
        while True:
            await self._check_node()
            await self._period(self.config.status_check_period)

    async def _check_node(self) -> None:
        """One pass of the node status loop: runtime and host checks, a status write when due."""
        await self.check_runtime()
        now = self.clock()
        # What the api-server holds, not only what we last wrote: the node lifecycle controller
        # sets Ready=Unknown while we are silent, and only we set it back.
        stored = self.node_informer.get(self.config.node_name)
        posted = conditions.node_ready_condition(stored) if stored is not None else self.ready
        ready = nodeobj.compute_ready_condition(self.runtime_status, self.runtime_error,
                                                [posted] if posted is not None else [], now)
        changed = not nodeobj.same_condition(ready, self.ready)
        changed = self._check_pressure(now) or changed
        if changed:
            log.info("node %s Ready=%s (%s: %s)", self.config.node_name, ready.status, ready.reason,
                     ready.message)
        self.ready = ready
        if changed or not nodeobj.same_condition(ready, posted) \
                or now - self._last_node_write >= self.config.node_status_period:
            try:
                await self.write_node_status()
            except errors.SkiffError as exc:
                log.warning("writing node status: %s", exc)
        if changed and ready.status == "True":
            for worker in list(self.workers.values()):
                worker.kick()

    def _check_pressure(self, now: float) -> bool:
        """Read the host; True when a pressure condition changed."""
        if not self.config.host_pressure:
            return False
        try:
            stats = pressure.read_host(self.config.volume_dir or self.config.pod_log_dir or "/")
        except OSError as exc:
            log.debug("reading host pressure: %s", exc)
            return False
        found = pressure.pressure_conditions(stats, self.pressure, now)
        changed = not pressure.same(found, self.pressure)
        if changed:
            log.info("node %s: %s", self.config.node_name, ", ".join(f"{c.type}={c.status}" for c in found))
        self.pressure = found
        return changed

    async def renew_lease(self) -> None:
        """One write per renewal, as the kubelet does: the Lease this agent wrote last is updated;
        it is read again only when that write conflicts (someone else changed it) or at start.
        At 1,000 nodes renewing every 10 s this halves the lease traffic (no GET each time)."""
        now = self.clock()
        lease = self._lease
        if lease is not None:
            try:
                self._lease = await self.client.update(self._renewed(lease, now))
                return
            except (errors.ConflictError, errors.NotFoundError):
                self._lease = None
        try:
            lease = await self.client.get(t.Lease, self.config.node_name, nodeobj.LEASE_NAMESPACE)
        except errors.NotFoundError:
            self._lease = await self.client.create(nodeobj.build_lease(self.config.node_name, now))
            return
        self._lease = await self.client.update(self._renewed(lease, now))

    def _renewed(self, current: t.Lease, now: float) -> t.Lease:
        lease = t.Lease()
        lease.CopyFrom(current)
        lease.spec.holder_identity = self.config.node_name
        lease.spec.lease_duration_seconds = nodeobj.LEASE_DURATION
        stamp(lease.spec.renew_time, now)
        return lease

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self.renew_lease()
            except errors.SkiffError as exc:
                log.warning("renewing lease: %s", exc)
            await self._period(self.config.lease_period)

    # ------------------------------------------------------------ network

    async def _network_loop(self) -> None:
        assert self.network is not None
        while True:
            self._network_kick.clear()
            try:
                await self.network.sync(self.node_informer.list())
            except (OSError, ValueError) as exc:
                log.warning("network sync: %s", exc)
            await wait_event(self._network_kick, self.config.network_sync_period)
            await asyncio.sleep(0.05)  # merge bursts of node events

    def _kick_network(self, *_: Any) -> None:
        self._network_kick.set()

    # ------------------------------------------------------------ container logs

    async def _log_rotation_loop(self) -> None:
        await self._phase(self.config.log_rotation_period)
        while True:
            # The relist's listing, when it is at most a relist period older than a listing of
            # our own would be: a container started since is rotated on the next pass.
            relisted = self._relisted
            fresh = relisted is not None and \
                time.monotonic() - relisted[0] < self.config.relist_period * (1 + PERIOD_JITTER)
            await self.rotate_logs(relisted[1] if fresh and relisted is not None else None)
            await self._period(self.config.log_rotation_period)

    async def rotate_logs(self, containers: list[cri.Container] | None = None) -> int:
        """One pass of the kubelet's container log manager over the running containers (`containers`:
        a listing made within the period, e.g. the relist's; None: list them); returns how many logs
        it rotated. A file the runtime cannot reopen is renamed back."""
        if containers is None:
            try:
                containers = await self.runtime.list_containers()
            except rt.CriError as exc:
                log.debug("log rotation: %s", exc)
                return 0
        listed = {c.id for c in containers}
        for cid in [cid for cid in self._log_paths if cid not in listed]:
            del self._log_paths[cid]
        rotated = 0
        for c in containers:
            if c.state != cri.CONTAINER_RUNNING:
                continue
            try:
                path = self._log_paths.get(c.id)
                if path is None:
                    path = self._log_paths[c.id] = (await self.runtime.container_status(c.id)).log_path
                size = os.stat(path).st_size if path else -1
            except (rt.CriError, FileNotFoundError):
                continue
            if size < 0:
                continue
            plan = logs.plan_rotation(path, size, logs.rotated_files(path),
                                      max_size=self.config.container_log_max_size,
                                      max_files=self.config.container_log_max_files, now=self.clock())
            for old in plan.remove:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(old)
            if not plan.rename_to:
                continue
            os.rename(path, plan.rename_to)
            try:
                await self.runtime.reopen_container_log(c.id)
            except rt.CriError as exc:
                log.warning("log rotation of container %s: %s; keeping its log as it was", c.id[:12], exc)
                with contextlib.suppress(OSError):
                    os.rename(plan.rename_to, path)
                continue
            rotated += 1
        return rotated

    # ------------------------------------------------------------ run

    async def start(self) -> None:
        """Start everything; returns once the node is registered and the pod cache synced."""
        self._stopping = False
        self.pod_informer.add_handler(on_add=self._on_pod, on_update=self._on_pod_update,
                                      on_delete=self._on_pod_delete)
        self.node_informer.add_handler(on_add=self._kick_network, on_update=self._kick_network,
                                       on_delete=self._kick_network)
        self._tasks.append(supervise(self.events.run, "nodeagent-events"))
        await self.register()
        if self._owns_informers:
            self._tasks.append(guard(self.node_informer.run(), "nodeagent-node-informer"))
        if self.network is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await self.node_informer.wait_synced(10)
            self._tasks.append(supervise(self._network_loop, "nodeagent-network"))
        self._tasks.append(supervise(self._lease_loop, "nodeagent-lease"))
        self._tasks.append(supervise(self._node_status_loop, "nodeagent-node-status"))
        self.config_refs.subscribe(self._config_changed)
        self._track_local_volumes()
        if self._owns_informers:
            self._tasks.append(guard(self.service_informer.run(), "nodeagent-service-informer"))
        with contextlib.suppress(asyncio.TimeoutError):
            # Env reads this cache: sync it before the pods' workers start.
            await asyncio.wait_for(self.service_informer.wait_synced(), 10)
        self._tasks.append(guard(self.pod_informer.run(), "nodeagent-pod-informer"))
        await self.pod_informer.wait_synced()
        self._tasks.append(guard(self._stats_loop(), "nodeagent-stats"))
        self._tasks.append(supervise(self._relist_loop, "nodeagent-relist"))
        self._tasks.append(supervise(self._log_rotation_loop, "nodeagent-log-rotation"))
        self.started.set()

    async def stop(self) -> None:
        """Stop the agent's loops and workers; containers keep running (a restart adopts them)."""
        self._stopping = True
        for handle in self._restarts.values():
            handle.cancel()
        self._restarts.clear()
        tasks = self._tasks + list(self.worker_tasks.values())
        for task in tasks:
            task.cancel()
        # Bounded: a task that does not take its cancellation must not hang the agent's shutdown
        # (or a test's restart); it is named so the next occurrence can be traced.
        pending: set[asyncio.Task[Any]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        if pending:
            log.warning("node agent stop: %d task(s) did not end within %.0f s of being cancelled: %s",
                        len(pending), STOP_TIMEOUT, ", ".join(sorted(t.get_name() for t in pending)))
        for worker in self.workers.values():
            worker.stop_probes()
        for uid in list(self.pods_by_uid):
            self.config_refs.forget(uid)  # shared (hollow nodes): the others' pods keep theirs
        if self._owns_informers:
            await self.config_refs.close()
        self._tasks.clear()
        self.workers.clear()
        self.worker_tasks.clear()

    # ------------------------------------------------------------ lookups for logs/exec

    def find_pod(self, namespace: str, name: str) -> t.Pod | None:
        return self.pod_informer.get(name, namespace or "default")

