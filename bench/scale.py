"""The scale scenario (`make bench-scale`): a whole control plane and many hollow nodes on one machine.

    python -m bench.scale                 # 1,000 nodes, 100 Deployments x 300, 1,000 Services
    python -m bench.scale --small         # 50 nodes, 10 x 50, 50 Services (a few minutes)
    python -m bench.scale --store etcd    # the same on a 3-member etcd (Debian's etcd-server)

Starts, as real processes on loopback: 3 store members (Skiff's, or etcd), 3 api-servers (each
on "its" member first), the controller manager, the scheduler, and the hollow nodes
(nodeagent/hollow.py, `--nodes-per-process` agents per process, each over its own CRI gRPC
server). Then, timed from this process:
1. Deployments x replicas created at once → every pod Running (the whole chain: deployment and
   replicaset controllers, scheduler binds through the api-server, agents start the pods over
   CRI and write their status); the scheduler's pods/s is bound pods over the time from the
   first pod created to the last one bound, seen by a pod informer here;
2. Services (each selecting one Deployment's pods) → every one has its Endpoints with all the
   Deployment's pods;
3. a rolling update of `--rollouts` Deployments → each has only updated, available replicas;
4. deletion of everything → no pod left.
Throughout, a probe does one of each API verb (create, get, list, update, delete of a ConfigMap)
every `PROBE_PERIOD` and records its latency, and an informer measures watch lag (the probe's
write stamped with this process's clock → seen by the informer). Also recorded: store size
(etcd Maintenance.Status dbSize, on every member), peak RSS and CPU seconds of every component,
and the store's writes of the create, Services and rolling-update phases by resource and writer
per pod (bench/writes.py).
Results go to bench/results/scale.json (`--small`: scale-small.json). Everything shares this
machine's cores: the load average before and after is part of every figure.

A run that cannot finish still writes its result: `--deadline` (a UTC time, HH:MM, or seconds
from now) bounds the whole run (with `--store both` each store gets an equal share of what is
left when it starts), and SIGTERM/SIGINT stop it the same way. A stopped run's entry has
`ok: false` and `stopped`: the phase it was in, when (UTC), why, and how far it had got (pods
seen, bound, Running); the figures of the phases it finished are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from bench import meta, profile
from bench.writes import WriteCounter
from deploy.loopback import Process, free_port, start_apiserver, start_etcd
from nodeagent.hollow import HOLLOW_POD_NET
from skiff import errors
from skiff.client import Client
from skiff.informer import Informer
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger("bench.scale")
PROBE_PERIOD = 0.5
PROBE_NAMESPACE = "scale-probe"
NAMESPACE = "scale"
STAMP = "bench.skiff.io/written-at"
SERVICE_PORT = 80
# Longer than the defaults (10 s lease, 7 s renew deadline, 2 s retry): at 1,000 nodes on a
# loaded 2-core machine the controller manager's renewals time out, it loses the lease, restarts
# every controller (a relist that blocks its loop long enough to lose the lease again) and the
# run stalls (docs/scale.md). One instance of each runs, so nobody else would take over anyway.
LEADER_ELECTION = ("--leader-elect-lease-duration", "60s", "--leader-elect-renew-deadline", "45s",
                   "--leader-elect-retry-period", "5s")
# The hollow nodes stand for other machines: they run at this nice level so that the control
# plane, the part measured, is not starved on this one by what would run elsewhere (their own
# CPU is still recorded).
HOLLOW_NICE = 15
HARNESS_PARAMS = ("nodes_per_process", "hollow_nice")


@dataclass(frozen=True)
class Size:
    nodes: int
    deployments: int
    replicas: int
    services: int
    rollouts: int

    @property
    def pods(self) -> int:
        return self.deployments * self.replicas


FULL = Size(nodes=1000, deployments=100, replicas=300, services=1000, rollouts=10)
SMALL = Size(nodes=50, deployments=10, replicas=50, services=50, rollouts=2)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(percentile(values, 50) * 1000, 1),
            "p99_ms": round(percentile(values, 99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1) if values else float("nan")}


# ------------------------------------------------------------------ processes


@dataclass
class Component:
    name: str
    pid: int
    peak_rss_mb: float = 0.0

    def sample(self) -> None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        except OSError:
            pass

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            return float("nan")


@dataclass
class Cluster:
    workdir: Path
    store_kind: str
    store_endpoints: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    apiservers: list[Process] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)  # component -> its /metrics host:port
    _stop: list[Any] = field(default_factory=list)

    @property
    def api_endpoints(self) -> str:
        return ",".join(a.endpoint for a in self.apiservers)

    def add(self, name: str, pid: int) -> None:
        self.components.append(Component(name, pid))

    def sample(self) -> None:
        for c in self.components:
            c.sample()

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop(timeout=20)
        for fn in reversed(self._stop):
            with contextlib.suppress(Exception):
                fn()


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def _alive(proc: Process, timeout: float) -> None:
    """Still running a moment after the start (a daemon refusing its flags exits within it)."""
    end = time.monotonic() + min(timeout, 5.0)
    while time.monotonic() < end:
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited during startup:\n{proc.log_tail()}")
        time.sleep(0.05)


def hollow_ready(proc: Process, timeout: float) -> None:
    """Wait until a hollow process logs that all its nodes registered (bench.hollow uses it too)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited during startup:\n{proc.log_tail()}")
        if "hollow nodes ready" in proc.log_path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{proc.name}: hollow nodes not ready after {timeout:.0f} s:\n{proc.log_tail()}")


