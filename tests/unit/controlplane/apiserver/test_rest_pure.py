"""The pure parts of the Kubernetes REST API: discovery, Status mapping, patches, tables, kubeconfig."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from controlplane.apiserver.rest import discovery, openapi, patch, table
from controlplane.apiserver.rest import status as st
from controlplane.apiserver.rest.http import object_data, parse_object, scale_of, wants_table
from skiff import errors, kinds, kubeconfig
from skiffpb.api.v1 import types_pb2 as t

# ---------------------------------------------------------------- discovery


def _resource(gv: str, name: str) -> dict[str, Any]:
    return next(r for r in discovery.resources(gv) if r["name"] == name)


@pytest.mark.parametrize(("gv", "name", "short", "kind", "categories"), [
    ("v1", "pods", ["po"], "Pod", ["all"]),
    ("v1", "services", ["svc"], "Service", ["all"]),
    ("v1", "endpoints", ["ep"], "Endpoints", None),
    ("v1", "nodes", ["no"], "Node", None),
    ("v1", "namespaces", ["ns"], "Namespace", None),
    ("apps/v1", "deployments", ["deploy"], "Deployment", ["all"]),
    ("apps/v1", "replicasets", ["rs"], "ReplicaSet", ["all"]),
    ("networking.k8s.io/v1", "networkpolicies", ["netpol"], "NetworkPolicy", None),
], ids=["pods", "services", "endpoints", "nodes", "namespaces", "deployments", "replicasets", "networkpolicies"])
def test_discovery_lists_short_names_and_categories(gv: str, name: str, short: list[str], kind: str,
                                                    categories: list[str] | None) -> None:
    r = _resource(gv, name)
    assert r["shortNames"] == short
    assert r["kind"] == kind
    assert r.get("categories") == categories
    assert set(r["verbs"]) == {"create", "delete", "get", "list", "patch", "update", "watch"}


@pytest.mark.parametrize(("gv", "name", "present"), [
    ("apps/v1", "deployments/scale", True),
    ("apps/v1", "replicasets/scale", True),
    ("apps/v1", "deployments/status", True),
    ("v1", "pods/status", True),
    ("v1", "pods/log", True),
    ("v1", "pods/binding", True),
    ("v1", "pods/exec", True),
    ("v1", "pods/attach", True),
    ("v1", "pods/portforward", True),
    ("v1", "pods/eviction", True),
    ("v1", "endpoints/status", False),
    ("v1", "services/scale", False),
], ids=["deploy-scale", "rs-scale", "deploy-status", "pod-status", "pod-log", "pod-binding", "pod-exec", "pod-attach",
        "pod-portforward", "pod-eviction", "no-ep-status", "no-svc-scale"])
def test_discovery_subresources(gv: str, name: str, present: bool) -> None:
    assert any(r["name"] == name for r in discovery.resources(gv)) is present


def test_every_kind_is_listed_once_in_its_group_version() -> None:
    listed = [(gv, r["name"]) for gv in discovery.group_versions() for r in discovery.resources(gv)
              if "/" not in r["name"]]
    reviews = [(gv, r["name"]) for gv, entries in discovery.REVIEWS.items() for r in entries]
    assert sorted(listed) == sorted([*((k.api_version, k.resource) for k in kinds.KINDS), *reviews])
    groups = {g["name"] for g in discovery.api_group_list()["groups"]}
    assert groups == {k.group for k in kinds.KINDS if k.group} | {"authorization.k8s.io", "metrics.k8s.io"}
    metrics = discovery.resource_list("metrics.k8s.io/v1beta1")
    assert metrics is not None and {r["name"]: r["verbs"] for r in metrics["resources"]} == {
        "nodes": ["get", "list"], "pods": ["get", "list"]}
    assert discovery.resource_list("policy/v1") is None


def test_openapi_patch_operations_declare_field_validation() -> None:
    doc = openapi.gv_document("apps/v1")
    assert doc is not None
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert "fieldValidation" in {p["name"] for p in op["parameters"]}
    assert "application/strategic-merge-patch+json" not in op["requestBody"]["content"]
    assert openapi.root()["paths"]["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    target = schema.get("$ref") or (schema.get("allOf") or [{}])[0].get("$ref")
    return doc["components"]["schemas"][target.rsplit("/", 1)[1]] if target else schema


@pytest.mark.parametrize(("gv", "kind", "path", "expected"), [
    ("apps/v1", "Deployment", ["spec", "replicas"], {"type": "integer", "format": "int32"}),
    ("apps/v1", "Deployment", ["spec", "template", "spec", "containers"], {"type": "array"}),
    ("apps/v1", "Deployment", ["spec", "strategy", "rollingUpdate", "maxSurge"], {"x-kubernetes-int-or-string": True}),
    ("v1", "Pod", ["metadata", "creationTimestamp"], {"type": "string", "format": "date-time"}),
    ("v1", "Pod", ["metadata", "labels"], {"type": "object", "additionalProperties": {"type": "string"}}),
    ("v1", "Pod", ["metadata", "managedFields"], {"type": "array"}),
    ("v1", "Secret", ["data"], {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}}),
    ("v1", "Pod", ["spec", "terminationGracePeriodSeconds"], {"type": "integer", "format": "int64"}),
], ids=["int32", "array", "int-or-string", "timestamp", "map", "managed-fields", "bytes", "int64"])
def test_openapi_schemas_walk_as_kubectl_explain_does(gv: str, kind: str, path: list[str],
                                                     expected: dict[str, Any]) -> None:
    """kubectl explain finds the kind by its GVK, then follows each property's $ref."""
    doc = openapi.gv_document(gv)
    assert doc is not None
    version = gv.split("/")[-1]
    roots = [s for s in doc["components"]["schemas"].values()
             if {"group": gv.split("/")[0] if "/" in gv else "", "version": version, "kind": kind}
             in s.get("x-kubernetes-group-version-kind", [])]
    assert len(roots) == 1 and {"apiVersion", "kind", "metadata"} <= set(roots[0]["properties"])
    schema = roots[0]
    for i, name in enumerate(path):
        field = schema["properties"][name]
        if i == len(path) - 1:
            assert {k: v for k, v in field.items() if k in expected} == expected
        else:
            schema = _resolve(doc, field if "items" not in field else field["items"])


