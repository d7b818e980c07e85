"""metrics.k8s.io/v1beta1 (NodeMetrics, PodMetrics) from the node agents' usage summaries, as
metrics-server serves it, for `kubectl top` (REST) and `skiff top` (gRPC).

What must hold:
- the figures are the node agents' (nodeagent/stats.py): CPU in nanocores averaged over the
  agent's last window, memory as the working set; nothing is invented for a node or pod that
  has no figure yet (no second sample, agent unreachable): it is left out, as metrics-server
  leaves it out, and `kubectl top` says "metrics not available yet";
- which nodes and pods are answered is decided by the registry (names, namespaces, label
  selectors, as a list of Nodes or Pods would); the summaries only add usage to them;
- `plan_*` and the JSON forms are pure; `ResourceMetrics` is the adapter that asks the agents
  (in parallel, each bounded by SUMMARY_TIMEOUT) through the Forwarder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.registry import Registry
from skiff import errors
from skiff.convert import to_data
from skiffpb.api.v1 import metrics_pb2 as m
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.apiserver.resourcemetrics")

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
SUMMARY_TIMEOUT = 5.0


# ---------------------------------------------------------------- pure


def plan_node_metrics(nodes: Sequence[t.Node], summaries: dict[str, m.UsageSummary]) -> list[m.NodeMetricsItem]:
    out = []
    for node in nodes:
        s = summaries.get(node.metadata.name)
        if s is None or not s.window_seconds or not s.HasField("node") or not s.node.memory_working_set_bytes:
            continue
        out.append(m.NodeMetricsItem(name=node.metadata.name, timestamp=s.timestamp, window_seconds=s.window_seconds,
                                     usage=s.node))
    return out


def plan_pod_metrics(pods: Sequence[t.Pod], summaries: dict[str, m.UsageSummary]) -> list[m.PodMetricsItem]:
    usage: dict[tuple[str, str, str], tuple[m.UsageSummary, m.PodUsage]] = {}
    for s in summaries.values():
        for p in s.pods:
            usage[(p.namespace, p.name, p.uid)] = (s, p)
    out = []
    for pod in pods:
        found = usage.get((pod.metadata.namespace, pod.metadata.name, pod.metadata.uid))
        if found is None:
            continue
        s, p = found
        out.append(m.PodMetricsItem(namespace=pod.metadata.namespace, name=pod.metadata.name, timestamp=s.timestamp,
                                    window_seconds=s.window_seconds, containers=p.containers))
    return out


def cpu_quantity(nano_cores: int) -> str:
    return f"{nano_cores}n"


def memory_quantity(size: int) -> str:
    return f"{size // 1024}Ki" if size % 1024 == 0 or size >= 1024 else str(size)


def _time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _usage(cpu: int, memory: int) -> dict[str, str]:
    return {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}


def _meta(obj: t.Node | t.Pod, now: float) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": obj.metadata.name, "creationTimestamp": _time(now)}
    if obj.metadata.namespace:
        meta["namespace"] = obj.metadata.namespace
    labels = to_data(obj.metadata).get("labels")
    if labels:
        meta["labels"] = labels
    return meta


def node_metrics_data(node: t.Node, item: m.NodeMetricsItem, *, now: float) -> dict[str, Any]:
    return {"kind": "NodeMetrics", "apiVersion": GROUP_VERSION, "metadata": _meta(node, now),
            "timestamp": _time(item.timestamp), "window": _window(item.window_seconds),
            "usage": _usage(item.usage.cpu_nano_cores, item.usage.memory_working_set_bytes)}


def pod_metrics_data(pod: t.Pod, item: m.PodMetricsItem, *, now: float) -> dict[str, Any]:
    return {"kind": "PodMetrics", "apiVersion": GROUP_VERSION, "metadata": _meta(pod, now),
            "timestamp": _time(item.timestamp), "window": _window(item.window_seconds),
            "containers": [{"name": c.name, "usage": _usage(c.cpu_nano_cores, c.memory_working_set_bytes)}
                           for c in item.containers]}


def list_data(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": f"{kind}List", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}


def resources() -> list[dict[str, Any]]:
    """The APIResourceList entries of metrics.k8s.io/v1beta1 (discovery)."""
    return [{"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics", "verbs": ["get", "list"]}]


# ---------------------------------------------------------------- adapter


class ResourceMetrics:
    def __init__(self, registry: Registry, forwarder: Forwarder) -> None:
        self.registry = registry
        self.forwarder = forwarder

    async def summaries(self, nodes: Iterable[t.Node]) -> dict[str, m.UsageSummary]:
        """Each reachable node agent's summary, asked in parallel; the others are left out (logged)."""
        wanted = [n for n in nodes if n.status.daemon_endpoints.kubelet_endpoint.port]

        async def one(node: t.Node) -> m.UsageSummary | None:
            try:
                return await asyncio.wait_for(self.forwarder.summary(node), SUMMARY_TIMEOUT)
            except (errors.SkiffError, TimeoutError) as exc:
                log.info("no usage from node %s: %s", node.metadata.name, exc)
                return None

        answers = await asyncio.gather(*(one(n) for n in wanted))
        return {n.metadata.name: s for n, s in zip(wanted, answers, strict=True) if s is not None}

    async def _nodes(self, name: str, label_selector: str) -> list[t.Node]:
        if name:
            node = await self.registry.get("nodes", "", name)
            assert isinstance(node, t.Node)
            return [node]
        items, _, _ = await self.registry.list("nodes", label_selector=label_selector)
        return [n for n in items if isinstance(n, t.Node)]

    async def _pods(self, namespace: str, name: str, label_selector: str) -> list[t.Pod]:
        if name:
            pod = await self.registry.get("pods", namespace, name)
            assert isinstance(pod, t.Pod)
            return [pod]
        items, _, _ = await self.registry.list("pods", namespace=namespace, label_selector=label_selector)
        return [p for p in items if isinstance(p, t.Pod)]

    async def node_metrics(self, *, name: str = "", label_selector: str = "",
                           ) -> list[tuple[t.Node, m.NodeMetricsItem]]:
        nodes = await self._nodes(name, label_selector)
        by_name = {n.metadata.name: n for n in nodes}
        items = plan_node_metrics(nodes, await self.summaries(nodes))
        if name and not items:
            raise errors.NotFoundError(f'nodemetrics.metrics.k8s.io "{name}" not found')
        return [(by_name[i.name], i) for i in items]

    async def pod_metrics(self, *, namespace: str = "", name: str = "", label_selector: str = "",
                          ) -> list[tuple[t.Pod, m.PodMetricsItem]]:
        pods = [p for p in await self._pods(namespace, name, label_selector) if p.spec.node_name]
        node_names = {p.spec.node_name for p in pods}
        nodes = [n for n in await self._nodes("", "") if n.metadata.name in node_names]
        by_key = {(p.metadata.namespace, p.metadata.name): p for p in pods}
        items = plan_pod_metrics(pods, await self.summaries(nodes))
        if name and not items:
            raise errors.NotFoundError(f'podmetrics.metrics.k8s.io "{name}" not found')
        return [(by_key[(i.namespace, i.name)], i) for i in items]


def now() -> float:
    return time.time()
