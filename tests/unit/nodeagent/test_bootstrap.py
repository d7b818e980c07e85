"""nodeagent/bootstrap.py: the CSR a joining node sends, and reading the answer."""

from __future__ import annotations

import pytest

from nodeagent.bootstrap import SIGNER, BootstrapError, bootstrap, csr_object, issued
from skiff import identity, pki
from skiff.convert import from_data, to_data
from skiffpb.api.v1 import types_pb2 as t


def test_csr_object_is_a_node_client_request() -> None:
    key = pki.new_key()
    pem = pki.make_csr(key, identity.NODE_PREFIX + "n1", (identity.NODES,), dns_names=("n1",), ips=("10.0.0.11",))
    csr = from_data(csr_object("node-csr-n1-1", pem), t.CertificateSigningRequest)
    assert csr.spec.signer_name == SIGNER and csr.spec.request == pem
    assert pki.csr_subject(csr.spec.request) == ("system:node:n1", ("system:nodes",))
    assert not csr.spec.username  # the api-server sets who asked, never the body


def _answer(*, certificate: bytes = b"", condition: str = "") -> dict[str, object]:
    csr = t.CertificateSigningRequest(api_version="certificates.k8s.io/v1", kind="CertificateSigningRequest")
    csr.metadata.name = "node-csr-n1-1"
    csr.status.certificate = certificate
    if condition:
        csr.status.conditions.add(type=condition, status="True", reason="Because")
    return to_data(csr)


@pytest.mark.parametrize(("answer", "expected"), [
    (_answer(), b""),
    (_answer(condition="Approved"), b""),
    (_answer(certificate=b"PEM", condition="Approved"), b"PEM"),
    (_answer(condition="Denied"), "denied"),
    (_answer(condition="Failed"), "failed"),
], ids=["pending", "approved-not-signed", "signed", "denied", "failed"])
def test_issued(answer: dict[str, object], expected: bytes | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(BootstrapError, match=expected):
            issued(answer)
    else:
        assert issued(answer) == expected


async def test_an_existing_certificate_is_kept(tmp_path: pytest.TempPathFactory) -> None:
    cert, key = tmp_path / "n1.crt", tmp_path / "n1.key"  # type: ignore[operator]
    cert.write_text("CERT")
    key.write_text("KEY")
    assert await bootstrap(servers=[], token="abcdef.0123456789abcdef", ca_file="/nope", cert_file=str(cert),
                           key_file=str(key), node_name="n1", node_ip="10.0.0.11") is False
    assert cert.read_text() == "CERT"
