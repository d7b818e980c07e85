"""The cluster's public-key infrastructure: one CA, and the certificates it signs.

Every Skiff connection is TLS with certificates from one cluster CA (`ca.crt`/`ca.key`), laid
out like kubeadm's /etc/kubernetes/pki:

    ca.crt ca.key                              the cluster CA (its key stays on control-plane hosts)
    apiserver.crt/.key                         the api-server's serving certificate
    apiserver-kubelet-client.crt/.key          the api-server's client identity (node agents, store)
    store/<member>.crt/.key                    a store member's serving certificate
    admin.crt/.key                             kubernetes-admin in system:masters (skiff, kubectl, etcdctl)
    controller-manager, scheduler, netproxy, clusterdns .crt/.key   each component's client identity
    nodes/<node>.crt/.key                      system:node:<node> in system:nodes; serves the agent too
    sa.key sa.pub                              the service-account token signing key pair (RSA, as kubeadm's);
                                               not a certificate: the api-server signs and verifies tokens with it

What must hold:
- Only the `cryptography` package does cryptography here: no openssl, nothing hand-rolled.
- A client certificate names its user as Kubernetes reads it (skiff.identity): CN the user,
  each O a group; a serving certificate carries every DNS name and IP it is reached by.
- `ensure` is idempotent: an existing CA and existing certificates are kept as they are
  (only missing ones are issued), so every launcher can call it on each start.
- Private keys are written 0600, atomically; certificates 0644.
- Time is an argument (`now`), never read inside the pure functions.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skiff import identity

CA_NAME = "ca"
CA_COMMON_NAME = "skiff-ca"
CA_DAYS = 3650
CERT_DAYS = 365
# `skiff certs check` warns when a certificate ends sooner than this.
WARN_BEFORE = dt.timedelta(days=30)
# Issued certificates start a little in the past: hosts' clocks differ by a few seconds.
BACKDATE = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey
# The service-account signing key: RSA because RS256 is what every Kubernetes token consumer accepts.
SA_KEY_FILE = "sa.key"
SA_PUB_FILE = "sa.pub"
SA_KEY_BITS = 2048


@dataclass(frozen=True)
class CertSpec:
    """What one certificate says: file stem (may hold a subdirectory), subject, names, usage."""

    name: str  # "apiserver", "store/s1", "nodes/n1"
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


@dataclass(frozen=True)
class CertInfo:
    """A certificate on disk as `skiff certs check` shows it."""

    name: str
    path: Path
    common_name: str
    organizations: tuple[str, ...]
    not_after: dt.datetime
    sans: tuple[str, ...]

    def remaining(self, now: dt.datetime) -> dt.timedelta:
        return self.not_after - now


def new_key() -> PrivateKey:
    # ECDSA P-256: fast to create (tests make many), understood by gRPC, Go (kubectl) and etcdctl.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(*, now: dt.datetime, common_name: str = CA_COMMON_NAME, days: int = CA_DAYS,
           ) -> tuple[x509.Certificate, PrivateKey]:
    key = new_key()
    name = _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _sans(dns_names: Iterable[str], ips: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names) if n]
    out += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips) if ip]
    return out


def _sign(ca_cert: x509.Certificate, ca_key: PrivateKey, subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
          *, dns_names: Iterable[str] = (), ips: Iterable[str] = (), server: bool, client: bool,
          now: dt.datetime, days: int) -> x509.Certificate:
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client
                                                                       else [])
    if not usages:
        raise ValueError("a certificate must be for a server, a client or both")
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                            crl_sign=False, content_commitment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    sans = _sans(dns_names, ips)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def issue(ca_cert: x509.Certificate, ca_key: PrivateKey, spec: CertSpec, *, now: dt.datetime,
          days: int = CERT_DAYS, key: PrivateKey | None = None) -> tuple[x509.Certificate, PrivateKey]:
    key = key or new_key()
    cert = _sign(ca_cert, ca_key, _name(spec.common_name, spec.organizations), key.public_key(),
                 dns_names=spec.dns_names, ips=spec.ips, server=spec.server, client=spec.client, now=now, days=days)
    return cert, key


def make_csr(key: PrivateKey, common_name: str, organizations: Sequence[str] = (), *,
             dns_names: Sequence[str] = (), ips: Sequence[str] = ()) -> bytes:
    """A PEM certificate signing request (what a joining node sends: its identity, its names)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name, organizations))
    sans = _sans(dns_names, ips)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def csr_subject(csr_pem: bytes) -> tuple[str, tuple[str, ...]]:
    """(CN, Os) of a PEM CSR; ValueError when it is not one or its signature does not verify."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature does not verify")
    return subject_of(csr.subject)


def sign_csr(ca_cert: x509.Certificate, ca_key: PrivateKey, csr_pem: bytes, *, now: dt.datetime,
             days: int = CERT_DAYS, server: bool = False, client: bool = True,
             dns_names: Sequence[str] = (), ips: Sequence[str] = ()) -> x509.Certificate:
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("the CSR's key must be an ECDSA key")
    return _sign(ca_cert, ca_key, csr.subject, public_key, dns_names=dns_names, ips=ips, server=server,
                 client=client, now=now, days=days)


def subject_of(name: x509.Name) -> tuple[str, tuple[str, ...]]:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cns[0].value) if cns else "", tuple(str(o.value) for o in orgs))


def user_of(cert: x509.Certificate) -> identity.UserInfo:
    """The user a client certificate names (skiff.identity's reading: CN user, O groups)."""
    cn, orgs = subject_of(cert.subject)
    return identity.from_certificate(cn, orgs)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_cert_pem(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an ECDSA private key")
    return key


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Raise (InvalidSignature, ValueError) unless `ca_cert` signed `cert`."""
    cert.verify_directly_issued_by(ca_cert)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- the directory


@dataclass(frozen=True)
class Pair:
    """A certificate and its key on disk."""

    cert: Path
    key: Path


class PKIDir:
    """A PKI directory (the layout in the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def ca(self) -> Pair:
        return self.pair(CA_NAME)

    def pair(self, name: str) -> Pair:
        return Pair(self.path / f"{name}.crt", self.path / f"{name}.key")

    def has_ca_key(self) -> bool:
        return self.ca.key.exists()

    def load_ca(self) -> tuple[x509.Certificate, PrivateKey]:
        return load_cert(self.ca.cert), load_key(self.ca.key)

    def ensure_ca(self, *, now: dt.datetime) -> bool:
        """Create the CA unless it exists; True when created."""
        if self.ca.cert.exists():
            return False
        cert, key = new_ca(now=now)
        write_atomic(self.ca.key, key_pem(key), 0o600)
        write_atomic(self.ca.cert, cert_pem(cert), 0o644)
        return True

    @property
    def sa_key(self) -> Path:
        return self.path / SA_KEY_FILE

    @property
    def sa_pub(self) -> Path:
        return self.path / SA_PUB_FILE

    def ensure_sa_key(self) -> bool:
        """Create the service-account signing key pair unless it exists; True when created. An
        existing key is kept: replacing it would invalidate every token already mounted in pods."""
        if self.sa_key.exists() and self.sa_pub.exists():
            return False
        key = rsa.generate_private_key(public_exponent=65537, key_size=SA_KEY_BITS)
        write_atomic(self.sa_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()), 0o600)
        write_atomic(self.sa_pub, key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
        return True

    def write(self, name: str, cert: x509.Certificate, key: PrivateKey) -> Pair:
        pair = self.pair(name)
        write_atomic(pair.key, key_pem(key), 0o600)
        write_atomic(pair.cert, cert_pem(cert), 0o644)
        return pair

    def ensure(self, specs: Iterable[CertSpec], *, now: dt.datetime) -> list[str]:
        """The CA, the service-account key pair and every certificate of `specs`, issuing only what is
        missing; names issued."""
        created = ["ca"] if self.ensure_ca(now=now) else []
        if self.ensure_sa_key():
            created.append("sa")
        ca_cert, ca_key = self.load_ca()
        for spec in specs:
            pair = self.pair(spec.name)
            if pair.cert.exists() and pair.key.exists():
                continue
            cert, key = issue(ca_cert, ca_key, spec, now=now)
            self.write(spec.name, cert, key)
            created.append(spec.name)
        return created

    def certificates(self) -> list[CertInfo]:
        """Every certificate under the directory (the CA first), for `skiff certs check`."""
        out = []
        paths = sorted(self.path.rglob("*.crt"), key=lambda p: (p.stem != CA_NAME, str(p)))
        for path in paths:
            cert = load_cert(path)
            cn, orgs = subject_of(cert.subject)
            try:
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                sans = tuple([*san.get_values_for_type(x509.DNSName),
                              *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))])
            except x509.ExtensionNotFound:
                sans = ()
            name = str(path.relative_to(self.path).with_suffix(""))
            out.append(CertInfo(name, path, cn, orgs, cert.not_valid_after_utc, sans))
        return out

    def renew(self, *, now: dt.datetime, days: int = CERT_DAYS) -> list[str]:
        """Re-issue every certificate signed by the CA (same subject, names, usage, new key and
        dates); names renewed. The CA itself is kept: renewing it would orphan every host."""
        ca_cert, ca_key = self.load_ca()
        renewed = []
        for info in self.certificates():
            if info.name == CA_NAME:
                continue
            old = load_cert(info.path)
            if old.issuer != ca_cert.subject:
                continue
            spec = spec_of(info.name, old)
            cert, key = issue(ca_cert, ca_key, spec, now=now, days=days)
            self.write(info.name, cert, key)
            renewed.append(info.name)
        return renewed


def spec_of(name: str, cert: x509.Certificate) -> CertSpec:
    """The CertSpec that issued `cert` (for renewal)."""
    cn, orgs = subject_of(cert.subject)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        server, client = ExtendedKeyUsageOID.SERVER_AUTH in eku, ExtendedKeyUsageOID.CLIENT_AUTH in eku
    except x509.ExtensionNotFound:
        server, client = False, True
    return CertSpec(name, cn, orgs, dns, ips, server=server, client=client)


# ---------------------------------------------------------------- a cluster's certificates

APISERVER = "apiserver"
APISERVER_CLIENT = "apiserver-kubelet-client"
ADMIN = "admin"
CONTROLLER_MANAGER = "controller-manager"
SCHEDULER = "scheduler"
NETPROXY = "netproxy"
CLUSTERDNS = "clusterdns"
# The api-server is reached by these names (as kube-apiserver's certificate lists them).
APISERVER_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")


def store_cert(member: str) -> str:
    return f"store/{member}"


def node_cert(node: str) -> str:
    return f"nodes/{node}"


def node_spec(node: str, ip: str) -> CertSpec:
    """A node's identity: its client certificate (system:node:<name>) that also serves its agent
    (SANs: the node's name and IP; the api-server checks the name)."""
    return CertSpec(node_cert(node), identity.NODE_PREFIX + node, (identity.NODES,), dns_names=(node,),
                    ips=(ip,) if ip else (), server=True, client=True)


def control_plane_specs(*, apiserver_ips: Sequence[str], store_members: Sequence[tuple[str, str]],
                        cluster_domain: str = "cluster.local", extra_dns: Sequence[str] = ()) -> list[CertSpec]:
    """The certificates a control plane needs: api-server (serving and client), each store member's
    serving certificate, admin and each control-plane component. `apiserver_ips` holds every
    address clients dial (loopback, host addresses, the `kubernetes` Service's ClusterIP)."""
    return [
        CertSpec(APISERVER, identity.APISERVER, (),
                 dns_names=(*APISERVER_DNS, f"kubernetes.default.svc.{cluster_domain}", *extra_dns),
                 ips=("127.0.0.1", *apiserver_ips), server=True),
        CertSpec(APISERVER_CLIENT, identity.APISERVER_CLIENT, (), client=True),
        *[CertSpec(store_cert(name), f"store-{name}", (), dns_names=("localhost", name),
                   ips=("127.0.0.1", ip), server=True) for name, ip in store_members],
        CertSpec(ADMIN, identity.ADMIN, (identity.MASTERS,), client=True),
        CertSpec(CONTROLLER_MANAGER, identity.CONTROLLER_MANAGER, (), client=True),
        CertSpec(SCHEDULER, identity.SCHEDULER, (), client=True),
        CertSpec(NETPROXY, identity.NETPROXY, (), client=True),
        CertSpec(CLUSTERDNS, identity.CLUSTERDNS, (), client=True),
    ]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
