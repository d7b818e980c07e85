"""Memory per pod of the control plane: the api-server's watch cache, informers, the scheduler, the store.

    python -m bench.cachemem [--pods 10000] [--mode M ...] [--trace]

Each in-process measurement runs in a fresh interpreter and reports its RSS growth divided by
the pods held: `watchcache` applies N pods created (Pending, bound) and then N status writes
(Running, with IPs, conditions and a container status, like the hollow nodes' writes) to one
`WatchCache` through its store-event path (so its ring of events is full as in a run);
`endpoints` is the Services phase's side of one api-server: the Endpoints watch cache given
1,000 Endpoints (`--endpoints`) of 300 addresses each (`realistic_endpoints`, ~45 kB encoded),
each written `--endpoint-writes` times (5) as its pods become ready (60, 120, ... 300 ready
addresses, the rest not ready), one live watcher taking every event (the controller manager's
informer), then one watch resumed from the oldest revision the ring holds and drained (an
informer whose connection broke), as a run does; it reports the growth per Endpoints and in all
(`--ring-bytes` sets the ring's byte bound where the watch cache has one).
`informer` applies the same N Running pods to an `Informer` as watch events, as the
controller manager's pod informer held them before it had a transform,
`informer-controller-manager` with the controller manager's (`INFORMER_TRANSFORMS` in
controlplane/controllers/manager.py), and `informer-scheduler` with the scheduler's
(`bound_pod_view`). `scheduler` is a whole `Scheduler` (its informers, cache and queue) over
1,000 hollow nodes, given pod by pod what it gets and does in a run: the pod created, its
decision (the pod assumed on its node), the pod bound, then Running.

`store` (only when asked for: a few minutes of the whole machine) starts three real store
members and writes through their gRPC API what the full-size scale scenario writes per pod
(`store_writes`: the pod's create, bind and two status writes, two Events, two node Lease
renewals), compacting as the api-server does (every `--history-window` revisions, to the
revision one window before), and stops where history is largest; it reports each member's RSS
and peak. `--watchers N` adds N watches of every key with prev_kv, as api-servers keep.
`--trace` adds tracemalloc's top allocation sites (in each member through a sitecustomize
hook; tracemalloc's bookkeeping inflates the RSS, so take RSS from a run without it).

The pods are `realistic_pod`: what the api-server stores for a scale-scenario Deployment's
pod (defaults, service-account volume, tolerations) once Running, about 1.2 kB encoded.
docs/scale.md quotes the figures; run it from an export of another checkout to compare.
`--output FILE` writes them, with the machine, versions and load (bench/meta.py); there is no
target for them in the README's table, so no result file is committed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import meta
from skiffpb.api.v1 import types_pb2 as t

MODES = ("watchcache", "endpoints", "informer", "informer-controller-manager", "informer-scheduler", "scheduler",
         "store")
# Modes run by default: `store` starts three store members and writes ~240,000 revisions
# through them (a few minutes of the whole machine), so it runs only when asked for.
DEFAULT_MODES = ("watchcache", "endpoints", "informer", "informer-controller-manager", "informer-scheduler",
                 "scheduler")
NODES = 1000
# The scale scenario's store writes per pod (8.3 measured, docs/scale.md): the pod's create,
# bind and two status writes, two Events, and two node Lease renewals.
WRITES_PER_POD = 8
# Revisions between two compactions: the api-server compacts every 5 minutes to the revision
# of 5 minutes before, at ~200 revisions/s in the full-size run. History peaks at two windows.
HISTORY_WINDOW = 60_000


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def realistic_pod(i: int, *, running: bool = True) -> t.Pod:
    """Pod i of a scale-scenario Deployment as stored, bound and (when `running`) Running."""
    p = t.Pod()
    m = p.metadata
    rs = f"d{i % 100:03d}-7c9f8d6b5"
    m.name, m.namespace, m.generate_name = f"{rs}-{i:05x}", "scale", f"{rs}-"
    m.uid = f"0b6c1f2e-5a3d-4c1e-9e7a-{i:012x}"
    m.labels["app"], m.labels["pod-template-hash"] = f"d{i % 100:03d}", "7c9f8d6b5"
    m.creation_timestamp.seconds = 1765000000 + i
    m.owner_references.add(api_version="apps/v1", kind="ReplicaSet", name=rs,
                           uid="1b6c1f2e-5a3d-4c1e-9e7a-000000000001", controller=True, block_owner_deletion=True)
    s = p.spec
    c = s.containers.add(name="app", image="registry.local/scale/app:1", image_pull_policy="IfNotPresent",
                         termination_message_path="/dev/termination-log", termination_message_policy="File")
    c.ports.add(container_port=8080, protocol="TCP")
    c.resources.requests["cpu"], c.resources.requests["memory"] = "10m", "16Mi"
    c.volume_mounts.add(name="kube-api-access-x7k2p", mount_path="/var/run/secrets/kubernetes.io/serviceaccount",
                        read_only=True)
    projected = s.volumes.add(name="kube-api-access-x7k2p").projected
    projected.default_mode = 420
    src = projected.sources.add()
    src.service_account_token.path, src.service_account_token.expiration_seconds = "token", 3607
    src = projected.sources.add()
    src.config_map.name = "kube-root-ca.crt"
    src.config_map.items.add(key="ca.crt", path="ca.crt")
    item = projected.sources.add().downward_api.items.add(path="namespace")
    item.field_ref.api_version, item.field_ref.field_path = "v1", "metadata.namespace"
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        s.tolerations.add(key=key, operator="Exists", effect="NoExecute", toleration_seconds=300)
    s.node_name, s.scheduler_name, s.service_account_name = f"hollow-{i % 1000:04d}", "default-scheduler", "default"
    s.restart_policy, s.dns_policy, s.termination_grace_period_seconds = "Always", "ClusterFirst", 30
    st = p.status
    st.qos_class = "Burstable"
    st.phase = "Pending"
    cond = st.conditions.add(type="PodScheduled", status="True")
    cond.last_transition_time.seconds = 1765000000 + i
    if running:
        st.phase, st.host_ip, st.pod_ip = "Running", "10.200.0.1", f"10.{128 + i % 100}.{i % 250}.{i % 200 + 2}"
        st.pod_ips.add(ip=st.pod_ip)
        st.start_time.seconds = 1765000000 + i
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"):
            cond = st.conditions.add(type=kind, status="True")
            cond.last_transition_time.seconds = 1765000000 + i
        cs = st.container_statuses.add(name="app", ready=True, started=True, image="registry.local/scale/app:1",
                                       image_id="sha256:" + "ab" * 32, container_id="containerd://" + "cd" * 32)
        cs.state.running.started_at.seconds = 1765000000 + i
    return p


def pending_pod(i: int) -> t.Pod:
    """Pod i as the ReplicaSet controller creates it: not bound yet, no status beyond Pending."""
    p = realistic_pod(i, running=False)
    p.spec.node_name = ""
    p.status.ClearField("conditions")
    return p


def realistic_node(i: int) -> t.Node:
    """Hollow node i as its agent registers it: labels, capacity, conditions, addresses."""
    n = t.Node()
    n.metadata.name = f"hollow-{i:04d}"
    n.metadata.uid = f"2b6c1f2e-5a3d-4c1e-9e7a-{i:012x}"
    n.metadata.resource_version = str(i + 2)
    for key, value in (("kubernetes.io/hostname", n.metadata.name), ("kubernetes.io/os", "linux"),
                       ("kubernetes.io/arch", "amd64"), ("skiff.dev/hollow", "true")):
        n.metadata.labels[key] = value
    for resources in (n.status.capacity, n.status.allocatable):
        resources["cpu"], resources["memory"], resources["pods"] = "4", "16Gi", "110"
    for kind, status in (("Ready", "True"), ("MemoryPressure", "False"), ("DiskPressure", "False"),
                         ("PIDPressure", "False")):
        cond = n.status.conditions.add(type=kind, status=status, reason=f"Kubelet{kind}")
        cond.last_heartbeat_time.seconds = cond.last_transition_time.seconds = 1765000000
    n.status.addresses.add(type="InternalIP", address=f"10.201.{i // 250}.{i % 250 + 1}")
    n.status.addresses.add(type="Hostname", address=n.metadata.name)
    return n


def realistic_event(i: int, reason: str) -> t.Event:
    """The Event a pod's scheduling or start records (about 400 bytes encoded)."""
    pod = realistic_pod(i, running=False)
    e = t.Event(reason=reason, type="Normal", count=1, reporting_component="default-scheduler",
                message=f"Successfully assigned scale/{pod.metadata.name} to {pod.spec.node_name}")
    e.metadata.name, e.metadata.namespace = f"{pod.metadata.name}.{i:016x}{len(reason):02d}", "scale"
    e.metadata.uid = f"3b6c1f2e-5a3d-4c1e-9e7a-{i:012x}"
    e.involved_object.kind, e.involved_object.name = "Pod", pod.metadata.name
    e.involved_object.namespace, e.involved_object.uid = "scale", pod.metadata.uid
    e.source.component = "default-scheduler"
    e.first_timestamp.seconds = e.last_timestamp.seconds = 1765000000 + i
    return e


