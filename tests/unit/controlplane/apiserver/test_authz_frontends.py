"""Authorization at the two front ends, each over the real registry and the real authorizer
(Node,RBAC with the bootstrap policy): gRPC (server.py's interceptor) and HTTP (rest/http.py's
authorize()). Until authentication lands every caller is the admin, so the tests become other
users the way `--as` does: by impersonation, which the admin may do. Also the audit log's lines
and its rotation."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc.aio
import pytest

from controlplane.apiserver import bootstrappolicy
from controlplane.apiserver.audit import AuditLog, audit_line
from controlplane.apiserver.authn import Authenticator
from controlplane.apiserver.authorizer import Authorizer
from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.inprocess import InProcessApi
from controlplane.apiserver.rbac import Attributes
from controlplane.apiserver.rest import accessreview, http
from controlplane.apiserver.server import (
    each_request_attributes,
    grpc_server,
    request_attributes,
)
from skiff import errors, identity
from skiff.client import Client, new_binding
from skiff.identity import UserInfo
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import metrics_pb2
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import pod

# alice may read pods in "team" (a RoleBinding of the view ClusterRole), nothing else.
VIEWER = t.RoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding",
                       metadata=t.ObjectMeta(name="alice-views", namespace="team"),
                       subjects=[t.Subject(kind="User", api_group="rbac.authorization.k8s.io", name="alice")],
                       role_ref=t.RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"))


class Cluster:
    def __init__(self, inproc: InProcessApi, audit: AuditLog, audit_path: Path, grpc_target: str,
                 http_base: str) -> None:
        self.inproc, self.audit, self.audit_path = inproc, audit, audit_path
        self.grpc_target, self.http_base = grpc_target, http_base

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    inproc = InProcessApi()
    await inproc.start()
    await bootstrappolicy.reconcile(inproc.registry)
    await inproc.create(t.Namespace(metadata=t.ObjectMeta(name="team")))
    await inproc.create(VIEWER)
    await inproc.create(pod("web", ns="team"))
    await inproc.settle()
    audit_path = tmp_path / "audit.log"
    audit = AuditLog(str(audit_path))
    authz = Authorizer.over_caches(inproc.registry.caches, audit=audit)
    forwarder = Forwarder(inproc.registry)
    server = grpc_server(inproc.registry, forwarder, Authenticator(inproc.registry, insecure=True), authorizer=authz)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    runner, http_port = await http.start(inproc.registry, forwarder, "127.0.0.1:0", authorizer=authz)
    try:
        yield Cluster(inproc, audit, audit_path, f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}")
    finally:
        await runner.cleanup()
        await server.stop(None)
        await forwarder.close()
        audit.close()
        await inproc.close()


# ---------------------------------------------------------------- gRPC


async def test_grpc_refusal_names_user_verb_and_resource(cluster: Cluster) -> None:
    async with Client(cluster.grpc_target, impersonate_user="alice") as alice:
        assert [p.metadata.name for p in (await alice.list(t.Pod, namespace="team")).items] == ["web"]
        with pytest.raises(errors.ForbiddenError) as err:
            await alice.list(t.Pod, namespace="default")
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.message == ('pods is forbidden: User "alice" cannot list resource "pods" in API group "" '
                                     'in the namespace "default"')
        with pytest.raises(errors.ForbiddenError, match='pods "web" is forbidden: User "alice" cannot delete'):
            await alice.delete(t.Pod, "web", "team")
        with pytest.raises(errors.ForbiddenError, match='cannot create resource "pods/binding"'):
            await alice.bind("team", "web", "n1")
        with pytest.raises(errors.ForbiddenError, match="cannot watch resource"):
            async for _ in alice.watch(t.Pod, namespace="default"):
                break
        review = await alice.access_review("delete", "pods", namespace="team")
        assert (review.allowed, review.user) == (False, "alice")
        review = await alice.access_review("get", "pods", namespace="team")
        assert review.allowed and 'RoleBinding "alice-views/team"' in review.reason
    assert (await cluster.inproc.get(t.Pod, "web", "team")).metadata.name == "web"


async def test_grpc_bind_batch_is_each_bind(cluster: Cluster) -> None:
    """Every binding authorized (one refused: the call is refused, nothing bound), each applied
    and answered on its own: bound, lost to an earlier bind, gone, another pod of the name."""
    for name in ("a", "b", "c"):
        await cluster.inproc.create(pod(name, ns="team"))
    await cluster.inproc.bind("team", "b", "n1")
    async with Client(cluster.grpc_target, impersonate_user="alice") as alice:
        with pytest.raises(errors.ForbiddenError, match='cannot create resource "pods/binding"'):
            await alice.bind_batch([new_binding("team", "a", "n2")])
    async with Client(cluster.grpc_target, impersonate_user=identity.SCHEDULER) as scheduler:
        with pytest.raises(errors.InvalidError, match="bindings: required"):
            await scheduler.bind_batch([])
        outcomes = await scheduler.bind_batch([
            new_binding("team", "a", "n2"), new_binding("team", "b", "n2"), new_binding("team", "gone", "n2"),
            new_binding("team", "c", "n2", uid="not-its-uid")])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], errors.PodAlreadyAssignedError) and 'node "n1"' in outcomes[1].message
    assert isinstance(outcomes[2], errors.NotFoundError)
    assert type(outcomes[3]) is errors.ConflictError and "precondition failed: uid" in outcomes[3].message
    assert {p.metadata.name: p.spec.node_name for p in (await cluster.inproc.list(t.Pod, namespace="team")).items} \
        == {"web": "", "a": "n2", "b": "n1", "c": ""}


async def test_grpc_impersonation_needs_the_right(cluster: Cluster) -> None:
    async with Client(cluster.grpc_target, impersonate_user="alice") as alice:
        # alice (impersonated by the admin) is not allowed to impersonate anyone in turn: one level only,
        # so check with a plain user that has no impersonate right: a node.
        review = await alice.access_review("impersonate", "users", name="bob")
        assert not review.allowed
    async with Client(cluster.grpc_target, impersonate_user="system:node:n1",
                      impersonate_groups=[identity.NODES]) as n1:
        review = await n1.access_review("update", "nodes", name="n1")
        assert review.allowed and review.groups == [identity.NODES, identity.AUTHENTICATED]
        with pytest.raises(errors.ForbiddenError, match='User "system:node:n1" cannot update resource "nodes"'):
            node = t.Node(metadata=t.ObjectMeta(name="n2"))
            await n1.update(node)


async def test_audit_lines_for_every_mutating_request(cluster: Cluster) -> None:
    async with Client(cluster.grpc_target, impersonate_user="alice") as alice:
        with pytest.raises(errors.ForbiddenError):
            await alice.delete(t.Pod, "web", "team")
        await alice.get(t.Pod, "web", "team")  # reads are not audited
    async with Client(cluster.grpc_target) as admin:
        await admin.create(pod("db", ns="team"))
    lines = cluster.audit_lines()
    assert [(x["user"], x["verb"], x["resource"], x.get("name"), x["verdict"]) for x in lines] == [
        ("alice", "delete", "pods", "web", "deny"), ("kubernetes-admin", "create", "pods", None, "allow")]
    assert lines[0]["impersonatedBy"] == identity.ADMIN and lines[0]["namespace"] == "team"
    assert lines[0]["time"].endswith("Z")


def test_audit_line_and_rotation(tmp_path: Path) -> None:
    line = audit_line(UserInfo("u", ("g",)), Attributes("update", "pods", "status", "", "ns", "p"), True, "why",
                      now=0.5)
    assert json.loads(line) == {"time": "1970-01-01T00:00:00.500000Z", "user": "u", "groups": ["g"],
                                "verb": "update", "apiGroup": "", "resource": "pods", "subresource": "status",
                                "namespace": "ns", "name": "p", "verdict": "allow", "reason": "why"}
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), max_size_mb=1 / 1024, max_backups=2)  # 1 KiB
    try:
        for i in range(40):
            log.record(UserInfo(f"user-{i}"), Attributes("create", "pods", namespace="d"), True, "", now=float(i))
    finally:
        log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 1024
        for text in p.read_text().splitlines():
            json.loads(text)  # every line whole
    assert json.loads(path.read_text().splitlines()[-1])["user"] == "user-39"


# ---------------------------------------------------------------- HTTP


async def call(cluster: Cluster, method: str, path: str, body: bytes | None = None, *,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(
            method, cluster.http_base + path, data=body,
            headers={"Content-Type": "application/json", **(headers or {})}) as r:
        return r.status, await r.json()


AS_ALICE = {"Impersonate-User": "alice"}


async def test_http_refusal_is_a_403_status(cluster: Cluster) -> None:
    code, body = await call(cluster, "GET", "/api/v1/namespaces/team/pods", headers=AS_ALICE)
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["web"]
    code, body = await call(cluster, "DELETE", "/api/v1/namespaces/team/pods/web", headers=AS_ALICE)
    assert (code, body["reason"]) == (403, "Forbidden")
    assert body["message"].startswith('pods "web" is forbidden: User "alice" cannot delete resource "pods" in API '
                                      'group "" in the namespace "team"')
    code, body = await call(cluster, "GET", "/apis/apps/v1/deployments", headers=AS_ALICE)
    assert code == 403 and 'cannot list resource "deployments" in API group "apps" at the cluster scope' in \
        body["message"]
    code, body = await call(cluster, "GET", "/api/v1/namespaces/team/pods/web/log", headers=AS_ALICE)
    assert code != 403  # view includes pods/log (the pod runs nowhere: the log itself fails)
    code, _ = await call(cluster, "GET", "/api", headers=AS_ALICE)
    assert code == 200  # discovery: every authenticated user
    code, body = await call(cluster, "GET", "/api", headers={"Impersonate-User": "system:anonymous"})
    assert code == 403 and body["message"] == 'forbidden: User "system:anonymous" cannot get path "/api"'
    code, body = await call(cluster, "GET", "/api", headers={"Impersonate-Group": "devs"})
    assert code == 403


AS_N1 = {"Impersonate-User": "system:node:n1", "Impersonate-Group": "system:nodes"}


async def test_http_node_reads_a_secret_its_pod_refers_to_by_name_only(cluster: Cluster) -> None:
    """A list or watch with fieldSelector metadata.name= is a request for that one object (as
    Kubernetes' RequestInfo): the Node authorizer lets n1 list the Secret its pod refers to so."""
    for name in ("s", "other"):
        await cluster.inproc.create(t.Secret(metadata=t.ObjectMeta(name=name, namespace="team")))
    mine = pod("mine", ns="team", node="n1")
    mine.spec.volumes.add(name="v", secret=t.SecretVolumeSource(secret_name="s"))
    await cluster.inproc.create(mine)
    secrets = "/api/v1/namespaces/team/secrets"
    code, body = await call(cluster, "GET", secrets + "?fieldSelector=metadata.name%3Ds", headers=AS_N1)
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["s"]
    code, body = await call(cluster, "GET", secrets + "/s", headers=AS_N1)
    assert code == 200
    code, body = await call(cluster, "GET", secrets, headers=AS_N1)
    assert code == 403 and 'node "n1" may list only the secrets its pods refer to' in body["message"]
    code, body = await call(cluster, "GET", secrets + "/other", headers=AS_N1)
    assert code == 403 and body["message"].endswith(
        'Node: node "n1" may not get secret "team/other": no pod bound to it refers to it'), body["message"]
    code, body = await call(cluster, "GET", secrets + "?watch=true&fieldSelector=metadata.name%3Dother",
                            headers=AS_N1)
    assert code == 403 and 'may not watch secret "team/other"' in body["message"]


async def test_dashboard_page_is_public_its_data_is_authorized(cluster: Cluster) -> None:
    """The page's files carry no data (anyone may get them, as the login form must be); its watch
    is authorized per kind: alice (view in team) may not watch nodes cluster-wide."""
    async with aiohttp.ClientSession() as session:
        anonymous = {"Impersonate-User": "system:anonymous"}
        async with session.get(cluster.http_base + "/dashboard/", headers=anonymous) as r:
            assert r.status == 200 and "Bearer token" in await r.text()
        async with session.get(cluster.http_base + "/dashboard/watch", headers=AS_ALICE) as r:
            assert r.status == 403 and 'cannot watch resource "nodes"' in (await r.json())["message"]
    code, body = await call(cluster, "GET", "/apis/metrics.k8s.io/v1beta1/nodes", headers=AS_ALICE)
    assert code == 403 and 'in API group "metrics.k8s.io"' in body["message"]


def protobuf_review(namespace: str, verb: str, resource: str) -> bytes:
    """A SelfSubjectAccessReview in Kubernetes' protobuf encoding, as kubectl sends it."""
    def field(number: int, payload: bytes) -> bytes:
        assert len(payload) < 128
        return struct.pack("BB", number << 3 | 2, len(payload)) + payload

    attrs = field(1, namespace.encode()) + field(2, verb.encode()) + field(5, resource.encode())
    obj = field(1, b"") + field(2, field(1, attrs))
    type_meta = field(1, b"authorization.k8s.io/v1") + field(2, b"SelfSubjectAccessReview")
    return accessreview.MAGIC + field(1, type_meta) + field(2, obj)


@pytest.mark.parametrize(("encoding", "verb", "allowed"), [
    ("json", "get", True), ("json", "delete", False), ("protobuf", "list", True), ("protobuf", "create", False),
], ids=["json-yes", "json-no", "protobuf-yes", "protobuf-no"])
async def test_self_subject_access_review(cluster: Cluster, encoding: str, verb: str, allowed: bool) -> None:
    if encoding == "json":
        body = json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                           "spec": {"resourceAttributes": {"namespace": "team", "verb": verb,
                                                           "resource": "pods"}}}).encode()
        content_type = "application/json"
    else:
        body, content_type = protobuf_review("team", verb, "pods"), accessreview.PROTOBUF
    code, review = await call(cluster, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body,
                              headers={**AS_ALICE, "Content-Type": content_type})
    assert code == 201
    assert review["status"]["allowed"] is allowed
    assert review["spec"]["resourceAttributes"] == {"namespace": "team", "verb": verb, "resource": "pods"}


