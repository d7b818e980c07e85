"""End to end: persistent storage, init containers and pod limits on a network-namespace lab
(1 control-plane host, 2 workers) with real containers.

- the fresh cluster has the default StorageClass `local-path`;
- examples/storage/: a StatefulSet with a volumeClaimTemplate writes a file into its
  provisioned volume; its pod is deleted; the replacement lands on the same node and finds the
  file; a scale-down keeps the claim; deleting the claim (reclaimPolicy Delete) removes the
  directory on the node and the PersistentVolume; a standalone claim gets the default class;
- examples/init-containers/: init containers in order, then a native sidecar beside the app;
  a failing init container with restartPolicy Never fails the pod (Init:Error);
- activeDeadlineSeconds fails a running pod with DeadlineExceeded; an emptyDir over its
  sizeLimit gets its pod Evicted; a `medium: Memory` one is a tmpfs that refuses more.

The lab's hosts share this machine's filesystem, so the test reads a volume's directory
directly (its path is the PersistentVolume's spec.local.path, under the node's state dir).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deploy import netplan
from deploy.lab import Lab, LabSpec
from skiff import errors, manifests, storage
from skiff.cli import printers
from skiff.client import Client
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from tests.support import labs

pytestmark = pytest.mark.e2e

T = TypeVar("T")
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WEB1 = "skiff/web:1.0"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    prefix = f"v{os.getpid() % 10000}"
    spec = LabSpec(prefix=prefix, workers=2, lan_cidr=netplan.free_lan(range(150, 200), 2), min_sync_period="0s")
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        yield the_lab


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def apply(client: Client, path: Path) -> list[Any]:
    return [await client.create(item.obj) for item in manifests.load([str(path)])]


def ready(pod: t.Pod) -> bool:
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True"
                                                 for c in pod.status.conditions)


async def running_pod(client: Client, name: str, *, uid_not: str = "", timeout: float = 120) -> t.Pod:
    async def check() -> t.Pod | None:
        pod = await client.get(t.Pod, name, "default")
        return pod if ready(pod) and pod.metadata.uid != uid_not else None

    return await eventually(check, timeout=timeout, what=f"pod {name} Running and Ready")


async def phase(client: Client, name: str, want: str, *, timeout: float = 90) -> t.Pod:
    async def check() -> t.Pod | None:
        pod = await client.get(t.Pod, name, "default")
        return pod if pod.status.phase == want else None

    return await eventually(check, timeout=timeout, what=f"pod {name} {want}")


def pod(name: str, command: str, *, policy: str = "Never") -> t.Pod:
    p = t.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, "default"
    p.spec.restart_policy = policy
    p.spec.termination_grace_period_seconds = 1
    p.spec.containers.add(name="c", image=WEB1, image_pull_policy="IfNotPresent", command=["/bin/sh", "-c", command])
    return p


def test_default_storage_class(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            async def default() -> t.StorageClass | None:
                return storage.default_class((await client.list(t.StorageClass)).items)

            sc = await eventually(default, timeout=30, what="default StorageClass")
            assert (sc.metadata.name, sc.provisioner) == ("local-path", storage.LOCAL_PATH_PROVISIONER)
            assert storage.binding_mode(sc) == "WaitForFirstConsumer"

    run(scenario())


def test_statefulset_keeps_its_data_on_the_same_node_and_delete_reclaims_it(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            await apply(client, EXAMPLES / "storage" / "statefulset.yaml")
            first = await running_pod(client, "notes-0")
            pvc = await client.get(t.PersistentVolumeClaim, "data-notes-0", "default")
            assert (pvc.status.phase, storage.claim_class(pvc)) == ("Bound", "local-path")
            pv = await client.get(t.PersistentVolume, pvc.spec.volume_name)
            assert storage.volume_node(pv) == first.spec.node_name
            path = Path(pv.spec.local.path)
            assert f"/{first.spec.node_name}/" in str(path), "the volume lives in its node's state dir"
            written = (path / "first").read_text()
            assert written == "written by notes-0\n"

            # The pod goes; the replacement is scheduled where the data is and finds it.
            await client.delete(t.Pod, "notes-0", "default")
            second = await running_pod(client, "notes-0", uid_not=first.metadata.uid)
            assert second.spec.node_name == first.spec.node_name
            assert (path / "first").read_text() == written

            async def seen() -> bool:
                return (path / "log").exists() and "seen by notes-0" in (path / "log").read_text()

            await eventually(seen, timeout=30, what="the replacement saw the file")

            # Scale to 0: the claim (and the data) stay.
            sts = await client.get(t.StatefulSet, "notes", "default")
            sts.spec.replicas = 0
            await client.update(sts)

            async def gone() -> bool:
                try:
                    await client.get(t.Pod, "notes-0", "default")
                except errors.NotFoundError:
                    return True
                return False

            await eventually(gone, timeout=60, what="notes-0 gone after scale to 0")
            assert (await client.get(t.PersistentVolumeClaim, "data-notes-0", "default")).status.phase == "Bound"
            assert path.is_dir()

            # Delete the claim: the volume is Released, the node agent removes the directory and the PV.
            await client.delete(t.PersistentVolumeClaim, "data-notes-0", "default")

            async def reclaimed() -> bool:
                try:
                    await client.get(t.PersistentVolume, pv.metadata.name)
                except errors.NotFoundError:
                    return not path.exists()
                return False

            await eventually(reclaimed, timeout=60, what="volume reclaimed (directory and PV gone)")

    run(scenario())


def test_standalone_claim_gets_the_default_class(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            await apply(client, EXAMPLES / "storage" / "claim.yaml")
            p = await running_pod(client, "scratch")
            pvc = await client.get(t.PersistentVolumeClaim, "scratch", "default")
            assert storage.claim_class(pvc) == "local-path" and pvc.status.phase == "Bound"
            pv = await client.get(t.PersistentVolume, pvc.spec.volume_name)
            assert storage.volume_node(pv) == p.spec.node_name

            async def hello() -> bool:
                return (Path(pv.spec.local.path) / "hello").exists()

            await eventually(hello, timeout=30, what="the pod wrote into its volume")
            # In use: a delete waits for the pod (pvc-protection), and the data stays meanwhile.
            await client.delete(t.PersistentVolumeClaim, "scratch", "default")
            await asyncio.sleep(2)
            still = await client.get(t.PersistentVolumeClaim, "scratch", "default")
            assert still.metadata.HasField("deletion_timestamp") and Path(pv.spec.local.path).is_dir()
            await client.delete(t.Pod, "scratch", "default")

            async def reclaimed() -> bool:
                try:
                    await client.get(t.PersistentVolume, pv.metadata.name)
                except errors.NotFoundError:
                    return not Path(pv.spec.local.path).exists()
                return False

            await eventually(reclaimed, timeout=90, what="claim and volume gone once the pod is")

    run(scenario())


def test_init_containers_in_order_then_sidecar_and_app(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            await apply(client, EXAMPLES / "init-containers")
            p = await running_pod(client, "init-demo")
            fetch, check, shipper = p.status.init_container_statuses
            assert fetch.state.terminated.exit_code == 0 and check.state.terminated.exit_code == 0
            assert fetch.state.terminated.finished_at.ToNanoseconds() <= \
                check.state.terminated.started_at.ToNanoseconds(), "check ran after fetch"
            assert shipper.state.HasField("running") and shipper.started
            app = p.status.container_statuses[0]
            assert app.state.running.started_at.ToNanoseconds() >= check.state.terminated.finished_at.ToNanoseconds()
            assert {c.type: c.status for c in p.status.conditions}["Initialized"] == "True"
            status, ready_count, total, _ = printers.pod_status(p)
            assert (status, ready_count, total) == ("Running", 2, 2)

    run(scenario())


def test_failing_init_container_fails_the_pod(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            p = pod("init-fails", "echo never")
            p.spec.init_containers.add(name="broken", image=WEB1, image_pull_policy="IfNotPresent",
                                       command=["/bin/sh", "-c", "exit 3"])
            await client.create(p)
            failed = await phase(client, "init-fails", "Failed")
            assert failed.status.init_container_statuses[0].state.terminated.exit_code == 3
            assert printers.pod_status(failed)[0] == "Init:Error"
            assert not any(cs.state.HasField("running") or cs.state.HasField("terminated")
                           for cs in failed.status.container_statuses), "the app container never ran"

    run(scenario())


def test_active_deadline_fails_a_running_pod(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            p = pod("deadline", "exec sleep 600")
            p.spec.active_deadline_seconds = 5
            await client.create(p)
            failed = await phase(client, "deadline", "Failed", timeout=90)
            assert failed.status.reason == "DeadlineExceeded"
            assert failed.status.container_statuses[0].state.HasField("terminated")

    run(scenario())


def test_empty_dir_size_limits(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            disk = pod("fills-disk", "dd if=/dev/zero of=/cache/blob bs=1024 count=3072; exec sleep 600")
            disk.spec.volumes.add(name="cache").empty_dir.size_limit = "1Mi"
            disk.spec.containers[0].volume_mounts.add(name="cache", mount_path="/cache")
            ram = pod("fills-ram", "dd if=/dev/zero of=/ram/blob bs=1024 count=3072")
            v = ram.spec.volumes.add(name="ram")
            v.empty_dir.medium, v.empty_dir.size_limit = "Memory", "1Mi"
            ram.spec.containers[0].volume_mounts.add(name="ram", mount_path="/ram")
            await client.create(disk)
            await client.create(ram)
            evicted = await phase(client, "fills-disk", "Failed", timeout=90)
            assert evicted.status.reason == "Evicted"
            assert 'Usage of EmptyDir volume "cache" exceeds the limit "1Mi"' in evicted.status.message
            full = await phase(client, "fills-ram", "Failed", timeout=90)
            assert full.status.container_statuses[0].state.terminated.exit_code != 0, "the tmpfs refused 3 MiB"

    run(scenario())
