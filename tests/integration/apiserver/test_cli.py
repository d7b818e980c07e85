"""The `skiff` CLI against a real api-server (and etcd): outputs, and clear one-line errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from deploy.loopback import ControlPlane, control_plane
from skiff import kinds
from skiff.cli.main import main
from skiff.client import Client
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import apiserver_pb2_grpc as api_grpc
from skiffpb.api.v1 import nodeagent_pb2_grpc
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import deployment, node, pod

pytestmark = pytest.mark.integration

NGINX = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-demo
  labels: {app: nginx}
spec:
  replicas: 2
  selector:
    matchLabels: {app: nginx}
  template:
    metadata:
      labels: {app: nginx}
    spec:
      containers:
      - name: nginx
        image: nginx:latest
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: nginx-service
spec:
  selector: {app: nginx}
  ports:
  - protocol: TCP
    port: 80
    targetPort: 80
  type: ClusterIP
"""


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with control_plane(Path(tmp_path_factory.mktemp("cli"))) as plane:
        yield plane


@pytest.fixture
def skiff(cp: ControlPlane, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          tmp_path: Path) -> Any:
    """skiff("get", "pods") -> (exit code, stdout, stderr)."""
    monkeypatch.setenv("SKIFF_SERVER", cp.apiserver_endpoints)
    monkeypatch.setenv("SKIFF_CONFIG", str(tmp_path / "no-config"))

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def call(cp: ControlPlane, coro_fn: Any) -> Any:
    async def go() -> Any:
        async with Client(cp.apiserver_endpoints) as client:
            return await coro_fn(client)

    return asyncio.run(go())


