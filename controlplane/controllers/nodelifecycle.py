"""The node lifecycle controller: node health from heartbeats, taints, and taint-based eviction.

What must hold:
- a node's heartbeat is its Lease in `kube-node-lease` (renewed by its node agent) or its
  Ready condition's lastHeartbeatTime; we note, on OUR clock, when either last changed
  (never comparing the agent's timestamps with our clock);
- no heartbeat change for the grace period (default 40 s) -> Ready becomes Unknown
  ("Kubelet stopped posting node status."), the node's pods are marked not Ready (so they
  leave Endpoints), and the node is tainted `node.kubernetes.io/unreachable:NoSchedule`
  (`not-ready` when the agent itself reports Ready=False) at once;
- the NoExecute taint of the same key is what evicts, and adding it is rate limited per zone
  (a token bucket of `--node-eviction-rate` nodes/s, burst 1; `--secondary-node-eviction-rate`
  in a partially disrupted zone larger than `--large-cluster-size-threshold`, else 0);
- disruption: when the unhealthy share of a zone's nodes reaches `--unhealthy-zone-threshold`
  (0.55), or every zone is wholly unhealthy, the zone's eviction rate is 0: no node of it is
  tainted NoExecute, the NoExecute taints we set there are lifted (so no pending eviction
  fires), and the change is said in an event on the zone's unhealthy nodes, a log line and
  `metrics` (one place, exported at the controller manager's /metrics by `EXPORTER`). A
  partition between the control plane and the workers therefore deletes nothing;
- a pod on a node with NoExecute taints is deleted once a taint it does not tolerate is there,
  or once the shortest `tolerationSeconds` of its tolerations for them has run from the taint's
  timeAdded (the api-server gives every pod 300 s tolerations for not-ready and unreachable at
  admission, as Kubernetes' DefaultTolerationSeconds does); a toleration without seconds
  keeps the pod for ever. From an unreachable node pods are deleted with grace 0 (it cannot
  confirm anything); otherwise gracefully (the agent is alive to stop them);
- the node agent is the one writer of Ready=True/False (reasons KubeletReady, KubeletNotReady,
  ...); this controller only ever sets it to Unknown, as Kubernetes' does. When heartbeats
  resume the agent posts Ready again, and the taints follow what it posts; pods that were not
  evicted yet are left untouched;
- after a restart every node gets a full grace period from the moment we first see it, and
  every zone a full token bucket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.common import podutil
from skiff import conditions, defaults, errors, taints
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock, stamp, to_seconds
from skiff.eventloop import wait_event
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory
from skiff.ratelimit import TokenBucket
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.nodelifecycle")

LEASE_NAMESPACE = defaults.NODE_LEASE_NAMESPACE
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


NORMAL_ZONE = "Normal"
PARTIAL_DISRUPTION = "PartialDisruption"
FULL_DISRUPTION = "FullDisruption"
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class EvictionOptions:
    """kube-controller-manager's flags of the same names (and defaults)."""

    rate: float = 0.1  # --node-eviction-rate: nodes/s tainted NoExecute in a healthy zone
    secondary_rate: float = 0.01  # --secondary-node-eviction-rate: in a large, partially disrupted zone
    unhealthy_zone_threshold: float = 0.55  # --unhealthy-zone-threshold
    large_cluster_size_threshold: int = 50  # --large-cluster-size-threshold


@dataclass(frozen=True)
class ZonePlan:
    state: str
    size: int
    unhealthy: int
    rate: float  # nodes/s that may be tainted NoExecute; 0: evictions stopped in this zone

    @property
    def evicting(self) -> bool:
        return self.rate > 0


def zone_of(node: t.Node) -> str:
    return node.metadata.labels.get(ZONE_LABEL, "")


def zone_state(ready: int, unhealthy: int, threshold: float) -> str:
    """Kubernetes' ComputeZoneState, without its "more than 2 unhealthy" floor for a partial
    disruption: our clusters are small, and 2 of 3 nodes lost is what a partition looks like."""
    if unhealthy and not ready:
        return FULL_DISRUPTION
    if unhealthy and unhealthy / (ready + unhealthy) >= threshold:
        return PARTIAL_DISRUPTION
    return NORMAL_ZONE


