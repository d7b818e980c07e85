"""skiff/pki.py: the CA, issued certificates (subjects, names, usages, dates), CSRs, the
directory (idempotent ensure, listing, renewal)."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from skiff import identity, pki

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, pki.PrivateKey]:
    return pki.new_ca(now=NOW)


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return list(ext.get_values_for_type(x509.DNSName)), [str(i) for i in ext.get_values_for_type(x509.IPAddress)]


def _usages(cert: x509.Certificate) -> set[str]:
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    return {"server" for _ in [0] if ExtendedKeyUsageOID.SERVER_AUTH in eku} | \
        {"client" for _ in [0] if ExtendedKeyUsageOID.CLIENT_AUTH in eku}


SPECS = [
    pytest.param(pki.CertSpec("admin", identity.ADMIN, (identity.MASTERS,), client=True),
                 identity.ADMIN, (identity.MASTERS,), [], [], {"client"}, id="admin-client"),
    pytest.param(pki.CertSpec("apiserver", identity.APISERVER, (), ("localhost", "kubernetes"),
                              ("127.0.0.1", "10.0.0.1"), server=True),
                 identity.APISERVER, (), ["localhost", "kubernetes"], ["127.0.0.1", "10.0.0.1"], {"server"},
                 id="apiserver-serving"),
    pytest.param(pki.node_spec("n1", "10.77.0.11"), "system:node:n1", (identity.NODES,), ["n1"], ["10.77.0.11"],
                 {"server", "client"}, id="node-both"),
    pytest.param(pki.CertSpec("x", "two-groups", ("g1", "g2"), client=True), "two-groups", ("g1", "g2"), [], [],
                 {"client"}, id="several-groups"),
]


@pytest.mark.parametrize(("spec", "cn", "orgs", "dns", "ips", "usages"), SPECS)
def test_issue(ca: tuple[x509.Certificate, pki.PrivateKey], spec: pki.CertSpec, cn: str, orgs: tuple[str, ...],
               dns: list[str], ips: list[str], usages: set[str]) -> None:
    cert, _ = pki.issue(*ca, spec, now=NOW)
    pki.verify_issued_by(cert, ca[0])
    assert pki.subject_of(cert.subject) == (cn, orgs)
    assert _sans(cert) == (dns, ips)
    assert _usages(cert) == usages
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=pki.CERT_DAYS)
    assert cert.not_valid_before_utc < NOW
    user = pki.user_of(cert)
    assert user.name == cn and set(orgs) <= set(user.groups) and identity.AUTHENTICATED in user.groups


def test_a_certificate_from_another_ca_does_not_verify(ca: tuple[x509.Certificate, pki.PrivateKey]) -> None:
    other = pki.new_ca(now=NOW)
    cert, _ = pki.issue(*other, pki.CertSpec("a", "a", client=True), now=NOW)
    with pytest.raises((InvalidSignature, ValueError)):
        pki.verify_issued_by(cert, ca[0])


def test_no_certificate_outlives_its_ca() -> None:
    short_ca = pki.new_ca(now=NOW, days=10)
    cert, _ = pki.issue(*short_ca, pki.CertSpec("a", "a", client=True), now=NOW, days=365)
    assert cert.not_valid_after_utc == short_ca[0].not_valid_after_utc


@pytest.mark.parametrize(("cn", "orgs"), [("system:node:n1", ("system:nodes",)), ("someone", ())],
                         ids=["node", "no-groups"])
def test_csr_round_trip(ca: tuple[x509.Certificate, pki.PrivateKey], cn: str, orgs: tuple[str, ...]) -> None:
    key = pki.new_key()
    csr = pki.make_csr(key, cn, orgs)
    assert pki.csr_subject(csr) == (cn, orgs)
    cert = pki.sign_csr(*ca, csr, now=NOW, days=30)
    pki.verify_issued_by(cert, ca[0])
    assert pki.subject_of(cert.subject) == (cn, orgs)
    assert cert.public_key() == key.public_key()
    assert _usages(cert) == {"client"}


def test_a_garbage_csr_is_refused(ca: tuple[x509.Certificate, pki.PrivateKey]) -> None:
    with pytest.raises(ValueError):
        pki.csr_subject(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")


def test_ensure_is_idempotent_and_keys_are_private(tmp_path: Path) -> None:
    d = pki.PKIDir(tmp_path)
    specs = pki.control_plane_specs(apiserver_ips=["10.0.0.1"], store_members=[("s1", "10.0.0.1")])
    specs.append(pki.node_spec("n1", "10.0.0.2"))
    created = d.ensure(specs, now=NOW)
    # The CA first, then the service-account key pair (not a certificate), then every certificate.
    assert created[:2] == ["ca", "sa"] and set(created[2:]) == {s.name for s in specs}
    assert b"BEGIN PUBLIC KEY" in d.sa_pub.read_bytes()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.crt")}
    assert d.ensure(specs, now=NOW + dt.timedelta(days=1)) == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.crt")} == before
    for key in tmp_path.rglob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # A missing certificate is issued again, by the same CA.
    d.pair("scheduler").cert.unlink()
    assert d.ensure(specs, now=NOW) == ["scheduler"]
    pki.verify_issued_by(pki.load_cert(d.pair("scheduler").cert), pki.load_cert(d.ca.cert))


def test_certificates_lists_every_one_with_its_expiry(tmp_path: Path) -> None:
    d = pki.PKIDir(tmp_path)
    d.ensure([pki.node_spec("n1", "10.0.0.2"), pki.CertSpec("admin", identity.ADMIN, (identity.MASTERS,),
                                                            client=True)], now=NOW)
    infos = {i.name: i for i in d.certificates()}
    assert next(iter(infos)) == "ca"
    assert set(infos) == {"ca", "admin", "nodes/n1"}
    assert infos["nodes/n1"].sans == ("n1", "10.0.0.2")
    assert infos["admin"].remaining(NOW) == dt.timedelta(days=pki.CERT_DAYS)


def test_renew_reissues_the_same_identities_with_new_dates(tmp_path: Path) -> None:
    d = pki.PKIDir(tmp_path)
    specs = [pki.node_spec("n1", "10.0.0.2"), pki.CertSpec("admin", identity.ADMIN, (identity.MASTERS,), client=True)]
    d.ensure(specs, now=NOW)
    ca_before = d.ca.cert.read_bytes()
    old = {s.name: pki.load_cert(d.pair(s.name).cert) for s in specs}
    later = NOW + dt.timedelta(days=200)
    assert sorted(d.renew(now=later)) == ["admin", "nodes/n1"]
    assert d.ca.cert.read_bytes() == ca_before
    for spec in specs:
        new = pki.load_cert(d.pair(spec.name).cert)
        assert new.subject == old[spec.name].subject and _sans(new) == _sans(old[spec.name])
        assert _usages(new) == _usages(old[spec.name])
        assert new.not_valid_after_utc == later + dt.timedelta(days=pki.CERT_DAYS)
        assert new.public_key() != old[spec.name].public_key()
