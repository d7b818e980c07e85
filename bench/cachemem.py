"""Memory per pod of the control plane's caches: the api-server's watch cache and an informer.

    python -m bench.cachemem [--pods 10000]

Each measurement runs in a fresh interpreter and reports its RSS growth divided by the pods
held: `watchcache` applies N pods created (Pending, bound) and then N status writes (Running,
with IPs, conditions and a container status, like the hollow nodes' writes) to one
`WatchCache` through its store-event path (so its ring of events is full as in a run);
`informer` applies the same N Running pods to an `Informer` as watch events, as the
controller manager's pod informer holds them, and `informer-scheduler` with the scheduler's
transform (`bound_pod_view`). The pods are
`realistic_pod`: what the api-server stores for a scale-scenario Deployment's pod (defaults,
service-account volume, tolerations) once Running, about 1.2 kB encoded. docs/scale.md
quotes the figures; run it against another checkout with PYTHONPATH to compare. `--output
FILE` writes them, with the machine, versions and load (bench/meta.py); there is no target
for them in the README's table, so no result file is committed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import meta
from skiffpb.api.v1 import types_pb2 as t

MODES = ("watchcache", "informer", "informer-scheduler")


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


def _measure_informer(n: int, transform: str) -> Any:
    from skiff.informer import Informer
    informer: Informer[t.Pod] = Informer(None, t.Pod, transform=_transform(transform))  # type: ignore[arg-type]
    for i in range(n):
        informer.apply_event("ADDED", t.Pod.FromString(realistic_pod(i).SerializeToString()))
    return informer


def _transform(name: str) -> Any:
    if name == "scheduler":
        from controlplane.scheduler.scheduler import bound_pod_view
        return bound_pod_view
    return None


def measure(mode: str, n: int) -> dict[str, Any]:
    """RSS growth per pod of `mode` in this process (run it in a fresh one)."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    gc.collect()
    before = rss_bytes()
    held: Any = None
    if mode == "watchcache":
        held = _measure_watchcache(n)
    else:
        held = _measure_informer(n, mode.partition("-")[2])
    gc.collect()
    grown = rss_bytes() - before
    del held
    return {"mode": mode, "pods": n, "rss_bytes": grown, "bytes_per_pod": round(grown / n),
            "encoded_bytes_per_pod": len(realistic_pod(0).SerializeToString())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--mode", choices=MODES, help="measure one mode in this process (JSON on stdout)")
    p.add_argument("--output", type=Path, default=None, help="write the results here (with meta)")
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args.mode, args.pods)))
        return 0
    run = meta.start("cachemem")
    results: dict[str, Any] = {}
    for mode in MODES:
        out = subprocess.run([sys.executable, "-m", "bench.cachemem", "--pods", str(args.pods), "--mode", mode],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{mode}: failed\n{out.stderr.strip()}")
            continue
        r = json.loads(out.stdout)
        results[mode] = r
        print(f"{mode:22s} {r['bytes_per_pod']:7d} bytes/pod ({r['pods']} pods, "
              f"encoded {r['encoded_bytes_per_pod']} B)")
    if args.output is not None:
        run.write(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