def plan_zones(nodes: Iterable[tuple[str, str | None]], options: EvictionOptions) -> dict[str, ZonePlan]:
    """Each zone's state and eviction rate from [(zone, Ready status)] of every node.

    A node is healthy only when Ready is True. A wholly unhealthy zone keeps the primary rate
    (that zone is likely gone) unless every zone is: then it is the control plane that is cut
    off, and nothing is evicted anywhere.
    """
    counts: dict[str, list[int]] = {}
    for zone, status in nodes:
        c = counts.setdefault(zone, [0, 0])
        c[0 if status == conditions.TRUE else 1] += 1
    states = {z: zone_state(r, u, options.unhealthy_zone_threshold) for z, (r, u) in counts.items()}
    everywhere = bool(states) and all(s == FULL_DISRUPTION for s in states.values())
    out = {}
    for zone, (ready, unhealthy) in counts.items():
        state, size = states[zone], ready + unhealthy
        if everywhere:
            rate = 0.0
        elif state == PARTIAL_DISRUPTION:
            rate = options.secondary_rate if size > options.large_cluster_size_threshold else 0.0
        else:
            rate = options.rate
        out[zone] = ZonePlan(state, size, unhealthy, rate)
    return out


def no_execute_key(ready_status: str | None) -> str | None:
    """The NoExecute taint a node with this Ready status is due, if any."""
    if ready_status == conditions.FALSE:
        return taints.NOT_READY
    if ready_status == conditions.UNKNOWN:
        return taints.UNREACHABLE
    return None


def needs_new_no_execute(current: Sequence[t.Taint], ready_status: str | None) -> bool:
    """True when the node is due a NoExecute taint and has none of ours: adding one takes a token.

    Swapping not-ready for unreachable (or back) takes none, as in Kubernetes."""
    if no_execute_key(ready_status) is None:
        return False
    return not any((tn.key, tn.effect) in MANAGED_TAINTS and tn.effect == taints.NO_EXECUTE for tn in current)


def desired_managed_taints(current: Sequence[t.Taint], ready_status: str | None, *, unschedulable: bool,
                           evicting: bool, may_add: bool) -> set[tuple[str, str]]:
    """Our taints the node should carry.

    `evicting`: the zone's eviction rate is above 0; `may_add`: a token was taken for a node
    that has no NoExecute taint of ours yet (see needs_new_no_execute)."""
    out: set[tuple[str, str]] = set()
    if ready_status == conditions.FALSE:
        out.add((taints.NOT_READY, taints.NO_SCHEDULE))
    elif ready_status == conditions.UNKNOWN:
        out.add((taints.UNREACHABLE, taints.NO_SCHEDULE))
    if unschedulable:
        out.add((taints.UNSCHEDULABLE, taints.NO_SCHEDULE))
    key = no_execute_key(ready_status)
    if key is not None and evicting and (may_add or not needs_new_no_execute(current, ready_status)):
        out.add((key, taints.NO_EXECUTE))
    return out


def plan_taints(current: Sequence[t.Taint], ready_status: str | None, *, unschedulable: bool,
                now: float, evicting: bool = True, may_add: bool = True) -> list[t.Taint] | None:
    """The node's taints with ours brought up to date, or None when nothing changes.

    A taint that stays keeps its timeAdded: tolerationSeconds count from it."""
    want = desired_managed_taints(current, ready_status, unschedulable=unschedulable, evicting=evicting,
                                  may_add=may_add)
    have = {(tn.key, tn.effect) for tn in current if (tn.key, tn.effect) in MANAGED_TAINTS}
    if want == have:
        return None
    out = [tn for tn in current if (tn.key, tn.effect) not in MANAGED_TAINTS or (tn.key, tn.effect) in want]
    for key, effect in sorted(want - have):
        taint = t.Taint(key=key, effect=effect)
        stamp(taint.time_added, now)
        out.append(taint)
    return out


def eviction_due(pod: t.Pod, no_execute: Sequence[t.Taint], now: float) -> float | None:
    """When `pod` is due for eviction under the NoExecute taints `no_execute`, or None (never).

    Untolerated taint: from its timeAdded; tolerated: timeAdded + tolerationSeconds (the
    earliest over the taints); tolerated without seconds: never for that taint."""
    due: float | None = None
    for taint in no_execute:
        since = to_seconds(taint.time_added) if taint.HasField("time_added") else now
        tol = taints.tolerating(pod.spec.tolerations, taint)
        if tol is None:
            at = since
        elif tol.HasField("toleration_seconds"):
            at = since + max(float(tol.toleration_seconds), 0.0)
        else:
            continue
        due = at if due is None else min(due, at)
    return due