def start_store(c: Cluster, *, members: int = 3) -> None:
    if c.store_kind == "etcd":
        etcd = start_etcd(c.workdir, members=members)
        c._stop.append(etcd.stop)
        c.store_endpoints = [m.endpoint for m in etcd.members]
        for proc in etcd.members:
            c.add(proc.name, proc.pid)
        return
    from controlplane.store.cluster import StoreCluster

    store = StoreCluster(members, base_dir=str(c.workdir / "store"))
    c._stop.append(store.close)
    store.start(timeout=60)
    c.store_endpoints = store.endpoints
    for name, m in store.members.items():
        assert m.proc is not None
        c.add(f"store-{name}", m.proc.pid)


def metrics_flag(c: Cluster, name: str) -> list[str]:
    """A daemon's own /metrics port: several of a kind share this host (and others run theirs),
    so the fixed defaults (the api-server's 8080) would collide."""
    c.metrics[name] = f"127.0.0.1:{free_port()}"
    return ["--metrics-bind-address", c.metrics[name]]


def scrape(address: str, family: str) -> float:
    """The sum of a counter family's samples on a daemon's /metrics (nan: not served)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    return sum(sample.value for fam in text_string_to_metric_families(text) if fam.name == family
               for sample in fam.samples if sample.name == f"{family}_total")


def metric_samples(address: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample a daemon's /metrics serves, as (name, labels, value); none when not served."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return []
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


Samples = list[tuple[str, dict[str, str], float]]


def create_path(apiservers: list[Samples], controllers: Samples) -> dict[str, Any]:
    """What paced the pods' creation, from the daemons' own metrics at the end of the create phase:
    the api-servers' pod creates (by HTTP code: 429 is a refusal over --max-mutating-requests-inflight;
    their mean time in the api-server) and the ReplicaSet controller's syncs (how many, their mean
    time: a sync creates up to burst-replicas pods in slow-start batches, each batch waiting for its
    slowest create; retries after a failed sync)."""
    def total(samples: Samples, family: str, **want: str) -> float:
        return sum(v for n, labels, v in samples if n == family and all(labels.get(k) == x for k, x in want.items()))

    codes: dict[str, int] = {}
    for samples in apiservers:
        for n, labels, v in samples:
            if n == "apiserver_request_total" and labels.get("verb") == "POST" and labels.get("resource") == "pods":
                codes[labels.get("code", "")] = codes.get(labels.get("code", ""), 0) + int(v)
    create_s = sum(total(s, "apiserver_request_duration_seconds_sum", verb="POST", resource="pods")
                   for s in apiservers)
    create_n = sum(total(s, "apiserver_request_duration_seconds_count", verb="POST", resource="pods")
                   for s in apiservers)
    syncs = total(controllers, "workqueue_work_duration_seconds_count", name="replicaset")
    sync_s = total(controllers, "workqueue_work_duration_seconds_sum", name="replicaset")
    return {"pod_creates_by_code": dict(sorted(codes.items())),
            "pod_create_mean_ms": round(1000 * create_s / create_n, 1) if create_n else None,
            "replicaset_syncs": int(syncs),
            "replicaset_sync_mean_s": round(sync_s / syncs, 2) if syncs else None,
            "replicaset_sync_s_total": round(sync_s, 1),
            "replicaset_retries": int(total(controllers, "workqueue_retries_total", name="replicaset"))}


def creation_spans(created: dict[str, tuple[str, float]], t0: float) -> dict[str, Any]:
    """Per ReplicaSet, from its first pod seen to its last (`created`: pod uid -> (owner, when)):
    how long each set took to create its pods and how many sets were creating at the same time.
    With W workers and each set's pods created within one sync, at most W sets overlap."""
    by_owner: dict[str, list[float]] = {}
    for owner, when in created.values():
        by_owner.setdefault(owner, []).append(when)
    if not by_owner:
        return {}
    spans = [(min(w), max(w)) for w in by_owner.values()]
    lengths = [end - start for start, end in spans]
    # The most spans open at once: sweep their starts (+1) and ends (-1), ends first at a tie.
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    open_, most = 0, 0
    for _, step in edges:
        open_ += step
        most = max(most, open_)
    return {"replicasets": len(spans), "span_p50_s": round(percentile(lengths, 50), 1),
            "span_max_s": round(max(lengths), 1), "most_at_once": most,
            "last_started_s": round(max(start for start, _ in spans) - t0, 1)}


def start_apiservers(c: Cluster, count: int, *, apiserver_args: tuple[str, ...] = ()) -> None:
    """`count` api-servers on the store, each talking to "its" member first (as when side by side)."""
    eps = c.store_endpoints
    for i in range(count):
        order = eps[i % len(eps):] + eps[:i % len(eps)]
        a = start_apiserver(c.workdir, ",".join(order), name=f"apiserver{i}", timeout=120,
                            extra_args=[*metrics_flag(c, f"apiserver{i}"), *apiserver_args])
        c.processes.append(a)
        c.apiservers.append(a)
        c.add(a.name, a.pid)


def start_control_plane(c: Cluster, apiservers: int, *, controller_args: tuple[str, ...] = (),
                        apiserver_args: tuple[str, ...] = ()) -> None:
    start_store(c)
    start_apiservers(c, apiservers, apiserver_args=apiserver_args)
    for name, module in (("controllers", "controlplane.controllers"), ("scheduler", "controlplane.scheduler")):
        # The api-servers run --insecure (deploy.loopback: plaintext, every caller the admin), so
        # their clients do too: authentication and RBAC are not part of these figures.
        argv = [sys.executable, "-m", module, "--api-servers", c.api_endpoints, "--insecure", "--identity", name,
                *LEADER_ELECTION, *metrics_flag(c, name)]
        if name == "controllers":
            # The default cluster CIDR (a /16) has 256 node /24s; hollow nodes' pods use a /9.
            argv += ["--cluster-cidr", str(HOLLOW_POD_NET), "--node-cidr-mask-size", "24", *controller_args]
        p = Process(name, argv, c.workdir / f"{name}.log", "127.0.0.1", 0, env=_env(), ready=_alive).start()
        c.processes.append(p)
        c.add(name, p.pid)


