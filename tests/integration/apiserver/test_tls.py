"""TLS and authentication over real processes: an api-server serving TLS (gRPC and HTTPS) from a
cluster CA, a node agent serving its node certificate. Every refusal here is a real handshake or
a real UNAUTHENTICATED/PERMISSION_DENIED from the server, not a unit of the authenticator."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest

from deploy.loopback import ControlPlane, Process, control_plane
from skiff import bootstraptoken, errors, identity, pki, tls
from skiff.client import Client
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import apiserver_pb2_grpc as api_grpc
from skiffpb.api.v1 import nodeagent_pb2_grpc
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import pod
from tests.support.cluster import start_controllers, start_fake_node

pytestmark = pytest.mark.integration


@dataclass
class Secure:
    cp: ControlPlane
    pki_dir: Path
    http: str  # https://127.0.0.1:PORT
    agent: Process

    def creds(self, name: str) -> tls.Credentials:
        return tls.Credentials.from_pki(self.pki_dir, name)

    @property
    def endpoint(self) -> str:
        return self.cp.apiserver_endpoints


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    from deploy.loopback import free_port

    work = Path(tmp_path_factory.mktemp("tls"))
    pki_dir = work / "pki"
    http_port = free_port()
    pki.PKIDir(pki_dir).ensure([pki.node_spec("n1", "127.0.0.1"),
                                pki.CertSpec("outsider", "outsider", (), client=True)], now=pki.utcnow())
    with control_plane(work, pki_dir=pki_dir, apiserver_args=["--http-listen", f"127.0.0.1:{http_port}"]) as cp:
        serving, client = tls.node_tls(pki_dir, "n1")
        agent = start_fake_node(work, cp.apiserver_endpoints, "n1",
                                tls=[*tls.server_flags(serving), *tls.client_flags(client)])
        try:
            yield Secure(cp, pki_dir, f"https://127.0.0.1:{http_port}", agent)
        finally:
            agent.stop()


async def _version(target: str, creds: grpc.ChannelCredentials | None) -> api.VersionResponse:
    channel = grpc.aio.insecure_channel(target) if creds is None else grpc.aio.secure_channel(target, creds)
    async with channel:
        response: api.VersionResponse = await api_grpc.ApiServerStub(channel).Version(api.VersionRequest(),
                                                                                      timeout=5)
        return response


async def test_the_admin_certificate_is_served(secure: Secure) -> None:
    async with Client(secure.endpoint, credentials=secure.creds(pki.ADMIN)) as client:
        assert (await client.version()).version
        ns = await client.list(t.Namespace)
        assert any(n.metadata.name == "default" for n in ns.items)


async def test_plaintext_is_refused(secure: Secure) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _version(secure.endpoint, None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_without_a_certificate_is_refused(secure: Secure) -> None:
    ca = (secure.pki_dir / "ca.crt").read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _version(secure.endpoint, grpc.ssl_channel_credentials(root_certificates=ca))
    # The gRPC port is mutual TLS: the handshake itself fails.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("who", [pki.node_cert("n1"), pki.ADMIN, "outsider"], ids=["node", "admin", "outsider"])
async def test_any_certificate_of_the_ca_authenticates(secure: Secure, who: str) -> None:
    """Authentication only: who may do what is the authorizer's (it may still refuse later)."""
    response = await _version(secure.endpoint, secure.creds(who).channel_credentials())
    assert response.version


