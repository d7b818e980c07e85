"""TLS for every Skiff connection: the credentials a client presents, what a server serves,
the daemons' TLS flags, and who the peer of a gRPC call is.

What must hold:
- One small object per side: `Credentials` (a client: the CA it trusts, its certificate and
  key, or a bearer token) and `ServerTLS` (a server: its certificate and key, the CA its
  clients' certificates must chain to). Channels and server credentials are built only here.
- Flags are spelled as Kubernetes and etcd spell them (`--tls-cert-file`,
  `--tls-private-key-file`, `--client-ca-file`; a client's `--certificate-authority`,
  `--client-certificate`, `--client-key`, as kubectl's); `--insecure` is the explicit
  development mode: plaintext, no authentication, and a loud WARNING in the log.
- A daemon given neither TLS files nor `--insecure` refuses to start: plaintext is never a
  default.
- The peer of a call is read from the TLS handshake the server verified (the certificate
  chain was checked against the client CA by gRPC itself), never from request data.
"""

from __future__ import annotations

import argparse
import functools
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from skiff import pki
from skiff.identity import UserInfo

log = logging.getLogger("skiff.tls")

INSECURE_WARNING = ("RUNNING INSECURE (--insecure): plaintext connections, no authentication, every caller is "
                    "treated as the cluster admin. For development only; never on a network others can reach.")