def in_background(cp: ControlPlane, fn: Any) -> threading.Thread:
    """Run fn(stub) in a thread with the *synchronous* gRPC API while the CLI runs here.

    Never a second asyncio loop with grpc.aio at the same time: grpc.aio binds its poller to
    one event loop per process, and a second concurrent loop breaks every later test.
    """

    def run() -> None:
        with grpc.insecure_channel(cp.apiserver_endpoints) as channel:
            fn(api_grpc.ApiServerStub(channel))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_apply_created_unchanged_configured(skiff: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "nginx.yaml"
    manifest.write_text(NGINX)
    assert skiff("create", "namespace-is-not-a-flag") [0] == 2
    code, out, err = skiff("apply", "-f", str(manifest), "-n", "apply")
    assert code == 1 and 'namespaces "apply" not found' in err  # one line per object
    assert len(err.strip().splitlines()) == 2
    ns = tmp_path / "ns.yaml"
    ns.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apply\n")
    assert skiff("apply", "-f", str(ns))[1] == "namespace/apply created\n"
    code, out, _ = skiff("apply", "-f", str(manifest), "-n", "apply")
    assert (code, out) == (0, "deployment.apps/nginx-demo created\nservice/nginx-service created\n")
    code, out, _ = skiff("apply", "-f", str(tmp_path), "-n", "apply")  # a directory: both files
    assert out == ("deployment.apps/nginx-demo unchanged\nservice/nginx-service unchanged\n"
                   "namespace/apply unchanged\n")
    assert skiff("scale", "deploy/nginx-demo", "--replicas", "5", "-n", "apply")[1] == \
        "deployment.apps/nginx-demo scaled\n"
    manifest.write_text(NGINX.replace("image: nginx:latest", "image: nginx:1.25"))
    code, out, _ = skiff("apply", "-f", str(manifest), "-n", "apply")
    assert out == "deployment.apps/nginx-demo configured\nservice/nginx-service unchanged\n"
    code, out, _ = skiff("get", "deploy", "nginx-demo", "-n", "apply", "-o", "json")
    data = json.loads(out)
    assert data["spec"]["replicas"] == 2 and data["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    # Dropping replicas from the manifest removes it (back to the default), as kubectl does...
    manifest.write_text(NGINX.replace("  replicas: 2\n", ""))
    skiff("apply", "-f", str(manifest), "-n", "apply")
    assert json.loads(skiff("get", "deploy/nginx-demo", "-n", "apply", "-o", "json")[1])["spec"]["replicas"] == 1
    # ...and from then on a scaled count survives apply, since no manifest sets it.
    skiff("scale", "deploy/nginx-demo", "--replicas", "4", "-n", "apply")
    assert skiff("apply", "-f", str(manifest), "-n", "apply")[1].startswith("deployment.apps/nginx-demo unchanged")
    assert json.loads(skiff("get", "deploy/nginx-demo", "-n", "apply", "-o", "json")[1])["spec"]["replicas"] == 4
    code, out, _ = skiff("delete", "-f", str(manifest), "-n", "apply")
    assert out == 'deployment.apps "nginx-demo" deleted\nservice "nginx-service" deleted\n'


def test_get_tables_and_formats(skiff: Any, cp: ControlPlane) -> None:
    async def setup(client: Client) -> None:
        await client.create(t.Namespace(metadata=t.ObjectMeta(name="gets")))
        for name, app in (("web-1", "web"), ("web-2", "web"), ("db-1", "db")):
            await client.create(pod(name, app=app), namespace="gets")
        d = deployment("web")
        d.metadata.labels["app"] = "web"
        await client.create(d, namespace="gets")

    call(cp, setup)
    code, out, _ = skiff("get", "po", "-n", "gets")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [line.split()[:3] for line in lines[1:]] == [["db-1", "0/1", "Pending"], ["web-1", "0/1", "Pending"],
                                                       ["web-2", "0/1", "Pending"]]
    assert lines[0].index("READY") == lines[1].index("0/1")  # columns aligned
    code, out, _ = skiff("get", "pods,deploy", "-n", "gets", "-l", "app=web")
    blocks = out.split("\n\n")
    assert len(blocks) == 2 and "pod/web-1" in blocks[0] and "deployment.apps/web" in blocks[1]
    assert "db-1" not in out
    assert skiff("get", "pods", "-n", "gets", "-o", "name", "--field-selector", "metadata.name=db-1")[1] == "pod/db-1\n"
    code, out, _ = skiff("get", "pod/web-1", "-n", "gets", "-o", "yaml")
    assert yaml.safe_load(out)["metadata"]["name"] == "web-1"
    listed = yaml.safe_load(skiff("get", "pods", "-n", "gets", "-o", "yaml")[1])
    assert listed["kind"] == "List" and len(listed["items"]) == 3
    code, out, _ = skiff("get", "pods", "-A", "-l", "app=db")
    assert out.splitlines()[0].startswith("NAMESPACE") and "gets" in out
    code, out, err = skiff("get", "pods", "-n", "empty-namespace")
    assert (code, out, err) == (0, "", "No resources found in empty-namespace namespace.\n")
    code, out, _ = skiff("get", "ns")
    assert "gets" in out and "Active" in out


def test_get_watch_prints_changes(skiff: Any, cp: ControlPlane) -> None:
    call(cp, lambda c: c.create(t.Namespace(metadata=t.ObjectMeta(name="watching"))))

    def later(stub: api_grpc.ApiServerStub) -> None:
        time.sleep(1.0)
        stub.Create(api.CreateRequest(object=kinds.wrap(pod("late")), namespace="watching"), timeout=10)

    thread = in_background(cp, later)
    code, out, _ = skiff("get", "pods", "-n", "watching", "-w", "--watch-timeout", "3")
    thread.join()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[0] == "NAME" and lines[1].split()[:3] == ["late", "0/1", "Pending"]


def test_describe_shows_events(skiff: Any, cp: ControlPlane) -> None:
    async def setup(client: Client) -> None:
        await client.create(t.Namespace(metadata=t.ObjectMeta(name="desc")))
        p = await client.create(pod("web-1"), namespace="desc")
        ev = t.Event(metadata=t.ObjectMeta(name="web-1.1", namespace="desc"), reason="Scheduled", type="Normal",
                     message="Successfully assigned desc/web-1 to n1", source=t.EventSource(component="scheduler"),
                     involved_object=t.ObjectReference(kind="Pod", name="web-1", namespace="desc",
                                                       uid=p.metadata.uid))
        await client.create(ev)
        other = t.Event(metadata=t.ObjectMeta(name="web-2.1", namespace="desc"), reason="Other",
                        involved_object=t.ObjectReference(kind="Pod", name="web-2", namespace="desc"))
        await client.create(other)

    call(cp, setup)
    code, out, _ = skiff("describe", "pod", "web-1", "-n", "desc")
    assert code == 0
    assert "Name:" in out and "web-1" in out.splitlines()[0]
    assert "Scheduled" in out and "Successfully assigned desc/web-1 to n1" in out
    assert "Other" not in out
    code, out, _ = skiff("get", "events", "-n", "desc")
    assert out.splitlines()[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert "pod/web-1" in out


def test_rollout_history_undo_and_status(skiff: Any, cp: ControlPlane) -> None:
    async def setup(client: Client) -> None:
        await client.create(t.Namespace(metadata=t.ObjectMeta(name="roll")))
        d = await client.create(deployment("web", image="nginx:2"), namespace="roll")
        for revision, image in ((1, "nginx:1"), (2, "nginx:2")):
            rs = t.ReplicaSet(metadata=t.ObjectMeta(name=f"web-{revision}", namespace="roll"))
            rs.metadata.annotations["deployment.kubernetes.io/revision"] = str(revision)
            rs.metadata.owner_references.add(api_version="apps/v1", kind="Deployment", name="web",
                                             uid=d.metadata.uid, controller=True)
            rs.spec.selector.CopyFrom(d.spec.selector)
            rs.spec.template.CopyFrom(d.spec.template)
            rs.spec.template.metadata.labels["pod-template-hash"] = f"h{revision}"
            rs.spec.selector.match_labels["pod-template-hash"] = f"h{revision}"
            rs.spec.template.spec.containers[0].image = image
            await client.create(rs)

    call(cp, setup)
    code, out, _ = skiff("rollout", "history", "deploy/web", "-n", "roll")
    assert out.splitlines() == ["deployment.apps/web", "REVISION  CHANGE-CAUSE", "1         <none>",
                                "2         <none>"]
    assert skiff("rollout", "undo", "deploy/web", "-n", "roll")[1] == "deployment.apps/web rolled back\n"
    d = call(cp, lambda c: c.get(t.Deployment, "web", "roll"))
    assert d.spec.template.spec.containers[0].image == "nginx:1"
    assert "pod-template-hash" not in d.spec.template.metadata.labels
    code, out, _ = skiff("rollout", "status", "deploy/web", "-n", "roll", "-w", "false")
    assert code == 1 and out == "Waiting for deployment spec update to be observed...\n"

    def finish(stub: api_grpc.ApiServerStub) -> None:
        def get() -> t.Deployment:
            return stub.Get(api.GetRequest(resource="deployments", namespace="roll", name="web"),
                            timeout=10).deployment

        time.sleep(1.0)
        d = get()
        d.status.observed_generation = d.metadata.generation
        d.status.replicas = d.status.updated_replicas = 1
        stub.UpdateStatus(api.UpdateRequest(object=kinds.wrap(d)), timeout=10)
        time.sleep(0.5)
        d = get()
        d.status.available_replicas = d.status.ready_replicas = 1
        stub.UpdateStatus(api.UpdateRequest(object=kinds.wrap(d)), timeout=10)

    thread = in_background(cp, finish)
    code, out, _ = skiff("rollout", "status", "deploy/web", "-n", "roll", "--timeout", "30")
    thread.join()
    assert code == 0
    assert out.splitlines() == [
        "Waiting for deployment spec update to be observed...",
        'Waiting for deployment "web" rollout to finish: 0 of 1 updated replicas are available...',
        'deployment "web" successfully rolled out']


class _Agent(nodeagent_pb2_grpc.NodeAgentServicer):
    def ContainerLogs(self, request: api.LogsRequest, context: Any) -> Iterator[api.LogChunk]:  # type: ignore[override]
        yield api.LogChunk(data=b"hello from " + request.container.encode() + b"\n")

    def Exec(self, request: api.ExecRequest, context: Any) -> api.ExecResponse:  # type: ignore[override]
        return api.ExecResponse(stdout=("ran " + " ".join(request.command) + "\n").encode(), stderr=b"oops\n",
                                exit_code=7)


def test_logs_and_exec(skiff: Any, cp: ControlPlane) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    nodeagent_pb2_grpc.add_NodeAgentServicer_to_server(_Agent(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        async def setup(client: Client) -> None:
            await client.create(t.Namespace(metadata=t.ObjectMeta(name="run")))
            await client.create(node("cli-node", port=port))
            await client.create(pod("app"), namespace="run")
            await client.bind("run", "app", "cli-node")

        call(cp, setup)
        assert skiff("logs", "app", "-n", "run") == (0, "hello from main\n", "")
        code, out, err = skiff("exec", "app", "-n", "run", "--", "ls", "-l")
        assert (code, out) == (7, "ran ls -l\n")
        assert err == "oops\ncommand terminated with exit code 7\n"
    finally:
        server.stop(None)


def test_version_and_cluster_info(skiff: Any) -> None:
    code, out, _ = skiff("version")
    assert code == 0 and out.startswith("Client Version: v") and "Server Version: v" in out
    code, out, _ = skiff("cluster-info")
    assert "is running at" in out and "Store:         etcd3 " in out


BAD_MANIFESTS = {
    "bad-yaml": ("kind: Pod\n  metadata: [", "invalid YAML"),
    "unknown-field": ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containerz: []}\n",
                      'unknown field (did you mean "containers"?)'),
    "wrong-type": ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {replicas: two}\n",
                   "spec.replicas: expected an integer"),
    "unsupported-kind": ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: a}\n",
                         'unsupported kind "HorizontalPodAutoscaler"'),
    "invalid-object": ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: c}]\n",
                       "spec.containers[0].image: required"),
}


