"""The container security context (nodeagent/security.py): pod and container merged as the kubelet
does, CRI's fields as containerd reads them (seccomp present even for RuntimeDefault), the
runAsNonRoot refusals; and the CRI subset's numbers checked against the descriptor compiled into
the containerd binary on this machine (containerd is the judge of the wire format)."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from nodeagent import podconfig
from nodeagent.security import Effective, container_security, effective, run_as_non_root_problem, sandbox_security
from skiff.convert import from_data
from skiffpb.cri.v1 import api_pb2 as cri
from tests.support.prereq import require


def pod(pod_sc: dict[str, Any] | None = None, sc: dict[str, Any] | None = None) -> Any:
    from skiffpb.api.v1 import types_pb2 as t

    container: dict[str, Any] = {"name": "c", "image": "img"}
    if sc is not None:
        container["securityContext"] = sc
    spec: dict[str, Any] = {"containers": [container]}
    if pod_sc is not None:
        spec["securityContext"] = pod_sc
    return from_data({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}, t.Pod)


@pytest.mark.parametrize(("pod_sc", "sc", "expected"), [
    (None, None, Effective()),
    ({"runAsUser": 1000, "runAsGroup": 2000, "runAsNonRoot": True}, None,
     Effective(run_as_user=1000, run_as_group=2000, run_as_non_root=True)),
    ({"runAsUser": 1000}, {"runAsUser": 0}, Effective(run_as_user=0)),
    ({"seccompProfile": {"type": "Unconfined"}}, None, Effective(seccomp_type="Unconfined")),
    ({"seccompProfile": {"type": "Unconfined"}},
     {"seccompProfile": {"type": "Localhost", "localhostProfile": "a.json"}},
     Effective(seccomp_type="Localhost", seccomp_localhost="a.json")),
    (None, {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}},
     Effective(no_new_privs=True, read_only_root_filesystem=True, add_capabilities=("NET_ADMIN",),
               drop_capabilities=("ALL",))),
    (None, {"allowPrivilegeEscalation": True}, Effective()),
    ({"supplementalGroups": [5, 6], "fsGroup": 7}, {"privileged": True},
     Effective(privileged=True, supplemental_groups=(5, 6, 7))),
], ids=["nothing-set-is-RuntimeDefault", "pod-level-users", "container-wins", "pod-seccomp",
        "container-seccomp-wins", "container-only-fields", "escalation-allowed-no-nnp", "groups-and-privileged"])
def test_effective(pod_sc: dict[str, Any] | None, sc: dict[str, Any] | None, expected: Effective) -> None:
    p = pod(pod_sc, sc)
    assert effective(p, p.spec.containers[0]) == expected


def test_cri_container_fields() -> None:
    p = pod({"runAsUser": 1000, "fsGroup": 3}, {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                 "capabilities": {"drop": ["NET_RAW"]}})
    cfg = podconfig.container_config(p, p.spec.containers[0], 0, seccomp_dir="/sec")
    sc = cfg.linux.security_context
    assert (sc.run_as_user.value, sc.HasField("run_as_group"), sc.readonly_rootfs, sc.no_new_privs) == (
        1000, False, True, True)
    assert (list(sc.capabilities.drop_capabilities), list(sc.supplemental_groups)) == (["NET_RAW"], [3])
    assert sc.namespace_options.pid == cri.CONTAINER and sc.namespace_options.network == cri.POD
    # RuntimeDefault is enum value 0: it must still be on the wire (field 15 present), else containerd
    # runs the container unconfined.
    assert sc.HasField("seccomp") and sc.seccomp.profile_type == cri.SecurityProfile.RuntimeDefault
    assert b"\x7a\x00" in sc.SerializeToString()  # field 15, wire type 2, length 0


@pytest.mark.parametrize(("kind", "ref", "expected"), [
    ("Unconfined", "", (cri.SecurityProfile.Unconfined, "")),
    ("Localhost", "profiles/audit.json", (cri.SecurityProfile.Localhost, "/sec/profiles/audit.json")),
    ("RuntimeDefault", "", (cri.SecurityProfile.RuntimeDefault, "")),
], ids=["unconfined", "localhost-under-the-agent-dir", "runtime-default"])
def test_seccomp_profiles(kind: str, ref: str, expected: tuple[int, str]) -> None:
    profile: dict[str, Any] = {"type": kind}
    if ref:
        profile["localhostProfile"] = ref
    p = pod(None, {"seccompProfile": profile})
    sc = container_security(effective(p, p.spec.containers[0]), "/sec")
    assert (sc.seccomp.profile_type, sc.seccomp.localhost_ref) == expected


def test_sandbox_is_privileged_when_a_container_is_and_shares_host_namespaces() -> None:
    p = pod({"supplementalGroups": [9]}, {"privileged": True})
    p.spec.host_pid = p.spec.host_ipc = True
    sb = sandbox_security(p, "/sec")
    assert (sb.privileged, list(sb.supplemental_groups), sb.HasField("seccomp")) == (True, [9], True)
    cfg = podconfig.sandbox_config(p, 0, podconfig.PodConfigSettings(pod_log_dir="/logs"))
    ns = cfg.linux.security_context.namespace_options
    assert (ns.pid, ns.ipc, ns.network, cfg.linux.security_context.privileged) == (cri.NODE, cri.NODE, cri.POD, True)


IMAGE_ROOT = cri.Image(id="i", uid=cri.Int64Value(value=0))
IMAGE_1000 = cri.Image(id="i", uid=cri.Int64Value(value=1000))
IMAGE_NAMED = cri.Image(id="i", username="nginx")
IMAGE_NO_USER = cri.Image(id="i")


@pytest.mark.parametrize(("pod_sc", "sc", "image", "problem"), [
    (None, None, IMAGE_ROOT, ""),
    ({"runAsNonRoot": True}, None, IMAGE_1000, ""),
    ({"runAsNonRoot": True}, None, IMAGE_ROOT, "container has runAsNonRoot and image will run as root"),
    ({"runAsNonRoot": True}, None, IMAGE_NO_USER, "container has runAsNonRoot and image will run as root"),
    ({"runAsNonRoot": True}, None, IMAGE_NAMED, "container has runAsNonRoot and image has non-numeric user (nginx)"),
    ({"runAsNonRoot": True}, {"runAsUser": 1000}, IMAGE_ROOT, ""),
    ({"runAsNonRoot": True, "runAsUser": 0}, None, IMAGE_1000, "container's runAsUser breaks non-root policy"),
    ({"runAsNonRoot": True}, {"runAsNonRoot": False}, IMAGE_ROOT, ""),
], ids=["not-asked", "image-uid-1000", "image-root", "image-without-user-is-root", "image-user-by-name",
        "runAsUser-overrides-image", "runAsUser-0", "container-says-false"])
def test_run_as_non_root(pod_sc: dict[str, Any] | None, sc: dict[str, Any] | None, image: cri.Image,
                         problem: str) -> None:
    p = pod(pod_sc, sc)
    found = run_as_non_root_problem(p, p.spec.containers[0], image)
    assert found.startswith(problem) and bool(found) == bool(problem)
    if problem:
        assert found.endswith('(pod: "ns/p", container: c)')


def _containerd_descriptor() -> descriptor_pb2.FileDescriptorProto | None:
    """runtime.v1's api.proto as compiled into containerd (gogo registers it gzipped)."""
    path = shutil.which("containerd")
    if path is None:
        return None
    data = Path(path).read_bytes()
    start = 0
    while True:
        at = data.find(b"\x1f\x8b\x08", start)
        if at < 0:
            return None
        start = at + 3
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[at:at + (1 << 20)])
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except Exception:  # most gzip magic bytes in a binary are not a descriptor
            continue
        if fd.package == "runtime.v1" and any(m.name == "LinuxContainerSecurityContext" for m in fd.message_type):
            return fd


