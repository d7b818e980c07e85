"""The network-namespace lab: a whole Skiff cluster of several hosts on one machine.

A lab is a LAN bridge in its own namespace, control-plane host(s) running the store members,
api-servers, controllers and scheduler, and worker hosts each running its own containerd
(started with `nsenter --net`), node agent and network proxy. Every host's daemons come from
deploy/render.py, the same rendering the Vagrant lab and bare metal use. The root namespace
reaches the api-servers through the lab's uplink veth only; test traffic to services and
pods is sent from inside the lab's namespaces.

Every connection is TLS: on `up` the lab creates its cluster CA and every certificate under
`<dir>/pki` (deploy/render.py's `pki_specs_for`; the guests of the VM lab read the same files
through their read-only view of the host), and writes `<dir>/skiff-config` (the `skiff` CLI's
config with the admin's credentials, `SKIFF_CONFIG=` it). `client()` is the admin's.

In the VM lab (`vm_workers`, `make vm-lab`) the workers are QEMU guests instead (deploy/vmhost.py):
their own kernels on the same LAN bridge through a tap, running the same rendered daemons; the
control plane stays in its namespace. `run_in` and `http_get` then run inside the guest.
A guest named in `vm_installed` (n2 in `make vm-lab`) is provisioned the Vagrant and bare-metal
way instead: it boots systemd, and the Vagrant lab's provision-worker.sh (`deploy.install worker
--join ... --token ...`) writes and enables the units and joins the node with a bootstrap token
the lab publishes as `join-command` does; its node certificate comes from a CSR, the lab makes
none for it.

What must hold:
- everything a lab creates is named with its prefix and kept under its directory, so several
  labs run side by side and `down` finds all of it from `lab.json` alone (another process,
  after a crash, twice in a row);
- `down` leaves nothing: daemons, shims, mounts, cgroups, CNI caches, namespaces, links,
  iptables chains (they live in the hosts' namespaces), the directory.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from deploy import containerd, externaletcd, netplan, procs, render, vmhost
from deploy.vm.guest import TapLink
from deploy.vm.image import SHARE_DIR
from skiff import bootstraptoken, config, defaults, errors, images, kubeconfig, pki, taints, tls
from skiff.client import Client
from skiff.errors import SkiffError
from skiffpb.api.v1 import types_pb2 as t

DEFAULT_ROOT = Path(os.environ.get("SKIFF_LAB_DIR", "/var/lib/skiff/labs"))
IMAGE_CACHE = Path(os.environ.get("SKIFF_IMAGE_CACHE", "/var/cache/skiff/images"))
GUEST_STATE = Path("/run/skiff-lab")  # a guest host's node state: on the guest's tmpfs
GUEST_READY_TIMEOUT = 900.0  # emulated Python is 10-20 times slower: a guest's daemons take minutes
COMPILED = ("deploy", "skiff", "skiffpb", "nodeagent", "netproxy")

Progress = Callable[[str], None]
CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"
VM_PROXY_MODES = {"n1": "ipvs", "n2": "iptables"}  # the VM lab's workers show both proxy modes on real kernels
# The VM lab's worker provisioned by deploy.install under systemd (the cluster's proxy mode, iptables);
# n1 keeps the direct path (its daemons started by deploy/vmhost.py), which boots in a third of the time.
VM_INSTALLED = ("n2",)
PROVISION_WORKER = Path(__file__).resolve().parent / "vagrant" / "provision-worker.sh"
INSTALL_TIMEOUT = 900.0  # each step of the install in a guest: emulated Python on a shared machine


def _quiet(_: str) -> None:
    return None


class LabError(SkiffError):
    """A lab cannot be brought up, found or used; the message says what to do."""

    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class LabSpec:
    """Everything that defines a lab; saved as lab.json so any process can manage it."""

    prefix: str
    workers: int = 2
    control_planes: int = 1
    store_members: int = 3
    lan_cidr: str = defaults.LAB_LAN_CIDR
    combined: bool = False  # one host that is both control plane and worker (`make up`)
    host_routes: bool = False  # routes in the root netns for service/pod CIDRs via the lab
    proxy_mode: str = "iptables"
    iptables_backend: str = "auto"
    node_monitor_grace_period: str = "40s"
    node_lease_period: str = "10s"
    default_toleration_seconds: int = 300  # the api-server's, for not-ready and unreachable
    min_sync_period: str = "1s"
    python: str = field(default_factory=lambda: sys.executable)
    # The VM lab (deploy/vmhost.py): workers are QEMU guests with their own kernels, on the LAN
    # through a tap; the control plane stays in a namespace. A host named in proxy_modes runs
    # its proxy in that mode (the cluster's otherwise).
    vm_workers: bool = False
    proxy_modes: dict[str, str] = field(default_factory=dict)
    vm_timeout: float = 7200.0  # a guest's whole life: it is killed after this even if nobody stops it
    # Guest workers provisioned by deploy.install under systemd (deploy/vmhost.py provision_plan).
    vm_installed: list[str] = field(default_factory=list)
    # 3 etcd members (TLS, client certificates) on the first control-plane host instead of
    # Skiff's store; the api-servers use them as an external store (deploy/externaletcd.py).
    external_etcd: bool = False

    def network(self) -> netplan.LabNetwork:
        if self.combined:
            return netplan.make_lab(self.prefix, combined=True, lan_cidr=self.lan_cidr,
                                    host_routes=self.host_routes)
        net = netplan.make_lab(self.prefix, workers=self.workers, lan_cidr=self.lan_cidr,
                               host_routes=self.host_routes)
        # Control-plane hosts run a node agent and proxy too (tainted, as kubeadm does), so pod
        # routes and Service rules exist there as on every host.
        both = (render.CONTROL_PLANE, render.WORKER)
        cps = [netplan.Host("cp", net.hosts[0].ip, both)] + [
            netplan.Host(f"cp{i}", _offset(self.lan_cidr, 30 + i), both) for i in range(2, self.control_planes + 1)]
        workers = [netplan.Host(h.name, h.ip, h.roles, guest=self.vm_workers) for h in net.hosts[1:]]
        return netplan.LabNetwork(net.prefix, net.lan_cidr, (*cps, *workers), uplink=net.uplink,
                                  host_routes_via=net.host_routes_via)

    def check_ranges(self) -> None:
        """LabError when the LAN, the service CIDR and the cluster CIDR are not disjoint."""
        cluster = self.cluster()
        try:
            defaults.check_disjoint([("lab LAN", self.lan_cidr), ("service CIDR", cluster.service_cidr),
                                     ("cluster CIDR", cluster.cluster_cidr)])
        except ValueError as exc:
            raise LabError(f'lab "{self.prefix}": {exc}') from None

    def cluster(self) -> render.ClusterConfig:
        cps = [(h.name, h.ip) for h in self.network().with_role(render.CONTROL_PLANE)]
        return render.ClusterConfig(
            members=render.plan_members(cps, members=self.store_members),
            proxy_mode=self.proxy_mode, iptables_backend=self.iptables_backend,
            min_sync_period=self.min_sync_period, node_monitor_grace_period=self.node_monitor_grace_period,
            node_lease_period=self.node_lease_period,
            default_toleration_seconds=self.default_toleration_seconds, cluster_token=f"skiff-lab-{self.prefix}",
            python=self.python)


def _offset(cidr: str, n: int) -> str:
    import ipaddress

    return str(ipaddress.ip_network(cidr).network_address + n)


class Lab:
    def __init__(self, spec: LabSpec, root: Path = DEFAULT_ROOT) -> None:
        self.spec = spec
        self.dir = root / spec.prefix
        self.net = spec.network()
        self.cluster = spec.cluster()
        if spec.external_etcd:
            pki = externaletcd.pki_paths(self.etcd_pki_dir)
            self.cluster = dataclasses.replace(self.cluster, external_store=render.ExternalStore(
                externaletcd.endpoints(self.etcd_members), str(pki.ca), str(pki.client_cert), str(pki.client_key)))

    @property
    def etcd_pki_dir(self) -> Path:
        return self.dir / "etcd-pki"

    @property
    def etcd_members(self) -> tuple[externaletcd.Member, ...]:
        return externaletcd.plan(self.net.host(self.control_plane_hosts[0]).ip)

    def start_external_etcd(self) -> None:
        host = self.control_plane_hosts[0]
        pki = externaletcd.make_pki(self.etcd_pki_dir, [self.net.host(host).ip])
        members = self.etcd_members
        for m in members:
            argv = externaletcd.member_argv(m, members, data_dir=self.dir / host / "etcd" / m.name, pki=pki,
                                            token=f"skiff-lab-{self.spec.prefix}")
            procs.start(m.name, argv, self.run_dir(host), netns=self.netns(host))

    # ------------------------------------------------------------------ layout

    @classmethod
    def load(cls, prefix: str, root: Path = DEFAULT_ROOT) -> Lab:
        path = root / prefix / "lab.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f'no lab "{prefix}" under {root} (nothing at {path})') from None
        return cls(LabSpec(**data), root)

    @property
    def password_file(self) -> Path:
        return self.dir / "store-password"

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    @property
    def admin(self) -> tls.Credentials:
        """The admin's credentials (kubernetes-admin in system:masters)."""
        return tls.Credentials.from_pki(self.pki_dir, pki.ADMIN)

    @property
    def config_path(self) -> Path:
        """The `skiff` CLI's config for this lab (SKIFF_CONFIG=...): servers and admin credentials."""
        return self.dir / "skiff-config"

    @property
    def join_token_file(self) -> Path:
        """The bootstrap token the installed guests join with (0600)."""
        return self.dir / "join-token"

    def installed(self, host: str) -> bool:
        """A guest provisioned by deploy.install (it gets no certificate from the lab)."""
        return self.net.host(host).guest and host in self.spec.vm_installed

    def ensure_pki(self) -> list[str]:
        """The lab's CA and certificates (existing ones kept); the names issued."""
        hosts = [(h.name, h.ip, h.roles) for h in self.net.hosts if not self.installed(h.name)]
        return pki.PKIDir(self.pki_dir).ensure(render.pki_specs_for(self.cluster, hosts), now=pki.utcnow())

    def host_config(self, name: str) -> render.HostConfig:
        h = self.net.host(name)
        dedicated = render.CONTROL_PLANE in h.roles and not self.spec.combined
        # A guest keeps its node state on its own tmpfs; it dies with the guest.
        state_dir = GUEST_STATE / h.name if h.guest else self.dir / h.name
        # A guest reads its certificates from its share (the lab's directory may be under /tmp,
        # which the guest's own tmpfs hides); start_worker copies them there.
        pki_dir = Path(SHARE_DIR) / "pki" if h.guest else self.pki_dir
        return render.HostConfig(name=h.name, ip=h.ip, roles=h.roles, state_dir=state_dir,
                                 proxy_mode=self.spec.proxy_modes.get(name, ""),
                                 store_password_file=self.password_file, pki_dir=pki_dir,
                                 cgroup_parent=f"/skiff-{self.spec.prefix}-{h.name}",
                                 # The role label is the operator's to set (mark_control_plane): a node may
                                 # not label itself node-role.kubernetes.io/* (NodeRestriction).
                                 node_taints=(f"{CONTROL_PLANE_ROLE}:NoSchedule",) if dedicated else ())

    def run_dir(self, host: str) -> Path:
        return self.dir / host / "run"

    def guest(self, host: str) -> vmhost.VmHost | None:
        """The guest behind a VM lab host (None for a namespace host)."""
        return vmhost.VmHost(host, self.dir / host / "vm") if self.net.host(host).guest else None

    @property
    def guests(self) -> list[vmhost.VmHost]:
        return [g for g in (self.guest(h.name) for h in self.net.hosts) if g is not None]

    def netns(self, host: str) -> str:
        return self.net.netns(host)

    @property
    def api_servers(self) -> list[str]:
        return [m.api_url for m in self.cluster.members]

    @property
    def http_servers(self) -> list[str]:
        """The Kubernetes REST API of each api-server, as kubectl's server URLs."""
        return [f"https://{m.http_url}" for m in self.cluster.members]

    def write_kubeconfig(self, path: Path | None = None, *, name: str = kubeconfig.CONTEXT) -> Path:
        """Merge this lab's cluster, user and context `name` into a kubeconfig (the user's by default)
        and make it current: what `skiff lab up` writes, and what tests hand to kubectl and helm."""
        return kubeconfig.write_entry(self.http_servers[0], name=name, path=path, credentials=self.admin)

    @property
    def workers(self) -> list[str]:
        return [h.name for h in self.net.with_role(render.WORKER)]

    @property
    def control_plane_hosts(self) -> list[str]:
        return [h.name for h in self.net.with_role(render.CONTROL_PLANE)]

    def client(self, *, timeout: float = 10.0) -> Client:
        return Client(self.api_servers, timeout=timeout, credentials=self.admin)

    def daemons(self, host: str) -> dict[str, procs.Daemon]:
        """A host's daemons (none for a guest host: its processes are the guest's, logs in its share)."""
        return {d.name: d for d in procs.recorded(self.run_dir(host))}

    # ------------------------------------------------------------------ traffic from inside the lab

    def run_in(self, host: str, argv: Sequence[str], *, timeout: float = 30.0,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a short command inside a host's netns (or on a guest host's own kernel)."""
        guest = self.guest(host)
        if guest is not None:
            try:
                out = guest.request({"argv": list(argv)}, timeout=timeout)
            except vmhost.VmHostError as exc:
                raise LabError(str(exc)) from None
            done = subprocess.CompletedProcess(list(argv), out["rc"], out["stdout"], out["stderr"])
            if check:
                done.check_returncode()
            return done
        return subprocess.run(procs.in_netns(self.netns(host), argv), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def http_get(self, host: str, url: str, *, timeout: float = 10.0) -> str:
        """GET `url` from inside `host` (busybox wget: no -T, it segfaults in busybox 1.35)."""
        guest = self.guest(host)
        if guest is not None:  # the guest's server fetches it: no process to start, a real timeout
            try:
                answer = guest.request({"get": url}, timeout=timeout)
            except vmhost.VmHostError as exc:
                raise LabError(str(exc)) from None
            if answer["rc"] != 0:
                raise LabError(f"GET {url} from {host} failed: {answer['stderr']}")
            return str(answer["stdout"])
        out = self.run_in(host, [images.BUSYBOX, "wget", "-qO-", url], timeout=timeout)
        if out.returncode != 0:
            raise LabError(f"GET {url} from {host} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    # ------------------------------------------------------------------ up

    def up(self, *, progress: Progress = _quiet, timeout: float = 120.0) -> None:
        self.spec.check_ranges()
        problems = containerd.missing_prereqs() if self.workers else []
        if problems:
            raise LabError("missing prerequisites: " + ", ".join(problems) + " (run `make setup` as root)")
        existing = {ns for ns in netplan.existing_netns() if ns.startswith(self.spec.prefix + "-")}
        if existing or (self.dir / "lab.json").exists():
            raise LabError(f'lab "{self.spec.prefix}" already exists ({", ".join(sorted(existing)) or self.dir}); '
                           f"run `skiff lab down --prefix {self.spec.prefix}` first")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "lab.json").write_text(json.dumps(asdict(self.spec), indent=2) + "\n")
        try:
            self._up(progress, timeout)
        except BaseException:
            progress("bring-up failed; tearing the lab down")
            self.down()
            raise

    def _up(self, progress: Progress, timeout: float) -> None:
        started = time.monotonic()
        netplan.apply(netplan.plan_up(self.net))
        for host in self.net.hosts:
            if netplan.route_device(host.ip) != self.net.uplink_name:
                raise LabError(f"the root namespace would not reach {host.ip} through {self.net.uplink_name}")
        progress(f"network: {len(self.net.hosts)} hosts on {self.net.lan_cidr} ({time.monotonic() - started:.1f}s)")
        self.password_file.write_text(secrets.token_hex(24) + "\n")
        self.password_file.chmod(0o600)
        self.ensure_pki()
        config.write_config(self.api_servers, path=self.config_path, credentials=self.admin)
        if self.spec.external_etcd:
            self.start_external_etcd()
            progress(f"store: external etcd, {self.cluster.store_endpoints} started (TLS, client certificates)")
        for name in self.control_plane_hosts:
            self._start_specs(name, [s for s in self._specs(name) if s.name.startswith("store-")])
        if not self.spec.external_etcd:
            progress(f"store: {len(self.cluster.members)} members started")
        for name in self.control_plane_hosts:
            self._start_specs(name, [s for s in self._specs(name) if s.name.startswith("apiserver-")])
        asyncio.run(self._wait_api(timeout))
        progress(f"api-servers: {', '.join(self.api_servers)} answering ({time.monotonic() - started:.1f}s)")
        for name in self.control_plane_hosts:
            self._start_specs(name, [s for s in self._specs(name) if s.name in ("controllers", "scheduler")])
        progress("controllers and scheduler started")
        if self.workers:
            IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
            images.build_presets(IMAGE_CACHE, containerd.IMAGES)
        if any(self.installed(h) for h in self.workers):
            self.publish_join()
            progress("join token and signed cluster information published (as `deploy.install join-command`)")
        if self.guests:
            # Bytecode compiled here spares the guests (read-only root, slow Python) compiling each import.
            subprocess.run([self.spec.python, "-m", "compileall", "-q", *COMPILED], cwd=vmhost.ROOT,
                           capture_output=True, check=False)
        for name in self.workers:
            self.start_worker(name)
        for guest in self.guests:
            seconds = guest.wait_ready(max(timeout, GUEST_READY_TIMEOUT))
            if self.installed(guest.name):
                ready = guest.ready()
                progress(f"guest {guest.name}: systemd booted in {ready['boot_seconds']:.0f}s, deploy.install "
                         f"joined it in {ready['provision_seconds']:.0f}s ({time.monotonic() - started:.1f}s)")
            else:
                progress(f"guest {guest.name}: containerd, node agent and proxy started in {seconds:.0f}s "
                         f"({time.monotonic() - started:.1f}s)")
        if self.workers:
            asyncio.run(self.wait_nodes_ready(self.workers, max(timeout, GUEST_READY_TIMEOUT) if self.guests
                                              else timeout))
            progress(f"workers: {', '.join(self.workers)} Ready ({time.monotonic() - started:.1f}s)")
            dedicated = [h for h in self.control_plane_hosts if h in self.workers and not self.spec.combined]
            if dedicated:
                asyncio.run(self.mark_control_plane(dedicated))

    def _specs(self, host: str) -> list[render.DaemonSpec]:
        return render.daemons_for(self.cluster, self.host_config(host))

    def _start_specs(self, host: str, specs: Sequence[render.DaemonSpec]) -> None:
        for spec in specs:
            procs.start(spec.name, spec.argv, self.run_dir(host), netns=self.netns(host), env=spec.env)

    def publish_join(self) -> None:
        """What `deploy.install join-command` does on a control plane, for the lab's: a bootstrap token
        (its Secret, valid 24 h) and the cluster information signed with it, on kube-public."""
        from deploy import install

        token = bootstraptoken.generate()
        self.join_token_file.write_text(token + "\n")
        self.join_token_file.chmod(0o600)
        ca_pem = pki.PKIDir(self.pki_dir).ca.cert.read_text()

        async def publish() -> None:
            async with self.client() as client:
                await install.ensure_bootstrap_token(client, token, ttl=install.JOIN_TOKEN_TTL)
                await install.publish_cluster_info(client, self.cluster, token, ca_pem)

        asyncio.run(publish())

    def _provision_plan(self, host: str) -> dict[str, object]:
        """The installed guest's plan: the Vagrant lab's worker provisioning, run in the guest."""
        h = self.net.host(host)
        token = self.join_token_file.read_text().strip()
        argv = [str(PROVISION_WORKER), h.name, h.ip, self.api_servers[0], token, "--timeout", f"{INSTALL_TIMEOUT:.0f}"]
        from deploy import install

        units = [install.unit_name(d) for d in ("containerd", "nodeagent", "netproxy", "clusterdns")]
        return vmhost.provision_plan(network=netplan.guest_commands(self.net, host), argv=argv,
                                     env={"SKIFF_DIR": str(vmhost.ROOT)}, units=units)

    def _tap(self, host: str) -> TapLink:
        """A guest host's NIC: a tap on the LAN bridge, its MAC from its address."""
        octets = [int(x) for x in self.net.host(host).ip.split(".")]
        return TapLink(self.net.lan_netns, "br0", f"{self.spec.prefix}-{host}",
                       "52:54:00:{:02x}:{:02x}:{:02x}".format(*octets[1:]))

    def start_worker(self, host: str) -> None:
        """containerd (images imported), node agent, proxy and cluster DNS of one worker host.

        A guest host is only booted here (it starts its daemons itself, or is provisioned by the
        install under systemd): `VmHost.wait_ready`.
        """
        config = self.host_config(host)
        guest = self.guest(host)
        if guest is not None and self.installed(host):
            guest.start(self._provision_plan(host), links=(self._tap(host),), timeout=self.spec.vm_timeout)
            return
        if guest is not None:
            specs = self._specs(host)
            host_plan = vmhost.plan(
                network=netplan.guest_commands(self.net, host), node_base=str(config.node_paths.base),
                images=[str(p) for p in images.build_presets(IMAGE_CACHE, containerd.IMAGES)],
                daemons=[(s.name, s.argv, s.env) for s in specs if s.name in ("containerd", "nodeagent", "netproxy")])
            link = self._tap(host)
            src = pki.PKIDir(self.pki_dir)
            for name in ("ca", pki.node_cert(host), pki.NETPROXY, pki.CLUSTERDNS):
                pair = src.pair(name)
                for path in (pair.cert, pair.key) if name != "ca" else (pair.cert,):
                    target = guest.share / "pki" / path.relative_to(src.path)
                    pki.write_atomic(target, path.read_bytes(), path.stat().st_mode & 0o777)
            guest.start(host_plan, links=(link,), timeout=self.spec.vm_timeout)
            return
        paths = config.node_paths
        containerd.start(paths, self.run_dir(host), netns=self.netns(host))
        containerd.import_images(paths, IMAGE_CACHE)
        self._start_specs(host, [s for s in self._specs(host) if s.name in ("nodeagent", "netproxy", "clusterdns")])

    def start_daemon(self, host: str, name: str) -> procs.Daemon:
        """(Re)start one daemon of a host by its rendered name ("netproxy", "store-s1", ...)."""
        if name == "containerd":
            return containerd.start(self.host_config(host).node_paths, self.run_dir(host), netns=self.netns(host))
        for spec in self._specs(host):
            if spec.name == name:
                return procs.start(spec.name, spec.argv, self.run_dir(host), netns=self.netns(host), env=spec.env)
        raise LabError(f"host {host} runs no daemon {name!r}")

    def kill_daemon(self, host: str, name: str) -> None:
        daemon = self.daemons(host).get(name)
        if daemon is None:
            raise LabError(f"daemon {name} is not running on {host}")
        procs.kill(daemon)

    async def _wait_api(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        for endpoint in self.api_servers:
            client = Client([endpoint], timeout=5.0, credentials=self.admin)
            try:
                while True:
                    try:
                        await client.version()
                        break
                    except Exception as exc:
                        last = exc
                        if time.monotonic() > deadline:
                            raise LabError(f"api-server {endpoint} not answering after {timeout:.0f}s: {last}; "
                                           f"logs under {self.dir}/*/run/") from exc
                        await asyncio.sleep(0.3)
            finally:
                await client.close()

    async def wait_nodes_ready(self, names: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with self.client() as client:
            while True:
                nodes = {n.metadata.name: n for n in (await client.list(t.Node)).items}
                ready = {name for name, n in nodes.items() if taints.takes_new_pods(n)}
                if set(names) <= ready:
                    return
                if time.monotonic() > deadline:
                    missing = sorted(set(names) - ready)
                    raise LabError(f"nodes not Ready and untainted after {timeout:.0f}s: {', '.join(missing)}; "
                                   f"logs under {self.dir}/<host>/run/")
                await asyncio.sleep(0.5)

    async def mark_control_plane(self, names: Sequence[str]) -> None:
        """Label the control-plane hosts' Nodes with their role as the admin, as kubeadm does: the
        node itself may not (NodeRestriction, docs/security.md)."""
        async with self.client() as client:
            for name in names:
                for _ in range(10):
                    node = await client.get(t.Node, name)
                    if CONTROL_PLANE_ROLE in node.metadata.labels:
                        break
                    node.metadata.labels[CONTROL_PLANE_ROLE] = ""
                    try:
                        await client.update(node)
                        break
                    except errors.ConflictError:
                        continue  # the agent wrote its status meanwhile: read again

    # ------------------------------------------------------------------ down

    def stop_worker(self, host: str, *, kill: bool = False) -> None:
        """Stop a worker's daemons; with `kill`, SIGKILL the agent and containerd (a host failure)."""
        run_dir = self.run_dir(host)
        daemons = self.daemons(host)
        for name in ("clusterdns", "netproxy", "nodeagent"):
            if name in daemons:
                (procs.kill if kill else procs.stop)(daemons[name])
        if "containerd" in daemons:
            if kill:
                procs.kill(daemons["containerd"])
            else:
                containerd.remove_all_sandboxes(self.host_config(host).node_paths.endpoint)
                procs.stop(daemons["containerd"], timeout=20)
        procs.stop_all(run_dir)

    def down(self, *, progress: Progress = _quiet) -> list[str]:
        """Remove the lab entirely; returns notes about crash leftovers it had to clean.

        Order matters: controllers and scheduler stop first (nothing reacts to nodes going
        away), then each worker's proxy, agent and containerd (pods removed through CRI), and
        the api-servers and store members last, so every daemon can still reach them on exit.
        """
        notes: list[str] = []
        for name in self.control_plane_hosts:
            daemons = self.daemons(name)
            for d in ("scheduler", "controllers"):
                if d in daemons:
                    procs.stop(daemons[d])
        for guest in self.guests:
            guest.stop()
        for name in self.workers:
            if self.net.host(name).guest:
                continue
            config = self.host_config(name)
            daemons = self.daemons(name)
            for d in ("clusterdns", "netproxy", "nodeagent"):
                if d in daemons:
                    procs.stop(daemons[d], timeout=10)
            notes += containerd.teardown(config.node_paths, config.cgroup_parent, daemons.get("containerd"))
        for mnt in reversed(containerd.mounts_under(self.dir)):  # pod volumes (memory emptyDirs) of the agents
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        for host in self.net.hosts:
            procs.stop_all(self.run_dir(host.name))
        failures = netplan.apply(netplan.plan_down(self.net), ignore_errors=True)
        notes += [f for f in failures if "Cannot find" not in f and "No such" not in f and "Cannot open" not in f]
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)
        progress(f"lab {self.spec.prefix} removed")
        return notes

    def leftovers(self) -> list[str]:
        out = [f"netns {ns}" for ns in netplan.existing_netns() if ns.startswith(self.spec.prefix + "-")]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
        if f" {self.net.uplink_name}@" in links or f" {self.net.uplink_name}:" in links:
            out.append(f"link {self.net.uplink_name}")
        out += [f"guest {g.name}" for g in self.guests if g.running()]
        for name in self.workers:
            if self.net.host(name).guest:
                continue
            config = self.host_config(name)
            out += containerd.leftovers(config.node_paths, config.cgroup_parent)
        if self.dir.exists():
            out.append(f"dir {self.dir}")
        return out

    # ------------------------------------------------------------------ status

    def status(self) -> list[str]:
        lines = [f"lab {self.spec.prefix}: LAN {self.net.lan_cidr}, api-servers {','.join(self.api_servers)}"]
        netns = netplan.existing_netns()
        for host in self.net.hosts:
            guest = self.guest(host.name)
            if guest is not None:
                state = "guest" if guest.running() else "stopped"
                logs = ", ".join(sorted(p.stem for p in guest.logs.glob("*.log")))
                lines.append(f"  {host.name:<6} {host.ip:<15} {state:<8} logs {guest.logs}: {logs or '-'}")
                continue
            daemons = self.daemons(host.name)
            state = "up" if self.netns(host.name) in netns else "missing"
            names = ", ".join(f"{n}{'' if d.alive() else '(dead)'}" for n, d in sorted(daemons.items()))
            lines.append(f"  {host.name:<6} {host.ip:<15} {state:<8} {names or '-'}")
        return lines


# ---------------------------------------------------------------------- command line
# `python -m deploy.lab up|down|status` (also reached as `skiff lab ...`, which runs this module
# in a subprocess so that the shared library never imports deploy/).


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skiff lab",
                                     description="run a multi-host cluster in network namespaces on this machine")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--prefix", default="lab", help="names the lab's namespaces and links (<= 6 chars)")
        p.add_argument("--dir", type=Path, default=None, help=f"where labs keep their state (default {DEFAULT_ROOT})")

    up = sub.add_parser("up", help="create and start a lab")
    common(up)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--control-planes", type=int, default=1, help="control-plane hosts (store members spread)")
    up.add_argument("--lan", default="10.77.0.0/24", help="the lab LAN (the root netns gets its first address)")
    up.add_argument("--proxy-mode", choices=("iptables", "ipvs"), default="iptables")
    up.add_argument("--vm-workers", action="store_true",
                    help="workers as QEMU guests (docs/vm.md); n1 proxies with IPVS, n2 with iptables and is "
                         "provisioned by deploy.install under systemd")
    up.add_argument("--vm-timeout", type=float, default=7200.0, help="seconds after which the guests are killed")
    up.add_argument("--external-etcd", action="store_true",
                    help="run 3 etcd members (TLS) instead of Skiff's store; the api-servers use them")
    common(sub.add_parser("down", help="stop a lab and remove everything it created"))
    common(sub.add_parser("status", help="show a lab's hosts and daemons"))
    args = parser.parse_args(argv)
    try:
        return _run(args, args.dir or DEFAULT_ROOT)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, root: Path) -> int:
    if args.action == "up":
        lab = Lab(LabSpec(prefix=args.prefix, workers=args.workers, control_planes=args.control_planes,
                          lan_cidr=args.lan, proxy_mode=args.proxy_mode, vm_workers=args.vm_workers,
                          proxy_modes=dict(VM_PROXY_MODES) if args.vm_workers else {},
                          vm_installed=list(VM_INSTALLED) if args.vm_workers else [],
                          vm_timeout=args.vm_timeout, external_etcd=args.external_etcd), root)
        lab.up(progress=lambda line: print(f"[lab {args.prefix}] {line}", flush=True))
        print(f"api-servers: {','.join(lab.api_servers)}")
        print(f"use it:      export SKIFF_CONFIG={lab.config_path}")
        context = f"skiff-{args.prefix}"
        path = lab.write_kubeconfig(name=context)
        print(f"kubectl:     context {context} in {path} ({lab.http_servers[0]}), now the current context")
        print(f"dashboard:   {lab.http_servers[0]}/dashboard/ (a token to log in: docs/observability.md)")
    elif args.action == "down":
        lab = Lab.load(args.prefix, root)
        for note in lab.down(progress=print):
            print(f"cleaned: {note}")
        if kubeconfig.remove_entry(lab.http_servers[0], name=f"skiff-{args.prefix}"):
            print(f"cleaned: kubectl context skiff-{args.prefix} in {kubeconfig.kubeconfig_path()}")
    else:
        print("\n".join(Lab.load(args.prefix, root).status()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
