"""The client config file: where `skiff` (and other clients) find the api-server.

Location: `$SKIFF_CONFIG` if set, else `~/.skiff/config`. Written by whatever creates a
cluster (`write_config`), read by the CLI. Format (YAML, strict: unknown keys are errors):

    apiVersion: skiff/v1
    kind: Config
    server: 127.0.0.1:6443,127.0.0.2:6443   # one or more api-server endpoints
    namespace: default                       # optional: default namespace for commands
    certificateAuthority: /path/ca.crt       # the cluster CA the api-server's certificate chains to
    clientCertificate: /path/admin.crt       # who `skiff` is (the admin's, as make up writes it)
    clientKey: /path/admin.key

Precedence for the server: `--server`, then `$SKIFF_SERVER`, then the file. Credentials: the
`--certificate-authority/--client-certificate/--client-key` flags, else the file's; none at
all means plaintext (only a cluster run with `--insecure` answers that). The file is written
0600: it names the admin's key.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skiff import errors
from skiff.tls import Credentials

API_VERSION = "skiff/v1"
KIND = "Config"
KEYS = ("apiVersion", "kind", "server", "namespace", "certificateAuthority", "clientCertificate", "clientKey")


@dataclass(frozen=True)
class ClientConfig:
    server: str = ""
    namespace: str = ""
    path: str = ""  # where it was read from ("" when no file)
    certificate_authority: str = ""
    client_certificate: str = ""
    client_key: str = ""

    def credentials(self) -> Credentials | None:
        """The TLS credentials the file names; None when it names none (an --insecure cluster)."""
        if not self.certificate_authority:
            return None
        return Credentials(self.certificate_authority, self.client_certificate, self.client_key)


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    explicit = env.get("SKIFF_CONFIG")
    if explicit:
        return Path(explicit)
    return Path(env.get("HOME") or Path.home()) / ".skiff" / "config"


def load_config(path: Path | None = None, *, environ: Mapping[str, str] | None = None) -> ClientConfig:
    """The config file's content; an empty ClientConfig when there is no file."""
    path = path or config_path(environ)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ClientConfig()
    except OSError as exc:
        raise errors.InvalidError(f"cannot read the config file {path}: {exc}") from exc
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise errors.InvalidError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return ClientConfig(path=str(path))
    if not isinstance(data, dict):
        raise errors.InvalidError(f"config file {path}: expected a mapping with server: HOST:PORT")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise errors.InvalidError(f"config file {path}: unknown key(s) {', '.join(map(str, unknown))} "
                                  f"(known: {', '.join(KEYS)})")
    for key in KEYS:
        if key in data and not isinstance(data[key], str):
            raise errors.InvalidError(f"config file {path}: {key} must be a string")
    if data.get("kind", KIND) != KIND or data.get("apiVersion", API_VERSION) != API_VERSION:
        raise errors.InvalidError(f"config file {path}: expected apiVersion {API_VERSION}, kind {KIND}")
    if bool(data.get("clientCertificate")) != bool(data.get("clientKey")):
        raise errors.InvalidError(f"config file {path}: clientCertificate and clientKey go together")
    return ClientConfig(server=data.get("server", "").strip(), namespace=data.get("namespace", "").strip(),
                        path=str(path), certificate_authority=data.get("certificateAuthority", ""),
                        client_certificate=data.get("clientCertificate", ""), client_key=data.get("clientKey", ""))


def write_config(server: str | Sequence[str], *, namespace: str = "", path: Path | None = None,
                 credentials: Credentials | None = None) -> Path:
    """Write (atomically replace) the config file, mode 0600; returns its path."""
    servers = server if isinstance(server, str) else ",".join(server)
    if not servers.strip():
        raise ValueError("write_config: no api-server endpoint given")
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, str] = {"apiVersion": API_VERSION, "kind": KIND, "server": servers}
    if namespace:
        data["namespace"] = namespace
    if credentials is not None:
        data["certificateAuthority"] = credentials.ca_file
        if credentials.cert_file:
            data["clientCertificate"] = credentials.cert_file
            data["clientKey"] = credentials.key_file
    text = "# Written when this Skiff cluster was created; read by `skiff`.\n" + yaml.safe_dump(data, sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_server(flag: str = "", *, environ: Mapping[str, str] | None = None,
                   config: ClientConfig | None = None) -> str:
    """The api-server endpoints to use: --server, $SKIFF_SERVER, then the config file."""
    env = os.environ if environ is None else environ
    if flag:
        return flag
    if env.get("SKIFF_SERVER"):
        return env["SKIFF_SERVER"]
    cfg = config if config is not None else load_config(environ=env)
    if cfg.server:
        return cfg.server
    raise errors.InvalidError(f"no api-server configured: use --server HOST:PORT, set SKIFF_SERVER, "
                              f"or write {config_path(env)}")


def resolve_credentials(*, ca: str = "", cert: str = "", key: str = "", environ: Mapping[str, str] | None = None,
                        config: ClientConfig | None = None) -> Credentials | None:
    """The credentials to use: the flags when any is given, else the config file's."""
    if ca or cert or key:
        if bool(cert) != bool(key):
            raise errors.InvalidError("--client-certificate and --client-key go together")
        if not ca:
            raise errors.InvalidError("--certificate-authority is required with a client certificate")
        return Credentials(ca, cert, key)
    cfg = config if config is not None else load_config(environ=environ)
    return cfg.credentials()
