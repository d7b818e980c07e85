"""`skiff get pvc,pv,sc` columns and the pod STATUS of initializing pods, as kubectl prints them."""

from __future__ import annotations

from typing import Any

import pytest

from skiff import kinds, storage
from skiff.cli import printers
from skiff.clock import stamp
from skiffpb.api.v1 import types_pb2 as t

NOW = 1_700_000_000.0


def _meta(obj: Any, name: str, age: float = 65) -> Any:
    obj.metadata.name = name
    stamp(obj.metadata.creation_timestamp, NOW - age)
    return obj


def init_pod(*init_states: t.ContainerState, sidecar: bool = False) -> t.Pod:
    p = _meta(t.Pod(), "p")
    for i, state in enumerate(init_states):
        c = p.spec.init_containers.add(name=f"i{i}", image="busybox")
        if sidecar and i == 0:
            c.restart_policy = "Always"
        p.status.init_container_statuses.add(name=f"i{i}", state=state, restart_count=i)
    p.spec.containers.add(name="app", image="busybox")
    p.status.container_statuses.add(name="app", state=t.ContainerState(
        waiting=t.ContainerStateWaiting(reason="PodInitializing")))
    p.status.phase = "Pending"
    return p


WAIT_INIT = t.ContainerState(waiting=t.ContainerStateWaiting(reason="PodInitializing"))
RUNNING = t.ContainerState(running=t.ContainerStateRunning())
DONE = t.ContainerState(terminated=t.ContainerStateTerminated(exit_code=0, reason="Completed"))
FAILED = t.ContainerState(terminated=t.ContainerStateTerminated(exit_code=1, reason="Error"))
KILLED = t.ContainerState(terminated=t.ContainerStateTerminated(exit_code=137, signal=9))
BACKOFF = t.ContainerState(waiting=t.ContainerStateWaiting(reason="CrashLoopBackOff"))


@pytest.mark.parametrize(("pod", "status", "ready"), [
    (init_pod(WAIT_INIT, WAIT_INIT), "Init:0/2", "0/1"),
    (init_pod(DONE, RUNNING), "Init:1/2", "0/1"),
    (init_pod(FAILED, WAIT_INIT), "Init:Error", "0/1"),
    (init_pod(BACKOFF, WAIT_INIT), "Init:CrashLoopBackOff", "0/1"),
    (init_pod(DONE, DONE), "PodInitializing", "0/1"),
    (init_pod(RUNNING, WAIT_INIT, sidecar=True), "Init:0/2", "0/2"),
], ids=["waiting", "second-running", "failed", "crash-loop", "all-done", "sidecar-not-started"])
def test_pod_status_while_initializing(pod: t.Pod, status: str, ready: str) -> None:
    _, [row] = printers.rows(kinds.by_kind("Pod"), [pod], now=NOW)  # type: ignore[arg-type]
    assert (row[1], row[2]) == (ready, status)


def test_sidecar_started_counts_as_ready_and_restarts_add_up() -> None:
    p = init_pod(RUNNING, DONE, sidecar=True)
    p.status.init_container_statuses[0].started = True
    p.status.init_container_statuses[0].ready = True
    p.status.container_statuses[0].state.CopyFrom(RUNNING)
    p.status.container_statuses[0].ready = True
    p.status.container_statuses[0].restart_count = 2
    p.status.phase = "Running"
    _, [row] = printers.rows(kinds.by_kind("Pod"), [p], now=NOW)  # type: ignore[arg-type]
    assert row[1:4] == ["2/2", "Running", "3"]


def test_signal_without_reason() -> None:
    _, [row] = printers.rows(kinds.by_kind("Pod"), [init_pod(KILLED)], now=NOW)  # type: ignore[arg-type]
    assert row[2] == "Init:Signal:9"


def test_storage_columns() -> None:
    sc = _meta(storage.default_storage_class(), "local-path")
    header, [row] = printers.rows(kinds.by_kind("StorageClass"), [sc], now=NOW)  # type: ignore[arg-type]
    assert header == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"]
    assert row == ["local-path (default)", "skiff.io/local-path", "Delete", "WaitForFirstConsumer", "false", "65s"]

    pv = _meta(t.PersistentVolume(), "pvc-1")
    pv.spec.capacity["storage"] = "1Gi"
    pv.spec.access_modes.extend(["ReadWriteOnce", "ReadOnlyMany"])
    pv.spec.persistent_volume_reclaim_policy = "Delete"
    pv.spec.claim_ref.namespace, pv.spec.claim_ref.name = "default", "data"
    pv.spec.storage_class_name = "local-path"
    pv.status.phase = "Bound"
    header, [row] = printers.rows(kinds.by_kind("PersistentVolume"), [pv], now=NOW)  # type: ignore[arg-type]
    assert header == ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS",
                      "VOLUMEATTRIBUTESCLASS", "REASON", "AGE"]
    assert row == ["pvc-1", "1Gi", "RWO,ROX", "Delete", "Bound", "default/data", "local-path", "<unset>", "", "65s"]

    pvc = _meta(t.PersistentVolumeClaim(), "data")
    pvc.spec.storage_class_name = "local-path"
    pvc.spec.volume_name = "pvc-1"
    pvc.status.phase = "Bound"
    pvc.status.capacity["storage"] = "1Gi"
    pvc.status.access_modes.append("ReadWriteOnce")
    header, [row] = printers.rows(kinds.by_kind("PersistentVolumeClaim"), [pvc], now=NOW,  # type: ignore[arg-type]
                                  wide=True)
    assert header[-1] == "VOLUMEMODE"
    assert row == ["data", "Bound", "pvc-1", "1Gi", "RWO", "local-path", "<unset>", "65s", "Filesystem"]


def test_describe_pod_shows_init_containers_and_claims() -> None:
    from skiff.cli.describe import render

    p = init_pod(DONE, RUNNING)
    p.metadata.namespace = "default"
    p.spec.volumes.add(name="data").persistent_volume_claim.claim_name = "data-db-0"
    text = render(p, [], now=NOW)
    assert text.index("Init Containers:\n  i0:") < text.index("Containers:\n  app:")
    assert "Type:       PersistentVolumeClaim" in text and "ClaimName:  data-db-0" in text
