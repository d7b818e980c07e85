"""deploy/install: planning tables, the signed join information, and the installer's file and
ordering behaviour with a recording service manager and health checks (no daemon started)."""

from __future__ import annotations

import argparse
import asyncio
import json
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from controlplane.apiserver.memstore import MemoryStore
from deploy import containerd, install, render
from skiff import images
from skiff.cli import node as cli_node
from skiff.client import ApiClient
from skiffpb.api.v1 import types_pb2 as t

TOKEN = "abcdef.0123456789abcdef"
OTHER = "fedcba.9876543210fedcba"
T = TypeVar("T")


# ---------------------------------------------------------------- tables


@pytest.mark.parametrize(
    ("peers", "hosts"),
    [
        ([], ["cp1", "cp1", "cp1"]),
        ([("cp2", "10.0.0.2"), ("cp3", "10.0.0.3")], ["cp1", "cp2", "cp3"]),
    ],
    ids=["one-machine", "three-machines"],
)
def test_plan_cluster_members(peers: list[tuple[str, str]], hosts: list[str]) -> None:
    c = install.plan_cluster("cp1", "10.0.0.1", peers, proxy_mode="ipvs")
    assert [m.host for m in c.members] == hosts
    assert c.proxy_mode == "ipvs"
    assert c.cluster_token.startswith("skiff-")


@pytest.mark.parametrize(
    ("peers", "kw", "message"),
    [
        ([("cp2", "10.0.0.2")], {}, "1 or 3 machines"),
        ([("cp1", "10.0.0.2"), ("cp3", "10.0.0.3")], {}, "must differ"),
        ([], {"service_cidr": "10.96.0.1/33"}, "cluster.serviceCidr"),
        ([], {"cluster_cidr": "pods"}, "cluster.clusterCidr"),
    ],
    ids=["two-machines", "duplicate-name", "bad-service-cidr", "bad-cluster-cidr"],
)
def test_plan_cluster_errors(peers: list[tuple[str, str]], kw: dict[str, str], message: str) -> None:
    with pytest.raises(install.InstallError, match=message):
        install.plan_cluster("cp1", "10.0.0.1", peers, **kw)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: install.check_name("CP_1"), "--name"),
        (lambda: install.check_ip("10.0.0.300"), "not an IPv4"),
        (lambda: install.check_token("0123456789abcdef0123456789abcdef"), "bootstrap token"),
        (lambda: install.parse_peers("cp2:10.0.0.2"), "name=ip"),
        (lambda: install.parse_peers("cp2=host"), "--peers cp2"),
        (lambda: install.parse_endpoint("10.0.0.1:99999"), "IP:PORT"),
        (lambda: install.parse_endpoint("cp1:6443"), "not an IPv4"),
    ],
    ids=["name", "ip", "token", "peer-syntax", "peer-ip", "port", "hostname"],
)
def test_bad_input_names_the_problem(call: object, message: str) -> None:
    with pytest.raises(install.InstallError, match=message):
        call()  # type: ignore[operator]


def test_parse_helpers() -> None:
    assert install.parse_peers(" cp2=10.0.0.2, cp3=10.0.0.3 ") == [("cp2", "10.0.0.2"), ("cp3", "10.0.0.3")]
    assert install.parse_endpoint("10.0.0.1") == "10.0.0.1:6443"


