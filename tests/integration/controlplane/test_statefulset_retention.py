"""StatefulSet persistentVolumeClaimRetentionPolicy against a real api-server process and the real
controller manager (statefulset, garbage collector, persistent volume controllers): with Delete,
a scaled-away ordinal's claim goes with its pod and the rest go with the set; with Retain
(the default) every claim stays. The pods are never scheduled (no scheduler): unbound pods go at
once, which is all the claims' protection waits for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from deploy.loopback import control_plane
from skiff.client import Client
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from tests.support.cluster import start_controllers
from tests.support.prereq import require_binaries

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_binaries("etcd")
    work = Path(tmp_path_factory.mktemp("retention"))
    with control_plane(work) as cp:
        cm = start_controllers(work, cp.apiserver_endpoints,
                               extra=["--controllers", "statefulset,garbagecollector,persistentvolume"])
        try:
            yield cp.apiserver_endpoints
        finally:
            cm.stop()


@pytest.fixture
async def client(api: str) -> AsyncIterator[Client]:
    async with Client(api) as c:
        yield c


def stateful_set(name: str, *, when_deleted: str, when_scaled: str) -> t.StatefulSet:
    s = t.StatefulSet(metadata=t.ObjectMeta(name=name, namespace="default"))
    s.spec.replicas = 2
    s.spec.service_name = name
    s.spec.pod_management_policy = "Parallel"
    s.spec.selector.match_labels["app"] = name
    s.spec.template.metadata.labels["app"] = name
    c = s.spec.template.spec.containers.add(name="c", image="skiff/web:1.0")
    c.volume_mounts.add(name="data", mount_path="/data")
    tmpl = s.spec.volume_claim_templates.add()
    tmpl.metadata.name = "data"
    tmpl.spec.access_modes.append("ReadWriteOnce")
    tmpl.spec.resources.requests["storage"] = "1Gi"
    s.spec.persistent_volume_claim_retention_policy.when_deleted = when_deleted
    s.spec.persistent_volume_claim_retention_policy.when_scaled = when_scaled
    return s


async def claims(client: Client, app: str) -> list[str]:
    return sorted(c.metadata.name for c in (await client.list(t.PersistentVolumeClaim, namespace="default")).items
                  if c.metadata.name.startswith(f"data-{app}-"))


@pytest.mark.parametrize(("policy", "after_scale_down", "after_delete"), [
    (("Delete", "Delete"), ["data-gone-0"], []),
    (("Retain", "Retain"), ["data-kept-0", "data-kept-1"], ["data-kept-0", "data-kept-1"]),
], ids=["delete", "retain"])
async def test_claims_follow_the_retention_policy(client: Client, policy: tuple[str, str],
                                                  after_scale_down: list[str], after_delete: list[str]) -> None:
    name = "gone" if policy[0] == "Delete" else "kept"
    await client.create(stateful_set(name, when_deleted=policy[0], when_scaled=policy[1]))

    async def both() -> bool:
        return await claims(client, name) == [f"data-{name}-0", f"data-{name}-1"]

    await eventually(both, timeout=30, what=f"claims of {name}")

    async def pods() -> list[str]:
        return sorted(p.metadata.name for p in (await client.list(t.Pod, namespace="default",
                                                                   label_selector=f"app={name}")).items)

    await eventually(lambda: pods(), timeout=30, what=f"pods of {name}")
    sts = await client.get(t.StatefulSet, name, "default")
    sts.spec.replicas = 1
    await client.update(sts)

    async def scaled() -> bool:
        return await pods() == [f"{name}-0"] and await claims(client, name) == after_scale_down

    await eventually(scaled, timeout=30, what=f"{name} scaled to 1 with claims {after_scale_down}")
    await client.delete(t.StatefulSet, name, "default")

    async def deleted() -> bool:
        return await pods() == [] and await claims(client, name) == after_delete

    await eventually(deleted, timeout=30, what=f"{name} deleted, claims {after_delete}")
