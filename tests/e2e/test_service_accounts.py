"""Service accounts in pods on a real one-host lab (containerd, iptables, cluster DNS, TLS): a
container runs the real kubectl (the static binary `make setup` fetched, in an image built
here) with nothing but what Kubernetes gives every pod: the kube-api-access-xxxxx volume (token,
ca.crt, namespace) and KUBERNETES_SERVICE_HOST/PORT.

- in-cluster config (`kubectl get pods`, no kubeconfig) reaches the Kubernetes REST API through
  the `default/kubernetes` ClusterIP on 443 (its Endpoints: the api-server's HTTPS port) and is
  refused (403, naming system:serviceaccount:default:default) until a RoleBinding grants view;
- `https://kubernetes.default.svc` by name (cluster DNS, the api-server certificate's SAN) with
  the mounted CA and token gives the same answer;
- the mounted token is bound to the pod (its uid), lives 3607 s, and ca.crt is the cluster CA.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from deploy.lab import Lab, LabSpec
from skiff import images, pki
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from tests.support import labs
from tests.support.prereq import require

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
IMAGE = "skiff/kubectl:e2e"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports
FORBIDDEN = ('User "system:serviceaccount:default:default" cannot list resource "pods" in API group "" '
             'in the namespace "default"')
VIEW_BINDING = t.RoleBinding(
    metadata=t.ObjectMeta(name="default-views", namespace="default"),
    subjects=[t.Subject(kind="ServiceAccount", name="default", namespace="default")],
    role_ref=t.RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    require(KUBECTL.exists(), f"{KUBECTL} is missing: run `make setup`")
    prefix = f"s{os.getpid() % 10000}"
    spec = LabSpec(prefix=prefix, combined=True, store_members=1, workers=0,
                   lan_cidr=f"10.{180 + os.getpid() % 10}.0.0/24", min_sync_period="0s")
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        # The image with kubectl in it, imported into the host's containerd as the lab's own are.
        tar = images.write_oci_tar(images.ImageSpec(
            name=IMAGE, entrypoint=["/bin/sh", "-c", "exec sleep 3600"], busybox=True,
            files={"/usr/bin/kubectl": (KUBECTL.read_bytes(), 0o755)}),
            tmp_path_factory.mktemp("image") / "kubectl.tar")
        host = the_lab.control_plane_hosts[0]
        images.import_tars([tar], endpoint=the_lab.host_config(host).node_paths.endpoint)
        yield the_lab


async def _run(lab: Lab) -> None:
    client = lab.client()
    try:
        pod = t.Pod(api_version="v1", kind="Pod", metadata=t.ObjectMeta(name="in-cluster", namespace="default"))
        pod.spec.termination_grace_period_seconds = 1
        c = pod.spec.containers.add(name="kubectl", image=IMAGE, image_pull_policy="IfNotPresent")
        c.env.add(name="HOME", value="/tmp")  # kubectl's discovery cache
        pod = await client.create(pod)
        [volume] = [v for v in pod.spec.volumes if v.name.startswith("kube-api-access-")]

        async def running() -> t.Pod | None:
            p = await client.get(t.Pod, "in-cluster", "default")
            return p if p.status.phase == "Running" else None

        await eventually(running, timeout=120, what="pod in-cluster Running")

        async def sh(script: str) -> tuple[int, str, str]:
            result = await client.exec("default", "in-cluster", ["/bin/sh", "-c", script])
            return result.exit_code, result.stdout.decode(), result.stderr.decode()

        code, listing, _ = await sh(f"ls {SA_DIR}; mount | grep -c ' {SA_DIR} .*(ro,'")
        assert code == 0 and listing.split() == ["ca.crt", "namespace", "token", "1"], listing
        _, namespace, _ = await sh(f"cat {SA_DIR}/namespace")
        assert namespace == "default"
        _, ca, _ = await sh(f"cat {SA_DIR}/ca.crt")
        assert ca == pki.PKIDir(lab.pki_dir).ca.cert.read_text()
        _, token, _ = await sh(f"cat {SA_DIR}/token")
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["sub"] == "system:serviceaccount:default:default"
        assert claims["kubernetes.io"]["pod"] == {"name": "in-cluster", "uid": pod.metadata.uid}
        assert claims["exp"] - claims["iat"] == 3607
        _, env, _ = await sh("env")
        assert "KUBERNETES_SERVICE_HOST=10.96.0.1" in env and "KUBERNETES_SERVICE_PORT=443" in env

        in_cluster = "kubectl get pods -o name"
        by_name = (f"kubectl --server https://kubernetes.default.svc --certificate-authority {SA_DIR}/ca.crt "
                   f'--token "$(cat {SA_DIR}/token)" get pods -o name')
        for script in (in_cluster, by_name):
            code, out, err = await sh(script)
            assert code == 1 and FORBIDDEN in err, (script, code, out, err)

        await client.create(VIEW_BINDING)

        async def allowed(script: str) -> str | None:
            code, out, _ = await sh(script)
            return out if code == 0 else None

        for script in (in_cluster, by_name):
            out = await eventually(lambda s=script: allowed(s), timeout=30, what=f"{script} allowed")  # type: ignore[misc]
            assert out.split() == ["pod/in-cluster"]
        # The raw API answer, as any in-cluster client sees it (the token as the pod has it).
        code, out, _ = await sh("kubectl get --raw /api/v1/namespaces/default/pods/in-cluster")
        assert code == 0 and json.loads(out)["spec"]["volumes"][0]["name"] == volume.name
    finally:
        await client.close()


def test_a_pod_calls_the_api_with_its_service_account(lab: Lab) -> None:
    asyncio.run(_run(lab))