def test_restart_plan_keeps_the_store_quorum() -> None:
    c = install.plan_cluster("cp", "10.0.0.1", [])
    cp = render.HostConfig("cp", "10.0.0.1", (render.CONTROL_PLANE,), Path("/s"))
    assert install.restart_plan(c, cp, containerd_changed=False) == [
        ("restart", "store-s1"), ("wait-store", "s1"), ("restart", "store-s2"), ("wait-store", "s2"),
        ("restart", "store-s3"), ("wait-store", "s3"),
        ("restart", "apiserver-s1"), ("wait-api", "s1"), ("restart", "apiserver-s2"), ("wait-api", "s2"),
        ("restart", "apiserver-s3"), ("wait-api", "s3"),
        ("restart", "controllers"), ("restart", "scheduler")]


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (False, ["import-images", "restart nodeagent", "wait-node", "restart netproxy", "restart clusterdns"]),
        (True, ["restart containerd", "wait-containerd", "import-images", "restart nodeagent", "wait-node",
                "restart netproxy", "restart clusterdns"]),
    ],
    ids=["containerd-unchanged", "containerd-changed"],
)
def test_restart_plan_worker(changed: bool, expected: list[str]) -> None:
    c = install.plan_cluster("cp", "10.0.0.1", [])
    n1 = render.HostConfig("n1", "10.0.0.2", (render.WORKER,), Path("/s"))
    steps = install.restart_plan(c, n1, containerd_changed=changed)
    assert [a if a != "restart" else f"restart {d}" for a, d in steps] == expected


def test_stop_order_agent_first_containerd_last() -> None:
    units = [install.unit_name(d) for d in ("containerd", "store-s1", "apiserver-s1", "netproxy", "scheduler",
                                            "nodeagent", "controllers")]
    assert install.stop_order(units) == [install.unit_name(d) for d in (
        "nodeagent", "netproxy", "controllers", "scheduler", "apiserver-s1", "store-s1", "containerd")]


def test_parse_unit_reads_what_systemd_unit_writes() -> None:
    spec = render.DaemonSpec("x", ("/usr/bin/python3", "-m", "m", "--label", "a b", "--q", "it's"), "X",
                             env={"FOO": "bar"})
    argv, env = install.parse_unit(render.systemd_unit(spec))
    assert tuple(argv) == spec.argv
    assert env == {"PYTHONUNBUFFERED": "1", "FOO": "bar"}


# ---------------------------------------------------------------- the signed join information


def test_cluster_info_signature() -> None:
    c = install.plan_cluster("cp", "10.0.0.1", [], python="/py")
    text = install.cluster_info_text(c, "-----BEGIN CERTIFICATE-----\nCA\n")
    sig = install.sign_cluster_info(text, TOKEN)
    assert install.verify_cluster_info(text, sig, TOKEN, python="/py") == (c, "-----BEGIN CERTIFICATE-----\nCA\n")
    with pytest.raises(install.InstallError, match="not signed with this token"):
        install.verify_cluster_info(text, sig, OTHER)
    tampered = text.replace("10.0.0.1", "10.0.0.9")
    with pytest.raises(install.InstallError, match="not signed with this token"):
        install.verify_cluster_info(tampered, sig, TOKEN)
    assert TOKEN not in text and TOKEN not in sig  # the token itself is never published


async def test_publish_and_fetch_through_the_api(api: InProcessApi) -> None:
    c = install.plan_cluster("cp", "10.0.0.1", [], python="/py")
    with pytest.raises(install.InstallError, match="published no cluster information"):
        await install.fetch_cluster_info(api, TOKEN, source="x")
    await install.publish_cluster_info(api, c, TOKEN)
    await install.publish_cluster_info(api, c, TOKEN)  # again: an update, not a conflict
    # The api-server creates kube-public itself: both publishes update it.
    assert (api.count("create", "namespaces"), api.count("update", "namespaces")) == (0, 2)
    assert await install.fetch_cluster_info(api, TOKEN, source="x", python="/py") == (c, "")
    with pytest.raises(install.InstallError, match="wrong --token"):
        await install.fetch_cluster_info(api, OTHER, source="x")


# ---------------------------------------------------------------- the installer, with recording seams


