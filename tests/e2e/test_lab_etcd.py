"""End to end on a lab backed by real etcd instead of Skiff's store (`skiff lab up --external-etcd`).

3 members of Debian's etcd-server on the control-plane host, TLS for clients and peers, client
certificates required; the api-servers reach them with the lab's client certificate. The
seed check (examples/web: a 2-replica Deployment and its Service, pods Ready, the ClusterIP
answering from every worker) runs on it, and the objects are in etcd: read back from it
with the client certificate, while a client without one is refused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.apiserver.etcd import EtcdStore
from controlplane.apiserver.storage import StoreError
from deploy import netplan
from deploy.lab import Lab, LabSpec
from skiff.tls import Credentials
from tests.support import labs
from tests.support.prereq import require_binaries

pytestmark = [pytest.mark.e2e]

LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    require_binaries("etcd")
    spec = LabSpec(prefix=f"x{os.getpid() % 10000}", workers=2, lan_cidr=netplan.free_lan(range(100, 150)),
                   min_sync_period="0s", external_etcd=True)
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        yield the_lab


def test_lab_runs_on_etcd_with_tls(lab: Lab) -> None:
    daemons = lab.daemons("cp")
    assert {"etcd1", "etcd2", "etcd3"} <= set(daemons), sorted(daemons)
    assert not [d for d in daemons if d.startswith("store-")], "Skiff's store runs beside the external etcd"
    assert lab.cluster.store_endpoints.startswith("https://")


def test_seed_flow_on_etcd(lab: Lab) -> None:
    hosts = ",".join(f"{w}={lab.net.host(w).ip}" for w in lab.workers)
    run = "nsenter --net=/run/netns/" + lab.netns("n1").replace("n1", "{name}")
    seed = subprocess.run(
        ["nsenter", f"--net=/run/netns/{lab.netns('cp')}", sys.executable, "-m", "deploy.seedcheck",
         "--server", ",".join(lab.api_servers), "--hosts", hosts, "--run", run, "--fetch", "/bin/busybox wget -qO-",
         "--timeout", "90", str(REPO / "examples/web")],
        capture_output=True, text=True, cwd=REPO, timeout=180, check=False,
        env=dict(os.environ, SKIFF_CONFIG=str(lab.config_path)))
    assert seed.returncode == 0, seed.stdout + seed.stderr
    assert "hello from web-" in seed.stdout, seed.stdout

    async def read(credentials: Credentials) -> list[str]:
        store = EtcdStore(lab.cluster.store_endpoints, credentials=credentials, retry_for=2.0, timeout=3.0)
        try:
            result = await store.range("/registry/deployments/default/")
            return [kv.key for kv in result.kvs]
        finally:
            await store.close()

    ext = lab.cluster.external_store
    assert ext is not None
    keys = asyncio.run(read(Credentials(*ext.tls)))
    assert any(k.endswith("/web") for k in keys), keys
    with pytest.raises(StoreError):  # no client certificate: etcd --client-cert-auth refuses
        asyncio.run(read(Credentials(ext.ca_file)))
