"""Every daemon's /metrics, /healthz, /livez and /readyz, scraped from real processes on loopback.

A store member, an api-server (gRPC and REST), the controller manager, the scheduler, a node
agent over its in-memory runtime and a cluster DNS server each serve their metrics on a free
loopback port. Each exposition must parse with prometheus_client's parser and carry the
upstream component's families; then a Deployment goes through the cluster and the series that
count that work must move.

TLS and RBAC are on as in a real cluster: every component has its own certificate from a test CA
and acts as its own identity; the api-server's REST port is HTTPS (the admin scrapes its
/metrics), and `kubectl top` / `skiff top` use the admin's certificate. The daemons' own metrics
ports are plain HTTP on loopback (docs/observability.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.message
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.store.cluster import StoreCluster, free_addr
from deploy.loopback import Process, free_port, start_apiserver
from skiff import daemons, pki, tls
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t
from tests.support.cluster import _env, start_controllers, start_fake_node, start_scheduler

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Cluster:
    api: str
    http: str
    metrics: dict[str, str]  # daemon -> host:port of its metrics
    dns: str
    work: Path
    pki_dir: Path

    @property
    def admin(self) -> tls.Credentials:
        return tls.Credentials.from_pki(self.pki_dir, pki.ADMIN)

    def https(self, path: str) -> str:
        """GET https://<the REST port><path> as the admin."""
        with urllib.request.urlopen(f"https://{self.http}{path}", timeout=10,
                                    context=self.admin.ssl_context()) as r:
            assert r.status == 200
            return str(r.read().decode())


