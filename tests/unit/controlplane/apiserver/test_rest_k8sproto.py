"""Kubernetes' protobuf request bodies read into JSON (controlplane/apiserver/rest/k8sproto.py):
hand-encoded bodies as gogo-protobuf writes them (every field, zero or not: zero-valued fields
Skiff lacks skipped, others kept or refused); every served kind encoded by the protobuf library
from the wire schema table (written back as .proto for protoc) and read back; every Skiff field
has a Kubernetes number."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from controlplane.apiserver.rest import k8sproto
from skiff import kinds

ROOT = Path(__file__).resolve().parents[4]


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def ld(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def vi(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def entry(number: int, key: str, value: bytes | str) -> bytes:
    return ld(number, ld(1, key) + ld(2, value))


def body(api_version: str, kind: str, raw: bytes) -> bytes:
    return k8sproto.MAGIC + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw) + ld(3, b"") + ld(4, b"")


# What gogo-protobuf encoders send: every string field, even empty; the zero Time as an empty message.
META = ld(1, "web") + ld(2, "") + ld(3, "") + ld(4, "") + ld(5, "") + ld(6, "") + vi(7, 0) + ld(8, b"") \
    + entry(11, "app", "web")
CONTAINER = ld(1, "web") + ld(2, "skiff/web:1.0") + ld(8, b"") + vi(16, 0) + vi(17, 0) + vi(18, 0) \
    + ld(6, vi(3, 80) + ld(4, "TCP"))
DEPLOYMENT = ld(1, META) + ld(2, vi(1, 2) + ld(2, entry(1, "app", "web"))
                             + ld(3, ld(1, ld(8, b"") + entry(11, "app", "web")) + ld(2, ld(2, CONTAINER)))
                             + ld(4, b"")) + ld(3, vi(1, 0) + vi(9, 0))


@pytest.mark.parametrize(("encoded", "expected"), [
    (body("v1", "ConfigMap", ld(1, META) + entry(2, "a", "b") + entry(3, "bin", b"\x00\x01") + vi(4, 0)),
     {"apiVersion": "v1", "kind": "ConfigMap",
      "metadata": {"name": "web", "generateName": "", "namespace": "", "uid": "", "resourceVersion": "",
                   "generation": 0, "labels": {"app": "web"}},
      "data": {"a": "b"}, "binaryData": {"bin": base64.b64encode(b"\x00\x01").decode()}, "immutable": False}),
    (body("v1", "Secret", ld(1, ld(1, "sh.helm.release.v1.demo.v1") + entry(11, "owner", "helm"))
          + entry(2, "release", b"H4sI") + ld(3, "helm.sh/release.v1")),
     {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sh.helm.release.v1.demo.v1",
                                                        "labels": {"owner": "helm"}},
      "data": {"release": base64.b64encode(b"H4sI").decode()}, "type": "helm.sh/release.v1"}),
    (body("meta.k8s.io/v1", "DeleteOptions", vi(1, 0) + ld(4, "Background") + ld(5, "All")),
     {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
      "propagationPolicy": "Background", "dryRun": ["All"]}),
], ids=["configmap", "helm-release-secret", "delete-options"])
def test_decode(encoded: bytes, expected: dict[str, Any]) -> None:
    assert k8sproto.decode(encoded) == expected


def test_deployment_with_zero_valued_unknown_fields() -> None:
    data = k8sproto.decode(body("apps/v1", "Deployment", DEPLOYMENT))
    assert data["spec"]["replicas"] == 2 and data["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    template = data["spec"]["template"]
    assert template["metadata"] == {"labels": {"app": "web"}}  # the zero creationTimestamp is absent
    # stdin, stdinOnce and tty: Skiff has them, so kubectl's explicit zeros are kept (false = unset)
    assert template["spec"]["containers"] == [{"name": "web", "image": "skiff/web:1.0", "resources": {},
                                               "stdin": False, "stdinOnce": False, "tty": False,
                                               "ports": [{"containerPort": 80, "protocol": "TCP"}]}]
    assert data["status"] == {"observedGeneration": 0}  # terminatingReplicas: Skiff has none, and it is 0


def test_a_set_field_skiff_lacks_is_kept_for_field_validation_to_refuse() -> None:
    container = ld(1, "web") + ld(2, "skiff/web:1.0") + vi(16, 1)  # stdin: true
    data = k8sproto.decode(body("v1", "Pod", ld(1, META) + ld(2, ld(2, container))))
    assert data["spec"]["containers"] == [{"name": "web", "image": "skiff/web:1.0", "stdin": True}]


@pytest.mark.parametrize(("encoded", "error", "text"), [
    (body("apps/v1", "Deployment", ld(1, META) + ld(2, vi(8, 1))), k8sproto.UnknownField, "field 8 of DeploymentSpec"),
    (body("example.com/v1", "Widget", ld(1, META)), k8sproto.UnknownField, "Widget"),
    (b'{"kind": "Secret"}', ValueError, "k8s\\0"),
    (body("v1", "Secret", b"\x0a\x05ab"), ValueError, "truncated"),
], ids=["unknown-nonzero-field", "kind-not-read", "json-body", "truncated"])
def test_refusals(encoded: bytes, error: type[Exception], text: str) -> None:
    with pytest.raises(error) as info:
        k8sproto.decode(encoded)
    assert text in str(info.value)


@pytest.mark.parametrize(("seconds", "expected"), [
    (None, None), (0, None), (-62135596800, None), (1765083600, "2025-12-07T05:00:00Z"),
], ids=["empty", "epoch-zero", "go-zero", "set"])
def test_time(seconds: int | None, expected: str | None) -> None:
    raw = b"" if seconds is None else vi(1, seconds)
    meta = ld(1, "x") + ld(8, raw)
    got = k8sproto.decode(body("v1", "ConfigMap", ld(1, meta)))
    assert got["metadata"].get("creationTimestamp") == expected


# ---------------------------------------------------------------- against the protobuf library

# Kubernetes' messages, compiled by protoc (grpc_tools) from the wire schema table written back as
# .proto files, encode the objects; Skiff's reader must give back the JSON they came from.


def proto_files(schemas: k8sproto.Schemas) -> dict[str, str]:
    """The wire schema table written back as proto2 files, one per package (importing the packages
    its fields use), for protoc: the same numbers, names and types, so the same bytes."""
    packages: dict[str, list[str]] = {}
    for message in schemas:
        packages.setdefault(message.rsplit(".", 1)[0], []).append(message)

    def ref(type_: str) -> str:
        return type_ if type_ in k8sproto.SCALARS else f".{type_}"

    files = {}
    for package, messages in sorted(packages.items()):
        used = {f.value or f.type for m in messages for f in schemas[m].values()}
        imports = sorted({t.rsplit(".", 1)[0] for t in used if t not in k8sproto.SCALARS} - {package})
        lines = ['syntax = "proto2";', f"package {package};", *(f'import "{i.replace(".", "/")}.proto";'
                                                                 for i in imports)]
        for message in sorted(messages):
            lines.append(f"message {message.rsplit('.', 1)[1]} {{")
            for number, f in sorted(schemas[message].items()):
                if f.type == "map":
                    lines.append(f"  map<string, {ref(f.value)}> {f.name} = {number};")
                else:
                    lines.append(f"  {'repeated' if f.repeated else 'optional'} {ref(f.type)} {f.name} = {number};")
            lines.append("}")
        files[f"{package.replace('.', '/')}.proto"] = "\n".join(lines) + "\n"
    return files


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pool.DescriptorPool:
    src = tmp_path_factory.mktemp("k8sproto")
    for name, text in proto_files(k8sproto.schemas()).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    out = src / "k8s.desc"
    protos = sorted(str(p.relative_to(src)) for p in src.rglob("*.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", "--include_imports",
                    f"--descriptor_set_out={out}", *protos], check=True)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    the_pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        the_pool.Add(f)
    return the_pool


def test_the_table_is_what_the_refresh_writes() -> None:
    """`python -m controlplane.apiserver.rest.k8sproto` reads generated.proto files back into the
    same table: parse_proto of the files written from the table gives the table."""
    schemas = k8sproto.schemas()
    again: k8sproto.Schemas = {}
    for text in proto_files(schemas).values():
        again.update(k8sproto.parse_proto(text))
    assert k8sproto.table_text(again) == k8sproto.SCHEMA_FILE.read_text()


def to_wire_json(data: Any, desc: Descriptor) -> Any:
    """A Kubernetes JSON object in the shape protobuf's JSON parser takes for `desc` (Quantity,
    IntOrString, Time, RawExtension are messages on the wire, single values in JSON)."""
    out: dict[str, Any] = {}
    by_json = {f.json_name: f for f in desc.fields}
    for key, value in data.items():
        if key not in by_json:  # a field of a Go embedded struct: JSON inlines it, protobuf nests it
            embedded = next(f for f in desc.fields if f.message_type is not None
                            and key in {g.json_name for g in f.message_type.fields})
            inner = embedded.message_type
            assert inner is not None
            out.setdefault(embedded.json_name, {}).update(to_wire_json({key: value}, inner))
            continue
        field = by_json[key]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[key] = {k: _wire_value(v, value_field) for k, v in value.items()}
        elif field.is_repeated:
            out[key] = [_wire_value(v, field) for v in value]
        else:
            out[key] = _wire_value(value, field)
    return out


def _wire_value(value: Any, field: FieldDescriptor) -> Any:
    msg = field.message_type
    if msg is None:
        return value
    name = msg.full_name
    if name == k8sproto.QUANTITY:
        return {"string": str(value)}
    if name == k8sproto.INTSTR:
        return {"type": 1, "strVal": value} if isinstance(value, str) else {"type": 0, "intVal": value}
    if name in (k8sproto.TIME, k8sproto.MICROTIME):
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return {"seconds": int(moment.timestamp()), "nanos": moment.microsecond * 1000}
    if name == k8sproto.RAW:
        return {"raw": base64.b64encode(json.dumps(value).encode()).decode()}
    return to_wire_json(value, msg)


def encode(pool: descriptor_pool.DescriptorPool, data: dict[str, Any]) -> bytes:
    name = k8sproto.message_name(data["apiVersion"], data["kind"])
    desc = pool.FindMessageTypeByName(name)
    payload = {k: v for k, v in data.items() if k not in ("apiVersion", "kind")}
    msg = json_format.ParseDict(to_wire_json(payload, desc), message_factory.GetMessageClass(desc)())
    return body(data["apiVersion"], data["kind"], msg.SerializeToString())

EXAMPLE_OBJECTS = [(f"{path.parent.name}/{doc['kind']}/{doc['metadata']['name']}", doc)
                   for path in sorted((ROOT / "examples").rglob("*.yaml"))
                   for doc in yaml.safe_load_all(path.read_text()) if doc]
META_X = {"name": "x", "labels": {"a": "b"}}
# One object of each served kind the examples lack, with the fields that need care on the wire.
OTHER_OBJECTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": META_X},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
     "spec": {"podCIDR": "10.0.0.0/24", "unschedulable": True,
              "taints": [{"key": "k", "effect": "NoSchedule"}]},
     "status": {"capacity": {"cpu": "2", "memory": "1Gi"}}},
    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": META_X,
     "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}}}},
    {"apiVersion": "v1", "kind": "Endpoints", "metadata": META_X,
     "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80, "protocol": "TCP"}]}]},
    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": META_X,
     "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15, "renewTime": "2026-12-07T05:00:00.123456Z"}},
    {"apiVersion": "v1", "kind": "Event", "metadata": META_X, "reason": "Started", "type": "Normal", "count": 2,
     "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
     "firstTimestamp": "2026-12-07T05:00:00Z"},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": META_X, "automountServiceAccountToken": False},
    {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": META_X, "revision": 3,
     "data": {"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": META_X,
     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "c"},
     "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": META_X,
     "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "default"}],
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "c"},
     "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ann"}],
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"}},
    {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "c"},
     "spec": {"request": base64.b64encode(b"PEM").decode(), "signerName": "kubernetes.io/kube-apiserver-client",
              "usages": ["client auth"], "expirationSeconds": 3600}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": META_X,
     "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
              "ingress": [{"ports": [{"port": "http", "protocol": "TCP"}, {"port": 53}]}]}},
    {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
     "provisioner": "skiff.io/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"},
    {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"},
     "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x"}}},
    {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}},
]
ALL_OBJECTS = EXAMPLE_OBJECTS + [(f"{o['kind']}", o) for o in OTHER_OBJECTS]


def test_every_served_kind_has_an_object_here() -> None:
    tested = {o["kind"] for _, o in ALL_OBJECTS}
    assert {k.kind for k in kinds.KINDS} <= tested


@pytest.mark.parametrize("obj", [o for _, o in ALL_OBJECTS], ids=[i for i, _ in ALL_OBJECTS])
def test_what_the_protobuf_library_encodes_reads_back(pool: descriptor_pool.DescriptorPool,
                                                      obj: dict[str, Any]) -> None:
    assert k8sproto.decode(encode(pool, obj)) == obj


@pytest.mark.parametrize("kind", kinds.KINDS, ids=[k.kind for k in kinds.KINDS])
def test_every_field_of_every_served_kind_has_a_kubernetes_field_number(kind: kinds.Kind) -> None:
    """A Skiff field without a Kubernetes number could never be sent in protobuf: the json_names
    must be Kubernetes' (types.proto's promise) all the way down."""
    schemas = k8sproto.schemas()
    missing: list[str] = []

    def walk(own: Descriptor, name: str, path: str, seen: frozenset[str]) -> None:
        theirs = {f.name: f for f in schemas[name].values()}
        for number in k8sproto.inlined(name, own):  # Go's embedded structs: inline in JSON
            theirs.update({f.name: f for f in schemas[schemas[name][number].type].values()})
        for field in own.fields:
            where = f"{path}.{field.json_name}"
            wire = theirs.get(field.json_name)
            if wire is None:
                missing.append(where)
                continue
            sub = field.message_type
            if (sub is not None and not sub.GetOptions().map_entry and wire.type in schemas
                    and sub.full_name not in seen and not k8sproto._is_special(wire.type)):
                walk(sub, wire.type, where, seen | {sub.full_name})

    walk(cast(Descriptor, kind.message.DESCRIPTOR), k8sproto.message_name(kind.api_version, kind.kind), kind.kind,
         frozenset())
    # An object's apiVersion and kind travel in the runtime.Unknown envelope, not in the object (also
    # for a StatefulSet's embedded volumeClaimTemplates, whose kind is implied).
    assert [m for m in missing if m.rsplit(".", 1)[1] not in ("apiVersion", "kind")] == []