def start_hollow(c: Cluster, nodes: int, per_process: int, extra: list[str], *, nice: int = HOLLOW_NICE) -> None:
    procs = []
    for first in range(0, nodes, per_process):
        count = min(per_process, nodes - first)
        name = f"hollow{first // per_process}"
        # nice(1) execs the agent: the pid is the agent's, and every thread it starts inherits the level.
        argv = ["nice", "-n", str(nice), sys.executable, "-m", "nodeagent.hollow", "--api-servers", c.api_endpoints,
                "--nodes", str(count),
                "--first", str(first), "--socket-dir", str(c.workdir / name), *extra]
        p = Process(name, argv, c.workdir / f"{name}.log", "127.0.0.1", 0, env=_env(), ready=_alive).start()
        c.processes.append(p)
        c.add(name, p.pid)
        procs.append(p)
    for p in procs:
        hollow_ready(p, timeout=60 + nodes * 0.5)


def _cpu_s(pid: int) -> float:
    return Component("", pid).cpu_s()


def profile_components(c: Cluster, seconds: float, *, top: int = 6) -> dict[str, Any]:
    """py-spy on every Python component at once for `seconds` (bench/profile.py): the cores each
    used meanwhile (from /proc) and the functions it spent its samples in (self share of its
    samples; py-spy counts only threads that are not idle)."""
    import concurrent.futures

    targets = [comp for comp in c.components if not comp.name.startswith("etcd")]  # etcd is Go
    before = {comp.name: _cpu_s(comp.pid) for comp in c.components}
    started = time.monotonic()

    def one(comp: Component) -> tuple[str, dict[str, Any]]:
        raw = c.workdir / f"profile-{comp.name}.txt"
        try:
            profile.record(comp.pid, seconds, raw, rate=50)
        except (OSError, subprocess.CalledProcessError) as exc:
            return comp.name, {"error": str(exc)[:200]}
        samples, rows = profile.summarize(raw.read_text().splitlines(), top=top)
        return comp.name, {"samples": samples,
                           "top": [[r.function, round(r.self_share, 3), round(r.total_share, 3)] for r in rows]}

    with concurrent.futures.ThreadPoolExecutor(len(targets) or 1) as pool:
        found = dict(pool.map(one, targets))
    elapsed = time.monotonic() - started
    out: dict[str, Any] = {"seconds": round(elapsed, 1), "components": {}}
    for comp in c.components:
        entry = {"cores": round((_cpu_s(comp.pid) - before[comp.name]) / elapsed, 2), **found.get(comp.name, {})}
        out["components"][comp.name] = entry
    return out


def store_revision(endpoints: list[str]) -> int:
    """The store's revision (every write transaction adds one): 0 if no member answers."""
    for ep in endpoints:
        with grpc.insecure_channel(ep) as ch:
            try:
                return int(rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/bench-scale-none"),
                                                         timeout=10).header.revision)
            except grpc.RpcError as exc:
                log.warning("store revision %s: %s", ep, exc)
    return 0


def store_size_mb(endpoints: list[str]) -> dict[str, float]:
    out = {}
    for ep in endpoints:
        with grpc.insecure_channel(ep) as ch:
            try:
                st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
                out[ep] = round(st.dbSize / (1 << 20), 1)
            except grpc.RpcError as exc:
                log.warning("store status %s: %s", ep, exc)
    return out


