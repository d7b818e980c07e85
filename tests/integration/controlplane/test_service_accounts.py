"""Service accounts in pods against a real api-server process (TLS, the cluster's sa.key), the
controller manager and a node agent over its in-memory runtime, each with its own certificate:

- the root CA publisher puts kube-root-ca.crt (the cluster CA) into a new namespace and repairs
  it when it is changed or deleted (its RBAC rights are the bootstrap policy's);
- a new pod gets the kube-api-access-xxxxx volume from admission; the node agent (a node's
  rights: only for its own pods) requests the token over gRPC and writes token, ca.crt and
  namespace; the token is bound to the pod (uid) for 3607 s and authenticates over HTTPS as the
  pod's service account (403 for it without a binding);
- after the agent restarts, the pod's volume still holds a valid token (adopted, not requested again).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest

from deploy.loopback import ControlPlane, Process, control_plane, free_port
from skiff import errors, pki, tls
from skiff.client import Client
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from tests.support.cluster import start_controllers, start_fake_node
from tests.support.prereq import require_binaries

pytestmark = pytest.mark.integration
NODE = "n1"


@dataclass
class Plane:
    cp: ControlPlane
    pki_dir: Path
    https: str
    work: Path
    node: Process


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    require_binaries("etcd")
    work = Path(tmp_path_factory.mktemp("sa-mount"))
    pki_dir = work / "pki"
    pki.PKIDir(pki_dir).ensure([pki.node_spec(NODE, "127.0.0.1")], now=pki.utcnow())
    port = free_port()
    with control_plane(work, pki_dir=pki_dir, apiserver_args=["--http-listen", f"127.0.0.1:{port}"]) as cp:
        api = cp.apiserver_endpoints
        ca = str(pki.PKIDir(pki_dir).ca.cert)
        cm = start_controllers(work, api, extra=["--controllers", "rootcacertpublisher,serviceaccount",
                                                 "--root-ca-file", ca],
                               tls=tls.client_flags(tls.Credentials.from_pki(pki_dir, pki.CONTROLLER_MANAGER)))
        serving, creds = tls.node_tls(pki_dir, NODE)
        node = start_fake_node(work, api, NODE, tls=[*tls.server_flags(serving), *tls.client_flags(creds)])
        try:
            yield Plane(cp, pki_dir, f"https://127.0.0.1:{port}", work, node)
        finally:
            node.stop()
            cm.stop()


@pytest.fixture
async def admin(plane: Plane) -> AsyncIterator[Client]:
    async with Client(plane.cp.apiserver_endpoints,
                      credentials=tls.Credentials.from_pki(plane.pki_dir, pki.ADMIN)) as client:
        yield client


async def root_ca(client: Client, namespace: str) -> dict[str, str] | None:
    try:
        return dict((await client.get(t.ConfigMap, "kube-root-ca.crt", namespace)).data)
    except errors.NotFoundError:
        return None


async def test_kube_root_ca_is_published_and_repaired(plane: Plane, admin: Client) -> None:
    want = {"ca.crt": pki.PKIDir(plane.pki_dir).ca.cert.read_text()}
    await admin.create(t.Namespace(metadata=t.ObjectMeta(name="team-a")))

    async def published() -> bool:
        return await root_ca(admin, "team-a") == want

    await eventually(published, timeout=30, what="kube-root-ca.crt in team-a")
    cm = await admin.get(t.ConfigMap, "kube-root-ca.crt", "team-a")
    cm.data["ca.crt"] = "someone else's CA"
    await admin.update(cm)
    await eventually(published, timeout=30, what="kube-root-ca.crt repaired after an edit")
    await admin.delete(t.ConfigMap, "kube-root-ca.crt", "team-a")
    await eventually(published, timeout=30, what="kube-root-ca.crt recreated after a delete")


def token_file(plane: Plane, pod: t.Pod) -> Path | None:
    found = sorted((plane.work / NODE).rglob(f"{pod.metadata.uid}/kube-api-access-*/token"))
    return found[0] if found else None


async def status_as(plane: Plane, token: str, path: str) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(pki.PKIDir(plane.pki_dir).ca.cert))
    async with aiohttp.ClientSession() as session, session.get(
            f"{plane.https}{path}", ssl=context, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.text()


async def test_a_pod_gets_its_token_volume_from_the_node_agent(plane: Plane, admin: Client) -> None:
    async def account() -> t.ServiceAccount | None:
        try:
            return await admin.get(t.ServiceAccount, "default", "team-b")
        except errors.NotFoundError:
            return None

    await admin.create(t.Namespace(metadata=t.ObjectMeta(name="team-b")))
    sa = await eventually(account, timeout=30, what="the default ServiceAccount of team-b")
    pod = t.Pod(metadata=t.ObjectMeta(name="reader", namespace="team-b"))
    pod.spec.node_name = NODE
    pod.spec.containers.add(name="c", image="skiff/web:1.0")
    pod = await admin.create(pod)
    [volume] = pod.spec.volumes
    assert volume.name.startswith("kube-api-access-")
    assert [(m.name, m.mount_path, m.read_only) for m in pod.spec.containers[0].volume_mounts] == [
        (volume.name, "/var/run/secrets/kubernetes.io/serviceaccount", True)]

    async def written() -> Path | None:
        return token_file(plane, pod)

    path = await eventually(written, timeout=60, what="the token file of team-b/reader")
    directory = path.parent
    assert (directory / "ca.crt").read_text() == pki.PKIDir(plane.pki_dir).ca.cert.read_text()
    assert (directory / "namespace").read_text() == "team-b"
    token = path.read_text()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:team-b:default"
    assert claims["kubernetes.io"]["pod"] == {"name": "reader", "uid": pod.metadata.uid}
    assert claims["kubernetes.io"]["serviceaccount"]["uid"] == sa.metadata.uid
    assert claims["exp"] - claims["iat"] == 3607

    async def running() -> bool:
        return (await admin.get(t.Pod, "reader", "team-b")).status.phase == "Running"

    await eventually(running, timeout=60, what="team-b/reader Running")
    status, body = await status_as(plane, token, "/api/v1/namespaces/team-b/pods")
    assert status == 403 and "system:serviceaccount:team-b:default" in body, body

    # An agent restart: the volume keeps the same valid token (adopted), it is not replaced.
    plane.node.restart(timeout=60)
    await asyncio.sleep(3)
    assert path.read_text() == token
    assert (await status_as(plane, token, "/api/v1/namespaces/team-b/pods"))[0] == 403