class Recorder:
    """A service manager and health checker that only log what they are asked, in order."""

    def __init__(self, *, starts: bool = True) -> None:
        self.starts = starts
        self.log: list[str] = []
        self.running: set[str] = set()

    def reload(self) -> None:
        self.log.append("reload")

    def start(self, unit: str) -> None:
        self.log.append(f"start {unit}")
        self.running.add(unit)

    def restart(self, unit: str) -> None:
        self.log.append(f"restart {unit}")

    def stop(self, unit: str) -> None:
        self.log.append(f"stop {unit}")
        self.running.discard(unit)

    def disable(self, unit: str) -> None:
        self.log.append(f"disable {unit}")

    def active(self, unit: str) -> bool:
        return unit in self.running

    def wait_api(self, endpoints: str, *, timeout: float) -> None:
        self.log.append(f"wait-api {endpoints.split(',')[0]}")

    def wait_store(self, member: render.StoreMember, *, timeout: float) -> None:
        self.log.append(f"wait-store {member.name}")

    def wait_containerd(self, endpoint: str, *, timeout: float) -> None:
        self.log.append("wait-containerd")

    def wait_node_ready(self, api_servers: str, node: str, *, since: float, timeout: float) -> None:
        self.log.append(f"wait-node {node}")


def installer(root: Path, rec: Recorder, store: MemoryStore | None = None) -> install.Installer:
    """An installer whose every api-server call connects to an in-process api-server over `store`
    (the cluster's state, shared by every installer of one test)."""
    shared = store or MemoryStore()
    return install.Installer(install.Layout.make(root), rec, rec, python="/opt/skiff/.venv/bin/python",
                             say=lambda _: None, api=lambda _endpoints: InProcessApi(store=shared))


def call(store: MemoryStore, fn: Callable[[ApiClient], Awaitable[T]]) -> T:
    """`fn` run against an api-server over `store`, as a separate client would."""
    async def run() -> T:
        async with InProcessApi(store=store) as api:
            return await fn(api)

    return asyncio.run(run())


def test_control_plane_render_only(tmp_path: Path) -> None:
    rec = Recorder(starts=False)
    inst = installer(tmp_path, rec)
    assert inst.control_plane(name="cp", ip="10.0.0.1", token=TOKEN) == 0
    lay = inst.layout
    units = sorted(p.name for p in lay.units.iterdir())
    assert len(units) == 8 and all(u.startswith("skiff-") for u in units)
    for secret in (lay.password_file, lay.token_file):
        assert secret.stat().st_mode & 0o777 == 0o600
    assert lay.token_file.read_text().strip() == TOKEN
    assert not lay.bundle_file.exists()  # one machine: nobody joins the control plane
    unit = (lay.units / "skiff-store-s1.service").read_text()
    assert f"--password-file {lay.password_file}" in unit and f"--data-dir {lay.state_dir}/store/s1" in unit
    assert unit.count("ExecStart=/opt/skiff/.venv/bin/python -m controlplane.store") == 1
    assert not any(line.startswith("start") for line in rec.log)
    cluster = render.cluster_from_dict(json.loads(lay.cluster_file.read_text()))
    assert [m.api_url for m in cluster.members] == ["10.0.0.1:6443", "10.0.0.1:6444", "10.0.0.1:6445"]

    # A re-run keeps the secrets and the cluster; asking for another one is an error.
    password = lay.password_file.read_text()
    token_before = cluster.cluster_token
    assert inst.control_plane(name="cp", ip="10.0.0.1") == 0
    assert lay.password_file.read_text() == password and lay.token_file.read_text().strip() == TOKEN
    assert render.cluster_from_dict(json.loads(lay.cluster_file.read_text())).cluster_token == token_before
    with pytest.raises(install.InstallError, match="--proxy-mode ipvs: this machine is already installed"):
        inst.control_plane(name="cp", ip="10.0.0.1", proxy_mode="ipvs")