async def test_access_review_refuses_a_bad_body(cluster: Cluster) -> None:
    code, body = await call(cluster, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                            json.dumps({"spec": {}}).encode())
    assert (code, body["message"]) == (400, "SelfSubjectAccessReview: exactly one of spec.resourceAttributes and "
                                            "spec.nonResourceAttributes must be set")


@pytest.mark.parametrize(("method", "request_", "attrs"), [
    ("Create", api.CreateRequest(object=t.Object(pod=pod("p", ns="")), namespace="ns"),
     Attributes("create", "pods", namespace="ns")),
    ("Create", api.CreateRequest(object=t.Object(node=t.Node(metadata=t.ObjectMeta(name="n1"))), namespace="ns"),
     Attributes("create", "nodes")),
    ("Get", api.GetRequest(resource="deployments", name="web"),
     Attributes("get", "deployments", group="apps", namespace="default", name="web")),
    ("List", api.ListRequest(resource="pods"), Attributes("list", "pods")),
    ("Watch", api.WatchRequest(resource="leases", namespace="kube-node-lease"),
     Attributes("watch", "leases", group="coordination.k8s.io", namespace="kube-node-lease")),
    ("UpdateStatus", api.UpdateRequest(object=t.Object(pod=pod("p", ns="d"))),
     Attributes("update", "pods", "status", namespace="d", name="p")),
    ("Delete", api.DeleteRequest(resource="nodes", name="n2"), Attributes("delete", "nodes", name="n2")),
    ("Bind", api.BindRequest(binding=t.Binding(metadata=t.ObjectMeta(name="p", namespace="d"))),
     Attributes("create", "pods", "binding", namespace="d", name="p")),
    ("Logs", api.LogsRequest(namespace="d", pod="p"), Attributes("get", "pods", "log", namespace="d", name="p")),
    ("Exec", api.ExecRequest(namespace="d", pod="p"), Attributes("create", "pods", "exec", namespace="d", name="p")),
    ("CreateToken", api.CreateTokenRequest(namespace="d", name="robot"),
     Attributes("create", "serviceaccounts", "token", namespace="d", name="robot")),
    ("Get", api.GetRequest(resource="widgets", name="w"), Attributes("get", "widgets", name="w")),
    ("List", api.ListRequest(resource="secrets", namespace="d", field_selector="metadata.name=s"),
     Attributes("list", "secrets", namespace="d", name="s")),
    ("Watch", api.WatchRequest(resource="configmaps", namespace="d", field_selector="metadata.name!=c"),
     Attributes("watch", "configmaps", namespace="d")),
    ("WatchBatch", api.WatchRequest(resource="pods", field_selector="spec.schedulerName=x"),
     Attributes("watch", "pods")),
    ("WatchBatch", api.WatchRequest(resource="secrets", namespace="d", field_selector="metadata.name=s"),
     Attributes("watch", "secrets", namespace="d", name="s")),
    ("Version", api.VersionRequest(), None),
    ("Compact", api.VersionRequest(), Attributes("call", path="/skiff.api.v1.ApiServer/Compact")),
    ("NodeMetrics", metrics_pb2.MetricsRequest(), Attributes("list", "nodes", group="metrics.k8s.io")),
    ("PodMetrics", metrics_pb2.MetricsRequest(namespace="d", name="p"),
     Attributes("get", "pods", group="metrics.k8s.io", namespace="d", name="p")),
], ids=["create", "create-cluster-scoped", "get-defaults-namespace", "list-all", "watch", "update-status",
        "delete", "bind", "logs", "exec", "create-token", "unknown-resource", "list-one-by-name",
        "watch-all-but-one", "watch-batch", "watch-batch-one-by-name", "version", "unknown-method-closed",
        "node-metrics", "pod-metrics"])
