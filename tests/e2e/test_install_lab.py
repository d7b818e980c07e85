"""The install for real, inside a network-namespace lab: the provisioning the Vagrant lab and a
bare-metal machine run (`python -m deploy.install ...`), here run inside lab hosts.

A control-plane host and a worker host on their own LAN; on each, the install runs inside the
host's netns with `--service-manager processes`: it renders the units and then starts each
rendered unit's ExecStart command line (so the units themselves are what runs), waits for the
api-server, publishes the signed join information; the worker joins with the token, gets
containerd, its images, a node agent and netproxy, and its Node turns Ready. The api-server
answers through the lab's uplink. A wrong token is refused before anything is written. An
upgrade restarts the worker's daemons and the Node is Ready again. `remove` on both hosts
leaves no process, cgroup, mount or file behind.

Root and real containerd; required in CI (tests/support/prereq.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import containerd as node_containerd
from deploy import netplan, procs
from skiff import bootstraptoken, defaults, pki, tls
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t
from tests.support.prereq import require, require_binaries, require_root

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("controlplane.store", "controlplane.apiserver", "controlplane.controllers", "nodeagent", "netproxy")


def missing_components() -> list[str]:
    return [m for m in COMPONENTS if importlib.util.find_spec(f"{m}.__main__") is None]


class Lab:
    def __init__(self, prefix: str, base: Path) -> None:
        lan = netplan.free_lan(range(180, 220), 1 + os.getpid() % 249)
        self.net = netplan.make_lab(prefix, workers=1, lan_cidr=lan)
        self.base = base
        self.prefix = prefix

    def root(self, host: str) -> Path:
        return self.base / host

    def state(self, host: str) -> Path:
        return self.base / host / "var/lib/skiff"

    def cgroup_parent(self, host: str) -> str:
        return f"/skiff-{self.prefix}-{host}"  # unique per run: runs side by side never share pods' cgroups

    def install(self, host: str, *args: str, root: Path | None = None, check: bool = True,
                timeout: float = 150) -> subprocess.CompletedProcess[str]:
        root = root or self.root(host)
        cmd = ["nsenter", f"--net=/run/netns/{self.net.netns(host)}", sys.executable, "-m", "deploy.install", *args,
               "--root", str(root), "--service-manager", "processes",
               "--timeout", "60"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args[:1])} on {host} failed ({proc.returncode}):\n{proc.stdout}\n"
                                 f"{proc.stderr}\n{self.logs(host)}")
        return proc

    def logs(self, host: str) -> str:
        out = []
        for log in sorted((self.root(host) / "run/skiff").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def leftovers(self) -> list[str]:
        out = [f"netns {ns}" for ns in netplan.existing_netns() if ns.startswith(self.prefix + "-")]
        out += [f"process {p}" for p in node_containerd.pids_with_cmdline(str(self.base) + "/")]
        for host in ("cp", "n1"):
            out += [f"cgroup {d}" for d in node_containerd.cgroup_dirs(self.cgroup_parent(host).strip("/"))]
        if self.base.exists():
            out += [f"mount {m}" for m in node_containerd.mounts_under(self.base)]
            out.append(f"dir {self.base}")
        return out

    def teardown(self) -> None:
        for host in ("n1", "cp"):
            if self.root(host).exists():
                self.install(host, "remove", check=False, timeout=120)
            run_dir = self.root(host) / "run/skiff"
            if run_dir.is_dir():
                procs.stop_all(run_dir, order=("skiff-nodeagent", "skiff-netproxy"))
        # Fallbacks for a half-finished run; all are no-ops after a clean remove.
        from skiff import hostconfig

        node_containerd.crash_cleanup(hostconfig.NodePaths(self.state("n1") / "node"), self.cgroup_parent("n1"))
        netplan.apply(netplan.plan_down(self.net), ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)


def admin(lab: Lab) -> tls.Credentials:
    """The admin's credentials the control-plane install created."""
    return tls.Credentials.from_pki(lab.root("cp") / "etc/skiff/pki", pki.ADMIN)


async def node_status(lab: Lab, api: str, name: str) -> tuple[str, str]:
    async with Client(api, timeout=10, credentials=admin(lab)) as c:
        node = await c.get(t.Node, name)
    ready = next((cond.status for cond in node.status.conditions if cond.type == "Ready"), "")
    return ready, node.spec.pod_cidr


def agent_pid(lab: Lab) -> int:
    daemons = {d.name: d for d in procs.recorded(lab.root("n1") / "run/skiff")}
    return daemons["skiff-nodeagent"].pid


