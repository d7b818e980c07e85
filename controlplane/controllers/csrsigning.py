"""Node certificates: approving and signing CertificateSigningRequests (kube-controller-manager's
csrapproving and csrsigning controllers, for the one kind of request Skiff signs).

A joining node authenticates with a bootstrap token (`system:bootstrap:<id>` in
`system:bootstrappers`) and creates a CSR for its client identity; a node renewing its
certificate does the same as itself. This controller, holding the cluster CA's key
(`--cluster-signing-cert-file/--cluster-signing-key-file`), approves such a request and signs it.

What must hold:
- Auto-approved is exactly: signerName `kubernetes.io/kube-apiserver-client-kubelet`, a CSR
  whose subject is CN `system:node:<name>`, O `system:nodes` (nothing else), whose signature
  verifies, and whose requester (spec.username, set by the api-server) is either a
  bootstrapper or that same node. Anything else is left for an admin (not signed).
- A request approved by anyone (an admin's Approved condition) is signed, one with a Denied
  or Failed condition never is; a CSR that already has a certificate is left alone.
- The certificate serves the node agent too: client and server usages, SANs the node's name
  (what the api-server checks) and the IP addresses the CSR asks for.
- `plan` is pure (the clock is an argument); `sync` applies one step.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from controlplane.controllers.base import QueueController
from skiff import errors, identity, pki
from skiff.client import ApiClient
from skiff.clock import Clock, seconds_timestamp
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.csrsigning")

KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
AUTO_APPROVE_REASON = "AutoApproved"
# What a node certificate signed here lasts (kube-controller-manager's default is a year too).
NODE_CERT_DAYS = pki.CERT_DAYS


@dataclass(frozen=True)
class Plan:
    action: str  # "", "approve", "sign", "fail"
    reason: str = ""


def _condition(csr: t.CertificateSigningRequest, ctype: str) -> bool:
    return any(c.type == ctype and c.status in ("True", "") for c in csr.status.conditions)


def node_of_subject(common_name: str, organizations: tuple[str, ...]) -> str:
    """The node a node-client CSR's subject names, or "" when it is not exactly one."""
    if not common_name.startswith(identity.NODE_PREFIX) or organizations != (identity.NODES,):
        return ""
    return common_name[len(identity.NODE_PREFIX):]


def auto_approvable(csr: t.CertificateSigningRequest) -> str:
    """"" when this controller may approve `csr` itself; else why not."""
    if csr.spec.signer_name != KUBELET_CLIENT_SIGNER:
        return f"signer {csr.spec.signer_name or '(none)'} is not {KUBELET_CLIENT_SIGNER}"
    try:
        cn, orgs = pki.csr_subject(csr.spec.request)
    except ValueError as exc:
        return f"the request is not a valid CSR: {exc}"
    node = node_of_subject(cn, orgs)
    if not node:
        return f'the subject must be CN "system:node:<name>", O "system:nodes" (got CN "{cn}", O {list(orgs)})'
    requester_is_node = csr.spec.username == cn and identity.NODES in csr.spec.groups
    if identity.BOOTSTRAPPERS not in csr.spec.groups and not requester_is_node:
        return f'requester "{csr.spec.username}" is neither a bootstrapper nor node {node}'
    return ""


def plan(csr: t.CertificateSigningRequest) -> Plan:
    if csr.status.certificate or _condition(csr, DENIED) or _condition(csr, FAILED):
        return Plan("")
    if _condition(csr, APPROVED):
        return Plan("sign")
    why = auto_approvable(csr)
    return Plan("approve", "") if not why else Plan("", why)


def requested_ips(csr_pem: bytes) -> list[str]:
    csr = x509.load_pem_x509_csr(csr_pem)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress) if isinstance(ip, ipaddress.IPv4Address)]


class CsrSigningController(QueueController):
    name = "csrsigning"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, ca_cert_file: str, ca_key_file: str,
                 clock: Clock) -> None:
        super().__init__()
        self.client = client
        self.clock = clock
        self.ca_cert_file = ca_cert_file
        self.ca_key_file = ca_key_file
        self.csrs = factory.informer(t.CertificateSigningRequest)
        self.csrs.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))

    async def sync(self, key: str) -> None:
        csr = self.csrs.get(key)
        if csr is None:
            return
        step = plan(csr)
        if step.action == "approve":
            await self._approve(csr)
        elif step.action == "sign":
            await self._sign(csr)
        elif step.reason and not csr.status.conditions:
            log.info("CSR %s left for an admin: %s", key, step.reason)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.now(), dt.UTC)

    async def _approve(self, csr: t.CertificateSigningRequest) -> None:
        out = t.CertificateSigningRequest()
        out.CopyFrom(csr)
        cond = out.status.conditions.add(type=APPROVED, status="True", reason=AUTO_APPROVE_REASON,
                                         message="Auto approving node client certificate after bootstrap "
                                                 "or for the node itself")
        cond.last_update_time.CopyFrom(seconds_timestamp(self.clock.now()))
        cond.last_transition_time.CopyFrom(cond.last_update_time)
        await self.client.update_status(out)
        log.info("approved CSR %s of %s", csr.metadata.name, csr.spec.username)

    async def _sign(self, csr: t.CertificateSigningRequest) -> None:
        out = t.CertificateSigningRequest()
        out.CopyFrom(csr)
        try:
            cn, orgs = pki.csr_subject(csr.spec.request)
            node = node_of_subject(cn, orgs)
            ca_cert, ca_key = pki.load_cert(Path(self.ca_cert_file)), pki.load_key(Path(self.ca_key_file))
            cert = pki.sign_csr(ca_cert, ca_key, csr.spec.request, now=self._now(), days=NODE_CERT_DAYS,
                                server=bool(node), client=True, dns_names=[node] if node else [],
                                ips=requested_ips(csr.spec.request) if node else [])
        except (ValueError, OSError) as exc:
            cond = out.status.conditions.add(type=FAILED, status="True", reason="SignerValidationFailure",
                                             message=str(exc))
            cond.last_update_time.CopyFrom(seconds_timestamp(self.clock.now()))
            await self.client.update_status(out)
            log.warning("CSR %s: cannot sign: %s", csr.metadata.name, exc)
            return
        out.status.certificate = pki.cert_pem(cert)
        try:
            await self.client.update_status(out)
        except errors.ConflictError:
            raise  # the queue retries with the newer object
        log.info("signed CSR %s for %s", csr.metadata.name, cn)
