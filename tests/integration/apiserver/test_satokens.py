"""Service-account tokens against a real api-server process serving TLS from a cluster PKI (with
its sa.key/sa.pub): `kubectl create token` issues one (TokenRequest), `kubectl --token` uses it
over HTTPS, RBAC decides for the service-account user, and a token bound to a pod dies with it."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest

from deploy.loopback import ControlPlane, control_plane, free_port
from skiff import errors, kubeconfig, pki, tls
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"

VIEW_BINDING = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot-views, namespace: default}
subjects:
- {kind: ServiceAccount, name: robot, namespace: default}
roleRef: {kind: ClusterRole, apiGroup: rbac.authorization.k8s.io, name: view}
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


@dataclass
class Plane:
    cp: ControlPlane
    pki_dir: Path
    https: str
    admin_kubectl: Run
    token_kubectl: Run  # kubectl with only the CA and `--token TOKEN` (no client certificate)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: run `make setup`")
    work = Path(tmp_path_factory.mktemp("satokens"))
    pki_dir = work / "pki"
    pki.PKIDir(pki_dir).ensure([pki.node_spec("n1", "127.0.0.1")], now=pki.utcnow())
    port = free_port()
    https = f"https://127.0.0.1:{port}"
    with control_plane(work, pki_dir=pki_dir, apiserver_args=["--http-listen", f"127.0.0.1:{port}"]) as cp:
        admin_config = kubeconfig.write_entry(https, path=work / "admin.kubeconfig",
                                              credentials=tls.Credentials.from_pki(pki_dir, pki.ADMIN))

        def admin(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(KUBECTL), "--kubeconfig", str(admin_config), *args], capture_output=True,
                                  text=True, timeout=60, input=stdin)

        empty = work / "empty.kubeconfig"
        empty.write_text("")

        def with_token(token: str, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(KUBECTL), "--kubeconfig", str(empty), "--server", https,
                                   "--certificate-authority", str(pki_dir / "ca.crt"), "--token", token, *args],
                                  capture_output=True, text=True, timeout=60)

        yield Plane(cp, pki_dir, https, admin, with_token)


async def _create_robot_and_pod(plane: Plane) -> tuple[t.ServiceAccount, t.Pod]:
    async with Client(plane.cp.apiserver_endpoints, credentials=tls.Credentials.from_pki(plane.pki_dir, pki.ADMIN)
                      ) as client:
        sa = t.ServiceAccount()
        sa.metadata.name, sa.metadata.namespace = "robot", "default"
        created_sa = await client.create(sa)
        pod = t.Pod()
        pod.metadata.name, pod.metadata.namespace = "robot-pod", "default"
        pod.spec.service_account_name = "robot"
        pod.spec.containers.add(name="c", image="skiff/web:1.0")
        created_pod = await client.create(pod)
        assert isinstance(created_sa, t.ServiceAccount) and isinstance(created_pod, t.Pod)
        return created_sa, created_pod


async def _get_pods(plane: Plane, token: str) -> int:
    context = ssl.create_default_context(cafile=str(plane.pki_dir / "ca.crt"))
    async with aiohttp.ClientSession() as session, session.get(
            f"{plane.https}/api/v1/namespaces/default/pods", ssl=context,
            headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status


def test_kubectl_create_token_and_rbac_for_the_service_account(plane: Plane) -> None:
    sa, pod = asyncio.run(_create_robot_and_pod(plane))
    done = plane.admin_kubectl("create", "token", "robot", "--duration", "20m")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:default:robot"
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "robot", "uid": sa.metadata.uid}
    assert claims["exp"] - claims["iat"] == 1200

    done = plane.token_kubectl(token, "auth", "whoami", "-o", "json")
    if done.returncode == 0:  # SelfSubjectReview, where served
        assert json.loads(done.stdout)["status"]["userInfo"]["username"] == "system:serviceaccount:default:robot"
    done = plane.token_kubectl(token, "get", "pods")
    assert done.returncode == 1
    assert ('User "system:serviceaccount:default:robot" cannot list resource "pods" in API group "" in the '
            'namespace "default"') in done.stderr
    done = plane.admin_kubectl("apply", "-f", "-", stdin=VIEW_BINDING)
    assert done.returncode == 0, done.stderr
    done = plane.token_kubectl(token, "get", "pods", "-o", "name")
    assert (done.returncode, done.stdout.strip()) == (0, "pod/robot-pod"), done.stderr
    # `view` reads, it does not write.
    done = plane.token_kubectl(token, "delete", "pod", "robot-pod")
    assert done.returncode == 1 and "forbidden" in done.stderr

    # A token bound to the pod: valid while the pod lives, refused (401) once it is gone.
    done = plane.admin_kubectl("create", "token", "robot", "--bound-object-kind", "Pod", "--bound-object-name",
                               "robot-pod")
    assert done.returncode == 0, done.stderr
    bound = done.stdout.strip()
    assert jwt.decode(bound, options={"verify_signature": False})["kubernetes.io"]["pod"] == {
        "name": "robot-pod", "uid": pod.metadata.uid}
    assert asyncio.run(_get_pods(plane, bound)) == 200
    done = plane.admin_kubectl("delete", "pod", "robot-pod", "--grace-period", "0", "--force")
    assert done.returncode == 0, done.stderr
    assert asyncio.run(_get_pods(plane, bound)) == 401
    assert asyncio.run(_get_pods(plane, token)) == 200  # the unbound token lives on
    # Deleting the service account revokes every token it had.
    done = plane.admin_kubectl("delete", "serviceaccount", "robot")
    assert done.returncode == 0, done.stderr
    assert asyncio.run(_get_pods(plane, token)) == 401
    assert asyncio.run(_get_pods(plane, token[:-4] + "AAAA")) == 401  # a forged signature


def test_token_request_needs_the_right_to_create_tokens(plane: Plane) -> None:
    done = plane.admin_kubectl("create", "serviceaccount", "other")
    assert done.returncode == 0, done.stderr
    done = plane.admin_kubectl("create", "token", "other", "--as", "alice")
    assert done.returncode == 1
    assert 'User "alice" cannot create resource "serviceaccounts/token"' in done.stderr
    done = plane.admin_kubectl("create", "token", "nobody")
    assert done.returncode == 1 and "not found" in done.stderr


async def _node_requests_tokens(plane: Plane) -> None:
    admin = tls.Credentials.from_pki(plane.pki_dir, pki.ADMIN)
    async with Client(plane.cp.apiserver_endpoints, credentials=admin) as client:
        sa = t.ServiceAccount()
        sa.metadata.name, sa.metadata.namespace = "agent-sa", "default"
        await client.create(sa)
        for name, node in (("on-n1", "n1"), ("on-n2", "n2")):
            pod = t.Pod()
            pod.metadata.name, pod.metadata.namespace = name, "default"
            pod.spec.service_account_name, pod.spec.node_name = "agent-sa", node
            pod.spec.containers.add(name="c", image="skiff/web:1.0")
            await client.create(pod)
    node = tls.Credentials.from_pki(plane.pki_dir, pki.node_cert("n1"))
    async with Client(plane.cp.apiserver_endpoints, credentials=node) as client:
        got = await client.create_token("default", "agent-sa", bound_pod_name="on-n1", expiration_seconds=3600)
        claims = jwt.decode(got.token, options={"verify_signature": False})
        assert claims["kubernetes.io"]["pod"]["name"] == "on-n1" and got.expiration_timestamp == claims["exp"]
        with pytest.raises(errors.ForbiddenError, match="scheduled on a different node"):
            await client.create_token("default", "agent-sa", bound_pod_name="on-n2")
        with pytest.raises(errors.ForbiddenError, match="not bound to a pod"):
            await client.create_token("default", "agent-sa")
    # Authenticated (the account exists, the pod lives) but without rights: 403, not 401.
    assert await _get_pods(plane, got.token) == 403


def test_a_node_requests_tokens_over_grpc_for_its_own_pods(plane: Plane) -> None:
    asyncio.run(_node_requests_tokens(plane))