@pytest.mark.parametrize("gv", ["v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1"])
def test_openapi_every_reference_resolves(gv: str) -> None:
    doc = openapi.gv_document(gv)
    assert doc is not None
    text = json.dumps(doc)
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    assert refs and refs <= set(doc["components"]["schemas"])
    assert openapi.gv_document(gv) == doc  # the same document every time (its hash names it)


# ---------------------------------------------------------------- Status


@pytest.mark.parametrize(("exc", "code", "reason"), [
    (errors.NotFoundError('pods "x" not found'), 404, "NotFound"),
    (errors.AlreadyExistsError("exists"), 409, "AlreadyExists"),
    (errors.ConflictError("changed"), 409, "Conflict"),
    (errors.PodAlreadyAssignedError("bound"), 409, "Conflict"),
    (errors.InvalidError("bad"), 422, "Invalid"),
    (errors.GoneError("too old"), 410, "Expired"),
    (errors.TooManyRequestsError("slow"), 429, "TooManyRequests"),
    (errors.ForbiddenError("no"), 403, "Forbidden"),
    (errors.UnauthenticatedError("who"), 401, "Unauthorized"),
    (errors.UnavailableError("down"), 503, "ServiceUnavailable"),
    (st.BadRequest("garbage"), 400, "BadRequest"),
    (st.UnsupportedMediaType("ssa"), 415, "UnsupportedMediaType"),
    (errors.SkiffError("odd"), 500, "InternalError"),
], ids=["notfound", "exists", "conflict", "assigned", "invalid", "gone", "toomany", "forbidden", "unauth",
        "unavailable", "badrequest", "mediatype", "unknown"])
def test_status_code_and_reason(exc: errors.SkiffError, code: int, reason: str) -> None:
    got_code, body = st.status(exc, resource="pods", name="x")
    assert (got_code, body["code"], body["reason"]) == (code, code, reason)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["message"] == exc.message
    assert body["details"] == {"name": "x", "kind": "pods"}