def test_three_control_plane_machines_share_the_bundle(tmp_path: Path) -> None:
    first = installer(tmp_path / "cp1", Recorder(starts=False))
    first.control_plane(name="cp1", ip="10.0.0.1", peers=[("cp2", "10.0.0.2"), ("cp3", "10.0.0.3")])
    bundle = first.layout.bundle_file
    assert bundle.stat().st_mode & 0o777 == 0o600
    second = installer(tmp_path / "cp2", Recorder(starts=False))
    second.control_plane(name="cp2", ip="10.0.0.2", bundle=bundle)
    for f in ("cluster.json", "store-password", "join-token"):
        assert (second.layout.etc / f).read_text() == (first.layout.etc / f).read_text(), f
    # One service-account key pair for every api-server: a token one issues, another verifies.
    for f in ("sa.key", "sa.pub"):
        assert (second.layout.pki / f).read_bytes() == (first.layout.pki / f).read_bytes(), f
    assert [p.name for p in sorted(second.layout.units.iterdir()) if "store" in p.name] == ["skiff-store-s2.service"]
    with pytest.raises(install.InstallError, match="cp4 runs no store member"):
        installer(tmp_path / "cp4", Recorder(starts=False)).control_plane(name="cp4", ip="10.0.0.4", bundle=bundle)
    with pytest.raises(install.InstallError, match=r"expects cp3 at 10\.0\.0\.3"):
        installer(tmp_path / "cp3", Recorder(starts=False)).control_plane(name="cp3", ip="10.0.0.9", bundle=bundle)


def test_control_plane_starts_waits_and_publishes(tmp_path: Path) -> None:
    rec, store = Recorder(), MemoryStore()
    inst = installer(tmp_path, rec, store)
    inst.control_plane(name="cp", ip="10.0.0.1", token=TOKEN)
    starts = [line.split()[1] for line in rec.log if line.startswith("start")]
    assert starts[:3] == ["skiff-store-s1.service", "skiff-store-s2.service", "skiff-store-s3.service"]
    assert rec.log[-1] == "wait-api 10.0.0.1:6443"
    # What a worker fetches with the token is the installed cluster.
    got, ca_pem = call(store, lambda api: install.fetch_cluster_info(api, TOKEN, source="cp",
                                                                     python="/opt/skiff/.venv/bin/python"))
    assert got == render.cluster_from_dict(json.loads(inst.layout.cluster_file.read_text()),
                                           python="/opt/skiff/.venv/bin/python")
    # ... with the CA the worker will trust, and a bootstrap token Secret the agent joins with.
    assert ca_pem == (inst.layout.pki / "ca.crt").read_text()
    secret = call(store, lambda api: api.get(t.Secret, "bootstrap-token-abcdef", "kube-system"))
    assert secret.data["token-secret"] == b"0123456789abcdef" and secret.data["expiration"]


def test_first_of_three_does_not_wait_for_a_quorum_it_cannot_have(tmp_path: Path) -> None:
    rec = Recorder()
    inst = installer(tmp_path, rec)
    inst.control_plane(name="cp1", ip="10.0.0.1", peers=[("cp2", "10.0.0.2"), ("cp3", "10.0.0.3")])
    assert not any(line.startswith("wait") for line in rec.log)


def test_worker_joins_with_the_token(tmp_path: Path) -> None:
    store = MemoryStore()
    installer(tmp_path / "cp", Recorder(), store).control_plane(name="cp", ip="10.0.0.1", proxy_mode="ipvs",
                                                                token=TOKEN)
    w = installer(tmp_path / "n1", Recorder(starts=False), store)
    with pytest.raises(install.InstallError, match="not signed with this token"):
        w.worker(name="n1", ip="10.0.0.2", join="10.0.0.1:6443", token=OTHER)
    assert not w.layout.etc.exists()
    w.worker(name="n1", ip="10.0.0.2", join="10.0.0.1:6443", token=TOKEN)
    assert sorted(p.name for p in w.layout.units.iterdir()) == [
        "skiff-clusterdns.service", "skiff-containerd.service", "skiff-netproxy.service", "skiff-nodeagent.service"]
    proxy = (w.layout.units / "skiff-netproxy.service").read_text()
    assert "--mode ipvs" in proxy and "--api-servers 10.0.0.1:6443,10.0.0.1:6444,10.0.0.1:6445" in proxy
    host = render.HostConfig("n1", "10.0.0.2", (render.WORKER,), w.layout.state_dir)
    assert (w.layout.state_dir / "node/containerd.toml").read_text() == render.containerd_config(host)
    assert sorted(p.name for p in w.layout.images.iterdir()) == ["pause.tar", "web.tar", "web2.tar"]
    assert not (w.layout.etc / "join-token").exists() and not (w.layout.etc / "store-password").exists()
    # TLS: the worker trusts the CA the signed information carried; its agent joins with the token
    # once (its proxy and DNS then present the node's certificate); host.json keeps no token.
    cp_ca = (tmp_path / "cp/etc/skiff/pki/ca.crt").read_bytes()
    assert (w.layout.pki / "ca.crt").read_bytes() == cp_ca
    agent = (w.layout.units / "skiff-nodeagent.service").read_text()
    assert f"--bootstrap-token {TOKEN}" in agent and "--bootstrap-server https://10.0.0.1:8443" in agent
    assert f"--client-certificate {w.layout.pki}/nodes/n1.crt" in proxy
    assert TOKEN not in w.layout.host_file.read_text()


