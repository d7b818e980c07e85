"""The real kubectl (1.35, fetched by `make setup`) against a real one-host lab's Kubernetes
REST API: discovery, apply, get in every output, watch, scale, logs, delete, unknown kinds.

The lab is `make up`'s shape (one combined host, one store member) on its own LAN; kubectl
reaches the api-server's HTTP port through the lab's uplink with a kubeconfig of this test's
own (never the user's ~/.kube/config).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy import containerd
from deploy.lab import Lab, LabSpec
from skiff import kubeconfig
from tests.support.prereq import require, require_root

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
WEB = ROOT / "examples" / "web"
SEED = ROOT / "examples" / "seed"
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_root()
    missing = containerd.missing_prereqs()
    require(not missing, f"missing {', '.join(missing)}")
    require(KUBECTL.exists(), f"{KUBECTL} is missing: run `make setup`")
    prefix = f"k{os.getpid() % 10000}"
    spec = LabSpec(prefix=prefix, combined=True, store_members=1, workers=0,
                   lan_cidr=f"10.{220 + os.getpid() % 30}.0.0/24", min_sync_period="0s")
    the_lab = Lab(spec, tmp_path_factory.mktemp("labs"))
    the_lab.up(progress=print, timeout=120)
    global LAB
    LAB = the_lab
    try:
        yield the_lab
    finally:
        LAB = None
        the_lab.down()
        assert the_lab.leftovers() == []


@pytest.fixture(scope="module")
def kubectl(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    config = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_entry(lab.http_servers[0], path=config, credentials=lab.admin)

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(KUBECTL), "--kubeconfig", str(config), *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    run.config = config  # type: ignore[attr-defined]
    return run


def eventually(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f}s")
        time.sleep(0.5)


def ready_replicas(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> int:
    out = kubectl("get", "deploy", "web", "-o", "jsonpath={.status.readyReplicas}").stdout.strip()
    return int(out or 0)


def test_discovery_and_unknown_kinds(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    version = kubectl("version", "-o", "json").stdout
    assert json.loads(version)["serverVersion"]["major"] == "1"
    resources = kubectl("api-resources").stdout
    assert any(line.split()[:2] == ["deployments", "deploy"] for line in resources.splitlines())
    assert any(line.split()[:2] == ["pods", "po"] for line in resources.splitlines())
    unknown = kubectl("get", "widgets", check=False)
    assert unknown.returncode != 0
    assert 'the server doesn\'t have a resource type "widgets"' in unknown.stderr


def test_seed_verbatim(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The Kubernetes seed as it is (its nginx:latest needs a registry: only the objects are checked)."""
    applied = kubectl("apply", "-f", str(SEED)).stdout
    assert "deployment.apps/nginx-demo created" in applied and "service/nginx-service created" in applied
    assert "unchanged" in kubectl("apply", "-f", str(SEED)).stdout
    labeled = kubectl("label", "deploy", "nginx-demo", "tier=demo").stdout
    assert "deployment.apps/nginx-demo labeled" in labeled
    kubectl("patch", "deploy", "nginx-demo", "--type", "json", "-p",
            '[{"op": "replace", "path": "/spec/replicas", "value": 1}]')
    got = json.loads(kubectl("get", "deploy", "nginx-demo", "-o", "json").stdout)
    assert got["metadata"]["labels"] == {"app": "nginx", "tier": "demo"} and got["spec"]["replicas"] == 1
    assert "Replicas:" in kubectl("describe", "deploy", "nginx-demo").stdout
    everywhere = kubectl("get", "svc", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    kubectl("delete", "-f", str(SEED))


def test_apply_get_watch_scale_logs_delete(kubectl: Callable[..., subprocess.CompletedProcess[str]],
                                          tmp_path: Path) -> None:
    applied = kubectl("apply", "-f", str(WEB)).stdout
    assert "deployment.apps/web created" in applied and "service/web-service created" in applied
    eventually(lambda: ready_replicas(kubectl) == 2, timeout=90, what="2 ready replicas")

    table = kubectl("get", "deploy", "web").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:4] == ["web", "2/2", "2", "2"]
    wide = kubectl("get", "pods", "-o", "wide", "-l", "app=web").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert len(wide) == 3 and all(" Running " in line for line in wide[1:])
    assert "kind: Service" in kubectl("get", "svc", "web-service", "-o", "yaml").stdout
    data = json.loads(kubectl("get", "deploy", "web", "-o", "json").stdout)
    assert data["spec"]["replicas"] == 2 and data["metadata"]["generation"] >= 1  # numbers, not strings
    everything = kubectl("get", "all").stdout
    assert "deployment.apps/web" in everything and "service/web-service" in everything

    # a watch sees the new pods the scale makes
    watch = subprocess.Popen([str(KUBECTL), "--kubeconfig", str(kubectl.config), "get", "pods",  # type: ignore[attr-defined]
                              "-l", "app=web", "-w", "--output-watch-events", "--no-headers"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        eventually(lambda: len(lines) >= 2, timeout=20, what="the watch listing the 2 pods")
        assert "deployment.apps/web scaled" in kubectl("scale", "deploy/web", "--replicas", "3").stdout
        eventually(lambda: len(lines) > 2, timeout=30, what="a watch event after the scale")
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    assert any(line.split()[0] in ("ADDED", "MODIFIED") for line in lines[2:]), lines
    eventually(lambda: ready_replicas(kubectl) == 3, timeout=90, what="3 ready replicas")

    # client-side apply of a changed manifest: a strategic merge patch, containers merged by name
    changed = tmp_path / "web.yaml"
    changed.write_text((WEB / "web.yaml").read_text().replace("periodSeconds: 2", "periodSeconds: 3"))
    assert "deployment.apps/web configured" in kubectl("apply", "-f", str(changed)).stdout
    container = json.loads(kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0]}").stdout)
    assert container["readinessProbe"]["periodSeconds"] == 3 and container["image"] == "skiff/web:1.0"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]

    rollout = kubectl("rollout", "status", "deploy/web", "--timeout=90s", timeout=100).stdout
    assert 'deployment "web" successfully rolled out' in rollout

    def logs_of_a_pod() -> bool:  # a pod of the old ReplicaSet may still be going away: ask again
        pod = kubectl("get", "pods", "-l", "app=web", "-o", "jsonpath={.items[-1].metadata.name}").stdout.strip()
        return kubectl("logs", pod, check=False).returncode == 0

    eventually(logs_of_a_pod, timeout=30, what="kubectl logs of a web pod")

    deleted = kubectl("delete", "-f", str(changed), "--wait=false").stdout
    assert 'deployment.apps "web" deleted' in deleted
    missing = kubectl("get", "deploy", "web", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


HOSTNET_SPEC = {"hostNetwork": True, "containers": [{"name": "c", "image": "skiff/web:1.0"}]}


def test_pod_security_warnings_and_refusals(kubectl: Callable[..., subprocess.CompletedProcess[str]],
                                            tmp_path: Path) -> None:
    """Pod Security Admission as kubectl shows it: a Warning for a workload template, the
    Forbidden message for a pod, and a namespace labelled privileged admitting the pod."""
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hostnet"},
              "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "hostnet"}},
                       "template": {"metadata": {"labels": {"app": "hostnet"}}, "spec": HOSTNET_SPEC}}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostnet"}, "spec": HOSTNET_SPEC}
    (tmp_path / "deploy.json").write_text(json.dumps(deploy))
    (tmp_path / "pod.json").write_text(json.dumps(pod))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "psa"}}
    (tmp_path / "ns.json").write_text(json.dumps(namespace))
    kubectl("apply", "-f", str(tmp_path / "ns.json"))  # `kubectl create namespace` sends protobuf
    try:
        applied = kubectl("apply", "-n", "psa", "-f", str(tmp_path / "deploy.json"))
        assert ('Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)'
                in applied.stderr)
        refused = kubectl("apply", "-n", "psa", "-f", str(tmp_path / "pod.json"), check=False)
        assert refused.returncode != 0
        assert ('pods "hostnet" is forbidden: violates PodSecurity "baseline:latest": host namespaces '
                "(hostNetwork=true)") in refused.stderr
        kubectl("label", "namespace", "psa", "pod-security.kubernetes.io/enforce=privileged")
        allowed = kubectl("apply", "-n", "psa", "--dry-run=server", "-f", str(tmp_path / "pod.json"))
        assert "pod/hostnet created (server dry run)" in allowed.stdout and "Warning" not in allowed.stderr
    finally:
        kubectl("delete", "namespace", "psa", "--wait=false", check=False)
