"""Kubernetes' protobuf encoding of request bodies (`application/vnd.kubernetes.protobuf`), read
into the JSON form every other body has, so one conversion (skiff.convert) follows.

Typed clients send it: kubectl's typed commands (`kubectl create deployment|configmap|secret|
namespace|serviceaccount|token`), helm (its release Secrets), `kubectl drain` (Evictions), schedulers
(Bindings), `kubectl auth can-i` (accessreview.py).

The encoding: the 4 bytes `k8s\\0`, then a runtime.Unknown {1 typeMeta {1 apiVersion, 2 kind},
2 raw, 3 contentEncoding, 4 contentType}; `raw` is the object in the field numbers of
k8s.io/api's generated.proto. SCHEMAS below holds those numbers for the kinds and fields typed
clients send (copied from k8s.io/api and k8s.io/apimachinery generated.proto).

What must hold: a field whose number the schema does not hold is ignored only when it holds its
zero value (typed clients send every unset field so); otherwise it is an error naming the message and
the number (`UnknownField`, answered 415 with the JSON workaround), never silently dropped; the
JSON produced is what the same client would have sent as JSON (bytes as base64, timestamps as
RFC 3339, a zero metav1.Time as absent, Quantity and IntOrString as their values).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from typing import Any

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# Wire types.
VARINT, I64, LEN, I32 = 0, 1, 2, 5


class UnknownField(ValueError):
    """A field the schema does not hold: the body cannot be read without losing it."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("protobuf varint too long")


