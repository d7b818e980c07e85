"""Authorization in a real api-server process (over etcd), through the real clients: kubectl 1.35
(`kubectl auth can-i`, `--as`, RBAC objects applied and listed), the `skiff` CLI (`skiff auth
can-i`, `--as`), and the audit log written by `--audit-log-path`."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.loopback import ControlPlane, control_plane
from skiff import kubeconfig
from skiff.cli.main import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"

BINDING = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-edits, namespace: default}
subjects:
- {kind: User, apiGroup: rbac.authorization.k8s.io, name: alice}
roleRef: {kind: ClusterRole, apiGroup: rbac.authorization.k8s.io, name: edit}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Plane:
    def __init__(self, cp: ControlPlane, http: str, audit: Path) -> None:
        self.cp, self.http, self.audit = cp, http, audit


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    workdir = Path(tmp_path_factory.mktemp("authz"))
    http = f"127.0.0.1:{free_port()}"
    audit = workdir / "audit.log"
    with control_plane(workdir, apiserver_args=["--http-listen", http, "--audit-log-path", str(audit),
                                                "--authorization-mode", "Node,RBAC"]) as cp:
        yield Plane(cp, http, audit)


@pytest.fixture(scope="module")
def kubectl(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: run `make setup`")
    config = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_entry(f"http://{plane.http}", path=config)

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KUBECTL), "--kubeconfig", str(config), *args], capture_output=True, text=True,
                              timeout=60, input=stdin)

    return run


def test_kubectl_auth_can_i(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = kubectl("auth", "can-i", "delete", "nodes")
    assert (done.returncode, done.stdout.strip()) == (0, "yes"), done.stderr
    done = kubectl("auth", "can-i", "list", "pods", "--as", "alice")
    assert (done.returncode, done.stdout.strip()) == (1, "no"), done.stderr
    done = kubectl("apply", "-f", "-", stdin=BINDING)
    assert done.returncode == 0, done.stderr
    done = kubectl("auth", "can-i", "create", "deployments.apps", "--as", "alice")
    assert (done.returncode, done.stdout.strip()) == (0, "yes"), done.stderr
    done = kubectl("auth", "can-i", "create", "deployments.apps", "--as", "alice", "-n", "kube-system")
    assert (done.returncode, done.stdout.strip()) == (1, "no"), done.stderr
    done = kubectl("auth", "can-i", "--list", "--as", "alice")  # a SelfSubjectRulesReview, in protobuf
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    verbs = rows["deployments.apps"].rsplit("[", 1)[1].rstrip("]").split()
    assert sorted(verbs) == ["create", "delete", "get", "list", "patch", "update", "watch"]
    assert "selfsubjectaccessreviews.authorization.k8s.io" in rows
    done = kubectl("auth", "can-i", "--list", "--as", "alice", "-n", "kube-system")
    assert "deployments.apps" not in done.stdout
    done = kubectl("auth", "can-i", "update", "nodes/n1", "--as", "system:node:n1", "--as-group", "system:nodes")
    assert (done.returncode, done.stdout.strip()) == (0, "yes"), done.stderr
    done = kubectl("auth", "can-i", "update", "nodes/n2", "--as", "system:node:n1", "--as-group", "system:nodes")
    # kubectl prints the reason after a "no" when there is one.
    assert (done.returncode, done.stdout.strip()) == (1, 'no - Node: node "n1" may not update node "n2"'), \
        done.stderr


def test_kubectl_is_refused_as_another_user_and_lists_rbac(kubectl: Callable[..., subprocess.CompletedProcess[str]],
                                                           ) -> None:
    done = kubectl("get", "pods", "-n", "kube-system", "--as", "bob")
    assert done.returncode == 1
    assert ('pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace '
            '"kube-system"') in done.stderr
    done = kubectl("get", "clusterroles")
    assert done.returncode == 0, done.stderr
    for role in ("cluster-admin", "system:kube-scheduler", "system:node-proxier", "view"):
        assert role in done.stdout
    done = kubectl("get", "clusterrolebinding", "cluster-admin", "-o", "json")
    assert json.loads(done.stdout)["subjects"] == [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                                                     "name": "system:masters"}]


def skiff(plane: Plane, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
          *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("SKIFF_SERVER", plane.cp.apiserver_endpoints)
    monkeypatch.setenv("SKIFF_CONFIG", str(tmp_path / "no-config"))
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("argv", "code", "out"), [
    (("auth", "can-i", "delete", "nodes"), 0, "yes"),
    (("auth", "can-i", "list", "secrets", "-A", "--as", "system:kube-scheduler"), 1, "no"),
    (("auth", "can-i", "create", "pods/binding", "--as", "system:kube-scheduler"), 1, "no"),  # name "binding"
    (("auth", "can-i", "create", "pods", "--subresource", "binding", "--as", "system:kube-scheduler"), 0, "yes"),
    (("auth", "can-i", "get", "/healthz", "--as", "system:anonymous", "--as-group", "system:unauthenticated"),
     0, "yes"),
    (("auth", "can-i", "get", "/apis", "--as", "system:anonymous", "--as-group", "system:unauthenticated"),
     1, "no"),
], ids=["admin", "scheduler-secrets", "resource-slash-name", "scheduler-binding", "anonymous-health",
        "anonymous-discovery"])
def test_skiff_auth_can_i(plane: Plane, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                          tmp_path: Path, argv: tuple[str, ...], code: int, out: str) -> None:
    assert skiff(plane, monkeypatch, capsys, tmp_path, *argv)[:2] == (code, out + "\n")


def test_skiff_as_another_user_is_refused(plane: Plane, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = skiff(plane, monkeypatch, capsys, tmp_path, "delete", "ns", "kube-system", "--as", "mallory")
    assert code == 1
    assert err.strip() == ('error: namespace "kube-system": namespaces "kube-system" is forbidden: User "mallory" '
                           'cannot delete resource "namespaces" in API group "" at the cluster scope')


def test_the_audit_log_has_one_line_per_write(plane: Plane, kubectl: Callable[..., Any],
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    skiff(plane, monkeypatch, capsys, tmp_path, "delete", "ns", "kube-system", "--as", "mallory")
    lines = [json.loads(line) for line in plane.audit.read_text().splitlines()]
    denied = [x for x in lines if x["user"] == "mallory"]
    assert denied and denied[-1]["verb"] == "delete" and denied[-1]["verdict"] == "deny"
    assert denied[-1]["impersonatedBy"] == "kubernetes-admin" and denied[-1]["name"] == "kube-system"
    assert all(x["verb"] in ("create", "update", "patch", "delete", "deletecollection") for x in lines)