def test_invalid_status_has_one_cause_per_field() -> None:
    exc = errors.InvalidError("bad", causes=(("spec.replicas", "must be >= 0"), ("metadata.name", "required")))
    _, body = st.status(exc, resource="deployments", group="apps", name="web")
    assert body["details"]["group"] == "apps"
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": "must be >= 0", "field": "spec.replicas"},
        {"reason": "FieldValueInvalid", "message": "required", "field": "metadata.name"}]


# ---------------------------------------------------------------- patches


@pytest.mark.parametrize(("doc", "p", "want"), [
    ({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}}, {"a": 1, "b": {"d": 3}}),
    ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
    ({"a": 1}, {"a": {"x": 1}}, {"a": {"x": 1}}),
], ids=["nested-null-deletes", "lists-replace", "scalar-to-object"])
def test_merge_patch(doc: Any, p: Any, want: Any) -> None:
    assert patch.merge_patch(doc, p) == want


@pytest.mark.parametrize(("ops", "want"), [
    ([{"op": "replace", "path": "/spec/replicas", "value": 3}], {"spec": {"replicas": 3, "l": [1, 2]}}),
    ([{"op": "add", "path": "/spec/l/-", "value": 9}], {"spec": {"replicas": 1, "l": [1, 2, 9]}}),
    ([{"op": "add", "path": "/spec/l/0", "value": 0}], {"spec": {"replicas": 1, "l": [0, 1, 2]}}),
    ([{"op": "remove", "path": "/spec/l/1"}], {"spec": {"replicas": 1, "l": [1]}}),
    ([{"op": "move", "from": "/spec/replicas", "path": "/r"}], {"spec": {"l": [1, 2]}, "r": 1}),
    ([{"op": "copy", "from": "/spec/l", "path": "/c"}], {"spec": {"replicas": 1, "l": [1, 2]}, "c": [1, 2]}),
    ([{"op": "test", "path": "/spec/replicas", "value": 1}, {"op": "add", "path": "/a~1b", "value": 1}],
     {"spec": {"replicas": 1, "l": [1, 2]}, "a/b": 1}),
], ids=["replace", "append", "insert", "remove", "move", "copy", "test-and-escape"])
def test_json_patch(ops: Any, want: Any) -> None:
    doc = {"spec": {"replicas": 1, "l": [1, 2]}}
    assert patch.json_patch(doc, ops) == want
    assert doc == {"spec": {"replicas": 1, "l": [1, 2]}}  # the input is left alone


@pytest.mark.parametrize(("ops", "path", "says"), [
    ([{"op": "test", "path": "/spec/replicas", "value": 2}], "/spec/replicas",
     "operation 0 (test) at /spec/replicas: test failed: the value is not 2"),
    ([{"op": "test", "path": "/spec/nope", "value": 2}], "/spec/nope",
     'operation 0 (test) at /spec/nope: path element "nope" does not exist'),
    ([{"op": "add", "path": "/x", "value": 1}, {"op": "remove", "path": "/nope"}], "/nope",
     'operation 1 (remove) at /nope: cannot remove "nope": it does not exist'),
    ([{"op": "replace", "path": "/spec/l/5", "value": 1}], "/spec/l/5",
     "operation 0 (replace) at /spec/l/5: list index 5 is out of range"),
    ([{"op": "move", "from": "/spec/gone", "path": "/x"}], "/spec/gone",
     'operation 0 (move) from /spec/gone: path element "gone" does not exist'),
    ([{"op": "add", "path": "spec", "value": 1}], "spec",
     'operation 0 (add) at spec: JSON patch path "spec" must start with "/"'),
    ([{"op": "frobnicate", "path": "/spec"}], "/spec", 'operation 0 (frobnicate) at /spec: unknown op "frobnicate"'),
    ({"op": "add"}, "", "a JSON patch must be a list of operations"),
], ids=["test-fails", "test-missing-path", "remove-missing", "index-out-of-range", "move-from-missing",
        "relative-path", "unknown-op", "not-a-list"])
def test_json_patch_refuses_naming_the_path(ops: Any, path: str, says: str) -> None:
    with pytest.raises(patch.PatchError) as caught:
        patch.json_patch({"spec": {"replicas": 1, "l": [1, 2]}}, ops)
    assert (caught.value.path, str(caught.value)) == (path, says)


