"""kubectl 1.35 against a real api-server process (over etcd), for what needs no node: server-side
apply of every example (twice: the second is a no-op apply by the same manager), typed `create`
commands (protobuf bodies), and `kubectl explain` (OpenAPI v3 schemas)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.loopback import control_plane, free_port
from skiff import kubeconfig
from tests.support.kubectl import Kubectl, require_kubectl, runner

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())



@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    require_kubectl()
    workdir = Path(tmp_path_factory.mktemp("typed"))
    http = f"127.0.0.1:{free_port()}"
    with control_plane(workdir, apiserver_args=["--http-listen", http]) as cp:
        config = kubeconfig.write_entry(f"http://{http}", path=workdir / "kubeconfig")

        run = runner(config)
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


# Every `kubectl create` subcommand for a kind Skiff serves, plus `run` and `expose`: each but
# run and expose (which build unstructured objects: JSON) sends its object in protobuf
# (rest/k8sproto.py reads every served kind from Kubernetes' own schema).
TYPED: list[tuple[str, list[str], list[str], str]] = [
    ("deployment", ["create", "deployment", "d1", "--image=skiff/web:1.0", "--replicas=3", "--port=80"],
     ["deploy", "d1", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}"],
     "3 80"),
    ("expose", ["expose", "deployment", "d1", "--port=8080", "--target-port=80"],
     ["svc", "d1", "-o", "jsonpath={.spec.selector.app} {.spec.ports[0].port} {.spec.ports[0].targetPort}"],
     "d1 8080 80"),
    ("service", ["create", "service", "clusterip", "s1", "--tcp=80:8080"],
     ["svc", "s1", "-o", "jsonpath={.spec.type} {.spec.ports[0].targetPort}"], "ClusterIP 8080"),
    ("configmap", ["create", "configmap", "c1", "--from-literal=a=b", "--from-literal=c=d"],
     ["cm", "c1", "-o", "jsonpath={.data.a}{.data.c}"], "bd"),
    ("secret-generic", ["create", "secret", "generic", "s1", "--from-literal=x=y"],
     ["secret", "s1", "-o", "jsonpath={.data.x}"], "eQ=="),
    ("secret-tls", ["create", "secret", "tls", "t1", "--cert={tls}/tls.crt", "--key={tls}/tls.key"],
     ["secret", "t1", "-o", "jsonpath={.type}"], "kubernetes.io/tls"),
    ("namespace", ["create", "namespace", "n1"], ["ns", "n1", "-o", "jsonpath={.metadata.name}"], "n1"),
    ("serviceaccount", ["create", "serviceaccount", "sa1"], ["sa", "sa1", "-o", "jsonpath={.metadata.name}"], "sa1"),
    ("job", ["create", "job", "j1", "--image=skiff/web:1.0", "--", "sh", "-c", "echo hi"],
     ["job", "j1", "-o", "jsonpath={.spec.template.spec.restartPolicy} {.spec.template.spec.containers[0].command}"],
     'Never ["sh","-c","echo hi"]'),
    ("cronjob", ["create", "cronjob", "cj1", "--image=skiff/web:1.0", "--schedule=*/5 * * * *"],
     ["cj", "cj1", "-o", "jsonpath={.spec.schedule}"], "*/5 * * * *"),
    ("job-from-cronjob", ["create", "job", "j2", "--from=cronjob/cj1"],
     ["job", "j2", "-o", "jsonpath={.metadata.ownerReferences[0].name}"], "cj1"),
    ("role", ["create", "role", "r1", "--verb=get,list", "--resource=pods"],
     ["role", "r1", "-o", "jsonpath={.rules[0].verbs}"], '["get","list"]'),
    ("clusterrole", ["create", "clusterrole", "cr1", "--verb=get", "--resource=nodes", "--non-resource-url=/x"],
     ["clusterrole", "cr1", "-o", "jsonpath={.rules[*].verbs}"], '["get"] ["get"]'),
    ("rolebinding", ["create", "rolebinding", "rb1", "--clusterrole=view", "--serviceaccount=default:sa1"],
     ["rolebinding", "rb1", "-o", "jsonpath={.roleRef.name} {.subjects[0].kind}"], "view ServiceAccount"),
    ("clusterrolebinding", ["create", "clusterrolebinding", "crb1", "--clusterrole=view", "--user=ann"],
     ["clusterrolebinding", "crb1", "-o", "jsonpath={.subjects[0].name}"], "ann"),
    ("quota", ["create", "quota", "q1", "--hard=pods=3"], ["quota", "q1", "-o", "jsonpath={.spec.hard.pods}"], "3"),
    ("run", ["run", "p1", "--image=skiff/web:1.0", "--restart=Never", "--labels=a=b", "--env=X=1"],
     ["pod", "p1", "-o", "jsonpath={.metadata.labels.a} {.spec.containers[0].env[0].value}"], "b 1"),
]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=typed", "-days", "1",
                    "-keyout", str(where / "tls.key"), "-out", str(where / "tls.crt")], check=True, capture_output=True)
    return where


@pytest.mark.parametrize(("args", "check", "expected"), [case[1:] for case in TYPED], ids=[case[0] for case in TYPED])
def test_typed_create_sends_protobuf(kubectl: Kubectl, tls: Path, args: list[str], check: list[str],
                                     expected: str) -> None:
    created = kubectl("-v=8", *[arg.replace("{tls}", str(tls)) for arg in args])
    sent = "application/json" if args[0] in ("expose", "run") else "application/vnd.kubernetes.protobuf"
    assert f"Content-Type: {sent}" in created.stderr, [
        line for line in created.stderr.splitlines() if "Content" in line]
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


@pytest.mark.parametrize("args", [
    ["create", "poddisruptionbudget", "pdb1", "--selector=a=b", "--min-available=1"],
    ["create", "ingress", "i1", "--rule=example.com/=svc:80"],
], ids=["pdb", "ingress"])
def test_a_typed_create_of_a_kind_skiff_does_not_serve_is_refused_at_once(kubectl: Kubectl, args: list[str]) -> None:
    done = kubectl(*args, "--request-timeout=20s", check=False)
    assert done.returncode == 1 and "the server could not find the requested resource" in done.stderr, done.stderr


def test_explain(kubectl: Kubectl) -> None:
    spec = kubectl("explain", "deployment.spec").stdout
    assert "KIND:       Deployment" in spec and "template\t<PodTemplateSpec>" in spec
    ports = kubectl("explain", "pods.spec.containers.ports").stdout
    assert "containerPort\t<integer>" in ports