@pytest.mark.parametrize("name", list(BAD_MANIFESTS), ids=list(BAD_MANIFESTS))
def test_bad_manifests_are_one_clear_line_each(skiff: Any, tmp_path: Path, name: str) -> None:
    text, expected = BAD_MANIFESTS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    for verb in ("apply", "create"):
        code, out, err = skiff(verb, "-f", str(path))
        assert code == 1 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err


@pytest.mark.parametrize("argv,expected", [
    (["apply", "-f", "/nonexistent.yaml"], "no such file or directory"),
    (["get", "widgets"], 'doesn\'t have a resource type "widgets"'),
    (["get", "pods", "-l", "app in ("], "invalid label selector"),
    (["get", "pods", "--field-selector", "spec.foo=1"], "not supported"),
    (["get", "pod", "missing"], 'pods "missing" not found'),
    (["delete", "pod", "missing"], 'pods "missing" not found'),
    (["scale", "svc/x", "--replicas", "1"], "cannot be scaled"),
    (["scale", "deploy/x", "--replicas", "-1"], "--replicas must be 0 or more"),
    (["exec", "missing"], "at least one command"),
    (["logs", "missing"], 'pods "missing" not found'),
    (["rollout", "status", "pod/x"], "rollout works on deployments"),
    (["get", "pods", "--server", "127.0.0.1:1", "--request-timeout", "0.5"], "unavailable"),
    (["get", "pods", "-o", "table"], "invalid choice"),
], ids=["missing-file", "unknown-kind", "bad-selector", "bad-field", "not-found", "delete-missing", "not-scalable",
        "negative-replicas", "exec-no-command", "logs-missing", "rollout-kind", "no-server", "bad-output"])