def realistic_lease(node: int, renewed: int) -> t.Lease:
    """A hollow node's Lease in kube-node-lease as its agent renews it."""
    lease = t.Lease()
    lease.metadata.name, lease.metadata.namespace = f"hollow-{node:04d}", "kube-node-lease"
    lease.metadata.uid = f"4b6c1f2e-5a3d-4c1e-9e7a-{node:012x}"
    lease.spec.holder_identity, lease.spec.lease_duration_seconds = lease.metadata.name, 40
    lease.spec.renew_time.seconds = 1765000000 + renewed
    return lease


def store_writes(i: int) -> list[tuple[bytes, bytes]]:
    """The WRITES_PER_POD (key, value) puts the store sees for pod i, in order."""
    name = realistic_pod(i).metadata.name
    pod_key = f"/registry/pods/scale/{name}".encode()
    lease_key = f"/registry/leases/kube-node-lease/hollow-{i % NODES:04d}".encode()
    writes = [(pod_key, pending_pod(i).SerializeToString()),
              (pod_key, realistic_pod(i, running=False).SerializeToString())]
    for reason in ("Scheduled", "Started"):
        e = realistic_event(i, reason)
        writes.append((f"/registry/events/scale/{e.metadata.name}".encode(), e.SerializeToString()))
    writes += [(lease_key, realistic_lease(i % NODES, i).SerializeToString()),
               (pod_key, realistic_pod(i).SerializeToString()),
               (lease_key, realistic_lease(i % NODES, i + 10).SerializeToString()),
               (pod_key, realistic_pod(i).SerializeToString())]
    assert len(writes) == WRITES_PER_POD
    return writes