def plan_evictions(node: t.Node, pods: Iterable[t.Pod], now: float) -> list[t.Pod]:
    """Pods on `node` whose time is up under its NoExecute taints (ours or anyone's)."""
    no_execute = [tn for tn in node.spec.taints if tn.effect == taints.NO_EXECUTE]
    if not no_execute:
        return []
    out = []
    for pod in pods:
        due = eviction_due(pod, no_execute, now)
        if due is not None and now >= due:
            out.append(pod)
    return out


@dataclass
class Metrics:
    """What the controller counts, named as kube-controller-manager's node_collector metrics.

    Gauges per zone, counters since start; `samples()` is the one list an exporter reads."""

    zone_health: dict[str, float] = field(default_factory=dict)  # % of the zone's nodes Ready
    zone_size: dict[str, int] = field(default_factory=dict)
    unhealthy_nodes_in_zone: dict[str, int] = field(default_factory=dict)
    zone_disruption: dict[str, int] = field(default_factory=dict)  # 1 while evictions are stopped there
    evictions_total: dict[str, int] = field(default_factory=dict)  # nodes tainted NoExecute
    pod_evictions_total: int = 0
    disruptions_total: int = 0  # times a zone entered the evictions-stopped mode

    def observe(self, zones: Mapping[str, ZonePlan]) -> None:
        for gauge in (self.zone_health, self.zone_size, self.unhealthy_nodes_in_zone, self.zone_disruption):
            for gone in set(gauge) - set(zones):
                del gauge[gone]
        for zone, plan in zones.items():
            self.zone_health[zone] = 100.0 * (plan.size - plan.unhealthy) / plan.size if plan.size else 100.0
            self.zone_size[zone] = plan.size
            self.unhealthy_nodes_in_zone[zone] = plan.unhealthy
            self.zone_disruption[zone] = 0 if plan.evicting else 1

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        out: list[tuple[str, dict[str, str], float]] = []
        for name in ("zone_health", "zone_size", "unhealthy_nodes_in_zone", "zone_disruption", "evictions_total"):
            values: dict[str, float] = getattr(self, name)
            out += [(f"node_collector_{name}", {"zone": z}, float(v)) for z, v in sorted(values.items())]
        out.append(("node_collector_pod_evictions_total", {}, float(self.pod_evictions_total)))
        out.append(("node_collector_disruptions_total", {}, float(self.disruptions_total)))
        return out


class _Exporter(Collector):
    """The running controller's `Metrics` in the process's registry (the controller manager's /metrics)."""

    def __init__(self) -> None:
        self.current: Metrics | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are not reserved: a test process may build several controllers

    def collect(self) -> Iterator[Metric]:
        if self.current is None:
            return
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, labels, value in self.current.samples():
            family = families.get(name)
            if family is None:
                doc = f"kube-controller-manager's {name} (controlplane/controllers/nodelifecycle.py)"
                family = families[name] = (
                    CounterMetricFamily(name.removesuffix("_total"), doc, labels=list(labels))
                    if name.endswith("_total") else GaugeMetricFamily(name, doc, labels=list(labels)))
            family.add_metric(list(labels.values()), value)
        yield from families.values()


EXPORTER = _Exporter()
REGISTRY.register(EXPORTER)


