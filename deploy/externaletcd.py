"""A real etcd cluster (Debian's etcd-server) with TLS, for labs that use etcd instead of Skiff's store.

`skiff lab up --external-etcd` runs 3 etcd members on the first control-plane host, with a CA
made for the lab, serving certificates for that host's IP, `--client-cert-auth` (clients must
present a certificate the CA signed) and TLS between the members; the api-servers get the
endpoints and a client certificate (`--etcd-cafile/--etcd-certfile/--etcd-keyfile`). What
must hold: the cluster's endpoints are https:// and refuse clients without a certificate;
`member_argv` and `plan` are pure (the tests check the command lines); the keys are written
0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
CLIENT_PORT, PEER_PORT = 12379, 12380  # next to the Skiff store's 2379/2380, so both could run
PORT_STEP = 100  # member i listens on CLIENT_PORT + i*PORT_STEP and PEER_PORT + i*PORT_STEP


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class Member:
    name: str
    ip: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"https://{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.ip}:{self.peer_port}"


def pki_paths(directory: Path) -> Pki:
    return Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key", directory / "client.crt",
               directory / "client.key")


def plan(ip: str, members: int = 3) -> tuple[Member, ...]:
    return tuple(Member(f"etcd{i + 1}", ip, CLIENT_PORT + i * PORT_STEP, PEER_PORT + i * PORT_STEP)
                 for i in range(members))


def endpoints(members: tuple[Member, ...]) -> str:
    return ",".join(m.client_url for m in members)


def member_argv(m: Member, members: tuple[Member, ...], *, data_dir: Path, pki: Pki, token: str) -> list[str]:
    initial = ",".join(f"{o.name}={o.peer_url}" for o in members)
    return [ETCD, "--name", m.name, "--data-dir", str(data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", token,
            "--cert-file", str(pki.server_cert), "--key-file", str(pki.server_key),
            "--trusted-ca-file", str(pki.ca), "--client-cert-auth",
            "--peer-cert-file", str(pki.server_cert), "--peer-key-file", str(pki.server_key),
            "--peer-trusted-ca-file", str(pki.ca), "--peer-client-cert-auth",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
            "--experimental-watch-progress-notify-interval", "1s"]


def make_pki(directory: Path, ips: list[str], *, days: int = 365) -> Pki:
    """A CA, one serving certificate for `ips` (+ 127.0.0.1) used by every member for clients and
    peers, and one client certificate (CN skiff-apiserver), as PEM files under `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    later = now + datetime.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("skiff-etcd-ca")).issuer_name(name("skiff-etcd-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usages: list[x509.ObjectIdentifier], sans: list[str]) -> tuple[x509.Certificate,
                                                                                   ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)) for ip in sans] + [x509.DNSName("localhost")]),
                critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf("skiff-etcd", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                              sorted({*ips, "127.0.0.1"}))
    client, client_key = leaf("skiff-apiserver", [ExtendedKeyUsageOID.CLIENT_AUTH], [])
    pki = pki_paths(directory)
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    write_key(pki.server_key, server_key)
    pki.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    write_key(pki.client_key, client_key)
    return pki
