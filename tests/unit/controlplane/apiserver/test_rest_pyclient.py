"""The official `kubernetes` Python client (PyPI) against the REST API in front of the real
registry (in-memory store): list, create, patch, read, watch, errors as ApiException."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client as k8s  # type: ignore[import-untyped]
from kubernetes import watch as k8s_watch  # type: ignore[import-untyped]

from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.inprocess import InProcessApi
from controlplane.apiserver.rest import http


@pytest.fixture
async def api_client() -> AsyncIterator[Any]:
    inproc = InProcessApi()
    await inproc.start()
    runner, port = await http.start(inproc.registry, Forwarder(inproc.registry), "127.0.0.1:0")
    config = k8s.Configuration()
    config.host = f"http://127.0.0.1:{port}"
    client = k8s.ApiClient(config)
    try:
        yield client
    finally:
        client.close()
        await runner.cleanup()
        await inproc.close()


def _deployment(name: str) -> Any:
    labels = {"app": name}
    container = k8s.V1Container(name="web", image="web:1", ports=[k8s.V1ContainerPort(container_port=80)])
    return k8s.V1Deployment(
        api_version="apps/v1", kind="Deployment", metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1DeploymentSpec(replicas=2, selector=k8s.V1LabelSelector(match_labels=labels),
                                  template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels),
                                                                 spec=k8s.V1PodSpec(containers=[container]))))


async def test_list_create_patch_read(api_client: Any) -> None:
    core, apps = k8s.CoreV1Api(api_client), k8s.AppsV1Api(api_client)
    namespaces = await asyncio.to_thread(core.list_namespace)
    assert "default" in {n.metadata.name for n in namespaces.items}
    created = await asyncio.to_thread(apps.create_namespaced_deployment, "default", _deployment("web"))
    assert created.spec.replicas == 2 and created.metadata.uid
    patched = await asyncio.to_thread(apps.patch_namespaced_deployment, "web", "default",
                                      {"spec": {"template": {"spec": {"containers": [{"name": "web",
                                                                                      "image": "web:2"}]}}}})
    assert patched.spec.template.spec.containers[0].image == "web:2"
    assert patched.spec.template.spec.containers[0].ports[0].container_port == 80  # merged by name, not replaced
    scale = await asyncio.to_thread(apps.patch_namespaced_deployment_scale, "web", "default",
                                    {"spec": {"replicas": 4}})
    assert scale.spec.replicas == 4
    read = await asyncio.to_thread(apps.read_namespaced_deployment, "web", "default")
    assert read.spec.replicas == 4 and read.metadata.creation_timestamp is not None
    with pytest.raises(k8s.ApiException) as info:
        await asyncio.to_thread(apps.read_namespaced_deployment, "nope", "default")
    assert info.value.status == 404
    with pytest.raises(k8s.ApiException) as info:
        await asyncio.to_thread(apps.create_namespaced_deployment, "default", _deployment("web"))
    assert info.value.status == 409


async def test_watch(api_client: Any) -> None:
    apps = k8s.AppsV1Api(api_client)
    events: list[tuple[str, str]] = []
    started = threading.Event()

    def run_watch() -> None:
        w = k8s_watch.Watch()
        started.set()
        for ev in w.stream(apps.list_namespaced_deployment, "default", timeout_seconds=5):
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) == 2:
                w.stop()

    watcher = asyncio.ensure_future(asyncio.to_thread(run_watch))
    await asyncio.to_thread(started.wait)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(apps.create_namespaced_deployment, "default", _deployment("a"))
    await asyncio.to_thread(apps.delete_namespaced_deployment, "a", "default")
    await asyncio.wait_for(watcher, 10)
    assert events == [("ADDED", "a"), ("DELETED", "a")]