def _measure_watchcache(n: int) -> Any:
    from controlplane.apiserver.memstore import MemoryStore
    from controlplane.apiserver.storage import Event
    from controlplane.apiserver.watchcache import WatchCache
    from skiff import kinds
    kind = kinds.by_kind("Pod")
    assert kind is not None
    cache = WatchCache(MemoryStore(), kind)
    revision = 1
    for running in (False, True):
        for i in range(n):
            revision += 1
            key = f"/registry/pods/scale/{realistic_pod(i).metadata.name}"
            cache._apply(Event("PUT", key, realistic_pod(i, running=running).SerializeToString(), None, revision))
    cache.revision = revision
    return cache


ENDPOINTS = 1000  # the scale scenario's Services, each selecting one Deployment's 300 pods
ENDPOINT_ADDRESSES = 300
ENDPOINT_WRITES = 5  # each Endpoints written as its pods become ready


def realistic_endpoints(service: int, ready: int) -> t.Endpoints:
    """Service `service`'s Endpoints as the endpoints controller writes it: ENDPOINT_ADDRESSES
    pods of one Deployment, the first `ready` of them ready."""
    e = t.Endpoints()
    m = e.metadata
    m.name, m.namespace = f"svc-{service:04d}", "scale"
    m.uid = f"5b6c1f2e-5a3d-4c1e-9e7a-{service:012x}"
    m.labels["app"] = f"d{service % 100:03d}"
    m.creation_timestamp.seconds = 1765000000 + service
    subset = e.subsets.add()
    for j in range(ENDPOINT_ADDRESSES):
        i = (service % 100) + 100 * j  # the Deployment's pods
        pod = realistic_pod(i)
        addr = (subset.addresses if j < ready else subset.not_ready_addresses).add(
            ip=pod.status.pod_ip, node_name=pod.spec.node_name)
        addr.target_ref.kind, addr.target_ref.namespace = "Pod", "scale"
        addr.target_ref.name, addr.target_ref.uid = pod.metadata.name, pod.metadata.uid
    subset.ports.add(name="http", port=8080, protocol="TCP")
    return e


