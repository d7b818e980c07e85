"""`python -m controlplane` as a control-plane host runs it: a store member (or an external etcd
through --store-endpoints), an api-server, controllers and scheduler under one supervisor, plus
one simulated node."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from deploy.loopback import Process, free_port, start_etcd, wait_serving
from skiff import pki, tls
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t
from tests.support.cluster import start_fake_node
from tests.support.prereq import require_binaries

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["skiff-store", "external-etcd"])
async def test_all_in_one_runs_a_deployment(tmp_path: Path, store: str) -> None:
    port = free_port()
    pki_dir = tmp_path / "pki"
    argv = [sys.executable, "-m", "controlplane", "--listen", f"127.0.0.1:{port}", "--node-name", "cp1",
            "--pki-dir", str(pki_dir)]
    etcd = None
    if store == "external-etcd":
        require_binaries("etcd")
        etcd = start_etcd(tmp_path)
        argv += ["--store-endpoints", etcd.endpoints]
    else:
        argv += ["--name", "s1", "--data-dir", str(tmp_path / "store"), "--insecure-no-password",
                 "--listen-client", f"127.0.0.1:{free_port()}", "--listen-peer", f"127.0.0.1:{free_port()}"]
    admin = tls.Credentials.from_pki(pki_dir, pki.ADMIN)

    def ready(proc: Process, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not Path(admin.cert_file).exists():  # the all-in-one creates the PKI first
            assert proc.running and time.monotonic() < end, proc.log_tail()
            time.sleep(0.05)
        wait_serving(proc, timeout, credentials=admin)

    cp = Process("controlplane", argv, tmp_path / "controlplane.log", "127.0.0.1", port, ready=ready)
    node = None
    try:
        cp.start(timeout=60)
        # The all-in-one created the CA and the control plane's certificates on its first start.
        assert {"ca", "apiserver", "admin", "controller-manager", "scheduler"} <= {
            i.name for i in pki.PKIDir(pki_dir).certificates()}
        pki.PKIDir(pki_dir).ensure([pki.node_spec("n1", "127.0.0.1")], now=pki.utcnow())
        serving, node_creds = tls.node_tls(pki_dir, "n1")
        node = start_fake_node(tmp_path, cp.endpoint, "n1",
                               tls=[*tls.server_flags(serving), *tls.client_flags(node_creds)])
        client = Client(cp.endpoint, credentials=admin)
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
