"""The scheduler: place each pod without a node on the best node, then bind it.

What must hold:
- one pod is decided at a time (the decision reads and updates the cache synchronously), so
  consecutive decisions always see each other: a chosen node has the pod assumed on it
  before the next pod is looked at, without waiting for the bind or the watch;
- filters remove nodes the pod cannot run on; scores rank the rest; the highest weighted
  sum wins and ties are broken at random, so equal nodes share the load;
- the search starts where the previous one stopped and stops after enough feasible nodes
  (see num_feasible_nodes_to_find), so a decision costs O(nodes examined), never O(pods);
- with memoizable plugins (framework.py) a node's verdict for a pod signature is computed once
  per node state and reused: the same decision as running every plugin, at a dictionary
  lookup per examined node for the pods of one owner;
- binding goes through the api-server asynchronously (bounded in flight: `max_binds_in_flight`
  pods decided and not yet answered), batched: when a BindBatch call goes out is decided by
  `bind_batch_size` alone (a pure rule of the pods waiting and the calls in flight), so the pods
  decided while a call is out go together in the next (each pod still its own Bind on the
  api-server, with its own outcome); a failed bind forgets the assumption (freeing the node)
  and the pod is retried after its backoff;
- before a bind, the pod's unbound WaitForFirstConsumer claims are given the chosen node
  (plugins/volume_binding.py `pre_bind`); a claim or volume event retries waiting pods;
- a pod that fits nowhere gets a FailedScheduling event naming the reasons per node count
  and waits in the queue until the cluster changes (or its retry timer fires).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from controlplane.common import podutil
from controlplane.scheduler import metrics
from controlplane.scheduler.cache import SchedulerCache
from controlplane.scheduler.framework import (
    FilterPlugin,
    FitError,
    ScorePlugin,
    memoizable,
    num_feasible_nodes_to_find,
    scores_in_range,
)
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from controlplane.scheduler.plugins import default_filters, default_scores
from controlplane.scheduler.plugins.volume_binding import StorageView, VolumeBinding
from controlplane.scheduler.queue import QueuedPod, SchedulingQueue
from skiff import conditions, errors
from skiff.client import ApiClient, new_binding
from skiff.clock import Clock, RealClock
from skiff.events import NORMAL, WARNING, EventRecorder, Recorder
from skiff.guard import supervise
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.scheduler")

DEFAULT_SCHEDULER_NAME = "default-scheduler"
COMPONENT = "default-scheduler"
# kube-scheduler's event client: 50 writes/s after a burst of 100 (its clientConnection
# defaults), and a queue of 1,000 events that drops when full. A burst of 10,000 binds therefore
# writes the first Scheduled events and a steady trickle, not 10,000 Events: at one Event per
# bind, the writes cost the scheduler as much gRPC as the binds themselves (and the api-server
# and store a second write per pod).
EVENT_QPS = 50.0
EVENT_BURST = 100
EVENT_QUEUE = 1000
# Binds go out as BindBatch calls of at most this many (the api-server commits up to 100
# bindings in one store transaction: Registry.bind_many). A pod with claims to bind first
# (VolumeBinding.pre_bind) is bound on its own.
MAX_BIND_BATCH = 100
# A remembered verdict's weighted sum of the final scores (Scheduler._verdict).
_FINAL_SUM = itemgetter(1)


@dataclass(frozen=True, slots=True)
class BindBatching:
    """When decided pods go out as BindBatch calls (`bind_batch_size`).

    max_calls: BindBatch calls in flight at once. With one, a call carries every pod decided
    while the previous one was out: per-call costs (gRPC on both hops, a store transaction, a
    Raft entry and an fsync) are paid once per as many pods as possible.
    max_batch: pods per call at most.
    min_batch: a further call (one already in flight) goes out only with this many pods waiting;
    the first call never waits (a lone pod is bound at once).
    """

    max_calls: int = 1
    max_batch: int = MAX_BIND_BATCH
    min_batch: int = 1

    def __post_init__(self) -> None:
        if self.max_calls < 1 or not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(f"bind batching: want max_calls >= 1 and 1 <= min_batch <= max_batch, got {self}")


def bind_batch_size(waiting: int, calls_in_flight: int, rule: BindBatching) -> int:
    """How many of the `waiting` decided pods a new BindBatch call takes now (0: none goes out yet).

    Asked whenever a pod is decided and whenever a call returns, so no pod waits longer than
    the calls in flight take to answer."""
    if waiting <= 0 or calls_in_flight >= rule.max_calls:
        return 0
    if calls_in_flight and waiting < rule.min_batch:
        return 0
    return min(waiting, rule.max_batch)


def best_totals(pod: PodInfo, totals: list[int], columns: list[tuple[ScorePlugin, list[int]]]) -> list[int]:
    """The indexes of the highest totals once each plugin's column of raw scores is normalized,
    weighted and added to `totals` (the columns are normalized in place).

    A column whose raw scores are all equal is skipped: equal raw scores normalize to equal
    scores (framework.py), so it would add the same to every total and pick the same winners."""
    for plugin, scores in columns:
        if min(scores) == max(scores):
            continue
        plugin.normalize(pod, scores)
        weight = plugin.weight
        totals = [total + s * weight for total, s in zip(totals, scores, strict=True)]
    best = max(totals)
    if totals.count(best) == 1:  # the usual case, found without a pass in Python
        return [totals.index(best)]
    return [i for i, total in enumerate(totals) if total == best]


def new_recorder(client: ApiClient, *, clock: Clock | None = None) -> EventRecorder:
    """The scheduler's event recorder, rate-limited as kube-scheduler's."""
    return EventRecorder(client, COMPONENT, clock=clock, qps=EVENT_QPS, burst=EVENT_BURST, max_pending=EVENT_QUEUE)


def bound_pod_view(pod: t.Pod) -> t.Pod:
    """The scheduler's pod informer transform (skiff.informer): a bound pod keeps only what the
    scheduler reads of it — metadata without labels, annotations and managed fields, the spec
    without volumes and volume mounts (resources, ports, selectors, tolerations: `PodInfo`),
    and status.phase (terminal or not). A pending pod is kept whole: it is scheduled from that
    copy. The scheduler writes no pod (a bind is a Binding), so no shortened pod is ever
    written back. No plugin reads a placed pod's labels (a pod affinity or topology spread
    plugin would need them back); a map field costs upb a hash table, the labels alone ~2.7 kB
    of a ~5.3 kB view. At 30,000 bound pods the views are most of the scheduler's memory
    (docs/scale.md). The result is a new message: clearing fields of a decoded message frees
    nothing (its arena keeps them)."""
    if not pod.spec.node_name:
        return pod
    for name in ("labels", "annotations", "managed_fields"):
        pod.metadata.ClearField(name)
    pod.spec.ClearField("volumes")
    for c in (*pod.spec.init_containers, *pod.spec.containers):
        c.ClearField("volume_mounts")
    phase = pod.status.phase
    pod.ClearField("status")
    pod.status.phase = phase
    return t.Pod.FromString(pod.SerializeToString())


@dataclass(slots=True)
class _PendingBind:
    qp: QueuedPod
    pod: t.Pod
    info: PodInfo
    node: str
    started: float


class Scheduler:
    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None, filters: list[FilterPlugin] | None = None,
                 scores: list[ScorePlugin] | None = None, percentage_of_nodes_to_score: int = 0,
                 max_binds_in_flight: int = 0, scheduler_names: tuple[str, ...] = ("", DEFAULT_SCHEDULER_NAME),
                 rng: random.Random | None = None, batch_binds: bool = True,
                 bind_batching: BindBatching | None = None) -> None:
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.filters = filters if filters is not None else default_filters()
        self.scores = scores if scores is not None else default_scores()
        self.percentage = percentage_of_nodes_to_score
        # Every score plugin memoizable: decisions may use the nodes' remembered verdicts
        # (framework.py; the filters are checked per pod, as pre_filter picks them).
        self._memoizable = all(memoizable(p) for p in self.scores)
        # A remembered verdict holds the raw scores of the plugins that normalize over the
        # feasible nodes, and the weighted sum of those whose scores are final (_verdict).
        self._scaled = [p for p in self.scores if not scores_in_range(p)]
        self._final = [p for p in self.scores if scores_in_range(p)]
        self.scheduler_names = scheduler_names
        self.rng = rng or random.Random()
        self.cache = SchedulerCache()
        self.queue = SchedulingQueue(self.clock)
        self.pods = factory.informer(t.Pod)
        self.nodes = factory.informer(t.Node)
        self.claims = factory.informer(t.PersistentVolumeClaim)
        self.volumes = factory.informer(t.PersistentVolume)
        self.classes = factory.informer(t.StorageClass)
        self.volume_binding = VolumeBinding(StorageView(
            claim=lambda ns, name: self.claims.get(name, ns), volume=self.volumes.get, volumes=self.volumes.list,
            storage_class=self.classes.get))
        if filters is None:
            self.filters.append(self.volume_binding)
        for informer in (self.claims, self.volumes, self.classes):
            # A claim bound, a volume made available: pods waiting for storage are looked at again.
            informer.add_handler(on_add=lambda obj: self.queue.move_all_to_active(),
                                 on_update=lambda old, new: self.queue.move_all_to_active())
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.nodes.add_handler(on_add=self._node_added, on_update=self._node_updated, on_delete=self._node_deleted)
        self._next_start = 0
        self.bind_batching = bind_batching or BindBatching()
        # By default room for the calls in flight and a full batch gathering meanwhile, so the
        # decisions never wait for a call to return while the rule would send more.
        self._bind_slots = asyncio.Semaphore(
            max_binds_in_flight or (self.bind_batching.max_calls + 1) * self.bind_batching.max_batch)
        self._binds: set[asyncio.Task[Any]] = set()
        # Decided pods waiting for a BindBatch call, the calls in flight, and whether the rule
        # is to be asked once the current decisions yield.
        self._batching = batch_binds
        self._pending: list[_PendingBind] = []
        self._calls = 0
        self._dispatch_soon = False
        self.bind_calls = 0
        self.scheduled = 0
        self.unschedulable = 0
        self.bind_failures = 0

    # ------------------------------------------------------------------ informer handlers

    def _responsible(self, pod: t.Pod) -> bool:
        return pod.spec.scheduler_name in self.scheduler_names

    def _pod_added(self, pod: t.Pod) -> None:
        if pod.spec.node_name:
            self.cache.add_pod(pod)
        elif self._responsible(pod) and not pod.metadata.HasField("deletion_timestamp") \
                and not podutil.is_terminal(pod):
            self.queue.add(pod)

    def _pod_updated(self, old: t.Pod, new: t.Pod) -> None:
        if new.spec.node_name:
            if not old.spec.node_name:
                self.queue.delete(podutil.pod_key(new))
            self.cache.add_pod(new)
            if podutil.is_terminal(new) and not podutil.is_terminal(old):
                self.queue.move_all_to_active()  # its resources are free now
        elif new.metadata.HasField("deletion_timestamp") or podutil.is_terminal(new):
            self.queue.delete(podutil.pod_key(new))
        elif self._responsible(new):
            self.queue.update(new)

    def _pod_deleted(self, pod: t.Pod) -> None:
        key = podutil.pod_key(pod)
        self.queue.delete(key)
        had_node = self.cache.node_of(key) is not None
        self.cache.remove_pod(pod)
        if had_node:
            self.queue.move_all_to_active()

    def _node_added(self, node: t.Node) -> None:
        self.cache.add_node(node)
        self.queue.move_all_to_active()

    def _node_updated(self, old: t.Node, new: t.Node) -> None:
        self.cache.update_node(new)
        if (old.spec != new.spec or old.metadata.labels != new.metadata.labels
                or old.status.allocatable != new.status.allocatable
                or conditions.is_node_ready(old) != conditions.is_node_ready(new)):
            self.queue.move_all_to_active()

    def _node_deleted(self, node: t.Node) -> None:
        self.cache.remove_node(node.metadata.name)

    # ------------------------------------------------------------------ deciding

    def schedule(self, info: PodInfo) -> str:
        """The node for `info` (raises FitError when none fits). Reads and moves only the search start."""
        nodes = self.cache.node_list
        n = len(nodes)
        if n == 0:
            raise FitError(info.key, 0, Counter())
        active = [f for f in self.filters if f.pre_filter(info)]
        # Bound methods looked up once: this loop runs filters x hundreds of nodes per pod.
        filters = [f.filter for f in active]
        memo = self._memoizable and all(memoizable(f) for f in active)
        want = num_feasible_nodes_to_find(n, self.percentage)
        start = self._next_start % n
        order = nodes[start:] + nodes[:start] if start else nodes
        feasible: list[NodeInfo] = []
        picked: list[tuple[Any, ...]] = []
        diagnosis: Counter[str] = Counter()
        examined = 0
        if memo:
            sig = info.signature
            # The nodes are taken in runs of as many as are still wanted, each run's verdicts
            # looked up in one comprehension: a run stops at the last node the one-by-one search
            # would examine (when all of it fits), so the same nodes are examined.
            while examined < n and len(feasible) < want:
                run = order[examined:examined + want - len(feasible)]
                examined += len(run)
                looked_up = [ni.verdicts.get(sig) for ni in run]
                verdicts: list[tuple[Any, ...]] = looked_up if None not in looked_up else [  # type: ignore[assignment]
                    v if v is not None else ni.remember(sig, self._verdict(info, ni, filters))
                    for ni, v in zip(run, looked_up, strict=True)]
                failed = [v[0] for v in verdicts if v[0] is not None]
                if not failed:
                    feasible += run
                    picked += verdicts
                    continue
                for status in failed:
                    diagnosis.update(status.reasons)
                for ni, v in zip(run, verdicts, strict=True):
                    if v[0] is None:
                        feasible.append(ni)
                        picked.append(v)
        else:
            for ni in order:
                examined += 1
                for fn in filters:
                    status = fn(info, ni)
                    if status is not None:
                        diagnosis.update(status.reasons)
                        break
                else:
                    feasible.append(ni)
                    if len(feasible) >= want:
                        break
        self._next_start = (start + examined) % n
        if not feasible:
            raise FitError(info.key, n, diagnosis)
        if len(feasible) == 1:
            return feasible[0].name
        if memo:
            # The final scores' weighted sum comes with each verdict; only the plugins that
            # normalize over the feasible nodes are summed here (the same totals, fewer passes).
            totals = list(map(_FINAL_SUM, picked))
            columns = [(plugin, list(map(itemgetter(2 + i), picked))) for i, plugin in enumerate(self._scaled)]
        else:
            totals = [0] * len(feasible)
            columns = [(plugin, list(plugin.score_all(info, feasible))) for plugin in self.scores]
        winners = best_totals(info, totals, columns)
        return feasible[winners[0] if len(winners) == 1 else self.rng.choice(winners)].name

    def _verdict(self, info: PodInfo, ni: NodeInfo, filters: list[Any]) -> tuple[Any, ...]:
        """(the first failing filter's status, None: it fits; if it fits, the weighted sum of the
        final scores (`_final`), then the raw score of each plugin that normalizes (`_scaled`)).
        Flat, so a decision takes a column out of its feasible nodes' verdicts with itemgetter."""
        for fn in filters:
            status = fn(info, ni)
            if status is not None:
                return (status,)
        return (None, sum(plugin.score(info, ni) * plugin.weight for plugin in self._final),
                *(plugin.score(info, ni) for plugin in self._scaled))

    async def schedule_one(self, qp: QueuedPod) -> None:
        pod = self.pods.get_by_key(qp.key)
        if (pod is None or pod.metadata.uid != qp.pod.metadata.uid or pod.spec.node_name
                or pod.metadata.HasField("deletion_timestamp") or self.cache.node_of(qp.key) is not None):
            self.queue.done(qp.key)
            return
        info = PodInfo.of(pod)
        started = time.perf_counter()
        try:
            node = self.schedule(info)
        except FitError as err:
            metrics.attempt("unschedulable", time.perf_counter() - started)
            self.unschedulable += 1
            log.debug("pod %s: %s", qp.key, err)
            self.recorder.event(pod, WARNING, "FailedScheduling", str(err))
            self.queue.unschedulable(qp)
            return
        self.cache.assume(info, node)
        await self._bind_slots.acquire()
        if self._batching and not self.volume_binding.pre_filter(info):
            self._pending.append(_PendingBind(qp, pod, info, node, started))
            if not self._dispatch_soon:
                # Asked after the decisions made until the loop yields, so they go out together.
                self._dispatch_soon = True
                asyncio.get_running_loop().call_soon(self._dispatch)
            return
        self._track(self._bind(qp, pod, info, node, started))

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _bind(self, qp: QueuedPod, pod: t.Pod, info: PodInfo, node: str, started: float) -> None:
        """One pod: its claims' selected node first (pre_bind), then its own Bind."""
        try:
            await self.volume_binding.pre_bind(self.client, pod, node)
            await self.client.bind(pod.metadata.namespace, pod.metadata.name, node, uid=info.uid)
        except errors.SkiffError as exc:
            self._bind_failed(qp, pod, info, node, started, exc)
            return
        finally:
            self._bind_slots.release()
        self._bound(qp, pod, node, started)

    def _dispatch(self) -> None:
        """Start the BindBatch calls `bind_batch_size` asks for now."""
        self._dispatch_soon = False
        if not self._batching:  # the api-server has no BindBatch: one Bind per pod
            waiting, self._pending = self._pending, []
            for b in waiting:
                self._track(self._bind(b.qp, b.pod, b.info, b.node, b.started))
            return
        while n := bind_batch_size(len(self._pending), self._calls, self.bind_batching):
            batch = self._pending[:n]
            del self._pending[:n]
            self._calls += 1
            self._track(self._send_batch(batch))

    async def _send_batch(self, batch: list[_PendingBind]) -> None:
        """One BindBatch call; then the rule is asked again (the pods decided meanwhile). A call
        cancelled (shutdown) starts no further one."""
        try:
            await self._bind_batch(batch)
        finally:
            self._calls -= 1
        self._dispatch()

    async def _bind_batch(self, batch: list[_PendingBind]) -> None:
        self.bind_calls += 1
        outcomes: list[errors.SkiffError | None]
        try:
            outcomes = await self.client.bind_batch(
                [new_binding(b.pod.metadata.namespace, b.pod.metadata.name, b.node, uid=b.info.uid) for b in batch])
        except errors.UnimplementedError:
            # An api-server without BindBatch (an older one, mid-upgrade): one Bind per pod from now on.
            log.info("the api-server has no BindBatch: binding one pod per call")
            self._batching = False
            for b in batch:
                self._track(self._bind(b.qp, b.pod, b.info, b.node, b.started))
            return
        except errors.SkiffError as exc:
            outcomes = [exc] * len(batch)
        except BaseException:
            for _ in batch:
                self._bind_slots.release()
            raise
        for b, outcome in zip(batch, outcomes, strict=True):
            self._bind_slots.release()
            if outcome is None:
                self._bound(b.qp, b.pod, b.node, b.started)
            else:
                self._bind_failed(b.qp, b.pod, b.info, b.node, b.started, outcome)

    def _bind_failed(self, qp: QueuedPod, pod: t.Pod, info: PodInfo, node: str, started: float,
                     exc: errors.SkiffError) -> None:
        metrics.attempt("error", time.perf_counter() - started)
        self.bind_failures += 1
        self.cache.forget(info.key, info.uid)
        self.queue.move_all_to_active()  # the node we held for it is free again
        if isinstance(exc, errors.NotFoundError):
            self.queue.delete(qp.key)
        elif isinstance(exc, errors.PodAlreadyAssignedError):
            self.queue.done(qp.key)  # someone bound it; the watch will tell us where
        else:
            log.warning("binding %s to %s failed: %s", qp.key, node, exc)
            self.recorder.event(pod, WARNING, "FailedScheduling", f"Binding rejected: {exc}")
            self.queue.retry_after_error(qp)

    def _bound(self, qp: QueuedPod, pod: t.Pod, node: str, started: float) -> None:
        metrics.attempt("scheduled", time.perf_counter() - started)
        self.scheduled += 1
        self.queue.done(qp.key)
        ns, name = pod.metadata.namespace, pod.metadata.name
        self.recorder.event(pod, NORMAL, "Scheduled", f"Successfully assigned {ns}/{name} to {node}")

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Schedule until cancelled (or the queue is closed)."""
        while True:
            qp = await self.queue.pop()
            if qp is None:
                return
            try:
                await self.schedule_one(qp)
            except Exception:
                log.exception("scheduling %s failed", qp.key)
                self.queue.retry_after_error(qp)
            # Let the informers and the binds run between decisions.
            await asyncio.sleep(0)

    async def wait_binds(self) -> None:
        while self._binds or self._pending:
            if self._binds:
                await asyncio.gather(*list(self._binds), return_exceptions=True)
            else:
                await asyncio.sleep(0)  # the dispatch asked for starts their call

    def shutdown(self) -> None:
        self.queue.close()
        for task in list(self._binds):
            task.cancel()


async def run(client: ApiClient, *, recorder: EventRecorder | None = None, clock: Clock | None = None,
              percentage_of_nodes_to_score: int = 0) -> None:
    """Run one scheduler (one leadership term) until cancelled."""
    clock = clock or RealClock()
    recorder = recorder or new_recorder(client, clock=clock)
    factory = InformerFactory(client, transforms={t.Pod: bound_pod_view})
    scheduler = Scheduler(client, factory, recorder=recorder, clock=clock,
                          percentage_of_nodes_to_score=percentage_of_nodes_to_score)
    tasks: list[asyncio.Task[Any]] = []
    metrics.watch_queue(scheduler.queue.counts)
    try:
        await factory.start()
        await factory.wait_synced()
        log.info("caches synced: %d nodes, %d pods waiting", len(scheduler.cache.node_list), len(scheduler.queue))
        tasks.append(supervise(recorder.run, "scheduler-events"))
        tasks.append(supervise(scheduler.run, "scheduler-loop"))
        await asyncio.gather(*tasks)
    finally:
        metrics.watch_queue(None)
        scheduler.shutdown()
        recorder.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await factory.stop()