def test_install_control_plane_and_worker_in_lab_hosts() -> None:
    require_root()
    require_binaries("ip", "nsenter", "containerd", "ctr", "runc", "iptables")
    missing = missing_components()
    require(not missing, f"components not on this branch yet: {', '.join(missing)}")
    prefix = f"in{os.getpid() % 10000}"
    lab = Lab(prefix, Path(f"/tmp/skiff-{prefix}"))
    cp, n1 = lab.net.host("cp"), lab.net.host("n1")
    token = bootstraptoken.generate()
    try:
        netplan.apply(netplan.plan_up(lab.net))
        out = lab.install("cp", "control-plane", "--name", "cp", "--ip", cp.ip, "--token", token).stdout
        assert f"--join {cp.ip}:6443 --token {token}" in out
        units = sorted(p.name for p in (lab.root("cp") / "etc/systemd/system").glob("skiff-*.service"))
        assert units == [f"skiff-{d}.service" for d in ("apiserver-s1", "apiserver-s2", "apiserver-s3", "controllers",
                                                        "scheduler", "store-s1", "store-s2", "store-s3")]
        assert oct((lab.root("cp") / "etc/skiff/store-password").stat().st_mode & 0o777) == "0o600"

        # The uplink is the root namespace's only way to the LAN: nothing leaves this machine.
        assert netplan.route_device(cp.ip) == lab.net.uplink_name
        api = f"{cp.ip}:6443,{cp.ip}:6444,{cp.ip}:6445"
        version = asyncio.run(_version(lab, api))
        assert version

        bad = lab.install("n1", "worker", "--name", "n1", "--ip", n1.ip, "--join", f"{cp.ip}:6443",
                          "--token", bootstraptoken.generate(), root=lab.base / "n1-bad", check=False)
        assert bad.returncode == 1 and "not signed with this token" in bad.stderr, bad.stderr
        assert not (lab.base / "n1-bad").exists()

        lab.install("n1", "worker", "--name", "n1", "--ip", n1.ip, "--join", f"{cp.ip}:6443", "--token", token,
                    "--cgroup-parent", lab.cgroup_parent("n1"))
        ready, pod_cidr = asyncio.run(node_status(lab, api, "n1"))
        # The worker joined with the token: its certificate is its own, signed by the cluster CA.
        node_cert = pki.load_cert(lab.root("n1") / "etc/skiff/pki/nodes/n1.crt")
        pki.verify_issued_by(node_cert, pki.load_cert(lab.root("cp") / "etc/skiff/pki/ca.crt"))
        assert pki.subject_of(node_cert.subject) == ("system:node:n1", ("system:nodes",))
        assert not (lab.root("n1") / "etc/skiff/pki/ca.key").exists()
        assert ready == "True"
        assert ipaddress.ip_network(pod_cidr).subnet_of(ipaddress.ip_network(defaults.CLUSTER_CIDR))

        if importlib.util.find_spec("controlplane.scheduler.__main__") is not None:
            # The Vagrant lab's seed check, here with the local web image: pods Ready, ClusterIP answers.
            seed = subprocess.run(
                ["nsenter", f"--net=/run/netns/{lab.net.netns('cp')}", sys.executable, "-m", "deploy.seedcheck",
                 "--server", api, "--hosts", f"n1={n1.ip}", "--run", f"nsenter --net=/run/netns/{prefix}-{{name}}",
                 "--fetch", "/bin/busybox wget -qO-", "--timeout", "60", "--delete", str(REPO / "examples/web")],
                capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
                env=dict(os.environ, SKIFF_CONFIG=str(lab.root("cp") / "etc/skiff/skiff-config")))
            assert seed.returncode == 0, seed.stdout + seed.stderr + lab.logs("n1")
            assert "n1 -> http://" in seed.stdout and "hello from web-" in seed.stdout, seed.stdout

        before = agent_pid(lab)
        out = lab.install("n1", "upgrade").stdout
        assert "restarting skiff-nodeagent.service" in out and "upgrade done" in out
        assert agent_pid(lab) != before
        assert asyncio.run(node_status(lab, api, "n1"))[0] == "True"

        lab.install("n1", "remove")
        lab.install("cp", "remove")
        assert not list((lab.root("n1") / "etc/systemd/system").glob("skiff-*"))
        assert not lab.state("n1").exists() and not lab.state("cp").exists()
        assert node_containerd.cgroup_dirs(lab.cgroup_parent("n1").strip("/")) == []
        again = lab.install("n1", "remove")  # idempotent
        assert "nothing installed" in again.stdout
    finally:
        lab.teardown()
    assert lab.leftovers() == []


async def _version(lab: Lab, api: str) -> str:
    async with Client(api, timeout=30, credentials=admin(lab)) as c:
        v = await c.version()
    return str(v)