def test_upgrade_restarts_in_a_safe_order(tmp_path: Path) -> None:
    rec = Recorder()
    inst = installer(tmp_path, rec)
    inst.control_plane(name="cp", ip="10.0.0.1", token=TOKEN)
    rec.log.clear()
    inst.upgrade()
    steps = [line for line in rec.log if line != "reload"]
    assert steps == [
        "restart skiff-store-s1.service", "wait-store s1", "restart skiff-store-s2.service", "wait-store s2",
        "restart skiff-store-s3.service", "wait-store s3",
        "restart skiff-apiserver-s1.service", "wait-api 10.0.0.1:6443",
        "restart skiff-apiserver-s2.service", "wait-api 10.0.0.1:6444",
        "restart skiff-apiserver-s3.service", "wait-api 10.0.0.1:6445",
        "restart skiff-controllers.service", "restart skiff-scheduler.service"]


def test_remove_is_complete_and_idempotent(tmp_path: Path) -> None:
    rec = Recorder()
    inst = installer(tmp_path, rec)
    inst.control_plane(name="cp", ip="10.0.0.1", token=TOKEN)
    (inst.layout.state_dir / "store/s1").mkdir(parents=True)
    rec.log.clear()
    inst.remove()
    stops = [line.split()[1] for line in rec.log if line.startswith("stop")]
    assert stops[:2] == ["skiff-controllers.service", "skiff-scheduler.service"]
    assert stops[-1] == "skiff-store-s3.service"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == []
    assert not inst.layout.state_dir.exists() and not inst.layout.etc.exists()
    inst.remove()  # nothing left: still fine


def test_upgrade_without_install_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError, match="nothing is installed"):
        installer(tmp_path, Recorder()).upgrade()


def test_cli_render_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert install.main(["control-plane", "--name", "cp", "--ip", "10.0.0.1", "--no-systemd",
                         "--root", str(tmp_path)]) == 0
    assert "not started (--no-systemd)" in capsys.readouterr().out
    (tmp_path / "w/etc/skiff/pki").mkdir(parents=True)  # offline: the CA is copied by hand
    (tmp_path / "w/etc/skiff/pki/ca.crt").write_bytes((tmp_path / "etc/skiff/pki/ca.crt").read_bytes())
    assert install.main(["worker", "--name", "n1", "--ip", "10.0.0.2", "--no-systemd", "--root", str(tmp_path / "w"),
                         "--cluster-file", str(tmp_path / "etc/skiff/cluster.json"), "--token", TOKEN]) == 0
    assert (tmp_path / "w/etc/systemd/system/skiff-nodeagent.service").exists()
    assert install.main(["worker", "--name", "n1", "--ip", "10.0.0.2", "--no-systemd", "--root", str(tmp_path / "x"),
                         "--join", "10.0.0.1:6443"]) == 1
    assert "--join needs --token" in capsys.readouterr().err


