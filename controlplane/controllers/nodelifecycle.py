"""The node lifecycle controller: node health from heartbeats, taints, and evictions.

What must hold:
- a node's heartbeat is its Lease in `kube-node-lease` (renewed by its node agent) or its
  Ready condition's lastHeartbeatTime; we note, on OUR clock, when either last changed
  (never comparing the agent's timestamps with our clock);
- no heartbeat change for the grace period (default 40 s) -> Ready becomes Unknown
  ("Kubelet stopped posting node status."), the node's pods are marked not Ready (so they
  leave Endpoints), and the node is tainted `node.kubernetes.io/unreachable` (NoSchedule and
  NoExecute; `not-ready` when the agent itself reports Ready=False);
- once tainted NoExecute for the eviction timeout (default 60 s), its pods are deleted so their
  controllers recreate them elsewhere: with grace 0 from an unreachable node (it cannot confirm
  anything), gracefully from a node whose agent reports NotReady (it is alive to stop them);
  a pod tolerating the taint stays (for its tolerationSeconds, or for ever);
- the node agent is the one writer of Ready=True/False (reasons KubeletReady, KubeletNotReady,
  ...); this controller only ever sets it to Unknown, as Kubernetes' does. When heartbeats
  resume the agent posts Ready again, and the taints follow what it posts; pods that were not
  evicted yet are left untouched;
- after a restart every node gets a full grace period from the moment we first see it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controlplane.common import podutil
from skiff import conditions, errors, taints
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock, stamp, to_seconds
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.nodelifecycle")

LEASE_NAMESPACE = "kube-node-lease"
REASON_UNKNOWN = "NodeStatusUnknown"
REASON_NEVER_UPDATED = "NodeStatusNeverUpdated"
MANAGED_TAINTS = frozenset({(taints.NOT_READY, taints.NO_SCHEDULE), (taints.NOT_READY, taints.NO_EXECUTE),
                            (taints.UNREACHABLE, taints.NO_SCHEDULE), (taints.UNREACHABLE, taints.NO_EXECUTE),
                            (taints.UNSCHEDULABLE, taints.NO_SCHEDULE)})


@dataclass(frozen=True)
class NodeHealth:
    probe: float  # our clock: when a heartbeat last changed (or when we first saw the node)
    lease_marker: str
    heartbeat_marker: str


def observe(health: NodeHealth | None, node: t.Node, lease: t.Lease | None, now: float) -> NodeHealth:
    lease_marker = lease.spec.renew_time.SerializeToString().hex() if lease is not None else ""
    cond = conditions.node_ready_condition(node)
    hb_marker = cond.last_heartbeat_time.SerializeToString().hex() if cond is not None else ""
    if health is None:
        return NodeHealth(now, lease_marker, hb_marker)
    if lease_marker != health.lease_marker or hb_marker != health.heartbeat_marker:
        return NodeHealth(now, lease_marker, hb_marker)
    return health


def plan_ready_condition(node: t.Node, health: NodeHealth, now: float, grace: float) -> t.NodeCondition | None:
    """Ready=Unknown when the node has been silent for longer than `grace`, or None to leave it.

    Never True or False: those are the node agent's to write.
    """
    if now - health.probe <= grace:
        return None
    cond = conditions.node_ready_condition(node)
    if cond is None:
        new = t.NodeCondition(type=conditions.READY, status=conditions.UNKNOWN, reason=REASON_NEVER_UPDATED,
                              message="Kubelet never posted node status.")
    elif cond.status == conditions.UNKNOWN:
        return None
    else:
        new = t.NodeCondition()
        new.CopyFrom(cond)  # the agent's last heartbeat time stays: it is its marker, not ours
        new.status, new.reason, new.message = conditions.UNKNOWN, REASON_UNKNOWN, "Kubelet stopped posting node status."
    stamp(new.last_transition_time, now)
    return new


def desired_managed_taints(ready_status: str | None, *, unschedulable: bool) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    if ready_status == "False":
        out |= {(taints.NOT_READY, taints.NO_SCHEDULE), (taints.NOT_READY, taints.NO_EXECUTE)}
    elif ready_status == "Unknown":
        out |= {(taints.UNREACHABLE, taints.NO_SCHEDULE), (taints.UNREACHABLE, taints.NO_EXECUTE)}
    if unschedulable:
        out.add((taints.UNSCHEDULABLE, taints.NO_SCHEDULE))
    return out


def plan_taints(current: Sequence[t.Taint], ready_status: str | None, *, unschedulable: bool,
                now: float) -> list[t.Taint] | None:
    """The node's taints with ours brought up to date, or None when nothing changes."""
    want = desired_managed_taints(ready_status, unschedulable=unschedulable)
    have = {(tn.key, tn.effect) for tn in current if (tn.key, tn.effect) in MANAGED_TAINTS}
    if want == have:
        return None
    out = [tn for tn in current if (tn.key, tn.effect) not in MANAGED_TAINTS or (tn.key, tn.effect) in want]
    for key, effect in sorted(want - have):
        taint = t.Taint(key=key, effect=effect)
        stamp(taint.time_added, now)
        out.append(taint)
    return out