def _measure_endpoints(n: int, writes: int, ring_bytes: int | None) -> Any:
    from controlplane.apiserver.filters import make_filter
    from controlplane.apiserver.memstore import MemoryStore
    from controlplane.apiserver.storage import Event
    from controlplane.apiserver.watchcache import WatchCache
    from skiff import kinds
    kind = kinds.by_kind("Endpoints")
    assert kind is not None
    cache = WatchCache(MemoryStore(), kind) if ring_bytes is None else \
        WatchCache(MemoryStore(), kind, capacity_bytes=ring_bytes)  # None: the cache's default
    live, _ = cache.register(make_filter(kind), start_revision=None, allow_bookmarks=False)
    revision = 1
    for step in range(1, writes + 1):
        ready = ENDPOINT_ADDRESSES * step // writes
        for s in range(n):
            revision += 1
            value = realistic_endpoints(s, ready).SerializeToString()
            cache._apply(Event("PUT", f"/registry/endpoints/scale/svc-{s:04d}", value, None, revision))
            while live.queue:  # the informer takes each event as it comes
                live._pop()
    cache.revision = revision
    resumed, _ = cache.register(make_filter(kind), start_revision=cache.window_start, allow_bookmarks=False)
    while resumed.queue:
        resumed._pop()
    resumed.close()
    return cache, live


def _measure_informer(n: int, transform: str) -> Any:
    from skiff.informer import Informer
    informer: Informer[t.Pod] = Informer(None, t.Pod, transform=_transform(transform))  # type: ignore[arg-type]
    for i in range(n):
        informer.apply_event("ADDED", t.Pod.FromString(realistic_pod(i).SerializeToString()))
    return informer


def _scheduler_with_nodes() -> Any:
    """A Scheduler over local informers (no api-server) that knows NODES hollow nodes."""
    from controlplane.scheduler.scheduler import Scheduler, bound_pod_view
    from skiff.informer import InformerFactory
    factory = InformerFactory(None, transforms={t.Pod: bound_pod_view})  # type: ignore[arg-type]
    sched = Scheduler(None, factory, recorder=None)  # type: ignore[arg-type]
    for i in range(NODES):
        sched.nodes.apply_event("ADDED", realistic_node(i))
    return sched


def _feed_scheduler(sched: Any, n: int) -> None:
    """Pod by pod, what the scheduler gets and does: the pod created (its informer's event), its
    decision (`schedule_one` assumes the pod on the node, from the informer's copy), then the
    pod bound and Running (informer events)."""
    from controlplane.scheduler.nodeinfo import PodInfo
    rv = NODES + 2
    for i in range(n):
        for pod in (pending_pod(i), realistic_pod(i, running=False), realistic_pod(i)):
            rv += 1
            pod.metadata.resource_version = str(rv)
            event = "ADDED" if not pod.spec.node_name else "MODIFIED"
            sched.pods.apply_event(event, t.Pod.FromString(pod.SerializeToString()))
            if event == "ADDED":
                key = f"{pod.metadata.namespace}/{pod.metadata.name}"
                sched.cache.assume(PodInfo.of(sched.pods.get_by_key(key)), realistic_pod(i).spec.node_name)
    assert sched.cache.pod_count == n, sched.cache.pod_count


def _transform(name: str) -> Any:
    if name == "scheduler":
        from controlplane.scheduler.scheduler import bound_pod_view
        return bound_pod_view
    if name == "controller-manager":
        from controlplane.controllers.manager import INFORMER_TRANSFORMS
        return INFORMER_TRANSFORMS.get(t.Pod)
    return None


