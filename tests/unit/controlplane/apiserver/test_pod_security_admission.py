"""Pod Security Admission in the registry (controlplane/apiserver/registry.py `_pod_security`):
pods refused with Kubernetes' message, workload templates only warned about, the namespace labels
and kube-system deciding, invalid labels refused; and the warnings reaching an HTTP client as
`Warning: 299` headers (what kubectl prints)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from controlplane.apiserver import warnings
from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.inprocess import InProcessApi, Options
from controlplane.apiserver.rest import http
from skiff import errors
from skiff.convert import from_data
from skiffpb.api.v1 import types_pb2 as t

OPTIONS = Options(compaction_interval=0.0, watch_cache_size=64, bookmark_interval=0.2)
ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"


def hostnet_pod(name: str = "x", namespace: str = "default") -> t.Pod:
    return from_data({"metadata": {"name": name, "namespace": namespace},
                      "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "i"}]}}, t.Pod)


def deployment(namespace: str, *, host_path: bool) -> t.Deployment:
    spec: dict[str, object] = {"containers": [{"name": "c", "image": "i"}]}
    if host_path:
        spec["volumes"] = [{"name": "h", "hostPath": {"path": "/var/log"}}]
    return from_data({"metadata": {"name": "d", "namespace": namespace},
                      "spec": {"selector": {"matchLabels": {"a": "b"}},
                               "template": {"metadata": {"labels": {"a": "b"}}, "spec": spec}}}, t.Deployment)


@pytest.fixture
async def api() -> AsyncIterator[InProcessApi]:
    async with InProcessApi(options=OPTIONS) as inproc:
        yield inproc


async def namespace(api: InProcessApi, name: str, labels: dict[str, str]) -> None:
    await api.create(t.Namespace(metadata=t.ObjectMeta(name=name, labels=labels)))


async def test_a_baseline_namespace_refuses_host_network(api: InProcessApi) -> None:
    with pytest.raises(errors.ForbiddenError) as refused:
        await api.create(hostnet_pod())
    assert str(refused.value) == ('pods "x" is forbidden: violates PodSecurity "baseline:latest": '
                                  "host namespaces (hostNetwork=true)")
    assert api.objects(t.Pod) == []


@pytest.mark.parametrize(("ns", "labels", "allowed"), [
    ("open", {ENFORCE: "privileged"}, True),
    ("kube-system", {}, True),
    ("strict", {ENFORCE: "restricted"}, False),
    ("plain", {}, False),
], ids=["labelled-privileged", "kube-system", "restricted", "unlabelled-is-baseline"])
async def test_namespace_level_decides(api: InProcessApi, ns: str, labels: dict[str, str], allowed: bool) -> None:
    if ns != "kube-system":
        await namespace(api, ns, labels)
    if allowed:
        assert (await api.create(hostnet_pod(namespace=ns))).spec.host_network
    else:
        with pytest.raises(errors.ForbiddenError, match="violates PodSecurity"):
            await api.create(hostnet_pod(namespace=ns))


async def test_restricted_refuses_a_plain_pod_with_every_reason(api: InProcessApi) -> None:
    await namespace(api, "strict", {ENFORCE: "restricted", f"{ENFORCE}-version": "v1.30"})
    pod = from_data({"metadata": {"name": "plain", "namespace": "strict"},
                     "spec": {"containers": [{"name": "c", "image": "i"}]}}, t.Pod)
    with pytest.raises(errors.ForbiddenError) as refused:
        await api.create(pod)
    assert str(refused.value) == (
        'pods "plain" is forbidden: violates PodSecurity "restricted:v1.30": allowPrivilegeEscalation != false '
        '(container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities '
        '(container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or '
        'container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must '
        'set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')


async def test_workload_templates_are_warned_about_not_refused(api: InProcessApi) -> None:
    with warnings.collecting() as collected:
        created = await api.create(deployment("default", host_path=True))
    assert created.metadata.name == "d"
    assert collected == ['would violate PodSecurity "baseline:latest": hostPath volumes (volume "h")']
    with warnings.collecting() as collected:
        created.spec.replicas = 3  # the template did not change: no new warning
        updated = await api.update(created)
    assert collected == []
    with warnings.collecting() as collected:
        updated.spec.template.spec.host_network = True
        await api.update(updated)
    assert collected == ['would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true), '
                         'hostPath volumes (volume "h")']


async def test_a_privileged_namespace_is_quiet_and_warn_can_be_stricter(api: InProcessApi) -> None:
    await namespace(api, "open", {ENFORCE: "privileged"})
    await namespace(api, "watched", {ENFORCE: "privileged", WARN: "baseline"})
    with warnings.collecting() as collected:
        await api.create(deployment("open", host_path=True))
        await api.create(hostnet_pod(namespace="watched"))
    assert collected == ['would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)']


@pytest.mark.parametrize(("labels", "field"), [
    ({ENFORCE: "strict"}, f"metadata.labels[{ENFORCE}]"),
    ({f"{WARN}-version": "latest-ish"}, f"metadata.labels[{WARN}-version]"),
], ids=["level", "version"])
async def test_invalid_namespace_labels_are_refused(api: InProcessApi, labels: dict[str, str], field: str) -> None:
    with pytest.raises(errors.InvalidError, match=field.replace("[", r"\[").replace("]", r"\]")):
        await namespace(api, "bad", labels)


async def test_warnings_reach_http_clients_as_warning_headers(api: InProcessApi) -> None:
    runner, port = await http.start(api.registry, Forwarder(api.registry), "127.0.0.1:0")
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"hostPID": True, "containers": [{"name": "c", "image": "i"}]}}}}
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/apis/apps/v1/namespaces/default/deployments"
            async with session.post(url, json=body) as r:
                assert r.status == 201
                assert r.headers.getall("Warning") == [
                    '299 - "would violate PodSecurity \\"baseline:latest\\": host namespaces (hostPID=true)"']
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"hostPID": True, "containers": [{"name": "c", "image": "i"}]}}
            async with session.post(f"http://127.0.0.1:{port}/api/v1/namespaces/default/pods", json=pod) as r:
                status = await r.json()
                assert (r.status, status["reason"]) == (403, "Forbidden")
                assert status["message"] == ('pods "p" is forbidden: violates PodSecurity "baseline:latest": '
                                             "host namespaces (hostPID=true)")
    finally:
        await runner.cleanup()
