"""Configuration on a whole network-namespace lab (real store, api-servers, controllers, scheduler,
node agents over containerd, each its own process with the daemon command lines of deploy/):
examples/configmap, examples/volumes and examples/quota applied through the api-server, the
controller manager's `default` ServiceAccount and ResourceQuota status, and a ConfigMap update
reaching the running pod through its volume."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from skiff import errors, manifests
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t
from tests.e2e import test_cluster as cluster
from tests.e2e.test_cluster import eventually, run

pytestmark = pytest.mark.e2e
T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
lab = cluster.lab  # this module's own lab


async def apply(client: Client, name: str, namespace: str) -> None:
    for item in manifests.load([str(EXAMPLES / name)]):
        await client.create(item.obj, namespace=namespace)


async def running(client: Client, name: str, namespace: str) -> t.Pod:
    async def check() -> t.Pod | None:
        pod = await client.get(t.Pod, name, namespace)
        return pod if pod.status.phase == "Running" else None

    return await eventually(check, timeout=60, what=f"pod {namespace}/{name} Running")


async def sh(client: Client, pod: t.Pod, script: str) -> str:
    result = await client.exec(pod.metadata.namespace, pod.metadata.name, ["sh", "-c", script])
    assert result.exit_code == 0, result.stderr
    return str(result.stdout.decode())


async def until(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    return await eventually(check, timeout=30, what=what)


def test_examples_through_the_cluster(lab: cluster.Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            # examples/volumes has a hostPath volume: its namespace must allow it (Pod Security).
            await client.create(t.Namespace(metadata=t.ObjectMeta(
                name="cfg", labels={"pod-security.kubernetes.io/enforce": "privileged"})))

            async def default_sa() -> t.ServiceAccount | None:
                try:
                    return await client.get(t.ServiceAccount, "default", "cfg")
                except errors.NotFoundError:
                    return None

            await until(default_sa, "the default ServiceAccount of a new namespace")
            await apply(client, "configmap", "cfg")
            await apply(client, "volumes", "cfg")
            pod = await running(client, "configured", "cfg")
            assert await sh(client, pod, "cat /tmp/greeting; echo $PASSWORD") == "hello from configured\ns3cr3t\n"
            cm = await client.get(t.ConfigMap, "app-config", "cfg")
            cm.data["greeting"] = "bonjour"
            await client.update(cm)

            async def updated() -> bool:
                return await sh(client, pod, "cat /etc/config/greeting") == "bonjour"

            await until(updated, "the ConfigMap update in the running pod")
            vol = await running(client, "volumes", "cfg")
            assert await sh(client, vol, "cat /etc/podinfo/memory-mi /etc/bundle/pod-name") == "32volumes"

            await client.create(t.Namespace(metadata=t.ObjectMeta(name="quota")))
            await apply(client, "quota", "quota")
            await running(client, "defaulted", "quota")

            async def quota_used() -> t.ResourceQuota | None:
                q = await client.get(t.ResourceQuota, "small", "quota")
                return q if dict(q.status.used) == {"pods": "1", "requests.cpu": "100m", "limits.memory": "64Mi"} \
                    else None

            await until(quota_used, "the quota's status.used")
            for name in ("second", "third"):
                pod = t.Pod(metadata=t.ObjectMeta(name=name))
                pod.spec.containers.add(name="app", image="skiff/web:1.0", image_pull_policy="IfNotPresent",
                                        command=["sh", "-c", "exec sleep 3600"])
                if name == "third":
                    with pytest.raises(errors.ForbiddenError, match="exceeded quota: small"):
                        await client.create(pod, namespace="quota")
                else:
                    await client.create(pod, namespace="quota")
            for ns in ("cfg", "quota"):
                await client.delete(t.Namespace, ns)

    run(scenario())