TRACE_ENV = "SKIFF_CACHEMEM_TRACE"  # a store member started with it traces its allocations
# Put where the members' interpreter finds it first (PYTHONPATH), it runs before the member's code.
_SITECUSTOMIZE = f"""import os
if os.environ.get({TRACE_ENV!r}):
    import bench.cachemem
    bench.cachemem.trace_this_process(os.environ[{TRACE_ENV!r}])
"""


def trace_this_process(out_dir: str) -> None:
    """Trace allocations from now on; on SIGUSR2 write the top sites to out_dir/<pid>.json."""
    import signal
    import tracemalloc
    tracemalloc.start(TRACE_FRAMES)

    def dump(_sig: int, _frame: Any) -> None:
        snap = tracemalloc.take_snapshot()
        out = {"traced_bytes": tracemalloc.get_traced_memory()[0], "rss_bytes": rss_bytes(),
               "top": top_allocations(snap, 15)}
        path = Path(out_dir) / f"{os.getpid()}.json"
        path.with_suffix(".tmp").write_text(json.dumps(out))
        path.with_suffix(".tmp").rename(path)

    signal.signal(signal.SIGUSR2, dump)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak RSS) of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


async def _feed_store(endpoints: list[str], n: int, window: int, *, watchers: int = 0,
                      concurrency: int = 64) -> dict[str, int]:
    """Write store_writes(i) for every pod through the members' gRPC API (64 clients, spread
    over the members as the api-servers are), compacting as the api-server does: when the
    revision passes k x window (k >= 2), to (k - 1) x window. It stops just before the next
    compaction would run, where history is largest (about two windows). `watchers`: that many
    watches of every key with prev_kv, one stream each, spread over the members (an
    api-server's watch cache watches each kind's prefix so)."""
    import grpc

    from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    seen = [0] * watchers

    async def watch(w: int) -> None:
        call = rpc_pb2_grpc.WatchStub(channels[w % len(channels)]).Watch()
        await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"/registry/", range_end=b"/registry0", start_revision=1, prev_kv=True)))
        async for resp in call:
            seen[w] += len(resp.events)

    watches = [asyncio.ensure_future(watch(w)) for w in range(watchers)]
    todo = iter(range(n))
    total = n * WRITES_PER_POD
    marks = [k * window for k in range(2, total // window + 1) if k * window < total]
    compacted: list[int] = []

    async def run(worker: int) -> None:
        stub = stubs[worker % len(stubs)]
        for i in todo:
            for key, value in store_writes(i):
                for attempt in range(10):
                    try:
                        resp = await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=30)
                        break
                    except grpc.RpcError:
                        if attempt == 9:
                            raise
                        await asyncio.sleep(0.5)
                if marks and resp.header.revision >= marks[0]:
                    at = marks.pop(0) - window
                    await stub.Compact(rpc_pb2.CompactionRequest(revision=at), timeout=30)
                    compacted.append(at)

    await asyncio.gather(*(run(w) for w in range(concurrency)))
    status = await rpc_pb2_grpc.MaintenanceStub(channels[0]).Status(rpc_pb2.StatusRequest(), timeout=10)
    for _ in range(600):  # the watchers drain what was written
        if all(s >= total for s in seen):
            break
        await asyncio.sleep(0.1)
    for task in watches:
        task.cancel()
    await asyncio.gather(*watches, return_exceptions=True)
    for ch in channels:
        await ch.close(None)
    return {"revision": status.header.revision, "compacted_at": compacted[-1] if compacted else 0,
            "db_size": status.dbSize, "watch_events": min(seen, default=0)}


def measure_store(n: int, *, window: int = HISTORY_WINDOW, watchers: int = 0, trace: bool = False) -> dict[str, Any]:
    """Three real store members fed store_writes for n pods: each member's RSS before and after
    (and its peak), and with `trace` tracemalloc's top sites in each member (slower, and
    tracemalloc's own bookkeeping inflates the RSS)."""
    import tempfile
    import time

    from controlplane.store.cluster import StoreCluster
    with tempfile.TemporaryDirectory(prefix="cachemem-store-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        repo = str(Path(__file__).resolve().parent.parent)
        saved = dict(os.environ)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), repo, os.environ.get("PYTHONPATH", "")])
        if trace:
            os.environ[TRACE_ENV] = tmp
        try:
            cluster = StoreCluster(3, base_dir=os.path.join(tmp, "members")).start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            pids = {name: m.proc.pid for name, m in cluster.members.items() if m.proc is not None}
            time.sleep(2)
            before = {name: proc_status(pid)["VmRSS"] for name, pid in pids.items()}
            started = time.monotonic()
            fed = asyncio.run(_feed_store(cluster.endpoints, n, window, watchers=watchers))
            seconds = time.monotonic() - started
            time.sleep(3)  # followers finish applying
            members: dict[str, Any] = {}
            for name, pid in pids.items():
                st = proc_status(pid)
                members[name] = {"rss_before": before[name], "rss": st["VmRSS"], "rss_peak": st["VmHWM"],
                                 "bytes_per_pod": round((st["VmRSS"] - before[name]) / n)}
                if trace:
                    os.kill(pid, signal.SIGUSR2)
            if trace:
                for name, pid in pids.items():
                    path = Path(tmp) / f"{pid}.json"
                    deadline = time.monotonic() + 120
                    while not path.exists() and time.monotonic() < deadline:
                        time.sleep(0.5)
                    members[name]["trace"] = json.loads(path.read_text()) if path.exists() else None
        finally:
            cluster.close()
    return {"mode": "store", "pods": n, "writes": n * WRITES_PER_POD, "history_window": window, "watchers": watchers,
            "seconds": round(seconds, 1), **fed, "members": members,
            "bytes_per_pod": round(sum(m["bytes_per_pod"] for m in members.values()) / len(members))}


