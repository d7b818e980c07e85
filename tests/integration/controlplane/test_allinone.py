"""`python -m controlplane` as a control-plane host runs it: a store member (or an external etcd
through --store-endpoints), an api-server, controllers and scheduler under one supervisor, plus
one simulated node."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from deploy.loopback import Process, free_port, start_etcd, wait_serving
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t
from tests.support.cluster import start_fake_node
from tests.support.prereq import require_binaries

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["skiff-store", "external-etcd"])
async def test_all_in_one_runs_a_deployment(tmp_path: Path, store: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "controlplane", "--listen", f"127.0.0.1:{port}", "--node-name", "cp1"]
    etcd = None
    if store == "external-etcd":
        require_binaries("etcd")
        etcd = start_etcd(tmp_path)
        argv += ["--store-endpoints", etcd.endpoints]
    else:
        argv += ["--name", "s1", "--data-dir", str(tmp_path / "store"), "--insecure-no-password",
                 "--listen-client", f"127.0.0.1:{free_port()}", "--listen-peer", f"127.0.0.1:{free_port()}"]
    cp = Process("controlplane", argv, tmp_path / "controlplane.log", "127.0.0.1", port, ready=wait_serving)
    node = None
    try:
        cp.start(timeout=60)
        node = start_fake_node(tmp_path, cp.endpoint, "n1")
        client = Client(cp.endpoint)
        try:
            d = t.Deployment(api_version="apps/v1", kind="Deployment")
            d.metadata.name, d.metadata.namespace = "hello", "default"
            d.spec.replicas = 2
            d.spec.selector.match_labels["app"] = "hello"
            d.spec.template.metadata.labels["app"] = "hello"
            d.spec.template.spec.containers.add(name="c", image="img")
            await client.create(d)
            for _ in range(240):
                pods = (await client.list(t.Pod, namespace="default", label_selector="app=hello")).items
                if len(pods) == 2 and all(p.spec.node_name == "n1" and p.status.phase == "Running" for p in pods):
                    break
                await asyncio.sleep(0.25)
            else:
                raise AssertionError(f"no 2 running pods; log:\n{cp.log_tail(40)}")
            holders = {(await client.get(t.Lease, name, "kube-system")).spec.holder_identity
                       for name in ("skiff-controller-manager", "skiff-scheduler")}
            assert holders == {"cp1"}
        finally:
            await client.close()
    finally:
        if node is not None:
            node.stop()
        cp.stop(timeout=20)
        if etcd is not None:
            etcd.stop()
    assert cp.popen is not None and cp.popen.returncode == 0, cp.log_tail(20)
