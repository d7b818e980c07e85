"""The store's client port over mutual TLS, with real etcdctl: the admin's certificate works, a
plain etcdctl and a certificate without the right identity are refused, and membership changes
are the admin's alone."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from controlplane.store.cluster import StoreCluster
from skiff import identity, pki, tls
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support.prereq import require_binaries

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    pki_dir = Path(tmp_path_factory.mktemp("store-pki"))
    c = StoreCluster(1, pki_dir=str(pki_dir))
    pki.PKIDir(pki_dir).ensure([pki.CertSpec(pki.APISERVER_CLIENT, identity.APISERVER_CLIENT, (), client=True),
                                pki.node_spec("n1", "127.0.0.1")], now=pki.utcnow())
    with c:
        yield c


def etcdctl(c: StoreCluster, *args: str, who: str = pki.ADMIN) -> subprocess.CompletedProcess[str]:
    d = pki.PKIDir(c.pki_dir or "")
    creds = ["--cacert", str(d.ca.cert)]
    if who:
        creds += ["--cert", str(d.pair(who).cert), "--key", str(d.pair(who).key)]
    return subprocess.run([shutil.which("etcdctl") or "etcdctl", "--endpoints", c.endpoints[0],
                           "--dial-timeout", "3s", "--command-timeout", "5s", *creds, *args],
                          capture_output=True, text=True, timeout=30, check=False, env={"ETCDCTL_API": "3"})


def test_etcdctl_with_the_admin_certificate_works(cluster: StoreCluster) -> None:
    require_binaries("etcdctl")
    assert etcdctl(cluster, "put", "/tls/k", "v").returncode == 0
    got = etcdctl(cluster, "get", "/tls/k", "--print-value-only")
    assert got.returncode == 0 and got.stdout.strip() == "v", got.stderr
    assert etcdctl(cluster, "member", "list").returncode == 0


@pytest.mark.parametrize("how", ["no-client-certificate", "plaintext"])
def test_plain_etcdctl_is_refused(cluster: StoreCluster, how: str) -> None:
    require_binaries("etcdctl")
    if how == "plaintext":
        done = subprocess.run(["etcdctl", "--endpoints", cluster.endpoints[0], "--dial-timeout", "3s",
                               "--command-timeout", "5s", "get", "/tls/k"], capture_output=True, text=True,
                              timeout=30, check=False, env={"ETCDCTL_API": "3"})
    else:
        done = etcdctl(cluster, "get", "/tls/k", who="")
    assert done.returncode != 0 and "v" not in done.stdout


def _call(cluster: StoreCluster, who: str, method: str) -> grpc.StatusCode:
    creds = tls.Credentials.from_pki(cluster.pki_dir or "", who)
    with grpc.secure_channel(cluster.endpoints[0], creds.channel_credentials()) as ch:
        try:
            if method == "range":
                rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/tls/k"), timeout=5)
            elif method == "member-add":
                rpc_pb2_grpc.ClusterStub(ch).MemberAdd(
                    rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.9:1"]), timeout=5)
            elif method == "disarm":
                rpc_pb2_grpc.MaintenanceStub(ch).Alarm(
                    rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("who", "method", "code"), [
    (pki.APISERVER_CLIENT, "range", grpc.StatusCode.OK),
    (pki.APISERVER_CLIENT, "member-add", grpc.StatusCode.PERMISSION_DENIED),
    (pki.APISERVER_CLIENT, "disarm", grpc.StatusCode.PERMISSION_DENIED),
    (pki.node_cert("n1"), "range", grpc.StatusCode.PERMISSION_DENIED),
    (pki.ADMIN, "disarm", grpc.StatusCode.OK),
], ids=["apiserver-reads", "apiserver-member-add", "apiserver-disarm", "node-reads", "admin-disarms"])
def test_who_may_call_what(cluster: StoreCluster, who: str, method: str, code: grpc.StatusCode) -> None:
    assert _call(cluster, who, method) == code