def test_errors_are_one_line(skiff: Any, argv: list[str], expected: str) -> None:
    code, out, err = skiff(*argv)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err


def test_huge_object_is_refused_clearly(skiff: Any, tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    blob = "x" * (2 * 1024 * 1024)
    path.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: huge}}\nspec:\n  containers:\n  - name: c\n"
                    f"    image: busybox\n    env: [{{name: BLOB, value: {blob}}}]\n")
    code, _out, err = skiff("create", "-f", str(path))
    assert code == 1 and "too large" in err and len(err.strip().splitlines()) == 1


def test_config_kinds_with_kubectl_columns(skiff: Any, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[3]
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cfgs\n---\n"
                                      "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: builder\n"
                                      "  namespace: cfgs\n")
    assert skiff("apply", "-f", str(tmp_path / "ns.yaml"))[0] == 0
    code, out, err = skiff("apply", "-f", str(repo / "examples" / "configmap"), "-n", "cfgs")
    assert code == 0, err
    assert out == "configmap/app-config created\nsecret/app-secret created\npod/configured created\n"
    code, out, _ = skiff("get", "cm,secret,sa", "-n", "cfgs")
    blocks = [[line.split() for line in block.splitlines()] for block in out.strip().split("\n\n")]
    assert [b[0] for b in blocks] == [["NAME", "DATA", "AGE"], ["NAME", "TYPE", "DATA", "AGE"],
                                      ["NAME", "SECRETS", "AGE"]]
    assert [row[:-1] for row in blocks[0][1:]] == [["configmap/app-config", "2"]]
    assert [row[:-1] for row in blocks[1][1:]] == [["secret/app-secret", "Opaque", "1"]]
    assert [row[:-1] for row in blocks[2][1:]] == [["serviceaccount/builder", "0"]]
    secret = yaml.safe_load(skiff("get", "secret/app-secret", "-n", "cfgs", "-o", "yaml")[1])
    assert secret["data"] == {"password": "czNjcjN0"} and "stringData" not in secret  # base64, write-only
    pod_data = yaml.safe_load(skiff("get", "pod/configured", "-n", "cfgs", "-o", "yaml")[1])
    assert pod_data["spec"]["serviceAccountName"] == "default"
    assert pod_data["spec"]["volumes"][1]["secret"]["defaultMode"] == 0o400
    assert skiff("apply", "-f", str(repo / "examples" / "configmap"), "-n", "cfgs")[1] == (
        "configmap/app-config unchanged\nsecret/app-secret unchanged\npod/configured unchanged\n")
    cm = tmp_path / "frozen.yaml"
    cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: frozen\nimmutable: true\ndata:\n  a: '1'\n")
    assert skiff("apply", "-f", str(cm), "-n", "cfgs")[0] == 0
    cm.write_text(cm.read_text().replace("a: '1'", "a: '2'"))
    code, _, err = skiff("apply", "-f", str(cm), "-n", "cfgs")
    assert code == 1 and "data: field is immutable when `immutable` is set" in err
