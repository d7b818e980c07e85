"""External etcd as the store: rendering, the cluster file, the all-in-one, install flags, the lab's etcd."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controlplane.apiserver.etcd import split_endpoints
from deploy import externaletcd, render
from deploy.install import InstallError, external_store

EXT = render.ExternalStore("https://10.0.0.5:2379,https://10.0.0.6:2379", "/pki/ca.crt", "/pki/client.crt",
                           "/pki/client.key")
HOST = render.HostConfig("cp", "10.0.0.10", (render.CONTROL_PLANE,), Path("/var/lib/skiff"),
                         store_password_file=Path("/etc/skiff/store-password"))


def _flag(argv: tuple[str, ...] | list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_external_store_runs_only_api_servers_on_the_control_plane() -> None:
    c = render.ClusterConfig(members=render.plan_members([("cp", "10.0.0.10")]), external_store=EXT)
    specs = render.daemons_for(c, HOST)
    assert [s.name for s in specs] == ["apiserver-s1", "apiserver-s2", "apiserver-s3", "controllers", "scheduler"]
    for spec in specs[:3]:
        assert _flag(spec.argv, "--store-endpoints") == EXT.endpoints
        assert (_flag(spec.argv, "--etcd-cafile"), _flag(spec.argv, "--etcd-certfile"),
                _flag(spec.argv, "--etcd-keyfile")) == EXT.tls
        assert spec.after == ()  # no store member of ours to wait for
    assert c.store_endpoints == EXT.endpoints


def test_without_external_store_the_etcd_flags_are_the_cluster_pki() -> None:
    c = render.ClusterConfig(members=render.plan_members([("cp", "10.0.0.10")]))
    api = next(s for s in render.daemons_for(c, HOST) if s.name == "apiserver-s1")
    assert _flag(api.argv, "--etcd-cafile") == str(HOST.pki / "ca.crt")
    assert _flag(api.argv, "--etcd-cafile") != EXT.ca_file


@pytest.mark.parametrize("ext", [EXT, render.ExternalStore("10.0.0.5:2379"), None], ids=["tls", "plain", "none"])
def test_cluster_file_round_trip_keeps_the_external_store(ext: render.ExternalStore | None) -> None:
    c = render.ClusterConfig(members=render.plan_members([("cp", "10.0.0.10")]), external_store=ext, python="py")
    data = render.cluster_to_dict(c)
    assert ("externalStore" in data) == (ext is not None)
    assert render.cluster_from_dict(data, python="py") == c


@pytest.mark.parametrize(("external", "message"), [
    ({"endpoints": ""}, "endpoints: empty"),
    ({"endpoints": "https://x:2379", "caFiles": "x"}, "unknown field"),
    ("https://x:2379", "expected an object"),
    ({"caFile": "/ca"}, "endpoints: missing"),
], ids=["empty-endpoints", "unknown-field", "not-an-object", "no-endpoints"])
def test_cluster_file_external_store_errors(external: object, message: str) -> None:
    data = render.cluster_to_dict(render.ClusterConfig(members=render.plan_members([("cp", "10.0.0.10")])))
    data["externalStore"] = external
    with pytest.raises(render.ConfigError, match=message):
        render.cluster_from_dict(data)


def test_all_in_one_passes_the_etcd_tls_flags_like_render() -> None:
    from controlplane.__main__ import build_parser, plan_children

    c = render.ClusterConfig(members=(render.StoreMember("s1", "cp", "10.0.0.10"),), python="py",
                             external_store=EXT)
    rendered = {s.name: list(s.argv) for s in render.daemons_for(c, HOST)}
    args = build_parser().parse_args([
        "--store-endpoints", EXT.endpoints, "--etcd-cafile", EXT.ca_file, "--etcd-certfile", EXT.cert_file,
        "--etcd-keyfile", EXT.key_file, "--listen", "10.0.0.10:6443", "--node-name", "cp",
        "--audit-log-path", str(HOST.state_dir / "apiserver" / "audit-s1.log"), "--pki-dir", str(HOST.pki)])
    planned = {child.name: child.argv for child in plan_children(args, python="py")}
    assert set(planned) == {"apiserver", "controllers", "scheduler"}
    assert planned["apiserver"] == rendered["apiserver-s1"]


def _args(**kw: str) -> argparse.Namespace:
    base = {"external_etcd": "", "etcd_cafile": "", "etcd_certfile": "", "etcd_keyfile": ""}
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize(("kw", "message"), [
    ({"etcd_cafile": "CA"}, "without --external-etcd"),
    ({"external_etcd": "https://x:2379", "etcd_certfile": "CERT"}, "go together"),
    ({"external_etcd": "https://x:2379", "etcd_cafile": "/nonexistent/ca.crt"}, "no such file"),
], ids=["tls-without-etcd", "cert-without-key", "missing-file"])
def test_install_external_etcd_flags_rejected(kw: dict[str, str], message: str, tmp_path: Path) -> None:
    kw = {k: (str(tmp_path / v) if v in ("CA", "CERT") else v) for k, v in kw.items()}
    with pytest.raises(InstallError, match=message):
        external_store(_args(**kw))


def test_install_external_etcd_flags(tmp_path: Path) -> None:
    for name in ("ca.crt", "c.crt", "c.key"):
        (tmp_path / name).write_text("x")
    ext = external_store(_args(external_etcd="https://x:2379", etcd_cafile=str(tmp_path / "ca.crt"),
                               etcd_certfile=str(tmp_path / "c.crt"), etcd_keyfile=str(tmp_path / "c.key")))
    assert ext == render.ExternalStore("https://x:2379", str(tmp_path / "ca.crt"), str(tmp_path / "c.crt"),
                                       str(tmp_path / "c.key"))
    assert external_store(_args()) is None


@pytest.mark.parametrize(("endpoints", "targets"), [
    ("127.0.0.1:2379", ["127.0.0.1:2379"]),
    ("http://a:2379, http://b:2379", ["a:2379", "b:2379"]),
    ("https://a:2379,https://b:2379/", ["a:2379", "b:2379"]),
], ids=["bare", "http", "https"])
def test_split_endpoints(endpoints: str, targets: list[str]) -> None:
    assert split_endpoints(endpoints) == targets


def test_lab_etcd_members_use_tls_and_client_certificates(tmp_path: Path) -> None:
    members = externaletcd.plan("10.77.0.2")
    assert [m.client_url for m in members] == ["https://10.77.0.2:12379", "https://10.77.0.2:12479",
                                               "https://10.77.0.2:12579"]
    pki = externaletcd.make_pki(tmp_path / "pki", ["10.77.0.2"])
    argv = externaletcd.member_argv(members[1], members, data_dir=tmp_path / "d", pki=pki, token="t")
    assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
    assert _flag(argv, "--initial-cluster") == ("etcd1=https://10.77.0.2:12380,etcd2=https://10.77.0.2:12480,"
                                                "etcd3=https://10.77.0.2:12580")
    assert _flag(argv, "--listen-client-urls") == "https://10.77.0.2:12479"
    assert (pki.client_key.stat().st_mode & 0o777) == 0o600
    from cryptography import x509

    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    ips = {str(ip) for ip in server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
           .get_values_for_type(x509.IPAddress)}
    assert ips == {"10.77.0.2", "127.0.0.1"}
