"""Kubernetes' protobuf request bodies read into JSON (controlplane/apiserver/rest/k8sproto.py):
the kinds typed clients create, zero-valued fields it does not know skipped, others refused."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from controlplane.apiserver.rest import k8sproto


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
                             + ld(4, b"")) + ld(3, vi(1, 0) + ld(6, b""))


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
    assert template["spec"]["containers"] == [{"name": "web", "image": "skiff/web:1.0", "resources": {},
                                               "ports": [{"containerPort": 80, "protocol": "TCP"}]}]
    assert "status" not in data  # all zero: skipped


@pytest.mark.parametrize(("encoded", "error", "text"), [
    (body("apps/v1", "Deployment", ld(1, META) + ld(2, vi(8, 1))), k8sproto.UnknownField, "field 8 of DeploymentSpec"),
    (body("v1", "Pod", ld(1, META)), k8sproto.UnknownField, "Pod"),
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
