"""The real kubectl (1.35) and helm (4), fetched by `make setup`, against a real one-host lab's
Kubernetes REST API: discovery, explain, apply (client-side and server-side), get in every output,
watch, scale, logs, delete, unknown kinds, typed `create` (protobuf bodies), exec exit codes,
drain (evictions), `skiff kubectl`, helm's own scaffold through its whole release cycle, and the
remaining verbs (rollout history/undo/restart, set image, patch x3, label/annotate, expose, wait,
describe, delete --wait, run, logs -f, edit, auth can-i --list) with the official Python client.

The lab is `make up`'s shape (one combined host, one store member) on its own LAN; kubectl
reaches the api-server's HTTP port through the lab's uplink with the kubeconfig the lab writes
(`Lab.write_kubeconfig`, as `skiff lab up` and `make up` do), into a file of this test's own
(never the user's ~/.kube/config).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import netplan
from deploy.lab import Lab, LabSpec
from tests.support import labs
from tests.support.kubectl import KUBECTL, Kubectl, require_kubectl, runner, until, with_token
from tests.support.prereq import require

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "examples" / "web"
SEED = ROOT / "examples" / "seed"
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    require_kubectl()
    prefix = f"k{os.getpid() % 10000}"
    spec = LabSpec(prefix=prefix, combined=True, store_members=1, workers=0,
                   lan_cidr=netplan.free_lan(range(220, 250)), min_sync_period="0s")
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def kubectl(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return runner(lab.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config"))


def ready_replicas(kubectl: Kubectl) -> int:
    out = kubectl("get", "deploy", "web", "-o", "jsonpath={.status.readyReplicas}").stdout.strip()
    return int(out or 0)


def test_discovery_and_unknown_kinds(kubectl: Kubectl) -> None:
    version = kubectl("version", "-o", "json").stdout
    assert json.loads(version)["serverVersion"]["major"] == "1"
    resources = kubectl("api-resources").stdout
    assert any(line.split()[:2] == ["deployments", "deploy"] for line in resources.splitlines())
    assert any(line.split()[:2] == ["pods", "po"] for line in resources.splitlines())
    assert any(line.split()[:2] == ["persistentvolumeclaims", "pvc"] for line in resources.splitlines())
    until(lambda: "local-path (default)   skiff.io/local-path   Delete" in kubectl("get", "sc").stdout,
               timeout=30, what="the default StorageClass in kubectl get sc")
    explained = kubectl("explain", "deployment.spec").stdout
    assert "KIND:       Deployment" in explained and "replicas\t<integer>" in explained
    unknown = kubectl("get", "widgets", check=False)
    assert unknown.returncode != 0
    assert 'the server doesn\'t have a resource type "widgets"' in unknown.stderr


def test_seed_verbatim(kubectl: Kubectl) -> None:
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


def test_apply_get_watch_scale_logs_delete(kubectl: Kubectl,
                                          tmp_path: Path) -> None:
    applied = kubectl("apply", "-f", str(WEB)).stdout
    assert "deployment.apps/web created" in applied and "service/web-service created" in applied
    until(lambda: ready_replicas(kubectl) == 2, timeout=90, what="2 ready replicas")

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
        until(lambda: len(lines) >= 2, timeout=20, what="the watch listing the 2 pods")
        assert "deployment.apps/web scaled" in kubectl("scale", "deploy/web", "--replicas", "3").stdout
        until(lambda: len(lines) > 2, timeout=30, what="a watch event after the scale")
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    assert any(line.split()[0] in ("ADDED", "MODIFIED") for line in lines[2:]), lines
    until(lambda: ready_replicas(kubectl) == 3, timeout=90, what="3 ready replicas")

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

    until(logs_of_a_pod, timeout=30, what="kubectl logs of a web pod")

    deleted = kubectl("delete", "-f", str(changed), "--wait=false").stdout
    assert 'deployment.apps "web" deleted' in deleted
    missing = kubectl("get", "deploy", "web", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


HOSTNET_SPEC = {"hostNetwork": True, "containers": [{"name": "c", "image": "skiff/web:1.0"}]}


def test_pod_security_warnings_and_refusals(kubectl: Kubectl,
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


HELM = ROOT / ".venv" / "bin" / "helm"
SKIFF = ROOT / ".venv" / "bin" / "skiff"


def test_helm_create_install_upgrade_rollback_uninstall(
        lab: Lab, kubectl: Kubectl, tmp_path: Path) -> None:
    """helm 4's own scaffold, unchanged (only its values are set: the image is the lab's offline web
    image), through install, upgrade, rollback and uninstall; its pods answer through its Service."""
    require(HELM.exists(), f"{HELM} is missing: run `make setup`")
    env = {**os.environ, "KUBECONFIG": str(kubectl.config), "HELM_CACHE_HOME": str(tmp_path / "cache"),  # type: ignore[attr-defined]
           "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}

    def helm(*args: str) -> str:
        done = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, f"helm {' '.join(args)} failed ({done.returncode}): {done.stderr}"
        return done.stdout

    helm("create", "demo")
    image = ["--set", "image.repository=skiff/web", "--set", "image.pullPolicy=IfNotPresent"]

    def image_of_deployment() -> str:
        return kubectl("get", "deploy", "demo", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout

    def serving(version: str) -> bool:
        """Every answer through the Service comes from a ready pod of `version` (web:2.0 says so)."""
        ip = kubectl("get", "svc", "demo", "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
        try:
            page = lab.http_get(lab.control_plane_hosts[0], f"http://{ip}/", timeout=10)
        except Exception:
            return False
        return "hello from demo-" in page and (("v2" in page.split()) == (version == "2.0"))

    assert "STATUS: deployed" in helm("install", "demo", "./demo", *image, "--set", "image.tag=1.0")
    for kind in ("deployment/demo", "service/demo", "serviceaccount/demo", "secret/sh.helm.release.v1.demo.v1"):
        kubectl("get", kind)
    until(lambda: serving("1.0"), timeout=120, what="the chart's pods answering through its Service")

    assert "has been upgraded" in helm("upgrade", "demo", "./demo", *image, "--set", "image.tag=2.0")
    assert image_of_deployment() == "skiff/web:2.0"
    until(lambda: serving("2.0"), timeout=120, what="the upgraded pods answering")

    assert "Rollback was a success" in helm("rollback", "demo", "1")
    assert image_of_deployment() == "skiff/web:1.0"
    history = helm("history", "demo").splitlines()
    assert [line.split()[0] for line in history[1:]] == ["1", "2", "3"] and "Rollback to 1" in history[-1]
    until(lambda: serving("1.0"), timeout=120, what="the rolled back pods answering")

    assert 'release "demo" uninstalled' in helm("uninstall", "demo")
    until(lambda: kubectl("get", "deploy,svc,sa,secret,pods", "-l", "app.kubernetes.io/instance=demo",
                               "-o", "name").stdout.strip() == "", timeout=90, what="the chart's objects gone")
    assert "sh.helm.release" not in kubectl("get", "secrets", "-o", "name").stdout


def test_typed_create_server_side_apply_and_skiff_kubectl(kubectl: Kubectl,
                                                         tmp_path: Path) -> None:
    """kubectl's typed commands send protobuf; `apply --server-side` keeps managers; `skiff kubectl`
    is that same kubectl on the same kubeconfig."""
    assert "deployment.apps/typed created" in kubectl("create", "deployment", "typed", "--image=skiff/web:1.0",
                                                      "--replicas=1").stdout
    assert "configmap/typed created" in kubectl("create", "configmap", "typed", "--from-literal=a=b").stdout
    assert "secret/typed created" in kubectl("create", "secret", "generic", "typed", "--from-literal=x=y").stdout
    assert kubectl("get", "cm", "typed", "-o", "jsonpath={.data.a}").stdout == "b"
    assert kubectl("get", "deploy", "typed", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
                   ).stdout == "skiff/web:1.0"
    kubectl("delete", "deploy/typed", "cm/typed", "secret/typed")

    manifest = tmp_path / "ssa.yaml"
    manifest.write_text((WEB / "web.yaml").read_text().replace("name: web\n", "name: ssa\n", 1))
    assert "deployment.apps/ssa serverside-applied" in kubectl("apply", "--server-side", "-f", str(manifest)).stdout
    assert "deployment.apps/ssa serverside-applied" in kubectl("apply", "--server-side", "-f", str(manifest)).stdout
    kubectl("scale", "deploy/ssa", "--replicas", "3")
    conflict = kubectl("apply", "--server-side", "-f", str(manifest), check=False)
    assert conflict.returncode != 0 and ".spec.replicas" in conflict.stderr and "conflict" in conflict.stderr.lower()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    assert kubectl("get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}").stdout == "2"
    managers = kubectl("get", "deploy", "ssa", "-o", "jsonpath={.metadata.managedFields[*].manager}",
                       "--show-managed-fields").stdout.split()
    assert "kubectl" in managers

    env = {**os.environ, "KUBECONFIG": str(kubectl.config)}  # type: ignore[attr-defined]
    via_skiff = subprocess.run([str(SKIFF), "kubectl", "get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"],
                               capture_output=True, text=True, env=env, timeout=60)
    assert (via_skiff.returncode, via_skiff.stdout) == (0, "2"), via_skiff.stderr
    kubectl("delete", "-f", str(manifest))


def test_exec_then_drain_evicts_and_uncordon(lab: Lab, kubectl: Kubectl,
                                             tmp_path: Path) -> None:
    """`kubectl exec` over WebSocket in a real container (output, exit codes); then `kubectl drain`
    cordons the node and evicts its pods through pods/eviction (policy/v1)."""
    manifest = tmp_path / "drain.yaml"
    manifest.write_text((WEB / "web.yaml").read_text().replace("name: web\n", "name: drained\n", 1)
                        .replace("app: web", "app: drained").replace("replicas: 2", "replicas: 1"))
    kubectl("apply", "-f", str(manifest))
    node = lab.control_plane_hosts[0]

    def running() -> list[str]:
        out = kubectl("get", "pods", "-l", "app=drained", "-o",
                      "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}").stdout
        return [line.split()[0] for line in out.splitlines() if line.endswith(" Running")]

    until(lambda: len(running()) == 1, timeout=90, what="the pod to drain running")
    before = running()[0]
    said = kubectl("exec", before, "--", "sh", "-c", "echo hello from exec; echo to stderr >&2")
    assert (said.stdout, said.stderr) == ("hello from exec\n", "to stderr\n")
    failed = kubectl("exec", before, "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3, failed.stderr
    assert kubectl("exec", before, "-c", "web", "--", "cat", "/www/name").stdout.strip() == before
    drained = kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s",
                      "--pod-selector=app=drained", timeout=120)
    assert f"evicting pod default/{before}" in drained.stderr + drained.stdout
    assert f"node/{node} drained" in drained.stdout
    assert kubectl("get", "node", node, "-o", "jsonpath={.spec.unschedulable}").stdout == "true"
    kubectl("uncordon", node)
    until(lambda: bool(running()) and running()[0] != before, timeout=90, what="a replacement pod running")
    kubectl("delete", "-f", str(manifest))


def test_a_service_account_token_from_kubectl_create_token(lab: Lab,
                                                          kubectl: Kubectl,
                                                          tmp_path: Path) -> None:
    """The lab's api-server has the PKI's service-account keys: a token from `kubectl create
    token` authenticates over HTTPS (no client certificate), and RBAC decides for its user."""
    kubectl("create", "serviceaccount", "reader")
    token = kubectl("create", "token", "reader").stdout.strip()
    as_reader = with_token(lab.http_servers[0], lab.admin.ca_file, token, tmp_path)

    done = as_reader("get", "pods", "-n", "default")
    assert done.returncode == 1
    assert 'User "system:serviceaccount:default:reader" cannot list resource "pods"' in done.stderr, done.stderr
    binding = tmp_path / "binding.yaml"
    binding.write_text("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n"
                       "metadata: {name: reader-views, namespace: default}\n"
                       "subjects: [{kind: ServiceAccount, name: reader, namespace: default}]\n"
                       "roleRef: {kind: ClusterRole, apiGroup: rbac.authorization.k8s.io, name: view}\n")
    kubectl("apply", "-f", str(binding))
    until(lambda: as_reader("get", "pods", "-n", "default").returncode == 0, timeout=15,
               what="the service account lists pods once bound to view")
    kubectl("delete", "serviceaccount", "reader")
    done = as_reader("get", "pods", "-n", "default")
    assert done.returncode == 1, done.stderr
    assert "You must be logged in to the server" in done.stderr and "has been deleted" in done.stderr, done.stderr
    kubectl("delete", "-f", str(binding))


def test_rollout_history_undo_restart_set_image_patch_label_annotate_expose_describe_wait_delete(
        kubectl: Kubectl) -> None:
    """A Deployment through the verbs that change it: revisions with their change-cause, `set image`,
    `rollout undo` and `restart`, the three patch types, label and annotate (overwrite, removal),
    `expose`, `describe` with events, `wait` for a condition and a jsonpath, and a foreground
    `delete --wait` that returns only once the Deployment and its ReplicaSets are gone."""
    kubectl("create", "deployment", "rev", "--image=skiff/web:1.0", "--replicas=1")
    kubectl("annotate", "deploy/rev", "kubernetes.io/change-cause=first")
    kubectl("wait", "--for=condition=Available", "deploy/rev", "--timeout=90s", timeout=100)

    def history() -> list[list[str]]:
        lines = kubectl("rollout", "history", "deploy/rev").stdout.splitlines()
        return [line.split(None, 1) for line in lines[2:] if line.strip()]

    until(lambda: history() == [["1", "first"]], timeout=20, what="revision 1 with its change-cause")
    assert "deployment.apps/rev image updated" in kubectl("set", "image", "deploy/rev", "web=skiff/web:2.0").stdout
    kubectl("annotate", "deploy/rev", "kubernetes.io/change-cause=image 2.0")  # kubectl always overwrites this one
    kubectl("rollout", "status", "deploy/rev", "--timeout=90s", timeout=100)
    until(lambda: history() == [["1", "first"], ["2", "image 2.0"]], timeout=20, what="revision 2")
    detail = kubectl("rollout", "history", "deploy/rev", "--revision=2").stdout
    assert "skiff/web:2.0" in detail and "revision #2" in detail

    assert "deployment.apps/rev rolled back" in kubectl("rollout", "undo", "deploy/rev").stdout
    image = ["-o", "jsonpath={.spec.template.spec.containers[0].image}"]
    assert kubectl("get", "deploy", "rev", *image).stdout == "skiff/web:1.0"
    kubectl("rollout", "status", "deploy/rev", "--timeout=90s", timeout=100)
    until(lambda: [row[0] for row in history()] == ["2", "3"], timeout=20,
               what="revision 1 reused as revision 3")

    assert "deployment.apps/rev restarted" in kubectl("rollout", "restart", "deploy/rev").stdout
    restarted = kubectl("get", "deploy", "rev", "-o",
                        "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}").stdout
    assert restarted.startswith("20"), restarted  # an RFC 3339 time
    kubectl("rollout", "status", "deploy/rev", "--timeout=90s", timeout=100)
    until(lambda: [row[0] for row in history()] == ["2", "3", "4"], timeout=20, what="revision 4")

    # the three patch types; the strategic one merges the container by name (its image stays)
    kubectl("patch", "deploy/rev", "--type=json", "-p", '[{"op": "replace", "path": "/spec/replicas", "value": 2}]')
    kubectl("patch", "deploy/rev", "--type=merge", "-p", '{"metadata": {"labels": {"merged": "yes"}}}')
    kubectl("patch", "deploy/rev", "--type=strategic", "-p",
            '{"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "A", "value": "b"}]}]}}}}')
    got = json.loads(kubectl("get", "deploy", "rev", "-o", "json").stdout)
    assert got["spec"]["replicas"] == 2 and got["metadata"]["labels"]["merged"] == "yes"
    assert got["spec"]["template"]["spec"]["containers"][0]["image"] == "skiff/web:1.0"
    assert got["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "b"}]
    bad = kubectl("patch", "deploy/rev", "--type=json", "-p", '[{"op": "test", "path": "/spec/replicas", "value": 9}]',
                  check=False)
    # a 422 Invalid Status whose one cause names the path and the problem (kubectl prints only causes)
    assert bad.returncode != 0, bad.stderr
    assert ('The deployments "rev" is invalid: /spec/replicas: operation 0 (test) at /spec/replicas: '
            "test failed: the value is not 9") in bad.stderr, bad.stderr
    gone = kubectl("patch", "deploy/rev", "--type=json", "-p", '[{"op": "remove", "path": "/metadata/labels/nope"}]',
                   check=False)
    assert gone.returncode != 0 and '/metadata/labels/nope: operation 0 (remove) at /metadata/labels/nope: ' \
        'cannot remove "nope": it does not exist' in gone.stderr, gone.stderr
    assert kubectl("get", "deploy", "rev", "-o", "jsonpath={.spec.replicas}").stdout == "2"

    # label and annotate: set, refuse to overwrite without --overwrite, overwrite, remove with `key-`
    kubectl("label", "deploy/rev", "tier=front")
    assert kubectl("label", "deploy/rev", "tier=back", check=False).returncode != 0
    kubectl("label", "deploy/rev", "tier=back", "--overwrite")
    assert kubectl("get", "deploy", "rev", "-o", "jsonpath={.metadata.labels.tier}").stdout == "back"
    assert "tier=back" in kubectl("get", "deploy", "rev", "--show-labels").stdout
    kubectl("label", "deploy/rev", "tier-")
    kubectl("annotate", "deploy/rev", "note=one")
    refused = kubectl("annotate", "deploy/rev", "note=two", check=False)
    assert refused.returncode != 0 and "'note' already has a value (one)" in refused.stderr
    kubectl("annotate", "deploy/rev", "note=two", "--overwrite")
    assert kubectl("get", "deploy", "rev", "-o", "jsonpath={.metadata.annotations.note}").stdout == "two"
    kubectl("annotate", "deploy/rev", "note-")
    meta = json.loads(kubectl("get", "deploy", "rev", "-o", "jsonpath={.metadata}").stdout)
    assert "tier" not in meta["labels"] and "note" not in meta.get("annotations", {})

    kubectl("wait", "--for=jsonpath={.status.readyReplicas}=2", "deploy/rev", "--timeout=90s", timeout=100)
    assert "service/rev exposed" in kubectl("expose", "deployment", "rev", "--port=80").stdout
    svc = json.loads(kubectl("get", "svc", "rev", "-o", "json").stdout)
    assert svc["spec"]["selector"] == {"app": "rev"} and svc["spec"]["ports"][0]["port"] == 80

    described = kubectl("describe", "deploy", "rev").stdout
    assert "Events:" in described and "ScalingReplicaSet" in described and "NewReplicaSet:" in described
    described = kubectl("describe", "svc", "rev").stdout
    assert "Selector:" in described and "app=rev" in described and "Events:" in described

    deleted = kubectl("delete", "deploy", "rev", "--cascade=foreground", "--wait", "--timeout=90s", timeout=100)
    assert 'deployment.apps "rev" deleted' in deleted.stdout
    assert kubectl("get", "deploy", "rev", check=False).returncode != 0  # gone when delete returned
    assert kubectl("get", "rs", "-l", "app=rev", "-o", "name").stdout.strip() == ""  # and its sets before it
    kubectl("delete", "svc", "rev", "--cascade=background", "--wait")
    assert kubectl("get", "svc", "rev", check=False).returncode != 0


def test_run_logs_follow_describe_edit_wait_get_flags_and_the_python_client(
        lab: Lab, kubectl: Kubectl, tmp_path: Path) -> None:
    """A pod from `kubectl run`; `logs -f` sees a line written after the follow started; the official
    Python client reads the same log; describe pod and node; edit through KUBE_EDITOR; auth can-i
    --list; the get flags; `wait --for=delete`; a kind Skiff does not serve."""
    script = "echo started; while true; do sleep 1; done"
    kubectl("run", "runner", "--image=skiff/web:1.0", "--restart=Never", "--labels=app=runner", "--command", "--",
            "sh", "-c", script)
    kubectl("wait", "--for=condition=Ready", "pod/runner", "--timeout=90s", timeout=100)
    assert kubectl("logs", "runner").stdout == "started\n"

    follow = subprocess.Popen([str(KUBECTL), "--kubeconfig", str(kubectl.config), "logs", "-f", "runner"],  # type: ignore[attr-defined]
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follow.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        until(lambda: lines == ["started\n"], timeout=20, what="the follow showing the first line")
        kubectl("exec", "runner", "--", "sh", "-c", "echo written later > /proc/1/fd/1")
        until(lambda: "written later\n" in lines, timeout=20, what="a line written after the follow started")
    finally:
        follow.terminate()
        follow.wait(timeout=10)

    from kubernetes import client as k8s  # type: ignore[import-untyped]
    from kubernetes import config as k8s_config  # type: ignore[import-untyped]
    api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(kubectl.config)))  # type: ignore[attr-defined]
    assert "written later" in api.read_namespaced_pod_log("runner", "default")
    assert "runner" in [p.metadata.name for p in api.list_namespaced_pod("default", label_selector="app=runner").items
                       if p.metadata]

    described = kubectl("describe", "pod", "runner").stdout
    assert "Events:" in described and "Scheduled" in described and "Started" in described
    node = lab.control_plane_hosts[0]
    described = kubectl("describe", "node", node).stdout
    pods = described.split("Non-terminated Pods:", 1)[1].split("Allocated resources:", 1)[0]
    assert f"Name:               {node}" in described and "runner" in pods.split()

    wide = kubectl("get", "pods", "-A", "-l", "app=runner", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:2] == ["NAMESPACE", "NAME"] and wide[1].split()[:2] == ["default", "runner"]
    assert node in wide[1].split()
    assert "app=runner" in kubectl("get", "pod", "runner", "--show-labels").stdout
    assert kubectl("get", "pods", "-l", "app=runner", "-o", "jsonpath={.items[*].spec.containers[0].command[2]}"
                   ).stdout == script

    kubectl("create", "configmap", "edited", "--from-literal=a=before")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/a: before/a: after/' \"$1\"\n")
    editor.chmod(0o755)
    env = {**os.environ, "KUBE_EDITOR": str(editor)}
    edited = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubectl.config), "edit", "cm", "edited"],  # type: ignore[attr-defined]
                            capture_output=True, text=True, env=env, timeout=60)
    assert edited.returncode == 0 and "configmap/edited edited" in edited.stdout, edited.stderr
    assert kubectl("get", "cm", "edited", "-o", "jsonpath={.data.a}").stdout == "after"
    kubectl("delete", "cm", "edited")

    rules = kubectl("auth", "can-i", "--list").stdout.splitlines()
    assert rules[0].split()[:2] == ["Resources", "Non-Resource"] and any(r.split()[0] == "*.*" for r in rules[1:])
    assert kubectl("auth", "can-i", "create", "deployments").stdout.strip() == "yes"

    unserved = kubectl("get", "ingresses", check=False)
    assert unserved.returncode != 0 and 'the server doesn\'t have a resource type "ingresses"' in unserved.stderr

    kubectl("delete", "pod", "runner", "--wait=false")
    kubectl("wait", "--for=delete", "pod/runner", "--timeout=90s", timeout=100)
    assert kubectl("get", "pod", "runner", check=False).returncode != 0
