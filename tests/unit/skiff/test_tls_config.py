"""The client side of TLS: the CLI config's credentials, their precedence, the kubeconfig entry,
bootstrap token Secrets, and `skiff certs check`."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from skiff import bootstraptoken, config, errors, identity, kubeconfig, pki
from skiff.cli import certs
from skiff.tls import Credentials

ADMIN = Credentials("/pki/ca.crt", "/pki/admin.crt", "/pki/admin.key")


def test_config_round_trips_credentials_and_is_private(tmp_path: Path) -> None:
    path = config.write_config("10.0.0.1:6443", path=tmp_path / "config", credentials=ADMIN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = config.load_config(path)
    assert loaded.server == "10.0.0.1:6443" and loaded.credentials() == ADMIN


@pytest.mark.parametrize(("flags", "file_creds", "expected"), [
    ({}, ADMIN, ADMIN),
    ({}, None, None),
    ({"ca": "/o/ca", "cert": "/o/c", "key": "/o/k"}, ADMIN, Credentials("/o/ca", "/o/c", "/o/k")),
    ({"ca": "/o/ca"}, ADMIN, Credentials("/o/ca")),
    ({"cert": "/o/c", "key": "/o/k"}, ADMIN, "error"),
    ({"ca": "/o/ca", "cert": "/o/c"}, ADMIN, "error"),
], ids=["from-file", "none", "flags-win", "ca-only", "cert-without-ca", "cert-without-key"])
def test_resolve_credentials(tmp_path: Path, flags: dict[str, str], file_creds: Credentials | None,
                             expected: Credentials | str | None) -> None:
    cfg = config.load_config(config.write_config("h:1", path=tmp_path / "c", credentials=file_creds))
    if expected == "error":
        with pytest.raises(errors.InvalidError):
            config.resolve_credentials(config=cfg, **flags)
    else:
        assert config.resolve_credentials(config=cfg, **flags) == expected


def test_kubeconfig_entry_carries_the_ca_and_the_admin_certificate() -> None:
    out = kubeconfig.merge(None, server="https://10.0.0.1:8443", credentials=ADMIN)
    assert out["clusters"][0]["cluster"] == {"server": "https://10.0.0.1:8443", "certificate-authority": "/pki/ca.crt"}
    assert out["users"][0]["user"] == {"client-certificate": "/pki/admin.crt", "client-key": "/pki/admin.key"}


@pytest.mark.parametrize(("ttl", "expiration"), [(3600, "2026-12-07T13:00:00Z"), (None, "")],
                         ids=["expiring", "until-deleted"])
def test_bootstrap_token_secret(ttl: int | None, expiration: str) -> None:
    token = bootstraptoken.generate()
    assert bootstraptoken.parse(token) is not None and token != bootstraptoken.generate()
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    s = bootstraptoken.make_secret(token, expires=None if ttl is None else now + dt.timedelta(seconds=ttl))
    assert s.type == "bootstrap.kubernetes.io/token" and s.metadata.namespace == "kube-system"
    assert s.metadata.name == "bootstrap-token-" + token.split(".")[0]
    assert s.data["token-secret"] == token.split(".")[1].encode()
    assert s.data.get("expiration", b"").decode() == expiration


def test_a_malformed_token_makes_no_secret() -> None:
    with pytest.raises(ValueError):
        bootstraptoken.make_secret("ABCDEF.0123456789abcdef", expires=None)


@pytest.mark.parametrize(("days_left", "state"), [(200, "200d"), (10, "WARNING: 10d left"), (-1, "EXPIRED")],
                         ids=["fine", "near-expiry", "expired"])
def test_certs_check_states(days_left: int, state: str) -> None:
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    info = pki.CertInfo("admin", Path("/x"), identity.ADMIN, (), now + dt.timedelta(days=days_left, hours=1), ())
    assert certs.status_of(info, now) == state


def test_certs_check_and_renew_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = pki.PKIDir(tmp_path)
    d.ensure([pki.CertSpec("admin", identity.ADMIN, (identity.MASTERS,), client=True)], now=pki.utcnow())
    from skiff.cli.main import main

    assert main(["certs", "check", "--pki-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "admin" in out and "kubernetes-admin (system:masters)" in out and "ca " in out
    before = d.pair("admin").cert.read_bytes()
    assert main(["certs", "renew", "--pki-dir", str(tmp_path)]) == 0
    assert d.pair("admin").cert.read_bytes() != before