def records(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one message, in order: a varint's value,
    the bytes of a length-delimited field; fixed-size fields as their raw bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated protobuf field")
            yield number, wire, data[pos:pos + length]
            pos += length
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > len(data):
                raise ValueError("truncated protobuf field")
            yield number, wire, data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of one protobuf message (the last one of each number wins)."""
    return {n: v for n, w, v in records(data) if w == LEN and isinstance(v, bytes)}


def unwrap(body: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw object) of a `k8s\\0` + runtime.Unknown body."""
    if not body.startswith(MAGIC):
        raise ValueError("a Kubernetes protobuf body starts with k8s\\0")
    unknown = fields(body[len(MAGIC):])
    type_meta = fields(unknown.get(1, b""))
    return type_meta.get(1, b"").decode(), type_meta.get(2, b"").decode(), unknown.get(2, b"")


# ---------------------------------------------------------------- schemas

# A field: (JSON name, type, repeated); an empty name is read and dropped (selfLink: deprecated,
# always empty, yet typed clients' encoders send it). Types: "string", "int", "bool", "bytes", "time", "quantity",
# "intstr", ("map", value type), or the name of a message in SCHEMAS.
Field = tuple[str, Any, bool]
S, N, B = "string", "int", "bool"

META = "ObjectMeta"
SCHEMAS: dict[str, dict[int, Field]] = {
    META: {1: ("name", S, False), 2: ("generateName", S, False), 3: ("namespace", S, False),
           4: ("", S, False), 5: ("uid", S, False), 6: ("resourceVersion", S, False),
           7: ("generation", N, False), 8: ("creationTimestamp", "time", False),
           9: ("deletionTimestamp", "time", False), 10: ("deletionGracePeriodSeconds", N, False),
           11: ("labels", ("map", S), False), 12: ("annotations", ("map", S), False),
           13: ("ownerReferences", "OwnerReference", True), 14: ("finalizers", S, True)},
    "OwnerReference": {1: ("kind", S, False), 3: ("name", S, False), 4: ("uid", S, False),
                       5: ("apiVersion", S, False), 6: ("controller", B, False),
                       7: ("blockOwnerDeletion", B, False)},
    "LabelSelector": {1: ("matchLabels", ("map", S), False), 2: ("matchExpressions", "LabelSelectorRequirement", True)},
    "LabelSelectorRequirement": {1: ("key", S, False), 2: ("operator", S, False), 3: ("values", S, True)},
    "DeleteOptions": {1: ("gracePeriodSeconds", N, False), 2: ("preconditions", "Preconditions", False),
                      3: ("orphanDependents", B, False), 4: ("propagationPolicy", S, False), 5: ("dryRun", S, True)},
    "Preconditions": {1: ("uid", S, False), 2: ("resourceVersion", S, False)},
    # core/v1
    "Binding": {1: ("metadata", META, False), 2: ("target", "ObjectReference", False)},
    "ObjectReference": {1: ("kind", S, False), 2: ("namespace", S, False), 3: ("name", S, False),
                        4: ("uid", S, False), 5: ("apiVersion", S, False), 6: ("resourceVersion", S, False),
                        7: ("fieldPath", S, False)},
    # policy/v1
    "Eviction": {1: ("metadata", META, False), 2: ("deleteOptions", "DeleteOptions", False)},
    "Secret": {1: ("metadata", META, False), 2: ("data", ("map", "bytes"), False), 3: ("type", S, False),
               4: ("stringData", ("map", S), False), 5: ("immutable", B, False)},
    "ConfigMap": {1: ("metadata", META, False), 2: ("data", ("map", S), False),
                  3: ("binaryData", ("map", "bytes"), False), 4: ("immutable", B, False)},
    "Namespace": {1: ("metadata", META, False), 2: ("spec", "NamespaceSpec", False)},
    "NamespaceSpec": {1: ("finalizers", S, True)},
    "ServiceAccount": {1: ("metadata", META, False), 3: ("imagePullSecrets", "LocalObjectReference", True),
                       4: ("automountServiceAccountToken", B, False)},
    "LocalObjectReference": {1: ("name", S, False)},
    "PodTemplateSpec": {1: ("metadata", META, False), 2: ("spec", "PodSpec", False)},
    "PodSpec": {2: ("containers", "Container", True), 3: ("restartPolicy", S, False),
                4: ("terminationGracePeriodSeconds", N, False), 6: ("dnsPolicy", S, False),
                7: ("nodeSelector", ("map", S), False), 8: ("serviceAccountName", S, False),
                15: ("imagePullSecrets", "LocalObjectReference", True), 20: ("initContainers", "Container", True)},
    "Container": {1: ("name", S, False), 2: ("image", S, False), 3: ("command", S, True), 4: ("args", S, True),
                  5: ("workingDir", S, False), 6: ("ports", "ContainerPort", True), 7: ("env", "EnvVar", True),
                  8: ("resources", "ResourceRequirements", False), 13: ("terminationMessagePath", S, False),
                  14: ("imagePullPolicy", S, False), 20: ("terminationMessagePolicy", S, False)},
    "ContainerPort": {1: ("name", S, False), 2: ("hostPort", N, False), 3: ("containerPort", N, False),
                      4: ("protocol", S, False), 5: ("hostIP", S, False)},
    "EnvVar": {1: ("name", S, False), 2: ("value", S, False)},
    "ResourceRequirements": {1: ("limits", ("map", "quantity"), False), 2: ("requests", ("map", "quantity"), False)},
    # apps/v1
    "Deployment": {1: ("metadata", META, False), 2: ("spec", "DeploymentSpec", False)},
    "DeploymentSpec": {1: ("replicas", N, False), 2: ("selector", "LabelSelector", False),
                       3: ("template", "PodTemplateSpec", False), 4: ("strategy", "DeploymentStrategy", False),
                       5: ("minReadySeconds", N, False), 6: ("revisionHistoryLimit", N, False),
                       7: ("paused", B, False), 9: ("progressDeadlineSeconds", N, False)},
    "DeploymentStrategy": {1: ("type", S, False), 2: ("rollingUpdate", "RollingUpdateDeployment", False)},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "intstr", False), 2: ("maxSurge", "intstr", False)},
    # authentication/v1 (`kubectl create token`)
    "TokenRequest": {1: ("metadata", META, False), 2: ("spec", "TokenRequestSpec", False),
                     3: ("status", "TokenRequestStatus", False)},
    "TokenRequestSpec": {1: ("audiences", S, True), 3: ("boundObjectRef", "BoundObjectReference", False),
                         4: ("expirationSeconds", N, False)},
    "BoundObjectReference": {1: ("kind", S, False), 2: ("apiVersion", S, False), 3: ("name", S, False),
                             4: ("uid", S, False)},
    "TokenRequestStatus": {1: ("token", S, False), 2: ("expirationTimestamp", "time", False)},
}
# The top-level kinds a body may be, by (apiVersion, kind).
KINDS = {("v1", "Binding"), ("policy/v1", "Eviction"), ("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "Namespace"),
         ("v1", "ServiceAccount"), ("authentication.k8s.io/v1", "TokenRequest"),
         ("apps/v1", "Deployment")}
_ZERO_TIME = -62135596800  # Go's zero time.Time: metav1.Time's "unset"


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(kind: Any, wire: int, value: int | bytes, where: str) -> Any:
    if kind == S and isinstance(value, bytes):
        return value.decode()
    if kind == "bytes" and isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if kind == N and isinstance(value, int):
        return _signed(value)
    if kind == B and isinstance(value, int):
        return bool(value)
    if kind == "time" and isinstance(value, bytes):
        seconds = nanos = 0
        for n, _, v in records(value):
            if n == 1 and isinstance(v, int):
                seconds = _signed(v)
            elif n == 2 and isinstance(v, int):
                nanos = v
        if seconds <= _ZERO_TIME or (seconds, nanos) == (0, 0):  # an empty message: the zero Time
            return None
        moment = dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=nanos // 1000)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "quantity" and isinstance(value, bytes):
        return fields(value).get(1, b"").decode()
    if kind == "intstr" and isinstance(value, bytes):
        parts = {n: v for n, _, v in records(value)}
        if parts.get(1) == 1:
            s = parts.get(3, b"")
            return s.decode() if isinstance(s, bytes) else ""
        i = parts.get(2, 0)
        return _signed(i) if isinstance(i, int) else 0
    if isinstance(kind, str) and kind in SCHEMAS and isinstance(value, bytes):
        return decode_message(value, kind)
    raise ValueError(f"{where}: wire type {wire} does not fit a {kind}")


def is_zero(wire: int, value: int | bytes) -> bool:
    """Whether a field holds its zero value: 0, empty, or a message whose every field is zero."""
    if wire == VARINT:
        return value == 0
    if not isinstance(value, bytes):
        return value == 0
    if wire != LEN:
        return not any(value)
    if not value:
        return True
    try:
        return all(is_zero(w, v) for _, w, v in records(value))
    except ValueError:
        return False


def decode_message(data: bytes, name: str) -> dict[str, Any]:
    """The JSON form of a message of schema `name`."""
    schema = SCHEMAS[name]
    out: dict[str, Any] = {}
    for number, wire, value in records(data):
        field = schema.get(number)
        if field is None and is_zero(wire, value):
            continue  # typed clients' encoders send every unset field as its zero value: nothing lost
        if field is None:
            raise UnknownField(f"field {number} of {name} is not read by Skiff's protobuf decoder")
        json_name, kind, repeated = field
        if not json_name:
            continue
        where = f"{name}.{json_name}"
        if isinstance(kind, tuple):  # a map: each entry is a message {1 key, 2 value}
            if not isinstance(value, bytes):
                raise ValueError(f"{where}: a map entry must be length-delimited")
            entry = {n: (w, v) for n, w, v in records(value)}
            key_raw = entry.get(1, (LEN, b""))[1]
            key = key_raw.decode() if isinstance(key_raw, bytes) else str(key_raw)
            w, v = entry.get(2, (LEN, b""))
            out.setdefault(json_name, {})[key] = _scalar(kind[1], w, v, where)
            continue
        decoded = _scalar(kind, wire, value, where)
        if repeated:
            out.setdefault(json_name, []).append(decoded)
        elif decoded is not None:
            out[json_name] = decoded
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf request body, `kind` and `apiVersion` set."""
    api_version, kind, raw = unwrap(body)
    if kind == "DeleteOptions":  # sent with the version of the object deleted
        return {"apiVersion": api_version, "kind": kind, **decode_message(raw, kind)}
    if (api_version, kind) not in KINDS:
        raise UnknownField(f"Skiff does not read {kind or 'this kind'} ({api_version}) in protobuf")
    return {"apiVersion": api_version, "kind": kind, **decode_message(raw, kind)}