def test_namespace_annotations_hold_the_info() -> None:
    store = MemoryStore()
    c = install.plan_cluster("cp", "10.0.0.1", [])
    call(store, lambda api: install.publish_cluster_info(api, c, TOKEN))
    (ns,) = [n for n in InProcessApi(store=store).objects(t.Namespace) if n.metadata.annotations]
    assert ns.metadata.name == install.CLUSTER_INFO_NAMESPACE
    assert set(ns.metadata.annotations) == {install.CLUSTER_INFO_KEY, install.CLUSTER_INFO_SIGNATURE_KEY}


def test_route_removal_only_touches_the_pod_cidr() -> None:
    from deploy import cleanup

    routes = [{"dst": "default"}, {"dst": "10.244.1.0/24"}, {"dst": "10.244.2.0/24"}, {"dst": "10.96.0.0/12"},
              {"dst": "10.0.0.0/24"}, {"dst": "10.244.0.0/16"}, {"dst": "10.245.0.0/24"}, {"dst": "10.244.3.7"}]
    assert cleanup.plan_route_removal(routes, "10.244.0.0/16") == ["10.244.1.0/24", "10.244.2.0/24",
                                                                   "10.244.0.0/16", "10.244.3.7"]


def test_worker_cgroup_parent(tmp_path: Path) -> None:
    store = MemoryStore()
    installer(tmp_path / "cp", Recorder(), store).control_plane(name="cp", ip="10.0.0.1", token=TOKEN)
    w = installer(tmp_path / "n1", Recorder(starts=False), store)
    with pytest.raises(install.InstallError, match="--cgroup-parent"):
        w.worker(name="n1", ip="10.0.0.2", join="10.0.0.1:6443", token=TOKEN, cgroup_parent="skiff/n1")
    w.worker(name="n1", ip="10.0.0.2", join="10.0.0.1:6443", token=TOKEN, cgroup_parent="/skiff-lab-n1")
    assert "--cgroup-parent /skiff-lab-n1" in (w.layout.units / "skiff-nodeagent.service").read_text()
    loaded = w.load()
    assert loaded is not None and loaded[1].cgroup_parent == "/skiff-lab-n1"  # upgrade and remove see it too


# ---------------------------------------------------------------- a node's offline images


def _image_names(tars: list[Path]) -> set[str]:
    """The image names containerd gets from these OCI tars (their index's annotations)."""
    names = set()
    for tar in tars:
        with tarfile.open(tar) as tf:
            member = tf.extractfile("index.json")
            assert member is not None
            names |= {m["annotations"]["io.containerd.image.name"] for m in json.load(member)["manifests"]}
    return names


def _install_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    store = MemoryStore()
    installer(tmp_path / "cp", Recorder(), store).control_plane(name="cp", ip="10.0.0.1", token=TOKEN)
    w = installer(tmp_path / "n1", Recorder(starts=False), store)
    w.worker(name="n1", ip="10.0.0.2", join="10.0.0.1:6443", token=TOKEN)
    return sorted(w.layout.images.iterdir())


def _node_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    imported: list[Path] = []
    monkeypatch.setattr(images, "import_tars", lambda tars, **_: imported.extend(tars))
    cli_node._setup(argparse.Namespace(state_dir=str(tmp_path / "node"), sandbox_image=images.PAUSE_IMAGE,
                                       images=True))
    return imported


def _lab_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    return images.build_presets(tmp_path / "cache", containerd.IMAGES)  # as deploy/lab.py (netns hosts, VM guests)


@pytest.mark.parametrize("provision", [_install_worker, _node_setup, _lab_host],
                         ids=["install-worker-join", "skiff-node-setup", "lab-host"])
def test_every_provisioning_path_imports_the_images_pods_use(
        provision: Callable[[Path, pytest.MonkeyPatch], list[Path]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No registry serves Skiff's images: a worker joined by `deploy.install` (the VM lab's n2, a
    Vagrant or bare-metal worker) once imported pause and web:1.0 only, so the e2e flow's rolling
    update to web:2.0 never got a new pod Ready there (ErrImagePull)."""
    assert _image_names(provision(tmp_path, monkeypatch)) == {
        images.PAUSE_IMAGE, "docker.io/skiff/web:1.0", "docker.io/skiff/web:2.0"}
