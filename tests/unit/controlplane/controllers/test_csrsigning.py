"""controlplane/controllers/csrsigning.py: which CSRs are approved and signed, and what is signed."""

from __future__ import annotations

import pytest

from controlplane.controllers.csrsigning import KUBELET_CLIENT_SIGNER, CsrSigningController, Plan, plan
from skiff import identity, pki
from skiff.clock import FakeClock
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t

KEY = pki.new_key()


def csr(cn: str = "system:node:n1", orgs: tuple[str, ...] = (identity.NODES,), *,
        username: str = "system:bootstrap:abcdef", groups: tuple[str, ...] = (identity.BOOTSTRAPPERS,),
        signer: str = KUBELET_CLIENT_SIGNER, conditions: tuple[str, ...] = (), certificate: bytes = b"",
        request: bytes | None = None) -> t.CertificateSigningRequest:
    c = t.CertificateSigningRequest(api_version="certificates.k8s.io/v1", kind="CertificateSigningRequest")
    c.metadata.name = "node-csr-1"
    c.spec.request = request if request is not None else pki.make_csr(KEY, cn, orgs, ips=("10.0.0.11",))
    c.spec.signer_name = signer
    c.spec.username = username
    c.spec.groups.extend([*groups, identity.AUTHENTICATED])
    for ctype in conditions:
        c.status.conditions.add(type=ctype, status="True")
    c.status.certificate = certificate
    return c


@pytest.mark.parametrize(("obj", "action"), [
    (csr(), "approve"),
    (csr(username="system:node:n1", groups=(identity.NODES,)), "approve"),
    (csr(username="system:node:n2", groups=(identity.NODES,)), ""),
    (csr(username="mallory", groups=()), ""),
    (csr(cn="system:node:n1", orgs=(identity.NODES, identity.MASTERS)), ""),
    (csr(cn="kubernetes-admin", orgs=(identity.MASTERS,)), ""),
    (csr(signer="kubernetes.io/kube-apiserver-client"), ""),
    (csr(request=b"not a csr"), ""),
    (csr(conditions=("Approved",)), "sign"),
    (csr(cn="kubernetes-admin", orgs=(identity.MASTERS,), conditions=("Approved",)), "sign"),
    (csr(conditions=("Denied",)), ""),
    (csr(conditions=("Approved", "Failed")), ""),
    (csr(conditions=("Approved",), certificate=b"pem"), ""),
], ids=["bootstrapper", "node-renewing-itself", "node-for-another-node", "stranger", "extra-group", "admin-subject",
        "other-signer", "garbage-request", "approved", "approved-by-an-admin", "denied", "failed", "already-signed"])
def test_plan(obj: t.CertificateSigningRequest, action: str) -> None:
    step = plan(obj)
    assert step.action == action
    if action == "" and not obj.status.conditions and not obj.status.certificate:
        assert step.reason  # says why it is left for an admin
    assert isinstance(step, Plan)


class Recorder:
    def __init__(self) -> None:
        self.status_updates: list[t.CertificateSigningRequest] = []

    async def update_status(self, obj: t.CertificateSigningRequest) -> t.CertificateSigningRequest:
        self.status_updates.append(obj)
        return obj


async def test_sign_issues_a_node_certificate(tmp_path: pytest.TempPathFactory) -> None:
    d = pki.PKIDir(tmp_path)  # type: ignore[arg-type]
    d.ensure([], now=pki.utcnow())
    rec = Recorder()
    controller = CsrSigningController(rec, InformerFactory(rec), ca_cert_file=str(d.ca.cert),  # type: ignore[arg-type]
                                      ca_key_file=str(d.ca.key), clock=FakeClock(pki.utcnow().timestamp()))
    await controller._sign(csr(conditions=("Approved",)))
    cert = pki.load_cert_pem(rec.status_updates[-1].status.certificate)
    pki.verify_issued_by(cert, pki.load_cert(d.ca.cert))
    assert pki.subject_of(cert.subject) == ("system:node:n1", (identity.NODES,))
    assert pki.spec_of("x", cert).dns_names == ("n1",) and pki.spec_of("x", cert).ips == ("10.0.0.11",)
    assert pki.spec_of("x", cert).server and pki.spec_of("x", cert).client