def plan_evictions(node: t.Node, pods: Iterable[t.Pod], now: float, eviction_timeout: float) -> list[t.Pod]:
    """Pods on `node` whose time is up under its NoExecute not-ready/unreachable taint."""
    taint = next((tn for tn in node.spec.taints if tn.effect == taints.NO_EXECUTE
                  and tn.key in (taints.UNREACHABLE, taints.NOT_READY)), None)
    if taint is None:
        return []
    since = to_seconds(taint.time_added) if taint.HasField("time_added") else now
    out = []
    for pod in pods:
        tol = taints.tolerating(pod.spec.tolerations, taint)
        if tol is None:
            wait = eviction_timeout
        elif not tol.HasField("toleration_seconds"):
            continue
        else:
            wait = max(float(tol.toleration_seconds), 0.0)
        if now >= since + wait:
            out.append(pod)
    return out


class NodeLifecycleController:
    name = "nodelifecycle"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None, grace_period: float = 40.0, eviction_timeout: float = 60.0,
                 monitor_period: float = 5.0) -> None:
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.grace_period = grace_period
        self.eviction_timeout = eviction_timeout
        self.monitor_period = monitor_period
        self.nodes = factory.informer(t.Node)
        self.leases = factory.informer(t.Lease, namespace=LEASE_NAMESPACE)
        self.pods = factory.informer(t.Pod)
        self.pods.add_indexer(podutil.NODE_INDEX, podutil.index_node_name)
        self.health: dict[str, NodeHealth] = {}
        self._stop = asyncio.Event()

    async def run(self, *, workers: int = 1) -> None:
        while not self._stop.is_set():
            try:
                await self.monitor_once()
            except Exception:
                log.exception("node health pass failed")
            try:
                await asyncio.wait_for(self._stop.wait(), self.monitor_period)
            except TimeoutError:
                pass

    def shutdown(self) -> None:
        self._stop.set()

    async def monitor_once(self) -> None:
        now = self.clock.now()
        seen = set()
        for node in self.nodes.list():
            name = node.metadata.name
            seen.add(name)
            try:
                await self._check(node, now)
            except errors.SkiffError as exc:
                log.warning("node %s: %s (retrying next pass)", name, exc)
        for gone in set(self.health) - seen:
            del self.health[gone]

    async def _check(self, node: t.Node, now: float) -> None:
        name = node.metadata.name
        lease = self.leases.get(name, LEASE_NAMESPACE)
        health = observe(self.health.get(name), node, lease, now)
        self.health[name] = health
        cond = plan_ready_condition(node, health, now, self.grace_period)
        if cond is not None:
            new = podutil.copy(node)
            conditions.replace_condition(new.status.conditions, cond)
            node = await self.client.update_status(new)
            self.recorder.event(node, NORMAL, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
            log.warning("node %s: no heartbeat for %.0fs; Ready=Unknown", name, now - health.probe)
        status = conditions.node_ready_status(node) or None
        new_taints = plan_taints(node.spec.taints, status, unschedulable=node.spec.unschedulable, now=now)
        if new_taints is not None:
            new = podutil.copy(node)
            del new.spec.taints[:]
            new.spec.taints.extend(new_taints)
            node = await self.client.update(new)
        if status in (None, "True"):
            return
        pods = self.pods.by_index(podutil.NODE_INDEX, name)
        await self._mark_not_ready(pods)
        # An unreachable node cannot confirm a graceful stop: its pods go at once (grace 0). A node
        # whose agent reports NotReady is alive and stops them itself, so they get their grace period.
        grace = 0 if status == "Unknown" else None
        for pod in plan_evictions(node, pods, now, self.eviction_timeout):
            if grace is None and pod.metadata.HasField("deletion_timestamp"):
                continue
            try:
                await self.client.delete(t.Pod, pod.metadata.name, pod.metadata.namespace,
                                         grace_period_seconds=grace)
            except errors.NotFoundError:
                continue
            self.recorder.event(pod, NORMAL, "TaintManagerEviction",
                                f"Marking for deletion Pod {pod.metadata.namespace}/{pod.metadata.name}")
            self.recorder.event(node, WARNING, "NodeControllerEviction",
                                f"Deleting pod {pod.metadata.namespace}/{pod.metadata.name} from node {name}")

    async def _mark_not_ready(self, pods: Iterable[t.Pod]) -> None:
        now = self.clock.now()
        for pod in pods:
            if not conditions.is_pod_ready(pod) or pod.metadata.HasField("deletion_timestamp"):
                continue
            new = podutil.copy(pod)
            ready = conditions.pod_ready_condition(new)
            assert ready is not None  # is_pod_ready above
            ready.status = conditions.FALSE
            stamp(ready.last_transition_time, now)
            try:
                await self.client.update_status(new)
            except (errors.NotFoundError, errors.ConflictError):
                continue