def test_grpc_request_attributes(method: str, request_: Any, attrs: Attributes | None) -> None:
    assert request_attributes(method, request_) == attrs
    assert each_request_attributes(method, request_) == ([] if attrs is None else [attrs])


def test_bind_batch_asks_once_per_binding() -> None:
    request = api.BindBatchRequest(bindings=[new_binding("d", "p", "n1"), new_binding("", "q", "n1")])
    assert each_request_attributes("BindBatch", request) == [
        Attributes("create", "pods", "binding", namespace="d", name="p"),
        Attributes("create", "pods", "binding", namespace="default", name="q")]


async def test_self_subject_rules_review(cluster: Cluster) -> None:
    body = json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                       "spec": {"namespace": "team"}}).encode()
    code, review = await call(cluster, "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", body,
                              headers=AS_ALICE)
    assert code == 201 and review["status"]["incomplete"] is False
    pods = [r for r in review["status"]["resourceRules"] if "pods/log" in r["resources"]]
    assert pods and pods[0]["verbs"] == ["get", "list", "watch"]  # view, bound in team
    assert {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]} in review["status"]["resourceRules"]
    assert any("/apis/*" in r["nonResourceURLs"] for r in review["status"]["nonResourceRules"])
    body = json.dumps({"spec": {"namespace": "default"}}).encode()
    code, review = await call(cluster, "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", body,
                              headers=AS_ALICE)
    assert not [r for r in review["status"]["resourceRules"] if "pods" in r["resources"]]  # nothing in default