TRACE_FRAMES = 4  # enough to see past pickle and protobuf to the code that keeps the object


def top_allocations(snapshot: Any, limit: int = 12) -> list[dict[str, Any]]:
    """The biggest allocation sites of a tracemalloc snapshot (innermost frame first), this
    harness's own left out."""
    import tracemalloc
    ignore = tracemalloc.Filter(False, __file__)
    stats = snapshot.filter_traces([ignore, tracemalloc.Filter(False, tracemalloc.__file__)]).statistics("traceback")
    return [{"where": " < ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in reversed(s.traceback)),
             "bytes": s.size, "blocks": s.count} for s in stats[:limit]]


def _import_modules(mode: str) -> None:
    """Import what `mode` builds with, so that the growth measured is the pods' alone (the
    imports of the api-server's or the informer's modules are several MB, which were counted as
    the pods' before: 2-3 kB per pod at 10,000 pods)."""
    if mode in ("watchcache", "endpoints"):
        import controlplane.apiserver.memstore
        import controlplane.apiserver.watchcache  # noqa: F401
    elif mode.startswith("informer"):
        import skiff.informer  # noqa: F401
        _transform(mode.partition("-")[2])


def measure(mode: str, n: int, *, trace: bool = False, endpoint_writes: int = ENDPOINT_WRITES,
            ring_bytes: int | None = None) -> dict[str, Any]:
    """RSS growth per pod of `mode` in this process (run it in a fresh one). With `trace`, also
    tracemalloc's top allocation sites of what was built (tracemalloc inflates the RSS)."""
    import tracemalloc
    asyncio.set_event_loop(asyncio.new_event_loop())
    _import_modules(mode)
    held: Any = None
    if mode == "scheduler":
        held = _scheduler_with_nodes()  # the nodes are not counted per pod
    gc.collect()
    if trace:
        tracemalloc.start(TRACE_FRAMES)
    before = rss_bytes()
    if mode == "watchcache":
        held = _measure_watchcache(n)
    elif mode == "endpoints":
        held = _measure_endpoints(n, endpoint_writes, ring_bytes)
    elif mode == "scheduler":
        _feed_scheduler(held, n)
    else:
        held = _measure_informer(n, mode.partition("-")[2])
    gc.collect()
    grown = rss_bytes() - before
    result: dict[str, Any] = {"mode": mode, "pods": n, "rss_bytes": grown, "bytes_per_pod": round(grown / n),
                              "encoded_bytes_per_pod": len(realistic_pod(0).SerializeToString())}
    if mode == "endpoints":
        result = {"mode": mode, "endpoints": n, "writes_each": endpoint_writes, "rss_bytes": grown,
                  "bytes_per_endpoints": round(grown / n), "ring_events": len(held[0].events),
                  "encoded_bytes_per_endpoints": len(realistic_endpoints(0, ENDPOINT_ADDRESSES).SerializeToString())}
    if trace:
        result["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        result["top"] = top_allocations(tracemalloc.take_snapshot())
    del held
    return result


def _print(r: dict[str, Any]) -> None:
    if r["mode"] == "store":
        for name, m in r["members"].items():
            print(f"store {name:16s} {m['bytes_per_pod']:7d} bytes/pod (RSS {m['rss'] >> 20} MB, peak "
                  f"{m['rss_peak'] >> 20} MB; {r['pods']} pods, {r['writes']} writes, history from "
                  f"{r['compacted_at']} to {r['revision']}; {r['watchers']} watchers saw {r['watch_events']} events)")
    elif r["mode"] == "endpoints":
        print(f"{r['mode']:22s} {r['bytes_per_endpoints']:7d} bytes/Endpoints ({r['endpoints']} Endpoints written "
              f"{r['writes_each']} times, encoded {r['encoded_bytes_per_endpoints']} B; {r['rss_bytes'] >> 20} MB "
              f"in all, {r['ring_events']} events in the ring)")
    else:
        print(f"{r['mode']:22s} {r['bytes_per_pod']:7d} bytes/pod ({r['pods']} pods, "
              f"encoded {r['encoded_bytes_per_pod']} B)")
    tops = [("", r)] if "top" in r else [(n, m["trace"]) for n, m in r.get("members", {}).items() if m.get("trace")]
    for name, traced in tops:
        print(f"  tracemalloc {name}: {traced['traced_bytes'] >> 20} MB traced")
        for site in traced["top"]:
            print(f"    {site['bytes'] >> 10:9d} kB {site['blocks']:8d} blocks  {site['where']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--mode", choices=MODES, action="append",
                   help="the modes to run (repeat it; default: every mode but store)")
    p.add_argument("--endpoints", type=int, default=ENDPOINTS, help="endpoints: how many Endpoints")
    p.add_argument("--endpoint-writes", type=int, default=ENDPOINT_WRITES, help="endpoints: writes of each")
    p.add_argument("--ring-bytes", type=int, default=None,
                   help="endpoints: the ring's byte bound (default: the watch cache's)")
    p.add_argument("--trace", action="store_true", help="also tracemalloc's top allocation sites")
    p.add_argument("--history-window", type=int, default=HISTORY_WINDOW,
                   help="store: revisions between compactions")
    p.add_argument("--watchers", type=int, default=0, help="store: watches of every key with prev_kv")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # one mode, JSON on stdout
    p.add_argument("--output", type=Path, default=None, help="write the results here (with meta)")
    args = p.parse_args(argv)
    if args.in_process:
        n = args.endpoints if args.mode[0] == "endpoints" else args.pods
        print(json.dumps(measure(args.mode[0], n, trace=args.trace, endpoint_writes=args.endpoint_writes,
                                 ring_bytes=args.ring_bytes)))
        return 0
    run = meta.start("cachemem")
    results: dict[str, Any] = {}
    for mode in args.mode or DEFAULT_MODES:
        if mode == "store":
            results[mode] = measure_store(args.pods, window=args.history_window, watchers=args.watchers,
                                          trace=args.trace)
            _print(results[mode])
            continue
        out = subprocess.run([sys.executable, "-m", "bench.cachemem", "--pods", str(args.pods), "--mode", mode,
                              "--endpoints", str(args.endpoints), "--endpoint-writes", str(args.endpoint_writes),
                              *(["--ring-bytes", str(args.ring_bytes)] if args.ring_bytes is not None else []),
                              "--in-process", *(["--trace"] if args.trace else [])], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{mode}: failed\n{out.stderr.strip()}")
            continue
        results[mode] = json.loads(out.stdout)
        _print(results[mode])
    if args.output is not None:
        run.write(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
