"""kubectl 1.35 against a real api-server process (over etcd), for what needs no node: server-side
apply of every example (twice: the second is a no-op apply by the same manager), typed `create`
commands (protobuf bodies), and `kubectl explain` (OpenAPI v3 schemas)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.loopback import control_plane, free_port
from skiff import kubeconfig

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
EXAMPLES = sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: run `make setup`")
    workdir = Path(tmp_path_factory.mktemp("typed"))
    http = f"127.0.0.1:{free_port()}"
    with control_plane(workdir, apiserver_args=["--http-listen", http]) as cp:
        config = kubeconfig.write_entry(f"http://{http}", path=workdir / "kubeconfig")

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([str(KUBECTL), "--kubeconfig", str(config), *args], capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
            return done

        run.grpc = cp.apiserver_endpoints  # type: ignore[attr-defined]
        yield run


# Some examples use hostPath volumes, which Pod Security's baseline (the default) refuses: they are
# applied, as their comments tell users to, into a namespace labelled privileged.
EXAMPLES_NAMESPACE = "examples"


@pytest.mark.parametrize("example", EXAMPLES)
def test_server_side_apply_of_every_example(kubectl: Kubectl, example: str) -> None:
    if EXAMPLES_NAMESPACE not in kubectl("get", "namespaces", "-o", "name").stdout:
        kubectl("create", "namespace", EXAMPLES_NAMESPACE)
        kubectl("label", "namespace", EXAMPLES_NAMESPACE, "pod-security.kubernetes.io/enforce=privileged")
    ns = ["-n", EXAMPLES_NAMESPACE]
    first = kubectl("apply", *ns, "--server-side", "-f", str(ROOT / "examples" / example)).stdout.splitlines()
    assert first and all(line.endswith(" serverside-applied") for line in first), first
    again = kubectl("apply", *ns, "--server-side", "-f", str(ROOT / "examples" / example)).stdout.splitlines()
    assert again == first
    name = first[0].split()[0]
    managers = kubectl("get", *ns, name, "-o", "jsonpath={.metadata.managedFields[*].manager}",
                       "--show-managed-fields").stdout.split()
    assert managers == ["kubectl"]
    kubectl("delete", *ns, "-f", str(ROOT / "examples" / example), "--wait=false")


@pytest.mark.parametrize(("args", "check", "expected"), [
    (["create", "deployment", "d1", "--image=skiff/web:1.0", "--replicas=3", "--port=80"],
     ["deploy", "d1", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}"],
     "3 80"),
    (["create", "configmap", "c1", "--from-literal=a=b", "--from-literal=c=d"],
     ["cm", "c1", "-o", "jsonpath={.data.a}{.data.c}"], "bd"),
    (["create", "secret", "generic", "s1", "--from-literal=x=y"], ["secret", "s1", "-o", "jsonpath={.data.x}"], "eQ=="),
    (["create", "namespace", "n1"], ["ns", "n1", "-o", "jsonpath={.metadata.name}"], "n1"),
    (["create", "serviceaccount", "sa1"], ["sa", "sa1", "-o", "jsonpath={.metadata.name}"], "sa1"),
], ids=["deployment", "configmap", "secret", "namespace", "serviceaccount"])
def test_typed_create_sends_protobuf(kubectl: Kubectl, args: list[str], check: list[str], expected: str) -> None:
    created = kubectl(*args, "-v=8")
    assert "application/vnd.kubernetes.protobuf" in created.stderr  # what it sent
    assert kubectl("get", *check).stdout == expected


def test_skiff_into_a_closed_pipe_ends_quietly(kubectl: Kubectl, tmp_path: Path) -> None:
    """`skiff get ... | head -1` with more output than a pipe holds: no traceback. (Python may see the
    closed pipe as a short write and end 0, or as EPIPE, which skiff ends as SIGPIPE would: 141.)"""
    big = tmp_path / "big.yaml"
    big.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n"
                   + "".join(f"  k{i}: {'x' * 900}\n" for i in range(400)))
    kubectl("apply", "--server-side", "-f", str(big))
    skiff = ROOT / ".venv" / "bin" / "skiff"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {skiff} get cm big -o yaml --server {kubectl.grpc} "  # type: ignore[attr-defined]
                           "| head -1"], capture_output=True, text=True, timeout=60)
    assert done.stdout == "apiVersion: v1\n", done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode in (0, 141), done.stderr


def test_explain(kubectl: Kubectl) -> None:
    spec = kubectl("explain", "deployment.spec").stdout
    assert "KIND:       Deployment" in spec and "template\t<PodTemplateSpec>" in spec
    ports = kubectl("explain", "pods.spec.containers.ports").stdout
    assert "containerPort\t<integer>" in ports
