"""ConfigMap, Secret and ServiceAccount kinds: validation limits, defaults, immutability, base64,
QoS classes, downward API values and the CLI columns. All pure; table-driven."""

from __future__ import annotations

import pytest

from controlplane.apiserver import strategy
from controlplane.apiserver.defaults import apply_defaults
from skiff import downward, kinds, qos
from skiff.cli import printers
from skiff.convert import FieldError, from_data, to_data
from skiff.validation import MAX_CONFIG_BYTES, validate
from skiffpb.api.v1 import types_pb2 as t


def cm(data: dict[str, str] | None = None, *, binary: dict[str, bytes] | None = None,
       immutable: bool | None = None) -> t.ConfigMap:
    out = t.ConfigMap(api_version="v1", kind="ConfigMap", metadata=t.ObjectMeta(name="cfg", namespace="default"))
    out.data.update(data or {})
    out.binary_data.update(binary or {})
    if immutable is not None:
        out.immutable = immutable
    return out


def secret(data: dict[str, bytes] | None = None, *, type_: str = "", string_data: dict[str, str] | None = None,
           immutable: bool | None = None, annotations: dict[str, str] | None = None) -> t.Secret:
    out = t.Secret(api_version="v1", kind="Secret", metadata=t.ObjectMeta(name="s", namespace="default"), type=type_)
    out.data.update(data or {})
    out.string_data.update(string_data or {})
    out.metadata.annotations.update(annotations or {})
    if immutable is not None:
        out.immutable = immutable
    return out


def problems(obj: t.ConfigMap | t.Secret) -> list[str]:
    return [str(p) for p in validate(obj)]