def scrape(address: str, text: str = "") -> tuple[set[str], Samples]:
    """(family names, {(sample name, sorted labels): value}) of address's /metrics (or `text`), parsed."""
    if not text:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
            text = r.read().decode()
    families = list(text_string_to_metric_families(text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return {f.name for f in families}, samples


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum of `metric`'s samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == metric and set(labels.items()) <= set(ls))


def probe(address: str, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("metrics")
    pki_dir = work / "pki"
    pki.PKIDir(pki_dir).ensure([*pki.control_plane_specs(apiserver_ips=[], store_members=[]),
                                pki.node_spec("node-0", "127.0.0.1")], now=pki.utcnow())
    api_tls = tls.apiserver_tls(pki_dir)

    def creds(name: str) -> list[str]:
        return tls.client_flags(tls.Credentials.from_pki(pki_dir, name))

    store = StoreCluster(1, base_dir=str(work / "store")).start()
    procs: list[Process] = []
    try:
        m = {name: f"127.0.0.1:{free_port()}" for name in ("apiserver", "controllers", "scheduler", "nodeagent",
                                                            "clusterdns")}
        m["store"] = store.members["s1"].metrics
        http = f"127.0.0.1:{free_port()}"
        # The store here is plaintext on loopback: no --etcd-* flags.
        procs.append(start_apiserver(work, store.endpoints_str, extra_args=[
            *daemons.apiserver_tls_flags(tls.ApiServerTLS(api_tls.serving, None, api_tls.kubelet)),
            "--http-listen", http, "--metrics-bind-address", m["apiserver"]],
            credentials=tls.Credentials.from_pki(pki_dir, pki.ADMIN)))
        api = procs[0].endpoint
        procs.append(start_controllers(work, api, extra=["--metrics-bind-address", m["controllers"],
                                                         "--root-ca-file", str(pki.PKIDir(pki_dir).ca.cert)],
                                       tls=creds(pki.CONTROLLER_MANAGER)))
        procs.append(start_scheduler(work, api, extra=["--metrics-bind-address", m["scheduler"]],
                                     tls=creds(pki.SCHEDULER)))
        serving, node_creds = tls.node_tls(pki_dir, "node-0")
        procs.append(start_fake_node(work, api, "node-0", pod_cidr="10.200.0.0/24",
                                     extra=["--metrics-bind-address", m["nodeagent"],
                                            "--housekeeping-interval", "0.5"],
                                     tls=[*tls.server_flags(serving), *tls.client_flags(node_creds)]))
        dns_addr = free_addr("127.0.0.1")
        procs.append(Process("clusterdns", [sys.executable, "-m", "clusterdns", "--api-servers", api, "--listen",
                                            dns_addr, "--interface", "", "--reverse-cidrs", "10.96.0.0/12",
                                            "--metrics-bind-address", m["clusterdns"], *creds(pki.CLUSTERDNS)],
                             work / "clusterdns.log", "127.0.0.1", int(m["clusterdns"].rpartition(":")[2]),
                             env=_env()).start(timeout=60))
        yield Cluster(api, http, m, dns_addr, work, pki_dir)
    finally:
        for p in reversed(procs):
            p.stop()
        store.stop()


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str, *, timeout: float = 60.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


FAMILIES = {
    "store": {"etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_proposals_committed_total",
              "etcd_server_proposals_applied_total", "etcd_server_proposals_failed", "etcd_server_proposals_pending",
              "etcd_disk_wal_fsync_duration_seconds", "etcd_mvcc_db_total_size_in_bytes",
              "etcd_server_leader_changes_seen"},
    "apiserver": {"apiserver_request", "apiserver_request_duration_seconds", "apiserver_current_inflight_requests",
                  "apiserver_longrunning_requests", "apiserver_storage_objects", "apiserver_registered_watchers",
                  "apiserver_terminated_watchers"},
    "controllers": {"workqueue_depth", "workqueue_adds", "workqueue_queue_duration_seconds",
                    "workqueue_work_duration_seconds", "workqueue_retries", "leader_election_master_status"},
    "scheduler": {"scheduler_schedule_attempts", "scheduler_scheduling_attempt_duration_seconds",
                  "scheduler_pending_pods", "leader_election_master_status"},
    "nodeagent": {"kubelet_running_pods", "kubelet_running_containers", "kubelet_pleg_relist_duration_seconds",
                  "kubelet_pod_start_duration_seconds", "kubelet_runtime_operations",
                  "kubelet_runtime_operations_duration_seconds", "kubelet_node_name"},
    "clusterdns": {"coredns_dns_requests", "coredns_dns_responses", "coredns_dns_request_duration_seconds"},
}


@pytest.mark.parametrize("daemon", sorted(FAMILIES), ids=sorted(FAMILIES))
async def test_metrics_parse_and_name_the_upstream_families(cluster: Cluster, daemon: str) -> None:
    address = cluster.metrics[daemon]
    await eventually(lambda: probe(address, "/readyz") == 200, f"{daemon} to be ready")
    assert probe(address, "/healthz") == 200 and probe(address, "/livez") == 200
    families, _ = scrape(address)
    assert FAMILIES[daemon] <= families, f"{daemon} lacks {sorted(FAMILIES[daemon] - families)}"


async def test_the_api_server_serves_metrics_on_its_rest_port_too(cluster: Cluster) -> None:
    families, _ = scrape("", cluster.https("/metrics"))
    assert {"apiserver_request", "apiserver_storage_objects"} <= families


async def test_work_moves_the_counters(cluster: Cluster) -> None:
    before = {d: scrape(a)[1] for d, a in cluster.metrics.items()}
    client = Client(cluster.api, credentials=cluster.admin)
    try:
        d = t.Deployment(metadata=t.ObjectMeta(name="web", namespace="default"))
        d.spec.replicas = 2
        d.spec.selector.match_labels["app"] = "web"
        d.spec.template.metadata.labels["app"] = "web"
        d.spec.template.spec.containers.add(name="web", image="busybox")
        await client.create(d)

        async def pods_running() -> bool:
            pods = (await client.list(t.Pod, namespace="default")).items
            return len([p for p in pods if p.status.phase == "Running"]) == 2

        await eventually(pods_running, "2 running pods")
    finally:
        await client.close()
    query = dns.message.make_query("web.default.svc.cluster.local.", "A")
    host, _, port = cluster.dns.rpartition(":")
    await dns.asyncquery.udp(query, host, port=int(port), timeout=5)

    def moved(daemon: str, metric: str, /, **labels: str) -> float:
        return total(scrape(cluster.metrics[daemon])[1], metric, **labels) - total(before[daemon], metric, **labels)

    await eventually(lambda: moved("nodeagent", "kubelet_pod_start_duration_seconds_count") == 2,
                     "two pod starts observed")
    assert moved("apiserver", "apiserver_request_total", verb="POST", resource="deployments", code="200") == 1
    assert moved("apiserver", "apiserver_request_total", verb="PUT", resource="pods", subresource="status") >= 2
    assert moved("apiserver", "apiserver_request_duration_seconds_count", verb="POST", resource="pods") >= 2
    assert moved("apiserver", "apiserver_storage_objects", resource="pods") == 2
    assert moved("store", "etcd_server_proposals_committed_total") > 0
    assert moved("store", "etcd_disk_wal_fsync_duration_seconds_count") > 0
    assert moved("controllers", "workqueue_adds_total", name="deployment") >= 1
    assert moved("controllers", "workqueue_adds_total", name="replicaset") >= 1
    assert moved("scheduler", "scheduler_schedule_attempts_total", result="scheduled") == 2
    await eventually(lambda: total(scrape(cluster.metrics["controllers"])[1], "node_collector_zone_size") == 1,
                     "the node lifecycle controller's zone of one node")
    assert total(scrape(cluster.metrics["nodeagent"])[1], "kubelet_running_pods") == 2
    assert moved("clusterdns", "coredns_dns_requests_total", proto="udp", type="A") == 1
    assert moved("clusterdns", "coredns_dns_responses_total") == 1
    # REST requests count too, with Kubernetes' HTTP code.
    before_rest = scrape(cluster.metrics["apiserver"])[1]
    cluster.https("/api/v1/namespaces/default/pods")
    after_rest = scrape(cluster.metrics["apiserver"])[1]
    labels = {"verb": "LIST", "resource": "pods", "scope": "namespace", "code": "200"}
    assert total(after_rest, "apiserver_request_total", **labels) - total(
        before_rest, "apiserver_request_total", **labels) == 1


def run(cluster: Cluster, *argv: str) -> str:
    """A CLI's output (kubectl with an empty kubeconfig: only --server counts)."""
    kubeconfig = cluster.work / "kubeconfig"
    kubeconfig.write_text("")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(cluster.work)})
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def usage(output: str, name: str) -> list[str]:
    """The cells of `name`'s row in a `top` table."""
    return next(line.split() for line in output.splitlines() if line.split()[:1] == [name])


async def test_top_nodes_and_pods_through_kubectl_and_skiff(cluster: Cluster) -> None:
    """The fake runtime's containers use 10 millicores and 4 MiB each; the node is this host."""
    bin_dir = Path(sys.executable).parent
    admin = cluster.admin
    who = ["--certificate-authority", admin.ca_file, "--client-certificate", admin.cert_file,
           "--client-key", admin.key_file]
    kubectl = [str(bin_dir / "kubectl"), "--server", f"https://{cluster.http}", *who]
    skiff = [str(bin_dir / "skiff")]

    def pods_listed() -> bool:
        done = subprocess.run([*kubectl, "top", "pods"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "KUBECONFIG": "/dev/null"})
        return done.returncode == 0 and len(done.stdout.splitlines()) == 3

    await eventually(pods_listed, "kubectl top pods to list the 2 pods")
    out = run(cluster, *kubectl, "top", "pods")
    assert out.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    for line in out.splitlines()[1:]:
        name, cpu, memory = line.split()
        assert name.startswith("web-") and 9 <= int(cpu.removesuffix("m")) <= 11 and memory == "4Mi", line
    nodes = run(cluster, *kubectl, "top", "nodes")
    _, cpu, cpu_pct, memory, mem_pct = usage(nodes, "node-0")
    assert cpu.endswith("m") and memory.endswith("Mi") and int(memory.removesuffix("Mi")) > 0
    assert cpu_pct.endswith("%") and mem_pct.endswith("%")
    mine = run(cluster, *skiff, "top", "pods", "--containers", "--server", cluster.api, *who)
    rows = [line.split() for line in mine.splitlines()[1:]]
    assert len(rows) == 2 and all(r[1] == "web" and r[3] == "4Mi" for r in rows), mine
    assert usage(run(cluster, *skiff, "top", "nodes", "--server", cluster.api, *who), "node-0")[3].endswith("Mi")
    single = run(cluster, *kubectl, "get", "--raw",
                 f"/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{rows[0][0]}")
    assert f'"name":"{rows[0][0]}"' in single and '"kind":"PodMetrics"' in single