async def test_a_certificate_of_another_ca_is_refused(secure: Secure, tmp_path: Path) -> None:
    other = pki.PKIDir(tmp_path)
    other.ensure([pki.CertSpec(pki.ADMIN, identity.ADMIN, (identity.MASTERS,), client=True)], now=pki.utcnow())
    # Trusts the real CA (so the server is accepted) but presents an admin certificate from elsewhere.
    creds = tls.Credentials(str(secure.pki_dir / "ca.crt"), str(other.pair(pki.ADMIN).cert),
                            str(other.pair(pki.ADMIN).key))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _version(secure.endpoint, creds.channel_credentials())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def _token_secret(token_id: str, token_secret: str, *, expires: dt.datetime | None) -> t.Secret:
    s = t.Secret(api_version="v1", kind="Secret", type="bootstrap.kubernetes.io/token")
    s.metadata.name, s.metadata.namespace = f"bootstrap-token-{token_id}", "kube-system"
    s.data["token-id"] = token_id.encode()
    s.data["token-secret"] = token_secret.encode()
    s.data["usage-bootstrap-authentication"] = b"true"
    if expires is not None:
        s.data["expiration"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    return s


# ---------------------------------------------------------------- the REST API over HTTPS


@pytest.fixture
async def https(secure: Secure) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _ssl(secure: Secure, name: str = "") -> ssl.SSLContext:
    creds = secure.creds(name) if name else tls.Credentials(str(secure.pki_dir / "ca.crt"))
    return creds.ssl_context()


@pytest.mark.parametrize(("path", "who", "status"), [
    ("/api/v1/namespaces", pki.ADMIN, 200),
    ("/api/v1/namespaces", "", 401),
    ("/healthz", "", 200),
    ("/version", "", 200),
    ("/api/v1/namespaces/default/pods", "", 401),
], ids=["admin-list", "anonymous-list", "anonymous-healthz", "anonymous-version", "anonymous-pods"])
async def test_https_authentication(secure: Secure, https: aiohttp.ClientSession, path: str, who: str,
                                    status: int) -> None:
    async with https.get(secure.http + path, ssl=_ssl(secure, who)) as response:
        assert response.status == status, await response.text()


@pytest.mark.parametrize(("token_id", "presented", "expires_in", "delete", "status"), [
    ("abc001", "0123456789abcdef", 3600, False, 200),
    ("abc002", "0123456789abcdef", -60, False, 401),
    ("abc003", "0123456789abcdef", 3600, True, 401),
    ("abc004", "ffffffffffffffff", 3600, False, 401),
    ("abc005", "0123456789abcdef", None, False, 200),
    ("abc006", "0123456789abcdef", None, False, 401),
], ids=["valid", "expired", "deleted", "wrong-secret", "no-expiry", "not-a-token-form"])
async def test_bootstrap_tokens_over_https(secure: Secure, https: aiohttp.ClientSession, token_id: str,
                                           presented: str, expires_in: int | None, delete: bool,
                                           status: int) -> None:
    now = dt.datetime.now(dt.UTC)
    async with Client(secure.endpoint, credentials=secure.creds(pki.ADMIN)) as admin:
        expires = None if expires_in is None else now + dt.timedelta(seconds=expires_in)
        await admin.create(_token_secret(token_id, "0123456789abcdef", expires=expires))
        if delete:
            await admin.delete(t.Secret, f"bootstrap-token-{token_id}", "kube-system")
    token = f"{token_id}.{presented}" if token_id != "abc006" else "abc006-0123456789abcdef"
    # A path that needs authentication (the anonymous ones would answer anyway); what the
    # bootstrapper may then do is the authorizer's business: 403 would still be "authenticated".
    async with https.get(secure.http + "/api/v1/namespaces/default", ssl=_ssl(secure),
                         headers={"Authorization": f"Bearer {token}"}) as response:
        assert (response.status == 401) == (status == 401), await response.text()


async def test_plain_http_is_refused(secure: Secure, https: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.ClientError):
        async with https.get(secure.http.replace("https://", "http://") + "/healthz") as response:
            await response.read()


# ---------------------------------------------------------------- the node agent


async def _agent_port(secure: Secure) -> int:
    async with Client(secure.endpoint, credentials=secure.creds(pki.ADMIN)) as admin:
        end = time.monotonic() + 30
        while True:
            try:
                node = await admin.get(t.Node, "n1")
                port = node.status.daemon_endpoints.kubelet_endpoint.port
                if port:
                    return port
            except errors.NotFoundError:
                pass
            assert time.monotonic() < end, "node n1 did not register"
            await asyncio.sleep(0.2)


@pytest.mark.parametrize(("who", "code"), [
    (pki.node_cert("n1"), grpc.StatusCode.PERMISSION_DENIED),
    (pki.ADMIN, grpc.StatusCode.PERMISSION_DENIED),
    ("", grpc.StatusCode.UNAVAILABLE),
    (pki.APISERVER_CLIENT, grpc.StatusCode.NOT_FOUND),
], ids=["node-itself", "admin", "no-certificate", "apiserver-kubelet-client"])
async def test_the_node_agent_serves_only_the_apiserver(secure: Secure, who: str, code: grpc.StatusCode) -> None:
    port = await _agent_port(secure)
    creds = (secure.creds(who) if who else tls.Credentials(str(secure.pki_dir / "ca.crt"))).with_server_name("n1")
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds.channel_credentials(),
                                       options=creds.channel_options()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await nodeagent_pb2_grpc.NodeAgentStub(channel).Exec(
                api.ExecRequest(namespace="default", pod="nope", container="c", command=["id"]), timeout=10)
    # The api-server's identity gets past authentication to the lookup (no such pod).
    assert caught.value.code() == code, caught.value.details()


async def test_exec_through_the_apiserver_reaches_the_agent_over_tls(secure: Secure) -> None:
    async with Client(secure.endpoint, credentials=secure.creds(pki.ADMIN)) as admin:
        p = pod("tls-exec", namespace="default", node="n1")
        # No controller manager here (no ServiceAccount, no kube-root-ca.crt): no token volume.
        p.spec.automount_service_account_token = False
        await admin.create(p)
        end = time.monotonic() + 30
        while (await admin.get(t.Pod, "tls-exec", "default")).status.phase != "Running":
            assert time.monotonic() < end, "pod not running"
            await asyncio.sleep(0.2)
        # The fake runtime answers any command with exit code 0; what matters is that the call went
        # api-server -> agent over TLS, the agent's certificate checked against the node's name.
        result = await admin.exec("default", "tls-exec", ["echo", "hi"])
        assert result.exit_code == 0


# ---------------------------------------------------------------- joining with a bootstrap token


@pytest.fixture(scope="module")
def signer(secure: Secure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The controller manager's CSR signer, holding the CA key."""
    d = pki.PKIDir(secure.pki_dir)
    proc = start_controllers(Path(tmp_path_factory.mktemp("cm")), secure.endpoint,
                             tls=tls.client_flags(secure.creds(pki.CONTROLLER_MANAGER)),
                             extra=["--controllers", "csrsigning", "--cluster-signing-cert-file", str(d.ca.cert),
                                    "--cluster-signing-key-file", str(d.ca.key)])
    try:
        yield proc
    finally:
        proc.stop()


def _join_flags(secure: Secure, node_dir: Path, node: str, token: str) -> list[str]:
    ca = str(secure.pki_dir / "ca.crt")
    cert, key = str(node_dir / f"{node}.crt"), str(node_dir / f"{node}.key")
    return ["--tls-cert-file", cert, "--tls-private-key-file", key, "--client-ca-file", ca,
            "--certificate-authority", ca, "--client-certificate", cert, "--client-key", key,
            "--bootstrap-token", token, "--bootstrap-server", secure.http]


async def test_a_node_joins_with_a_bootstrap_token(secure: Secure, signer: Process, tmp_path: Path) -> None:
    token = bootstraptoken.generate()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    async with Client(secure.endpoint, credentials=secure.creds(pki.ADMIN)) as admin:
        await admin.create(bootstraptoken.make_secret(token, expires=expires))
    agent = start_fake_node(tmp_path, secure.endpoint, "joiner", tls=_join_flags(secure, tmp_path, "joiner", token))
    try:
        cert = pki.load_cert(tmp_path / "joiner.crt")
        pki.verify_issued_by(cert, pki.load_cert(secure.pki_dir / "ca.crt"))
        assert pki.subject_of(cert.subject) == ("system:node:joiner", ("system:nodes",))
        assert oct((tmp_path / "joiner.key").stat().st_mode & 0o777) == "0o600"
        async with Client(secure.endpoint, credentials=secure.creds(pki.ADMIN)) as admin:
            end = time.monotonic() + 30
            while True:
                try:
                    await admin.get(t.Node, "joiner")
                    break
                except errors.NotFoundError:
                    assert time.monotonic() < end, "the joined node did not register"
                    await asyncio.sleep(0.2)
            csrs = (await admin.list(t.CertificateSigningRequest)).items
            mine = [c for c in csrs if c.spec.username == f"system:bootstrap:{token.split('.')[0]}"]
            assert len(mine) == 1 and mine[0].status.certificate
            assert identity.BOOTSTRAPPERS in mine[0].spec.groups
    finally:
        agent.stop()


@pytest.mark.parametrize("how", ["expired", "deleted"])
async def test_expired_and_deleted_tokens_cannot_join(secure: Secure, signer: Process, tmp_path: Path,
                                                      how: str) -> None:
    import subprocess
    import sys

    token = bootstraptoken.generate()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=-60 if how == "expired" else 3600)
    async with Client(secure.endpoint, credentials=secure.creds(pki.ADMIN)) as admin:
        await admin.create(bootstraptoken.make_secret(token, expires=expires))
        if how == "deleted":
            await admin.delete(t.Secret, bootstraptoken.secret_name(token.split(".")[0]), bootstraptoken.NAMESPACE)
    argv = [sys.executable, "-m", "nodeagent", "--node-name", "intruder", "--api-servers", secure.endpoint,
            "--fake-runtime", "--no-network", "--node-ip", "127.0.0.1", "--state-dir", str(tmp_path / "state"),
            *_join_flags(secure, tmp_path, "intruder", token)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[3])
    assert done.returncode != 0
    assert "refused the bootstrap token" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "intruder.crt").exists()


async def test_the_forwarder_checks_the_agents_certificate_against_the_node_name(secure: Secure) -> None:
    """A Node whose status points at another node's agent does not get the api-server's exec:
    the agent there proves the name n1, not impostor."""
    port = await _agent_port(secure)
    async with Client(secure.endpoint, credentials=secure.creds(pki.ADMIN)) as admin:
        impostor = t.Node(api_version="v1", kind="Node")
        impostor.metadata.name = "impostor"
        await admin.create(impostor)
        impostor = await admin.get(t.Node, "impostor")
        impostor.status.addresses.add(type="InternalIP", address="127.0.0.1")
        impostor.status.daemon_endpoints.kubelet_endpoint.port = port
        await admin.update_status(impostor)
        await admin.create(pod("on-impostor", namespace="default", node="impostor"))
        with pytest.raises(errors.FailedPreconditionError, match="cannot reach the node agent"):
            await admin.exec("default", "on-impostor", ["id"])
