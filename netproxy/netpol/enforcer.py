"""The NetworkPolicy enforcer inside netproxy: informers for policies, pods and namespaces -> plan -> iptables.

It runs beside the Service proxier in the same process, with its own sync runner and its own
ruleset writer (its chains are the SKIFF-N*/SKIFF-P* chains of the filter table; the proxy's
writer never touches them, nor this one the proxy's). What must hold:
- nothing is written before the informers have listed (a half-listed cluster would isolate
  pods with only some of their policies, or none of their peers);
- event handlers only request a sync, and only for changes that can change the rules: a
  policy, a namespace's labels, a pod's labels, IP, node, phase, host network or named ports;
- handlers also note which policy, pod or namespace changed; a partial sync hands only those to
  the PolicyBuilder (netpol/builder.py), which recomputes what they reach and tells the writer
  which chains may differ: a change costs what it changed, not the cluster. A full sync (the
  first, every sync period, after a failure) rebuilds from every object and writes every chain;
  the jumps from FORWARD and INPUT are kept first in their chains on every full sync;
- `--cleanup` removes the jumps and every chain (`cleanup`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from netproxy.iptables.command import Iptables, present_chains, remove_hooks
from netproxy.iptables.ruleset import restore_text
from netproxy.iptables.writer import RulesetWriter
from netproxy.netpol.builder import PolicyBuilder
from netproxy.netpol.plan import HOOKS, MAIN, PREFIXES, PodInfo, pod_info
from netproxy.sync import SyncRunner
from skiff.informer import Informer, InformerFactory
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("netproxy.netpol")


class NetpolEnforcer:
    def __init__(self, factory: InformerFactory, ipt: Iptables, *, node_name: str, min_sync_period: float = 1.0,
                 sync_period: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.node_name = node_name
        self.clock = clock
        self.policies: Informer[t.NetworkPolicy] = factory.informer(t.NetworkPolicy)
        self.pods: Informer[t.Pod] = factory.informer(t.Pod)
        self.namespaces: Informer[t.Namespace] = factory.informer(t.Namespace)
        self.writer = RulesetWriter(ipt, max_chains=None, hooks=HOOKS, prefixes=PREFIXES, hooks_first=True)
        self.runner = SyncRunner(self._sync, min_interval=min_sync_period, sync_period=sync_period)
        self.synced = asyncio.Event()  # set after the first successful sync
        self.applied = 0  # successful syncs that wrote something
        self.last_rules = 0
        self._infos: dict[tuple[str, str], tuple[str, PodInfo | None]] = {}  # pod -> (resourceVersion, info)
        self.builder = PolicyBuilder(node_name)
        # Changed since the last sync took them: (namespace, name) of policies and pods; namespaces.
        self._dirty_policies: set[tuple[str, str]] = set()
        self._dirty_pods: set[tuple[str, str]] = set()
        self._dirty_namespaces: set[str] = set()

    def _pod_infos(self) -> list[PodInfo | None]:
        memo: dict[tuple[str, str], tuple[str, PodInfo | None]] = {}
        for pod in self.pods.list():
            key = (pod.metadata.namespace, pod.metadata.name)
            rv = pod.metadata.resource_version
            hit = self._infos.get(key)
            memo[key] = hit if hit is not None and hit[0] == rv and rv else (rv, pod_info(pod))
        self._infos = memo
        return [info for _, info in memo.values()]

    def _pod_info(self, key: tuple[str, str]) -> PodInfo | None:
        pod = self.pods.get(key[1], key[0])
        if pod is None:
            self._infos.pop(key, None)
            return None
        rv = pod.metadata.resource_version
        hit = self._infos.get(key)
        if hit is None or hit[0] != rv or not rv:
            hit = self._infos[key] = (rv, pod_info(pod))
        return hit[1]

    def wire(self) -> None:
        request = self.runner.request

        def policy_changed(np: t.NetworkPolicy) -> None:
            self._dirty_policies.add((np.metadata.namespace, np.metadata.name))
            request()

        def pod_changed(pod: t.Pod) -> None:
            self._dirty_pods.add((pod.metadata.namespace, pod.metadata.name))
            request()

        def ns_changed(ns: t.Namespace) -> None:
            self._dirty_namespaces.add(ns.metadata.name)
            request()

        def pod_update(old: t.Pod, new: t.Pod) -> None:
            if pod_info(old) != pod_info(new):
                pod_changed(new)

        def ns_update(old: t.Namespace, new: t.Namespace) -> None:
            if old.metadata.labels != new.metadata.labels:
                ns_changed(new)

        def policy_update(old: t.NetworkPolicy, new: t.NetworkPolicy) -> None:
            if old.spec != new.spec:
                policy_changed(new)

        self.policies.add_handler(on_add=policy_changed, on_update=policy_update, on_delete=policy_changed)
        self.pods.add_handler(on_add=lambda p: pod_changed(p) if pod_info(p) else None, on_update=pod_update,
                              on_delete=lambda p: pod_changed(p) if pod_info(p) else None)
        self.namespaces.add_handler(on_add=ns_changed, on_update=ns_update, on_delete=ns_changed)

    def _update_builder(self, full: bool) -> None:
        policies, self._dirty_policies = self._dirty_policies, set()
        pods, self._dirty_pods = self._dirty_pods, set()
        namespaces, self._dirty_namespaces = self._dirty_namespaces, set()
        if full:
            self.builder.rebuild(self.policies.list(), self._pod_infos(), self.namespaces.list())
            return
        for name in namespaces:
            ns = self.namespaces.get(name)
            self.builder.set_namespace(name, ns.metadata.labels if ns is not None else None)
        for ns_name, name in policies:
            self.builder.set_policy((ns_name, name), self.policies.get(name, ns_name))
        for key in pods:
            self.builder.set_pod(key, self._pod_info(key))

    async def _sync(self, full: bool) -> None:
        start = time.perf_counter()
        try:
            self._update_builder(full)
            rs, changes = self.builder.build()
        except Exception:
            self.builder.rebuild([], [], [])  # half-applied changes: the next sync (full) starts over
            raise
        planned = time.perf_counter()
        try:
            w = await self.writer.write(rs, full=full, since=changes)
        except Exception:
            self.writer.forget()
            raise
        self.synced.set()
        self.last_rules = sum(rs.rule_count().values())
        if w.changed or w.full:
            self.applied += 1
            log.info("network policy %s sync in %.1f ms (plan %.1f ms): %d policies, %d rules, %d chains written, "
                     "%d deleted, %d jumps (re)placed", "full" if w.full else "partial",
                     (time.perf_counter() - start) * 1000, (planned - start) * 1000, len(self.policies.list()),
                     self.last_rules, w.chains_written, w.chains_deleted, w.hooks_added)

    async def run(self, factory: InformerFactory) -> None:
        """Sync until cancelled (the factory is started and waited for by the caller)."""
        await factory.wait_synced()
        await self.runner.run()


async def cleanup(ipt: Iptables) -> int:
    """Remove the jumps, then every NetworkPolicy chain; the number of chains deleted."""
    await remove_hooks(ipt, HOOKS)
    mine = sorted(k for k in await present_chains(ipt) if k[1] == MAIN or k[1].startswith(PREFIXES))
    if mine:
        # Flushed and deleted in one transaction: they only reference each other.
        await ipt.restore(restore_text({}, [], mine))
    return len(mine)