class StoreTerms:
    """Leader changes of the store during the run, from every member's Maintenance.Status (its Raft
    term and leader; etcd and Skiff's store both answer it): the highest term seen first and
    last, and how many times the (term, leader) pair changed between samples."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.first: tuple[int, int] | None = None
        self.last: tuple[int, int] | None = None
        self.changes = 0
        self.samples = 0

    def sample(self) -> None:
        seen: list[tuple[int, int]] = []
        for ep in self.endpoints:
            with grpc.insecure_channel(ep) as ch:
                try:
                    st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=2)
                except grpc.RpcError:
                    continue  # a member too busy to answer within 2 s: the others tell
                seen.append((int(st.raftTerm), int(st.leader)))
        self.observe(seen)

    def observe(self, seen: list[tuple[int, int]]) -> None:
        """One sample: the (term, leader) each member that answered reports."""
        if not seen:
            return
        now = max(seen)
        self.samples += 1
        if self.first is None:
            self.first = now
        elif self.last is not None and now != self.last:
            self.changes += 1
        self.last = now

    def results(self) -> dict[str, Any]:
        return {"term_first": self.first[0] if self.first else None,
                "term_last": self.last[0] if self.last else None,
                "leader_changes_seen": self.changes, "samples": self.samples}


# ------------------------------------------------------------------ objects


def deployment(i: int, replicas: int) -> t.Deployment:
    d = t.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = f"d{i:03d}", NAMESPACE
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = d.metadata.name
    d.spec.template.metadata.labels["app"] = d.metadata.name
    c = d.spec.template.spec.containers.add(name="app", image="registry.local/scale/app:1")
    c.ports.add(container_port=8080)
    c.resources.requests["cpu"] = "10m"
    c.resources.requests["memory"] = "16Mi"
    return d


def service(i: int, deployments: int) -> t.Service:
    s = t.Service(api_version="v1", kind="Service")
    s.metadata.name, s.metadata.namespace = f"s{i:04d}", NAMESPACE
    s.spec.selector["app"] = f"d{i % deployments:03d}"
    s.spec.ports.add(name="http", port=SERVICE_PORT, target_port=t.IntOrString(int_val=8080), protocol="TCP")
    return s


# ------------------------------------------------------------------ probe: latency of every verb, watch lag


class Probe:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.latency: dict[str, list[float]] = {v: [] for v in ("create", "get", "list", "update", "delete")}
        self.errors: dict[str, int] = {}
        self.lag: list[float] = []
        self.informer: Informer[t.ConfigMap] = Informer(client, t.ConfigMap, namespace=PROBE_NAMESPACE)
        self.informer.add_handler(on_add=self._seen, on_update=lambda _o, n: self._seen(n))
        self._n = 0

    def _seen(self, cm: t.ConfigMap) -> None:
        stamp = cm.metadata.annotations.get(STAMP)
        if stamp and self.informer.synced:
            self.lag.append(time.time() - float(stamp))

    async def _timed(self, verb: str, coro: Any) -> Any:
        start = time.perf_counter()
        try:
            out = await coro
        except errors.SkiffError as exc:
            self.errors[verb] = self.errors.get(verb, 0) + 1
            log.warning("probe %s: %s", verb, exc)
            return None
        self.latency[verb].append(time.perf_counter() - start)
        return out

    async def once(self) -> None:
        self._n += 1
        cm = t.ConfigMap(api_version="v1", kind="ConfigMap")
        cm.metadata.name, cm.metadata.namespace = f"probe-{self._n}", PROBE_NAMESPACE
        cm.metadata.annotations[STAMP] = repr(time.time())
        cm.data["n"] = str(self._n)
        made = await self._timed("create", self.client.create(cm))
        if made is None:
            return
        got = await self._timed("get", self.client.get(t.ConfigMap, made.metadata.name, PROBE_NAMESPACE))
        await self._timed("list", self.client.list(t.ConfigMap, namespace=PROBE_NAMESPACE))
        if got is not None:
            got.metadata.annotations[STAMP] = repr(time.time())
            await self._timed("update", self.client.update(got))
        await self._timed("delete", self.client.delete(t.ConfigMap, made.metadata.name, PROBE_NAMESPACE))

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.once()
            await asyncio.sleep(max(0.0, PROBE_PERIOD - (time.monotonic() - started)))

    def results(self) -> dict[str, Any]:
        return {"verbs": {v: summary_ms(x) for v, x in self.latency.items()}, "watch_lag": summary_ms(self.lag),
                "errors": self.errors}


# ------------------------------------------------------------------ the scenario


class Tracker:
    """Pods as a pod informer in this process sees them: first seen, bound, Running."""

    def __init__(self, client: Client) -> None:
        self.pods: Informer[t.Pod] = Informer(client, t.Pod, namespace=NAMESPACE)
        self.first_seen: dict[str, float] = {}
        self.created_by: dict[str, tuple[str, float]] = {}  # pod uid -> (its controller's name, first seen)
        self.bound_at: dict[str, float] = {}
        self.running_at: dict[str, float] = {}
        self.pods.add_handler(on_add=self._event, on_update=lambda _o, n: self._event(n))
        self.endpoints: Informer[t.Endpoints] = Informer(client, t.Endpoints, namespace=NAMESPACE)
        self.deployments: Informer[t.Deployment] = Informer(client, t.Deployment, namespace=NAMESPACE)

    def _event(self, pod: t.Pod) -> None:
        now = time.monotonic()
        if self.first_seen.setdefault(pod.metadata.uid, now) == now and pod.metadata.owner_references:
            self.created_by[pod.metadata.uid] = (pod.metadata.owner_references[0].name, now)
        if pod.spec.node_name:
            self.bound_at.setdefault(pod.metadata.uid, now)
        if pod.status.phase == "Running":
            self.running_at.setdefault(pod.metadata.uid, now)

    def running(self) -> int:
        return sum(1 for p in self.pods.list()
                   if p.status.phase == "Running" and not p.metadata.HasField("deletion_timestamp"))

    def ready_replicas(self) -> int:
        """Ready pods as the Deployments' own status counts them (what `kubectl rollout status`
        waits for): 100 objects to watch instead of 30,000, so the phase's end does not depend on
        this process keeping up with every pod event (see `informer_view`)."""
        return sum(d.status.ready_replicas for d in self.deployments.list()
                   if d.status.observed_generation >= d.metadata.generation)

    def informers(self) -> list[Informer[Any]]:
        return [self.pods, self.endpoints, self.deployments]

    def progress(self) -> dict[str, int]:
        return {"pods_seen": len(self.first_seen), "pods": len(self.pods.list()), "bound": len(self.bound_at),
                "running": self.running()}

    def timeline(self, t0: float) -> dict[str, list[float]]:
        return timeline(t0, {"bound": list(self.bound_at.values()), "running": list(self.running_at.values())})

    def scheduling(self) -> dict[str, Any]:
        """How fast pods reached the scheduler and how fast it bound them (this process's informer)."""
        return scheduling_stats(self.first_seen, self.bound_at)


def timeline(t0: float, events: dict[str, list[float]], points: int = 200) -> dict[str, list[float]]:
    """How many pods had reached each state (`events`: when each one did, on the monotonic clock)
    at `points` evenly spaced moments from `t0` to the last event: the picture's data, a few
    kilobytes however many pods there are."""
    last = max((max(v) for v in events.values() if v), default=t0)
    span = max(last - t0, 1e-6)
    ts = [span * i / (points - 1) for i in range(points)]
    out: dict[str, list[float]] = {"t_s": [round(x, 2) for x in ts]}
    for name, when in events.items():
        rel = sorted(w - t0 for w in when)
        counts, j = [], 0
        for x in ts:
            while j < len(rel) and rel[j] <= x:
                j += 1
            counts.append(float(j))
        out[name] = counts
    return out


def scheduling_stats(first_seen: dict[str, float], bound_at: dict[str, float]) -> dict[str, Any]:
    """Pods/s from the first pod created to the last bound (the scenario's figure), split into the
    rate pods were created at and the wait of each pod for its bind: a scheduler that keeps up
    binds each pod soon after it appears, and the pods/s is then the creators' rate, not its own."""
    if not bound_at or not first_seen:
        return {}
    bound = sorted(bound_at.values())
    seen = sorted(first_seen.values())
    waits = [bound_at[uid] - first_seen[uid] for uid in bound_at if uid in first_seen]
    return {"scheduler_pods_per_s": round(len(bound) / max(1e-6, bound[-1] - seen[0]), 1),
            "pods_created_per_s": round(len(seen) / max(1e-6, seen[-1] - seen[0]), 1),
            "created_to_bound": summary_ms(waits)}


class Stopped(Exception):
    """The run was stopped before it finished (its deadline passed, or a signal)."""


_signalled = ""  # the signal that asked the run to stop
_cleaning = False  # stopping the processes: a signal must not cut that short (they would be left running)


def _stop_on_signal(signum: int, _frame: Any) -> None:
    """Outside the event loop (starting, stopping processes): stop at once. Inside it, raising
    here would kill whichever task happens to run; the scenario's waits look at the flag instead."""
    global _signalled
    first = not _signalled
    _signalled = f"signal {signal.Signals(signum).name}"
    if first and not _cleaning and asyncio._get_running_loop() is None:
        raise Stopped(_signalled)


def parse_deadline(text: str, now: datetime) -> datetime | None:
    """"08:30" (UTC, today; tomorrow if already past) or "1800" (seconds from now); "" for none."""
    if not text:
        return None
    if ":" in text:
        hour, minute = (int(x) for x in text.split(":", 1))
        at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return at if at > now else at + timedelta(days=1)
    return now + timedelta(seconds=float(text))


async def wait_for(what: str, cond: Any, timeout: float, progress: Any = None) -> float:
    start = time.monotonic()
    last = 0.0
    while not cond():
        if _signalled:
            raise Stopped(_signalled)
        now = time.monotonic()
        if now - start > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s ({progress() if progress else ''})")
        if progress is not None and now - last > 10:
            last = now
            log.info("%s: %s", what, progress())
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def wait_for_async(what: str, done: Any, timeout: float, progress: Any = None, period: float = 2.0) -> float:
    """`wait_for` with an awaitable check (an API call), made every `period` seconds."""
    state = {"done": False}

    async def check() -> None:
        while not state["done"]:
            state["done"] = await done()
            await asyncio.sleep(period)

    task = asyncio.create_task(check())
    try:
        return await wait_for(what, lambda: state["done"], timeout, progress)
    finally:
        task.cancel()


async def pods_left(client: Client) -> bool:
    """Whether the namespace holds no pod any more (a one-item list: cheap at any size)."""
    return not (await client.list(t.Pod, namespace=NAMESPACE, limit=1)).items


async def informer_view(client: Client, tracker: Tracker) -> dict[str, Any]:
    """The pods as stored (one paged list) against what this process's pod informer holds: a
    loaded machine can starve this process, and a difference here says its figures (created ->
    bound) cover fewer pods than ran. Also the pods' own timestamps: first created -> last Ready."""
    pods: list[t.Pod] = []
    token = ""
    while True:
        page = await client.list(t.Pod, namespace=NAMESPACE, limit=2000, continue_token=token)
        pods.extend(page.items)
        token = page.continue_token
        if not token:
            break
    created = [p.metadata.creation_timestamp.ToDatetime() for p in pods]
    ready = [c.last_transition_time.ToDatetime() for p in pods for c in p.status.conditions
             if c.type == "Ready" and c.status == "True"]
    return {"stored_pods": len(pods), "stored_running": sum(1 for p in pods if p.status.phase == "Running"),
            "informer_pods": len(tracker.pods.list()), "informer_running": tracker.running(),
            "first_created_to_last_ready_s": round((max(ready) - min(created)).total_seconds(), 1)
            if ready and created else None}


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


# A request that failed because the machine is loaded (deadline, overload, a member or an
# api-server briefly away) is sent again: the scenario measures how long the cluster takes, and a
# single timed-out create at load 20+ must not end the run (a 14:15 UTC run did).
TRANSIENT = (errors.TimeoutError_, errors.UnavailableError, errors.TooManyRequestsError)


async def persist(call: Any, *, deadline: float, done: tuple[type[Exception], ...] = ()) -> None:
    """Await `call()` until it succeeds (or raises one of `done`: already done); transient
    failures are retried after 1 s until `deadline` (time.monotonic()), then raised."""
    while True:
        try:
            await call()
            return
        except done:
            return
        except TRANSIENT as exc:
            if time.monotonic() + 1.0 >= deadline:
                raise
            log.warning("%s; sending it again", exc)
            await asyncio.sleep(1.0)


async def scenario(c: Cluster, size: Size, timeout: float, out: dict[str, Any],
                   deadline: float = float("inf"), profile_seconds: float = 0.0) -> None:
    """Fills `out` phase by phase, so a phase that times out (or the run's `deadline`, a
    time.monotonic() value, passing) leaves the figures of the others."""
    client = Client(c.api_endpoints)
    probe: Probe | None = None
    tracker: Tracker | None = None
    terms = StoreTerms(c.store_endpoints)
    tasks: list[asyncio.Task[Any]] = []
    phase_timeout = timeout
    rev0 = 0
    t0 = 0.0  # when the Deployments were created (0: not yet)
    counter: WriteCounter | None = None
    rev1 = rev2 = 0

    def phase(name: str) -> float:
        """Enter a phase; its timeout (the phase's, cut to what is left before the deadline)."""
        nonlocal phase_timeout
        out["phase"] = name
        left = deadline - time.monotonic()
        if _signalled:
            raise Stopped(_signalled)
        if left <= 0:
            raise Stopped("the run's deadline passed")
        phase_timeout = min(timeout, left)
        return phase_timeout

    try:
        for ns in (NAMESPACE, PROBE_NAMESPACE):
            with contextlib.suppress(errors.AlreadyExistsError):
                n = t.Namespace(api_version="v1", kind="Namespace")
                n.metadata.name = ns
                await client.create(n)
        tracker = Tracker(client)
        probe = Probe(client)
        for inf in [*tracker.informers(), probe.informer]:
            tasks.append(asyncio.create_task(inf.run()))
        for inf in [*tracker.informers(), probe.informer]:
            await inf.wait_synced(60)
        tasks.append(asyncio.create_task(probe.run()))

        async def sampler() -> None:
            while True:
                c.sample()
                await asyncio.to_thread(terms.sample)
                await asyncio.sleep(2)

        tasks.append(asyncio.create_task(sampler()))

        # 1. Deployments -> all Running
        timeout = phase("create -> all Running")
        rev0 = await asyncio.to_thread(store_revision, c.store_endpoints)
        # Which writes those were, by resource and writer (bench/writes.py).
        counter = WriteCounter(c.store_endpoints[0], rev0 + 1)
        tasks.append(asyncio.create_task(counter.run()))
        t0 = time.monotonic()
        cpu0 = {comp.name: comp.cpu_s() for comp in c.components}
        until = t0 + timeout
        await gather_limited([persist(lambda i=i: client.create(deployment(i, size.replicas)), deadline=until,
                                      done=(errors.AlreadyExistsError,)) for i in range(size.deployments)], 16)
        out["create_deployments_s"] = round(time.monotonic() - t0, 2)
        if profile_seconds > 0:
            async def profiled() -> None:
                await asyncio.sleep(2)  # the pods are being created, scheduled and started now
                out["profile"] = await asyncio.to_thread(profile_components, c, profile_seconds)

            tasks.append(asyncio.create_task(profiled()))
        await wait_for("all pods Running", lambda: tracker.ready_replicas() >= size.pods, timeout,
                       lambda: f"Deployments: {tracker.ready_replicas()} ready; this process's pod informer: "
                               f"{len(tracker.pods.list())} pods, {len(tracker.bound_at)} bound, "
                               f"{tracker.running()} Running")
        out["all_running_s"] = round(time.monotonic() - t0, 2)
        # Cores each component used in this phase: what was left idle says whether it waited or worked.
        out["create_cores"] = {comp.name: round((comp.cpu_s() - cpu0[comp.name]) / out["all_running_s"], 2)
                               for comp in c.components}
        out["informer_view"] = await informer_view(client, tracker)
        out.update(tracker.scheduling())
        out["timeline"] = tracker.timeline(t0)
        out["replicaset_creation"] = creation_spans(tracker.created_by, t0)
        out["create_path"] = create_path(
            [await asyncio.to_thread(metric_samples, a) for n, a in c.metrics.items() if n.startswith("apiserver")],
            await asyncio.to_thread(metric_samples, c.metrics["controllers"]))
        # What the store had to write per pod (every write is one revision): the rate it
        # sustains divided by this is the most pods/s the whole chain can reach.
        rev1 = await asyncio.to_thread(store_revision, c.store_endpoints)
        writes = rev1 - rev0
        events = len((await client.list(t.Event, namespace=NAMESPACE)).items)
        await counter.until(rev1)
        out["store_writes"] = {"total": writes, "per_pod": round(writes / size.pods, 1),
                               "per_s": round(writes / max(1e-6, out["all_running_s"]), 1),
                               "events_in_namespace": events, "by_writer": counter.table(size.pods, last=rev1)}
        out["all_bound_s"] = round(max(tracker.bound_at.values()) - t0, 2)
        out["store_size_mb_at_peak"] = store_size_mb(c.store_endpoints)

        # 2. Services -> Endpoints with every pod of the Deployment
        timeout = phase("Services -> Endpoints")
        t1 = time.monotonic()
        until = t1 + timeout
        await gather_limited([persist(lambda i=i: client.create(service(i, size.deployments)), deadline=until,
                                      done=(errors.AlreadyExistsError,)) for i in range(size.services)], 16)
        out["create_services_s"] = round(time.monotonic() - t1, 2)

        def endpoints_done() -> int:
            done = 0
            for e in tracker.endpoints.list():
                if sum(len(s.addresses) for s in e.subsets) >= size.replicas:
                    done += 1
            return done

        await wait_for("Endpoints", lambda: endpoints_done() >= size.services, timeout,
                       lambda: f"{endpoints_done()} of {size.services} Endpoints complete")
        out["all_endpoints_s"] = round(time.monotonic() - t1, 2)
        # The Services phase's writes alone (Endpoints, and whatever else ran meanwhile).
        rev2 = await asyncio.to_thread(store_revision, c.store_endpoints)
        await counter.until(rev2)
        out["store_writes_services"] = {"total": rev2 - rev1, "by_writer": counter.table(size.pods, rev1 + 1, rev2)}

        # 3. rolling update
        timeout = phase("rolling update")
        t2 = time.monotonic()
        for i in range(size.rollouts):
            for _ in range(10):
                d = await client.get(t.Deployment, f"d{i:03d}", NAMESPACE)
                d.spec.template.metadata.annotations["bench.skiff.io/rollout"] = "2"
                try:
                    await client.update(d)
                    break
                except errors.ConflictError:
                    continue

        def rolled() -> int:
            n = 0
            for i in range(size.rollouts):
                d = tracker.deployments.get(f"d{i:03d}", NAMESPACE)
                if d is not None and d.status.observed_generation >= d.metadata.generation and \
                        d.status.updated_replicas == size.replicas and d.status.replicas == size.replicas and \
                        d.status.available_replicas == size.replicas:
                    n += 1
            return n

        await wait_for("rolling update", lambda: rolled() >= size.rollouts, timeout,
                       lambda: f"{rolled()} of {size.rollouts} Deployments rolled out")
        out["rolling_update_s"] = round(time.monotonic() - t2, 2)
        rev3 = await asyncio.to_thread(store_revision, c.store_endpoints)
        await counter.until(rev3)
        rolled_pods = size.rollouts * size.replicas
        out["store_writes_rollout"] = {"total": rev3 - rev2, "pods_replaced": rolled_pods,
                                       "by_writer": counter.table(rolled_pods, rev2 + 1, rev3)}

        # 4. delete everything
        timeout = phase("delete all")
        t3 = time.monotonic()
        until = t3 + timeout
        await gather_limited([persist(lambda i=i: client.delete(t.Deployment, f"d{i:03d}", NAMESPACE,
                                                                propagation_policy="Background"),
                                      deadline=until, done=(errors.NotFoundError,))
                              for i in range(size.deployments)], 16)
        await gather_limited([persist(lambda i=i: client.delete(t.Service, f"s{i:04d}", NAMESPACE), deadline=until,
                                      done=(errors.NotFoundError,)) for i in range(size.services)], 16)
        await wait_for_async("deletion", lambda: pods_left(client), timeout,
                             lambda: f"{len(tracker.pods.list())} pods left (this process's informer)")
        out["delete_all_s"] = round(time.monotonic() - t3, 2)
        out["store_size_mb_at_end"] = store_size_mb(c.store_endpoints)
        out.pop("phase", None)
    except (TimeoutError, Stopped, errors.SkiffError) as exc:
        if isinstance(exc, Stopped):
            reason = str(exc)
        elif isinstance(exc, errors.SkiffError):
            reason = f"a request failed: {type(exc).__name__}: {exc}"
        elif time.monotonic() >= deadline - 1:
            reason = f"the run's deadline passed: {exc}"
        else:
            reason = f"phase timeout ({phase_timeout:.0f} s): {exc}"
        out["stopped"] = {"phase": out.pop("phase", "start"), "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "reason": reason, **(tracker.progress() if tracker is not None else {})}
        if tracker is not None and "scheduler_pods_per_s" not in out:
            out.update(tracker.scheduling())  # how fast it bound what it got to
            if t0:
                out["timeline"] = tracker.timeline(t0)
            if rev0:
                writes = await asyncio.to_thread(store_revision, c.store_endpoints) - rev0
                out["store_writes"] = {"total": writes, "per_pod": round(writes / max(1, len(tracker.first_seen)), 1),
                                       "per_s": round(writes / max(1e-6, time.monotonic() - t0), 1)}
        raise
    finally:
        if probe is not None:
            out["api"] = probe.results()
        out["store_terms"] = terms.results()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


def run_one(store_kind: str, size: Size, args: argparse.Namespace, deadline: float = float("inf")) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"skiff-scale-{store_kind}-"))
    c = Cluster(workdir, store_kind)
    result: dict[str, Any] = {"store": store_kind, "hollow_nice": args.hollow_nice}
    controller_args = tuple(args.controller_arg)
    if controller_args:
        result["controller_args"] = list(controller_args)
    apiserver_args = tuple(args.apiserver_arg)
    if apiserver_args:
        result["apiserver_args"] = list(apiserver_args)
    try:
        t0 = time.monotonic()
        result["phase"] = "start"
        start_control_plane(c, apiservers=3, controller_args=controller_args, apiserver_args=apiserver_args)
        result["control_plane_start_s"] = round(time.monotonic() - t0, 1)
        t1 = time.monotonic()
        extra = ["--start-latency", str(args.start_latency), "--fail-rate", str(args.fail_rate)]
        start_hollow(c, size.nodes, args.nodes_per_process, extra, nice=args.hollow_nice)
        result["hollow_nodes_start_s"] = round(time.monotonic() - t1, 1)
        cpu_before = {comp.name: comp.cpu_s() for comp in c.components}
        result.pop("phase")
        asyncio.run(scenario(c, size, args.timeout, result, deadline, args.profile))
        c.sample()
        result["components"] = {comp.name: {"peak_rss_mb": round(comp.peak_rss_mb, 1),
                                            "cpu_s": round(comp.cpu_s() - cpu_before.get(comp.name, 0.0), 1)}
                                for comp in c.components}
        # Answers the api-servers could not deliver: the client's deadline had passed (skiff/grpclog.py).
        result["apiserver_undelivered_responses"] = {
            name: scrape(addr, "grpc_server_undelivered_responses")
            for name, addr in c.metrics.items() if name.startswith("apiserver")}
        cp = [v["peak_rss_mb"] for k, v in result["components"].items() if not k.startswith("hollow")]
        result["control_plane_rss_mb"] = round(sum(cp), 1)
        result["ok"] = True
    except (TimeoutError, RuntimeError, Stopped, errors.SkiffError) as exc:
        result["ok"] = False
        result["error"] = str(exc)
        if "stopped" not in result:  # stopped while starting
            result["stopped"] = {"phase": result.pop("phase", "start"), "reason": str(exc),
                                 "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        c.sample()
        result["components"] = {comp.name: {"peak_rss_mb": round(comp.peak_rss_mb, 1)} for comp in c.components}
        result["control_plane_rss_mb"] = round(sum(v["peak_rss_mb"] for k, v in result["components"].items()
                                                   if not k.startswith("hollow")), 1)
        log.error("scale run on %s failed: %s", store_kind, exc)
    finally:
        global _cleaning
        _cleaning = True
        try:
            c.stop()
        finally:
            _cleaning = False
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    return result


def add_to_earlier(earlier: dict[str, Any], results: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """This run's results with the stores it did not run taken from an earlier result file of the same
    size. Each store's result is stamped with the run it came from (`run`: date, load, commit), since
    the file's own meta then describes only the latest run."""
    # How the simulated machines are run may differ between the two runs (each store's result
    # records its own hollow_nice); the size and the rest may not.
    if {k: v for k, v in earlier["results"]["params"].items() if k not in HARNESS_PARAMS} != \
            {k: v for k, v in results["params"].items() if k not in HARNESS_PARAMS}:
        raise SystemExit("--add: the earlier result file has another size or other parameters; not merged")

    def stamp(m: dict[str, Any]) -> dict[str, Any]:
        return {"date": m["date"], "load_before": m["load_before"], "load_after": m["load_after"],
                "skiff": m.get("versions", {}).get("skiff", "")}

    merged = dict(results)
    for store in ("skiff", "etcd"):
        if store in results:
            merged[store] = {**results[store], "run": stamp(now)}
        elif store in earlier["results"]:
            merged[store] = {"run": stamp(earlier["meta"]), **earlier["results"][store]}
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--small", action="store_true", help=f"{SMALL}")
    p.add_argument("--nodes", type=int)
    p.add_argument("--deployments", type=int)
    p.add_argument("--replicas", type=int)
    p.add_argument("--services", type=int)
    p.add_argument("--rollouts", type=int)
    p.add_argument("--store", choices=("skiff", "etcd", "both"), default="skiff")
    p.add_argument("--nodes-per-process", type=int, default=250)
    p.add_argument("--start-latency", type=float, default=0.0)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--hollow-nice", type=int, default=HOLLOW_NICE,
                   help="the hollow processes' nice level (they stand for other machines; 0: as the control plane)")
    p.add_argument("--timeout", type=float, default=1800.0, help="per phase, seconds")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="py-spy every component for this long during the create phase (needs root)")
    p.add_argument("--deadline", default="",
                   help="stop the whole run by this UTC time (HH:MM) or after this many seconds, writing what "
                        "it measured so far")
    p.add_argument("--controller-arg", action="append", default=[], metavar="FLAG",
                   help="one more flag for the controller manager, e.g. --controller-arg=--concurrent-replicaset-"
                        "syncs=20 (repeatable; recorded in the result as controller_args)")
    p.add_argument("--apiserver-arg", action="append", default=[], metavar="FLAG",
                   help="one more flag for every api-server, e.g. --apiserver-arg=--max-mutating-requests-inflight=400 "
                        "(repeatable; recorded in the result as apiserver_args)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--output", default="", help="result file (default bench/results/scale[-small].json)")
    p.add_argument("--add", action="store_true",
                   help="keep the other store's result already in the output file (a full size on both stores "
                        "takes two separate runs): each store's result then carries its own date and load")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base = SMALL if args.small else FULL
    size = Size(nodes=args.nodes or base.nodes, deployments=args.deployments or base.deployments,
                replicas=args.replicas or base.replicas, services=args.services or base.services,
                rollouts=args.rollouts if args.rollouts is not None else base.rollouts)
    run = meta.start("scale")
    stores = ["skiff", "etcd"] if args.store == "both" else [args.store]
    results: dict[str, Any] = {"params": {**size.__dict__, "pods": size.pods, "apiservers": 3, "store_members": 3,
                                          "nodes_per_process": args.nodes_per_process,
                                          "start_latency_s": args.start_latency, "fail_rate": args.fail_rate,
                                          "small": args.small, "hollow_nice": args.hollow_nice}}
    until = parse_deadline(args.deadline, datetime.now(UTC))
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    for i, store in enumerate(stores):
        deadline = float("inf")
        if until is not None:
            # An equal share of what is left for each store still to run.
            left = (until - datetime.now(UTC)).total_seconds()
            deadline = time.monotonic() + left / (len(stores) - i)
        try:
            results[store] = run_one(store, size, args, deadline)
        except Stopped as exc:  # a signal outside run_one's own handling (e.g. during cleanup)
            results.setdefault(store, {"store": store, "ok": False, "error": str(exc)})
            break
        print(json.dumps(results[store], indent=2), flush=True)
        if results[store].get("stopped", {}).get("reason", "").startswith("signal"):
            break
    default = meta.RESULTS_DIR / ("scale-small.json" if args.small else "scale.json")
    out = Path(args.output) if args.output else default
    if args.add and out.exists():
        results = add_to_earlier(json.loads(out.read_text()), results, run.meta())
    path = run.write(results, out)
    print(f"wrote {path}")
    return 0 if all(results[s].get("ok") for s in stores) else 1


if __name__ == "__main__":
    sys.exit(main())

