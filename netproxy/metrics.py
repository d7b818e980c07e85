"""netproxy's metrics, as prometheus_client collectors in a registry of their own, served at
/metrics (with /healthz, /livez, /readyz) by skiff.metrics.

Names follow kube-proxy's where one exists (`kubeproxy_sync_proxy_rules_duration_seconds`,
`kubeproxy_network_programming_duration_seconds`, `kubeproxy_sync_proxy_rules_last_timestamp_seconds`,
`kubeproxy_sync_proxy_rules_iptables_total`), so kube-proxy's dashboards apply; what kube-proxy
has no name for is `netproxy_*`.

What must hold: each `Metrics` has its own registry (a test or a benchmark runs several proxies
in one process); recording is synchronous and cheap, nothing here blocks a sync; the proxy is
healthy (kube-proxy's /healthz) while its last successful sync is recent enough.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import prometheus_client as prom
from prometheus_client import CollectorRegistry

from skiff import metrics as skiff_metrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RECENT = 1000  # samples kept for logs, tests and benchmarks


class Histogram:
    """A prometheus histogram that also keeps its count and its last samples."""

    def __init__(self, name: str, doc: str, registry: CollectorRegistry, *,
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self._h = prom.Histogram(name, doc, buckets=buckets, registry=registry)
        self.n = 0
        self.recent: list[float] = []

    def observe(self, value: float) -> None:
        self._h.observe(value)
        self.n += 1
        self.recent.append(value)
        del self.recent[:-RECENT]


class Counter:
    """A labelled prometheus counter (labels by keyword, as the proxy records them)."""

    def __init__(self, name: str, doc: str, labels: Sequence[str], registry: CollectorRegistry) -> None:
        self._c = prom.Counter(name, doc, labels, registry=registry)
        self._values: dict[tuple[tuple[str, str], ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        (self._c.labels(**labels) if labels else self._c).inc(amount)
        key = tuple(sorted(labels.items()))
        self._values[key] = self._values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)


class Gauge:
    def __init__(self, name: str, doc: str, labels: Sequence[str], registry: CollectorRegistry) -> None:
        self._g = prom.Gauge(name, doc, labels, registry=registry)
        self._values: dict[tuple[tuple[str, str], ...], float] = {}

    def set(self, value: float, **labels: str) -> None:
        (self._g.labels(**labels) if labels else self._g).set(value)
        self._values[tuple(sorted(labels.items()))] = value

    def get(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)


class Metrics:
    def __init__(self, *, mode: str = "", backend: str = "", clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.sync_duration = Histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                                       "SyncProxyRules latency in seconds: render or plan, and apply.", r)
        self.programming_latency = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds: from an Endpoints change (its "
            "last-change-trigger-time, or when netproxy saw it) to the sync that applied it.", r)
        self.syncs = Counter("netproxy_syncs", "Syncs, by kind (full, partial) and result.", ("kind", "result"), r)
        self.restores = Counter("netproxy_iptables_restore", "iptables-restore runs.", (), r)
        self.rules = Gauge("kubeproxy_sync_proxy_rules_iptables_total", "Total number of iptables rules owned by "
                           "kube-proxy (netproxy renders), per table.", ("table",), r)
        self.service_ports = Gauge("netproxy_service_ports", "Service ports programmed.", (), r)
        self.last_sync = Gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                               "The last time proxy rules were successfully synced (unix time).", (), r)
        self.info = Gauge("netproxy_info", "Mode and iptables backend.", ("mode", "backend"), r)
        if mode:
            self.info.set(1, mode=mode, backend=backend)

    def render(self) -> str:
        return prom.generate_latest(self.registry).decode()

    def healthy(self, max_age: float) -> bool:
        last = self.last_sync.get()
        return last > 0 and self.clock() - last <= max_age

    def health(self, max_age: float) -> skiff_metrics.Health:
        """kube-proxy's /healthz: a successful sync within `max_age` seconds (live and ready)."""
        return skiff_metrics.Health(live={"sync": skiff_metrics.ok_when(
            lambda: self.healthy(max_age), f"no successful sync in the last {max_age:g}s")})