def test_a_failed_test_never_shows_the_current_value() -> None:
    with pytest.raises(patch.PatchError) as caught:
        patch.json_patch({"data": {"password": "aHVudGVyMg=="}}, [{"op": "test", "path": "/data/password",
                                                                    "value": "Z3Vlc3M="}])
    assert "aHVudGVyMg==" not in str(caught.value) and '"Z3Vlc3M="' in str(caught.value)


DEPLOY = {
    "metadata": {"name": "web", "labels": {"app": "web", "tier": "x"}, "finalizers": ["a"]},
    "spec": {"replicas": 2, "template": {"spec": {"containers": [
        {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}, {"containerPort": 443}],
         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        {"name": "side", "image": "side:1"},
    ]}}},
}
C = ["spec", "template", "spec", "containers"]


def _at(doc: Any, path: list[str]) -> Any:
    for p in path:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc


@pytest.mark.parametrize(("p", "path", "want"), [
    ({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}},
     C, [{"name": "web", "image": "web:2", "ports": [{"containerPort": 80}, {"containerPort": 443}],
          "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}, {"name": "side", "image": "side:1"}]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "3"}]}]}}}},
     [*C, "0", "env"], [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 443,
                                                                               "$patch": "delete"}]}]}}}},
     [*C, "0", "ports"], [{"containerPort": 80}]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}},
     [*C, "1"], None),
    ({"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "n:1"}],
                                     "$setElementOrder/containers": [{"name": "web"}, {"name": "side"},
                                                                     {"name": "new"}]}}}},
     [*C, "2"], {"name": "new", "image": "n:1"}),
    ({"metadata": {"labels": {"tier": None, "new": "y"}}}, ["metadata", "labels"], {"app": "web", "new": "y"}),
    ({"metadata": {"finalizers": ["b"]}}, ["metadata", "finalizers"], ["a", "b"]),
    ({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, ["metadata", "finalizers"], []),
    ({"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "x"}, {"$patch": "replace"}]}}}},
     C, [{"name": "x", "image": "x"}]),
    ({"spec": {"replicas": None}}, ["spec"], {"template": DEPLOY["spec"]["template"]}),
], ids=["container-by-name", "env-by-name", "port-delete-directive", "container-delete-directive",
        "add-container-with-order", "labels-merge-and-delete", "finalizers-merge", "delete-from-primitive-list",
        "list-replace-directive", "null-deletes"])
def test_strategic_merge(p: Any, path: list[str], want: Any) -> None:
    out = patch.strategic_merge(DEPLOY, p, t.Deployment.DESCRIPTOR)
    if want is None:
        assert len(_at(out, C)) == 1
    else:
        assert _at(out, path) == want