@pytest.mark.parametrize(("obj", "want"), [
    (cm({"a.b-c_d": "x"}), []),
    (cm({"bad/key": "x"}), ["data[bad/key]"]),
    (cm({"..hidden": "x"}), ['must not start with ".."']),
    (cm({"a": "x"}, binary={"a": b"y"}), ["binaryData[a]: duplicate"]),
    (cm({"big": "x" * (MAX_CONFIG_BYTES - 3)}), []),
    (cm({"big": "x" * (MAX_CONFIG_BYTES - 2)}), ["Too long: must have at most 1048576 bytes, got 1048577"]),
    (cm({"a": "x" * (MAX_CONFIG_BYTES // 2)}, binary={"b": b"y" * (MAX_CONFIG_BYTES // 2)}), ["Too long"]),
    (secret({"p": b"x"}), []),
    (secret({"big": b"x" * MAX_CONFIG_BYTES}), ["Too long"]),
    (secret({"tls.crt": b"c"}, type_="kubernetes.io/tls"), ['data[tls.key]: required for a Secret of type']),
    (secret({"tls.crt": b"c", "tls.key": b"k"}, type_="kubernetes.io/tls"), []),
    (secret({".dockerconfigjson": b"{not json"}, type_="kubernetes.io/dockerconfigjson"), ["invalid JSON"]),
    (secret({".dockerconfigjson": b'{"auths": {}}'}, type_="kubernetes.io/dockerconfigjson"), []),
    (secret({"token": b"t"}, type_="kubernetes.io/service-account-token"),
     ["kubernetes.io/service-account.name]: required"]),
    (secret({"token": b"t"}, type_="kubernetes.io/service-account-token",
            annotations={"kubernetes.io/service-account.name": "default"}), []),
    (secret({"release": b"H4sI"}, type_="helm.sh/release.v1"), []),
    (secret(string_data={"bad key": "x"}), ["stringData[bad key]"]),
], ids=["valid-key", "slash-key", "dotdot-key", "duplicate-binary", "1MiB-exactly", "1MiB-plus-one", "split-over",
        "secret-ok", "secret-over", "tls-missing-key", "tls-ok", "dockerconfigjson-bad", "dockerconfigjson-ok",
        "sa-token-no-annotation", "sa-token-ok", "helm-release", "string-data-key"])
def test_config_validation(obj: t.ConfigMap | t.Secret, want: list[str]) -> None:
    got = problems(obj)
    assert len(got) == len(want), got
    for text, line in zip(want, got, strict=True):
        assert text in line


DATA_FROZEN = "data: field is immutable when `immutable` is set"
FLAG_FROZEN = "immutable: field is immutable when `immutable` is set"


@pytest.mark.parametrize(("old", "new", "want"), [
    (cm({"a": "1"}), cm({"a": "2"}), []),
    (cm({"a": "1"}, immutable=True), cm({"a": "2"}, immutable=True), [DATA_FROZEN]),
    (cm({"a": "1"}, immutable=True), cm({"a": "1"}, immutable=False), [FLAG_FROZEN]),
    (cm({"a": "1"}, immutable=True), cm({"a": "1"}, immutable=True), []),
    (cm({"a": "1"}, immutable=False), cm({"a": "2"}, immutable=True), []),
    (secret({"a": b"1"}, immutable=True), secret({"a": b"2"}, immutable=True), [DATA_FROZEN]),
    (secret({"a": b"1"}, type_="Opaque"), secret({"a": b"1"}, type_="kubernetes.io/tls"),
     ["type: field is immutable"]),
], ids=["mutable", "immutable-data", "unset-immutable", "immutable-unchanged", "becoming-immutable",
        "immutable-secret", "secret-type"])
def test_immutable_updates(old: t.ConfigMap | t.Secret, new: t.ConfigMap | t.Secret, want: list[str]) -> None:
    got = [str(p) for p in strategy.update_problems(old, new)]
    assert got == want


def test_secret_defaults_merge_string_data_and_type() -> None:
    s = secret({"a": b"old", "b": b"keep"}, string_data={"a": "new", "c": "plain"})
    apply_defaults(s)
    assert (s.type, dict(s.data), dict(s.string_data)) == (
        "Opaque", {"a": b"new", "b": b"keep", "c": b"plain"}, {})
    again = strategy.copy(s)
    apply_defaults(again)
    assert again == s, "defaults are idempotent"


def test_pod_defaults_service_account_and_volume_modes() -> None:
    pod = t.Pod(metadata=t.ObjectMeta(name="p"))
    pod.spec.containers.add(name="c", image="busybox")
    pod.spec.volumes.add(name="cfg").config_map.name = "cfg"
    explicit = pod.spec.volumes.add(name="sec").secret
    explicit.secret_name, explicit.default_mode = "s", 0o400
    pod.spec.volumes.add(name="tmp").empty_dir.SetInParent()
    pod.spec.containers[0].resources.limits.update({"cpu": "1", "memory": "64Mi"})
    pod.spec.containers[0].resources.requests["cpu"] = "500m"
    apply_defaults(pod)
    assert pod.spec.service_account_name == "default"
    assert dict(pod.spec.containers[0].resources.requests) == {"cpu": "500m", "memory": "64Mi"}
    assert [v.config_map.default_mode if v.HasField("config_map") else v.secret.default_mode
            for v in pod.spec.volumes[:2]] == [0o644, 0o400]
    assert not pod.spec.volumes[2].config_map.HasField("default_mode")


def test_secret_data_is_base64_in_manifests() -> None:
    data = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"p": "czNjcjN0"}}
    s = from_data(data, t.Secret)
    assert s.data["p"] == b"s3cr3t"
    assert to_data(s) == data
    with pytest.raises(FieldError, match=r"data\.p: illegal base64"):
        from_data({**data, "data": {"p": "***"}}, t.Secret)


def container(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> t.Container:
    c = t.Container(name="c", image="i")
    c.resources.requests.update(requests or {})
    c.resources.limits.update(limits or {})
    return c


@pytest.mark.parametrize(("containers", "want"), [
    ([container()], qos.BEST_EFFORT),
    ([container(limits={"cpu": "1", "memory": "1Gi"})], qos.GUARANTEED),
    ([container({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})], qos.GUARANTEED),
    ([container({"cpu": "1000m", "memory": "1024Mi"}, {"cpu": "1", "memory": "1Gi"})], qos.GUARANTEED),
    ([container({"cpu": "500m"}, {"cpu": "1", "memory": "1Gi"})], qos.BURSTABLE),
    ([container(limits={"cpu": "1"})], qos.BURSTABLE),
    ([container({"memory": "1Gi"})], qos.BURSTABLE),
    ([container(limits={"cpu": "1", "memory": "1Gi"}), container()], qos.BURSTABLE),
    ([container({"ephemeral-storage": "1Gi"})], qos.BEST_EFFORT),
    ([container({"cpu": "0"})], qos.BEST_EFFORT),
], ids=["nothing", "limits-only", "equal", "equal-other-units", "request-below-limit", "cpu-limit-only",
        "memory-request", "one-of-two", "storage-only", "zero"])
def test_qos_class(containers: list[t.Container], want: str) -> None:
    assert qos.qos_class(t.PodSpec(containers=containers)) == want


def test_create_sets_qos_class() -> None:
    pod = t.Pod(metadata=t.ObjectMeta(name="p"))
    pod.spec.containers.append(container(limits={"cpu": "1", "memory": "64Mi"}))
    strategy.prepare_create(pod, now=1.0, uid="u")
    assert pod.status.qos_class == "Guaranteed"


def downward_pod() -> t.Pod:
    pod = t.Pod(metadata=t.ObjectMeta(name="web-1", namespace="shop", uid="u-1",
                                      labels={"app": "web", "tier": "front"}, annotations={"note": 'say "hi"'}))
    pod.spec.node_name, pod.spec.service_account_name = "n1", "builder"
    pod.status.pod_ip, pod.status.host_ip = "10.244.1.5", "10.77.0.11"
    return pod


@pytest.mark.parametrize(("path", "want"), [
    ("metadata.name", "web-1"), ("metadata.namespace", "shop"), ("metadata.uid", "u-1"),
    ("metadata.labels['app']", "web"), ("metadata.labels['missing']", ""),
    ("metadata.annotations['note']", 'say "hi"'),
    ("metadata.labels", 'app="web"\ntier="front"'), ("metadata.annotations", 'note="say \\"hi\\""'),
    ("spec.nodeName", "n1"), ("spec.serviceAccountName", "builder"),
    ("status.podIP", "10.244.1.5"), ("status.hostIP", "10.77.0.11"),
], ids=lambda v: str(v)[:30])
def test_downward_field_values(path: str, want: str) -> None:
    assert downward.field_value(downward_pod(), path) == want


@pytest.mark.parametrize(("path", "volume", "ok"), [
    ("metadata.name", False, True), ("metadata.labels", False, False), ("metadata.labels", True, True),
    ("status.podIP", True, False), ("status.podIP", False, True), ("spec.hostname", False, False),
    ("metadata.annotations['a.b/c']", True, True),
], ids=["name-env", "labels-env", "labels-volume", "podip-volume", "podip-env", "unsupported", "subscript"])
def test_downward_field_paths(path: str, volume: bool, ok: bool) -> None:
    assert (downward.check_field_path(path, volume=volume) is None) is ok


@pytest.mark.parametrize(("resource", "divisor", "want"), [
    ("limits.memory", "", "67108864"), ("limits.memory", "1Mi", "64"), ("limits.cpu", "", "1"),
    ("limits.cpu", "1m", "500"), ("requests.cpu", "1m", "250"), ("requests.memory", "1Mi", "0"),
    ("limits.ephemeral-storage", "1Gi", "8"),
], ids=["mem-bytes", "mem-mi", "cpu-rounds-up", "cpu-millis", "request", "unset-request", "unset-limit-node"])
def test_downward_resource_values(resource: str, divisor: str, want: str) -> None:
    c = container({"cpu": "250m"}, {"cpu": "500m", "memory": "64Mi"})
    assert downward.resource_value(c, resource, divisor, {"ephemeral-storage": "8Gi"}) == want


@pytest.mark.parametrize(("objs", "header", "row"), [
    ([cm({"a": "1"}, binary={"b": b"2"})], ["NAME", "DATA", "AGE"], ["cfg", "2", "10s"]),
    ([secret({"tls.crt": b"c", "tls.key": b"k"}, type_="kubernetes.io/tls")], ["NAME", "TYPE", "DATA", "AGE"],
     ["s", "kubernetes.io/tls", "2", "10s"]),
    ([t.ServiceAccount(metadata=t.ObjectMeta(name="default"))], ["NAME", "SECRETS", "AGE"], ["default", "0", "10s"]),
], ids=["configmap", "secret", "serviceaccount"])
def test_cli_columns(objs: list[t.ConfigMap], header: list[str], row: list[str]) -> None:
    for o in objs:
        o.metadata.creation_timestamp.seconds = 90
    got_header, rows = printers.rows(kinds.of_message(objs[0]), objs, now=100.0)
    assert (got_header, rows) == (header, [row])


@pytest.mark.parametrize(("alias", "kind"), [("cm", "ConfigMap"), ("secrets", "Secret"), ("sa", "ServiceAccount"),
                                             ("configmap", "ConfigMap")], ids=["cm", "secrets", "sa", "configmap"])
def test_cli_aliases(alias: str, kind: str) -> None:
    found = kinds.by_alias(alias)
    assert found is not None and found.kind == kind