class NodeLifecycleController:
    name = "nodelifecycle"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None, grace_period: float = 40.0, monitor_period: float = 5.0,
                 eviction: EvictionOptions | None = None) -> None:
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.grace_period = grace_period
        self.monitor_period = monitor_period
        self.eviction = eviction or EvictionOptions()
        self.nodes = factory.informer(t.Node)
        self.leases = factory.informer(t.Lease, namespace=LEASE_NAMESPACE)
        self.pods = factory.informer(t.Pod)
        self.pods.add_indexer(podutil.NODE_INDEX, podutil.index_node_name)
        self.health: dict[str, NodeHealth] = {}
        self.zones: dict[str, ZonePlan] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.metrics = Metrics()
        EXPORTER.current = self.metrics
        self._stop = asyncio.Event()

    async def run(self, *, workers: int = 1) -> None:
        while not self._stop.is_set():
            try:
                await self.monitor_once()
            except Exception:
                log.exception("node health pass failed")
            await wait_event(self._stop, self.monitor_period)

    def shutdown(self) -> None:
        self._stop.set()

    async def monitor_once(self) -> None:
        """One pass, in Kubernetes' order: every node's health, then the zones, then taints and evictions."""
        now = self.clock.now()
        nodes: list[t.Node] = []
        for node in self.nodes.list():
            try:
                nodes.append(await self._update_health(node, now))
            except errors.SkiffError as exc:
                log.warning("node %s: %s (retrying next pass)", node.metadata.name, exc)
                nodes.append(node)
        for gone in set(self.health) - {n.metadata.name for n in nodes}:
            del self.health[gone]
        zones = plan_zones(((zone_of(n), conditions.node_ready_status(n) or None) for n in nodes), self.eviction)
        self._note_zones(zones, nodes)
        for node in nodes:
            try:
                await self._taint_and_evict(node, zones[zone_of(node)], now)
            except errors.SkiffError as exc:
                log.warning("node %s: %s (retrying next pass)", node.metadata.name, exc)

    async def _update_health(self, node: t.Node, now: float) -> t.Node:
        name = node.metadata.name
        lease = self.leases.get(name, LEASE_NAMESPACE)
        health = observe(self.health.get(name), node, lease, now)
        self.health[name] = health
        cond = plan_ready_condition(node, health, now, self.grace_period)
        if cond is None:
            return node
        new = podutil.copy(node)
        conditions.replace_condition(new.status.conditions, cond)
        node = await self.client.update_status(new)
        self.recorder.event(node, NORMAL, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        log.warning("node %s: no heartbeat for %.0fs; Ready=Unknown", name, now - health.probe)
        return node

    def _note_zones(self, zones: Mapping[str, ZonePlan], nodes: Sequence[t.Node]) -> None:
        """Say when a zone stops or resumes evictions; swap its rate limiter when its rate changes."""
        now = self.clock.now()
        for zone, plan in zones.items():
            before = self.zones.get(zone)
            if before is None or before.rate != plan.rate:
                # A fresh, full bucket at the new rate, as client-go's SwapLimiter does.
                self.buckets[zone] = TokenBucket.full(plan.rate, now)
            was_evicting = before.evicting if before is not None else True
            if was_evicting == plan.evicting:
                continue
            label = zone or "(no zone label)"
            unhealthy = [n for n in nodes if zone_of(n) == zone
                         and conditions.node_ready_status(n) != conditions.TRUE]
            if not plan.evicting:
                self.metrics.disruptions_total += 1
                message = (f"Zone {label} is in {plan.state}: {plan.unhealthy} of {plan.size} nodes unhealthy "
                           f"(threshold {self.eviction.unhealthy_zone_threshold:.0%}); not evicting pods")
                log.warning("%s", message)
                for n in unhealthy:
                    self.recorder.event(n, WARNING, "NodeEvictionsStopped", message)
            else:
                message = (f"Zone {label} is {plan.state} ({plan.unhealthy} of {plan.size} nodes unhealthy); "
                           f"evicting again at {plan.rate:g} nodes/s")
                log.warning("%s", message)
                for n in unhealthy:
                    self.recorder.event(n, NORMAL, "NodeEvictionsResumed", message)
        for gone in set(self.buckets) - set(zones):
            del self.buckets[gone]
        self.zones = dict(zones)
        self.metrics.observe(zones)

    async def _taint_and_evict(self, node: t.Node, zone: ZonePlan, now: float) -> None:
        name = node.metadata.name
        status = conditions.node_ready_status(node) or None
        may_add = False
        if zone.evicting and needs_new_no_execute(node.spec.taints, status):
            may_add, self.buckets[zone_of(node)] = self.buckets[zone_of(node)].take(now)
        new_taints = plan_taints(node.spec.taints, status, unschedulable=node.spec.unschedulable, now=now,
                                 evicting=zone.evicting, may_add=may_add)
        if new_taints is not None:
            new = podutil.copy(node)
            del new.spec.taints[:]
            new.spec.taints.extend(new_taints)
            node = await self.client.update(new)
            if may_add:
                z = zone_of(node)
                self.metrics.evictions_total[z] = self.metrics.evictions_total.get(z, 0) + 1
        pods = self.pods.by_index(podutil.NODE_INDEX, name)
        if status not in (None, conditions.TRUE):
            await self._mark_not_ready(pods)
        # An unreachable node cannot confirm a graceful stop: its pods go at once (grace 0). A node
        # whose agent reports NotReady is alive and stops them itself, so they get their grace period.
        grace = 0 if status == conditions.UNKNOWN else None
        for pod in plan_evictions(node, pods, now):
            if grace is None and pod.metadata.HasField("deletion_timestamp"):
                continue
            try:
                await self.client.delete(t.Pod, pod.metadata.name, pod.metadata.namespace,
                                         grace_period_seconds=grace)
            except errors.NotFoundError:
                continue
            self.metrics.pod_evictions_total += 1
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
