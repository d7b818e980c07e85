"""netproxy's metrics, in the Prometheus text format, served over plain HTTP.

A few counters, gauges and histograms (no client library needed), rendered by `render()`
and served at `GET /metrics` by `serve()`; `GET /healthz` answers 200 while the last
successful sync is recent enough. Names follow kube-proxy's where one exists
(`sync_proxy_rules_duration_seconds`, `network_programming_duration_seconds`), with a
`netproxy_` prefix. Recording is synchronous and cheap; nothing here blocks a sync.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("netproxy.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


@dataclass
class Histogram:
    name: str
    help: str
    buckets: Sequence[float] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0
    recent: list[float] = field(default_factory=list)  # the last samples, for logs and tests

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1
        self.recent.append(value)
        del self.recent[:-1000]

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip([*self.buckets, math.inf], self.counts, strict=True):
            cumulative += count
            le = "+Inf" if math.isinf(bound) else repr(bound)
            out.append(f'{self.name}_bucket{{le="{le}"}} {cumulative}')
        out += [f"{self.name}_sum {self.total:.6f}", f"{self.name}_count {self.n}"]
        return out


@dataclass
class Counter:
    name: str
    help: str
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self, kind: str = "counter") -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {kind}"]
        out += [f"{self.name}{_labels(dict(k))} {v:g}" for k, v in sorted(self.values.items())]
        return out


class Gauge(Counter):
    def set(self, value: float, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] = value

    def render(self, kind: str = "gauge") -> list[str]:
        return super().render(kind)


class Metrics:
    def __init__(self, *, mode: str = "", clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.sync_duration = Histogram("netproxy_sync_proxy_rules_duration_seconds",
                                       "Time one sync takes: render or plan, and apply.")
        self.programming_latency = Histogram(
            "netproxy_network_programming_duration_seconds",
            "Time from an Endpoints change (its last-change-trigger-time, or when netproxy saw it) "
            "to the sync that applied it.")
        self.syncs = Counter("netproxy_syncs_total", "Syncs, by kind (full, partial) and result.")
        self.restores = Counter("netproxy_iptables_restore_total", "iptables-restore runs.")
        self.rules = Gauge("netproxy_sync_proxy_rules_iptables_total", "Rules netproxy renders, per table.")
        self.service_ports = Gauge("netproxy_service_ports", "Service ports programmed.")
        self.last_sync = Gauge("netproxy_sync_proxy_rules_last_timestamp_seconds",
                               "When the last successful sync finished (unix time).")
        self.info = Gauge("netproxy_info", "Mode and iptables backend.")
        if mode:
            self.info.set(1, mode=mode)

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.sync_duration, self.programming_latency):
            lines += m.render()
        for c in (self.syncs, self.restores, self.rules, self.service_ports, self.last_sync, self.info):
            lines += c.render()
        return "\n".join(lines) + "\n"

    def healthy(self, max_age: float) -> bool:
        last = self.last_sync.get()
        return last > 0 and self.clock() - last <= max_age


async def serve(metrics: Metrics, host: str, port: int, *, healthz_max_age: float = 120.0) -> asyncio.Server:
    """Serve /metrics and /healthz on host:port (port 0: any free port; see server.sockets)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode(errors="replace").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/metrics":
                status, body = "200 OK", metrics.render()
            elif path == "/healthz":
                ok = metrics.healthy(healthz_max_age)
                status, body = ("200 OK", "ok\n") if ok else ("503 Service Unavailable", "no recent sync\n")
            else:
                status, body = "404 Not Found", "not found\n"
            data = body.encode()
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
