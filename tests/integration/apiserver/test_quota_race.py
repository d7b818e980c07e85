"""ResourceQuota admission under concurrent creates: two api-servers (each a Registry with its own
Kubernetes REST endpoint) over one store, in-memory and a real etcd. Creates racing through
both may not together exceed the quota: exactly `hard` of them succeed, the others are 403
Forbidden naming the quota and the resource, and the quota's status.used counts the winners.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.rest import http
from controlplane.apiserver.storage import Store
from skiff import errors
from skiffpb.api.v1 import types_pb2 as t
from tests.integration.apiserver.conftest import make_registry
from tests.support.builders import pod

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"


def quota(**hard: str) -> t.ResourceQuota:
    return t.ResourceQuota(metadata=t.ObjectMeta(name="small", namespace="default"),
                           spec=t.ResourceQuotaSpec(hard=hard))


def pod_json(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "skiff/web:1.0"}]}}


@pytest.fixture
async def servers(store: Store) -> AsyncIterator[list[tuple[Registry, str]]]:
    """Two api-servers over `store`: (registry, base URL of its REST API)."""
    out: list[tuple[Registry, str]] = []
    runners = []
    try:
        for _ in range(2):
            registry = await make_registry(store)
            runner, port = await http.start(registry, Forwarder(registry), "127.0.0.1:0")
            runners.append(runner)
            out.append((registry, f"http://127.0.0.1:{port}"))
        yield out
    finally:
        for runner in runners:
            await runner.cleanup()
        for registry, _ in out:
            await registry.stop()


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json()


@pytest.mark.parametrize(("creates", "hard"), [(12, 5), (6, 1)], ids=["12-for-5", "6-for-1"])
async def test_concurrent_creates_never_exceed_the_quota(servers: list[tuple[Registry, str]], creates: int,
                                                        hard: int) -> None:
    first, _ = servers[0]
    await first.create(quota(pods=str(hard)))
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(post(session, servers[i % 2][1] + PODS, pod_json(f"p{i}"))
                                         for i in range(creates)))
    codes = sorted(code for code, _ in answers)
    assert codes == [201] * hard + [403] * (creates - hard), answers
    for code, body in answers:
        if code == 403:
            assert body["reason"] == "Forbidden"
            assert "is forbidden: exceeded quota: small, requested: pods=1, used: pods=" in body["message"]
            assert body["message"].endswith(f"limited: pods={hard}"), body["message"]
    for registry, _ in servers:
        items, _, _ = await registry.list("pods", namespace="default")
        assert len(items) == hard
    stored = await first.get("resourcequotas", "default", "small")
    assert isinstance(stored, t.ResourceQuota)
    assert (dict(stored.status.hard), dict(stored.status.used)) == ({"pods": str(hard)}, {"pods": str(hard)})


async def test_a_refused_create_charges_nothing_and_a_delete_makes_room(servers: list[tuple[Registry, str]]) -> None:
    """The charge is written with the create, so only creates that happen count; usage is counted
    again from the namespace's objects at each create, so a deleted pod's room is free at once."""
    (first, _), (second, _) = servers
    await first.create(quota(pods="1", **{"count/configmaps": "1"}))
    await first.create(pod("a"))
    with pytest.raises(errors.ForbiddenError, match="exceeded quota: small, requested: pods=1, used: pods=1"):
        await second.create(pod("b"))
    stored = await second.get("resourcequotas", "default", "small")
    assert dict(stored.status.used) == {"pods": "1"}  # type: ignore[attr-defined]
    await first.create(t.ConfigMap(metadata=t.ObjectMeta(name="c", namespace="default")))
    stored = await second.get("resourcequotas", "default", "small")
    assert dict(stored.status.used) == {"pods": "1", "count/configmaps": "1"}  # type: ignore[attr-defined]
    await first.delete("pods", "default", "a", grace_period=0)
    await second.create(pod("b"))


def claim(name: str, size: str) -> t.PersistentVolumeClaim:
    return t.PersistentVolumeClaim(
        metadata=t.ObjectMeta(name=name, namespace="default"),
        spec=t.PersistentVolumeClaimSpec(access_modes=["ReadWriteOnce"],
                                         resources=t.VolumeResourceRequirements(requests={"storage": size})))


def service(name: str) -> t.Service:
    return t.Service(metadata=t.ObjectMeta(name=name, namespace="default"),
                     spec=t.ServiceSpec(selector={"app": name}, ports=[t.ServicePort(port=80)]))


async def _racing_updates(servers: list[tuple[Registry, str]], resource: str, names: list[str],
                          change: Any) -> list[BaseException | None]:
    """Update every object at once, alternating between the api-servers; None for a success."""
    async def update(i: int, name: str) -> BaseException | None:
        registry = servers[i % 2][0]
        obj = await registry.get(resource, "default", name)
        change(obj)
        try:
            await registry.update(obj)
        except errors.ForbiddenError as exc:
            return exc
        return None

    return await asyncio.gather(*(update(i, n) for i, n in enumerate(names)))


async def test_concurrent_updates_that_raise_usage_never_exceed_the_quota(
        servers: list[tuple[Registry, str]]) -> None:
    """Quota admission on UPDATE (a claim's storage request grows, a Service becomes NodePort):
    checked and charged in the update's transaction, guarded by the quota's revision."""
    first, _ = servers[0]
    await first.create(quota(**{"requests.storage": "10Gi", "services.nodeports": "1"}))
    names = [f"c{i}" for i in range(4)]
    for name in names:
        await first.create(claim(name, "1Gi"))  # 4Gi used; each growing to 3Gi adds 2Gi: room for 3

    def grow(obj: Any) -> None:
        obj.spec.resources.requests["storage"] = "3Gi"

    results = await _racing_updates(servers, "persistentvolumeclaims", names, grow)
    refused = [r for r in results if r is not None]
    assert len(refused) == 1, results
    assert "exceeded quota: small, requested: requests.storage=2Gi, used: requests.storage=10Gi, " \
           "limited: requests.storage=10Gi" in str(refused[0])
    sizes = sorted(c.spec.resources.requests["storage"]  # type: ignore[attr-defined]
                   for c in (await first.list("persistentvolumeclaims", namespace="default"))[0])
    assert sizes == ["1Gi", "3Gi", "3Gi", "3Gi"]
    stored = await first.get("resourcequotas", "default", "small")
    assert stored.status.used["requests.storage"] == "10Gi"  # type: ignore[attr-defined]

    for name in ("s0", "s1", "s2"):
        await first.create(service(name))

    def node_port(obj: Any) -> None:
        obj.spec.type = "NodePort"

    results = await _racing_updates(servers, "services", ["s0", "s1", "s2"], node_port)
    assert sum(r is None for r in results) == 1, results
    assert all("exceeded quota: small, requested: services.nodeports=1, used: services.nodeports=1"
               in str(r) for r in results if r is not None)
    types = sorted(s.spec.type for s in (await first.list("services", namespace="default"))[0])  # type: ignore[attr-defined]
    assert types == ["ClusterIP", "ClusterIP", "NodePort"]