class TLSConfigError(ValueError):
    """TLS flags that cannot be used; the message names the flag."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Credentials:
    """What a client presents: the CA it trusts, and a client certificate and key and/or a
    bearer token. `server_name` overrides the name the server's certificate must carry
    (a node agent is dialled by address but must prove its node name)."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""
    token: str = ""
    server_name: str = ""

    @classmethod
    def from_pki(cls, pki_dir: Path | str, name: str) -> Credentials:
        d = pki.PKIDir(pki_dir)
        pair = d.pair(name)
        return cls(str(d.ca.cert), str(pair.cert), str(pair.key))

    def channel_credentials(self) -> grpc.ChannelCredentials:
        ca = _read(self.ca_file, "the CA certificate")
        cert = _read(self.cert_file, "the client certificate") if self.cert_file else None
        key = _read(self.key_file, "the client key") if self.key_file else None
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        if self.token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(self.token))
        return creds

    def channel_options(self) -> tuple[tuple[str, Any], ...]:
        return (("grpc.ssl_target_name_override", self.server_name),) if self.server_name else ()

    def ssl_context(self) -> ssl.SSLContext:
        """For HTTPS clients (the REST API's tests, helpers)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def with_server_name(self, name: str) -> Credentials:
        return Credentials(self.ca_file, self.cert_file, self.key_file, self.token, name)


@dataclass(frozen=True)
class ServerTLS:
    """What a server serves: its certificate and key; with `client_ca_file`, client
    certificates are verified against it (and required when `require_client_cert`)."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""
    require_client_cert: bool = False

    def server_credentials(self) -> grpc.ServerCredentials:
        pair = (_read(self.key_file, "the private key"), _read(self.cert_file, "the certificate"))
        ca = _read(self.client_ca_file, "the client CA") if self.client_ca_file else None
        if self.require_client_cert and ca is None:
            raise TLSConfigError("client certificates are required but no client CA is given (--client-ca-file)")
        return grpc.ssl_server_credentials([pair], root_certificates=ca,
                                           require_client_auth=self.require_client_cert)

    def ssl_context(self) -> ssl.SSLContext:
        """For the HTTPS server: client certificates verified when sent (optional unless required)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(cafile=self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return ctx


def add_insecure_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure", action="store_true",
                        help="development only: plaintext, no authentication, every caller is the admin")


def add_server_flags(parser: argparse.ArgumentParser, *, what: str = "") -> None:
    """--tls-cert-file, --tls-private-key-file, --client-ca-file (kube-apiserver's and kubelet's spelling)."""
    g = parser.add_argument_group(f"serving TLS{' (' + what + ')' if what else ''}")
    g.add_argument("--tls-cert-file", default="", help="serving certificate (PEM)")
    g.add_argument("--tls-private-key-file", default="", help="its private key (PEM)")
    g.add_argument("--client-ca-file", default="", help="CA that client certificates must chain to")


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """--certificate-authority, --client-certificate, --client-key (kubectl's spelling): how this
    daemon proves itself to the api-server."""
    g = parser.add_argument_group("api-server client credentials")
    g.add_argument("--certificate-authority", default="", help="CA the api-server's certificate must chain to")
    g.add_argument("--client-certificate", default="", help="this component's client certificate")
    g.add_argument("--client-key", default="", help="its private key")


def server_tls(args: argparse.Namespace, *, require_client_cert: bool) -> ServerTLS | None:
    """ServerTLS from the serving flags; None with --insecure; TLSConfigError when neither is given."""
    if getattr(args, "insecure", False):
        return None
    if not args.tls_cert_file or not args.tls_private_key_file:
        raise TLSConfigError("TLS is required: give --tls-cert-file and --tls-private-key-file "
                             "(or --insecure for development)")
    if require_client_cert and not args.client_ca_file:
        raise TLSConfigError("--client-ca-file is required: clients must present certificates")
    return ServerTLS(args.tls_cert_file, args.tls_private_key_file, args.client_ca_file,
                     require_client_cert=require_client_cert)


def client_credentials(args: argparse.Namespace) -> Credentials | None:
    """Credentials from the client flags; None with --insecure; TLSConfigError when missing."""
    if getattr(args, "insecure", False):
        return None
    if not args.certificate_authority or not args.client_certificate or not args.client_key:
        raise TLSConfigError("api-server credentials are required: give --certificate-authority, "
                             "--client-certificate and --client-key (or --insecure for development)")
    return Credentials(args.certificate_authority, args.client_certificate, args.client_key)


def warn_insecure(daemon: str) -> None:
    banner = "!" * 100
    log.warning("%s\n%s: %s\n%s", banner, daemon, INSECURE_WARNING, banner)


def client_flags(creds: Credentials | None) -> list[str]:
    """The argv that gives a daemon these api-server client credentials (or --insecure)."""
    if creds is None:
        return ["--insecure"]
    return ["--certificate-authority", creds.ca_file, "--client-certificate", creds.cert_file,
            "--client-key", creds.key_file]


def server_flags(tls: ServerTLS | None) -> list[str]:
    if tls is None:
        return ["--insecure"]
    argv = ["--tls-cert-file", tls.cert_file, "--tls-private-key-file", tls.key_file]
    return argv + (["--client-ca-file", tls.client_ca_file] if tls.client_ca_file else [])


# ---------------------------------------------------------------- the peer of a call


@functools.lru_cache(maxsize=1024)
def _user_of_pem(pem: bytes) -> UserInfo:
    return pki.user_of(x509.load_pem_x509_certificate(pem))


def peer_certificate_user(auth_context: Mapping[str, Iterable[bytes]]) -> UserInfo | None:
    """The user of the verified client certificate of a gRPC call, None without one.

    gRPC fills `x509_pem_cert` only after it verified the chain against the server's client
    CA; the certificate is parsed (and cached) for its Os, which the auth context lacks."""
    pems = list(auth_context.get("x509_pem_cert") or ())
    if not pems:
        return None
    return _user_of_pem(bytes(pems[0]))


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of an `authorization: Bearer <token>` header, "" without one."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""



def daemon_credentials(args: argparse.Namespace, daemon: str) -> Credentials | None:
    """A client daemon's api-server credentials from its flags (add_client_flags and
    add_insecure_flag); exits with a usage error when neither is given, warns loudly on --insecure."""
    try:
        creds = client_credentials(args)
    except TLSConfigError as exc:
        raise SystemExit(f"{daemon}: {exc}") from None
    if creds is None:
        warn_insecure(daemon)
    return creds


def add_daemon_client_flags(parser: argparse.ArgumentParser) -> None:
    add_client_flags(parser)
    add_insecure_flag(parser)


# ---------------------------------------------------------------- a cluster's TLS, from a PKI directory


# kube-apiserver's default issuer (and so the default audience of tokens it issues).
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class ServiceAccountKeys:
    """The api-server's service-account token keys (kube-apiserver's --service-account-* flags)."""

    signing_key_file: str  # private: signs the tokens it issues
    key_file: str  # public: verifies tokens presented to it
    issuer: str = SERVICE_ACCOUNT_ISSUER


@dataclass(frozen=True)
class ApiServerTLS:
    """Everything TLS about an api-server: what it serves, and how it reaches store and agents."""

    serving: ServerTLS
    store: Credentials | None  # None: the store is reached in plaintext (an external etcd on loopback)
    kubelet: Credentials
    service_account: ServiceAccountKeys | None = None  # None: no service-account tokens are issued or accepted


def apiserver_tls(pki_dir: Path | str) -> ApiServerTLS:
    d = pki.PKIDir(pki_dir)
    ca = str(d.ca.cert)
    serving = d.pair(pki.APISERVER)
    return ApiServerTLS(ServerTLS(str(serving.cert), str(serving.key), ca),
                        Credentials.from_pki(d.path, pki.APISERVER_CLIENT),
                        Credentials.from_pki(d.path, pki.APISERVER_CLIENT),
                        ServiceAccountKeys(str(d.sa_key), str(d.sa_pub)))


def store_tls(pki_dir: Path | str, member: str) -> ServerTLS:
    d = pki.PKIDir(pki_dir)
    pair = d.pair(pki.store_cert(member))
    return ServerTLS(str(pair.cert), str(pair.key), str(d.ca.cert), require_client_cert=True)


def node_tls(pki_dir: Path | str, node: str) -> tuple[ServerTLS, Credentials]:
    """A node agent's serving TLS and its api-server credentials: both its node certificate."""
    d = pki.PKIDir(pki_dir)
    pair = d.pair(pki.node_cert(node))
    return (ServerTLS(str(pair.cert), str(pair.key), str(d.ca.cert), require_client_cert=True),
            Credentials(str(d.ca.cert), str(pair.cert), str(pair.key)))