def test_cri_subset_matches_containerd_field_for_field() -> None:
    upstream = _containerd_descriptor()
    require(upstream is not None, "needs the containerd binary (make setup installs it)")
    assert upstream is not None
    theirs = {m.name: m for m in upstream.message_type}
    ours = descriptor_pb2.FileDescriptorProto()
    cri.DESCRIPTOR.CopyToProto(ours)
    checked = 0
    for message in ours.message_type:
        assert message.name in theirs, f"{message.name} is not a runtime.v1 message"
        fields = {f.name: f for f in theirs[message.name].field}
        for f in message.field:
            assert f.name in fields, f"{message.name}.{f.name} is not in containerd's runtime.v1"
            assert (f.number, f.type, f.label) == (fields[f.name].number, fields[f.name].type, fields[f.name].label), (
                f"{message.name}.{f.name}")
            checked += 1
        for enum in message.enum_type:
            upstream_enum = {e.name: {v.name: v.number for v in e.value} for e in theirs[message.name].enum_type}
            assert {v.name: v.number for v in enum.value} == upstream_enum[enum.name]
    assert checked > 150


@pytest.mark.parametrize(("path", "headers", "problem"), [
    ("/healthz", [("X-Token", "abc")], ""),
    ("/ok\r\nX-Injected: 1", [], "must not contain spaces or control characters"),
    ("/ok HTTP/1.1", [], "must not contain spaces or control characters"),
    ("/", [("X-Token", "a\r\nHost: evil")], 'the value of header "X-Token" must not contain CR, LF'),
    ("/", [("X-Token\r\nEvil", "a")], "invalid HTTP header name"),
    ("/", [("X-Token", "a\tb")], ""),
], ids=["plain", "crlf-in-path", "space-in-path", "crlf-in-value", "crlf-in-name", "tab-is-fine"])
def test_probe_requests_refuse_injection(path: str, headers: list[tuple[str, str]], problem: str) -> None:
    """Even a pod that never passed validation (written to the store directly) cannot add request lines."""
    from nodeagent.probes import http_request
    from skiffpb.api.v1 import types_pb2 as t

    action = t.HTTPGetAction(path=path, http_headers=[t.HTTPHeader(name=n, value=v) for n, v in headers])
    if problem:
        with pytest.raises(ValueError, match="invalid HTTP probe: .*" + problem.split('"')[0]):
            http_request("10.0.0.1", 80, action)
    else:
        request = http_request("10.0.0.1", 80, action).decode()
        head, _, rest = request.partition("\r\n\r\n")
        assert rest == "" and head.startswith(f"GET {path} HTTP/1.0\r\n")
        assert len(head.split("\r\n")) == 4 + len(headers)
