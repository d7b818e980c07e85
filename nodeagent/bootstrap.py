"""TLS bootstrap: a joining node turns a bootstrap token into its own certificate, once.

As the kubelet's `--bootstrap-kubeconfig`: when the node's certificate does not exist yet, the
agent authenticates to the api-server's HTTPS port with the bootstrap token (`<id>.<secret>`,
from `skiff token create`), creates a CertificateSigningRequest for `system:node:<name>` in
`system:nodes` (signer kubernetes.io/kube-apiserver-client-kubelet, its IP as a SAN so the
certificate also serves its logs/exec port), waits until the controller manager has approved
and signed it, and writes the certificate beside the key. From then on the token is never used
again: the agent (and the node's proxy and DNS) present that certificate.

What must hold:
- The private key is created on the node, written 0600 before anything is sent, and never
  leaves it; a restart during the wait reuses it.
- The api-server is verified against the cluster CA the agent was given; the token goes only
  to a server holding a certificate of that CA.
- A refused token (expired, deleted, wrong) is an error naming the server's answer; a denied
  or failed request too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from skiff import identity, pki
from skiff.convert import from_data, to_data
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.nodeagent.bootstrap")

SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


class BootstrapError(Exception):
    """The node could not obtain its certificate; the message says why."""


def csr_object(name: str, csr_pem: bytes) -> dict[str, Any]:
    csr = t.CertificateSigningRequest(api_version="certificates.k8s.io/v1", kind="CertificateSigningRequest")
    csr.metadata.name = name
    csr.spec.request = csr_pem
    csr.spec.signer_name = SIGNER
    csr.spec.usages.extend(["digital signature", "client auth", "server auth"])
    return to_data(csr)


def issued(data: Any) -> bytes:
    """The certificate of a CSR's JSON, b"" while pending; BootstrapError when denied or failed."""
    csr = from_data(data, t.CertificateSigningRequest, unknown=[])
    for cond in csr.status.conditions:
        if cond.type in ("Denied", "Failed"):
            raise BootstrapError(f"the certificate request {csr.metadata.name} was {cond.type.lower()}: "
                                 f"{cond.reason} {cond.message}".strip())
    return csr.status.certificate


async def bootstrap(*, servers: Sequence[str], token: str, ca_file: str, cert_file: str, key_file: str,
                    node_name: str, node_ip: str, timeout: float = 300.0) -> bool:
    """Obtain the node's certificate unless it exists; True when one was obtained now."""
    cert_path, key_path = Path(cert_file), Path(key_file)
    if cert_path.exists() and key_path.exists():
        return False
    if not servers:
        raise BootstrapError("no --bootstrap-server to send the certificate request to")
    if key_path.exists():
        key = pki.load_key(key_path)
    else:
        key = pki.new_key()
        pki.write_atomic(key_path, pki.key_pem(key), 0o600)
    csr_pem = pki.make_csr(key, identity.NODE_PREFIX + node_name, (identity.NODES,), dns_names=(node_name,),
                           ips=(node_ip,) if node_ip else ())
    ssl_context = pki_ssl(ca_file)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}
    name = f"node-csr-{node_name}-{secrets.token_hex(4)}"
    deadline = time.monotonic() + timeout
    last = ""
    async with aiohttp.ClientSession(headers=headers) as session:
        server = await _create(session, servers, csr_object(name, csr_pem), ssl_context, deadline)
        log.info("sent certificate request %s for %s to %s; waiting for it to be signed", name,
                 identity.NODE_PREFIX + node_name, server)
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{server}{CSR_PATH}/{name}", ssl=ssl_context) as response:
                    body = await response.json(content_type=None)
                    if response.status != 200:
                        raise BootstrapError(f"{server}: reading {name}: {response.status} {body.get('message', '')}")
                    cert = issued(body)
            except aiohttp.ClientError as exc:
                last = str(exc)
                cert = b""
            if cert:
                pki.write_atomic(cert_path, cert, 0o644)
                log.info("node certificate written to %s", cert_path)
                return True
            await asyncio.sleep(1.0)
    raise BootstrapError(f"certificate request {name} not signed within {timeout:.0f}s "
                         f"(is the controller manager running with --cluster-signing-*?) {last}".strip())


def pki_ssl(ca_file: str) -> Any:
    import ssl

    return ssl.create_default_context(cafile=ca_file)


async def _create(session: aiohttp.ClientSession, servers: Sequence[str], body: dict[str, Any], ssl_context: Any,
                  deadline: float) -> str:
    """POST the CSR to the first server that takes it; the server's URL."""
    last = ""
    while time.monotonic() < deadline:
        for server in servers:
            try:
                async with session.post(f"{server}{CSR_PATH}", json=body, ssl=ssl_context) as response:
                    answer = await response.json(content_type=None)
                    if response.status in (200, 201):
                        return server
                    if response.status == 401:
                        raise BootstrapError(f"{server} refused the bootstrap token: {answer.get('message', '')} "
                                             "(expired, deleted or mistyped? `skiff token create` makes a new one)")
                    if response.status == 403:
                        raise BootstrapError(f"{server}: the bootstrap token may not request certificates: "
                                             f"{answer.get('message', '')}")
                    last = f"{server}: {response.status} {answer.get('message', '')}"
            except aiohttp.ClientError as exc:
                last = f"{server}: {exc}"
        await asyncio.sleep(1.0)
    raise BootstrapError(f"could not send the certificate request: {last}")