def test_strategic_merge_needs_the_merge_key() -> None:
    with pytest.raises(patch.PatchError, match='merged by "name"'):
        patch.strategic_merge(DEPLOY, {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
                              t.Deployment.DESCRIPTOR)


def test_service_ports_merge_by_port() -> None:
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    out = patch.strategic_merge(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, t.Service.DESCRIPTOR)
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


# ---------------------------------------------------------------- objects, tables, scale


def _deployment() -> t.Deployment:
    d = t.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace, d.metadata.resource_version = "web", "default", "7"
    d.metadata.generation = 3
    d.metadata.creation_timestamp.seconds = 1_000
    d.spec.replicas = 3
    d.spec.selector.match_labels["app"] = "web"
    c = d.spec.template.spec.containers.add()
    c.name, c.image = "web", "web:1"
    d.status.ready_replicas, d.status.updated_replicas, d.status.available_replicas = 2, 3, 2
    return d


def test_object_data_has_kind_numbers_and_timestamps() -> None:
    data = object_data(t.Deployment(metadata=_deployment().metadata, spec=_deployment().spec))
    assert (data["kind"], data["apiVersion"]) == ("Deployment", "apps/v1")
    assert data["metadata"]["generation"] == 3  # int64 as a JSON number, not "3"
    assert data["metadata"]["creationTimestamp"] == "1970-01-01T00:16:40Z"


@pytest.mark.parametrize(("body", "err"), [
    ({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x"}}, st.BadRequest),
    ({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "x"}, "spec": {"replicas": "two"}},
     errors.InvalidError),
    ({"kind": "Deployment", "apiVersion": "apps/v1", "spec": {"replics": 2}}, errors.InvalidError),
    (["not", "an", "object"], st.BadRequest),
], ids=["wrong-kind", "wrong-type", "unknown-field", "not-object"])
def test_parse_object_refuses(body: Any, err: type[Exception]) -> None:
    kind = kinds.by_resource("deployments")
    assert kind is not None
    with pytest.raises(err) as info:
        parse_object(body, kind)
    if isinstance(info.value, errors.InvalidError):
        assert info.value.causes and info.value.causes[0][0].startswith("spec.")


@pytest.mark.parametrize(("accept", "want"), [
    ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
     "application/json", True),
    ("application/json", False),
    ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", False),
    ("", False),
], ids=["kubectl-get", "plain", "only-v1beta1", "none"])
def test_wants_table(accept: str, want: bool) -> None:
    assert wants_table(accept) is want


def test_table_rows_and_wide_columns() -> None:
    kind = kinds.by_resource("deployments")
    assert kind is not None
    doc = table.table(kind, [_deployment()], now=1_030.0, resource_version="9")
    cols = [(c["name"], c["priority"]) for c in doc["columnDefinitions"]]
    assert cols[:5] == [("Name", 0), ("Ready", 0), ("Up-To-Date", 0), ("Available", 0), ("Age", 0)]
    assert ("Images", 1) in cols
    assert doc["rows"][0]["cells"][:5] == ["web", "2/3", "3", "2", "30s"]
    assert doc["rows"][0]["object"]["metadata"]["namespace"] == "default"
    assert doc["metadata"] == {"resourceVersion": "9"}


def test_scale_of_deployment() -> None:
    scale = scale_of(_deployment())
    assert scale["spec"] == {"replicas": 3}
    assert scale["status"]["selector"] == "app=web"
    assert scale["metadata"]["resourceVersion"] == "7"


# ---------------------------------------------------------------- kubeconfig


OTHER = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "prod", "cluster": {"server": "https://p"}}],
         "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "admin"}}],
         "users": [{"name": "admin", "user": {"token": "t"}}], "current-context": "prod"}


def test_kubeconfig_merge_keeps_other_contexts_and_remove_restores_them() -> None:
    merged = kubeconfig.merge(OTHER, server="http://10.78.0.2:8443")
    assert [c["name"] for c in merged["contexts"]] == ["prod", "skiff"]
    assert merged["current-context"] == "skiff"
    again = kubeconfig.merge(merged, server="http://10.78.0.2:8443")
    assert [c["name"] for c in again["clusters"]] == ["prod", "skiff"]  # replaced, not added twice
    assert kubeconfig.remove(merged, server="http://other:1") is None  # someone else's skiff entry now
    removed = kubeconfig.remove(merged, server="http://10.78.0.2:8443")
    assert removed is not None
    assert {k: removed[k] for k in ("clusters", "contexts", "users")} == {
        k: OTHER[k] for k in ("clusters", "contexts", "users")}
    assert removed["current-context"] == ""


def test_kubeconfig_files(tmp_path: Any) -> None:
    path = tmp_path / "config"
    kubeconfig.write_entry("http://h:1", path=path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert kubeconfig.remove_entry("http://h:1", path=path)
    assert not kubeconfig.remove_entry("http://h:1", path=path)
    assert kubeconfig.kubeconfig_path({"KUBECONFIG": "/a:/b", "HOME": "/h"}).as_posix() == "/a"
    assert kubeconfig.kubeconfig_path({"HOME": "/h"}).as_posix() == "/h/.kube/config"


@pytest.mark.parametrize(("nanos", "want"), [
    (0, "1970-01-01T00:16:40.000000Z"),
    (123_000_000, "1970-01-01T00:16:40.123000Z"),
    (123_456_789, "1970-01-01T00:16:40.123456Z"),
], ids=["whole-second", "millis", "nanos-truncated"])
def test_lease_times_are_micro_times(nanos: int, want: str) -> None:
    lease = t.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
    lease.metadata.name = "l"
    lease.spec.renew_time.seconds, lease.spec.renew_time.nanos = 1_000, nanos
    lease.spec.acquire_time.seconds = 1_000
    spec = object_data(lease)["spec"]
    assert spec["renewTime"] == want
    assert spec["acquireTime"] == "1970-01-01T00:16:40.000000Z"
