"""Install Skiff on a machine: `python -m deploy.install control-plane|worker|join-command|upgrade|remove`.

The bare-metal install and the Vagrant lab's provisioning are this module (docs/baremetal.md,
deploy/vagrant/). A host's daemons and their systemd units come from deploy/render.py, the one
source of truth; this module only decides what to write, writes it, and asks a service manager
to start, restart or stop units, waiting for each step to be healthy.

What must hold:
- Re-running a command is safe: secrets are kept, files are rewritten only when they changed,
  running units are left running.
- `remove` is idempotent and leaves no Skiff unit, file, state dir, pod, mount or cgroup behind.
- Secrets (store password, join token, control-plane join bundle) are written 0600; only the
  join token is ever printed (in the join command).
- `--root DIR` relocates every path (configuration, units, state, run dir) and the rendered
  files name the relocated paths, so they run in place (tests, labs); the default root "/" is a
  normal install.
- Every daemon speaks TLS with certificates of the cluster CA, created by the first
  control-plane install under `ROOT/etc/skiff/pki` (skiff/pki.py's layout; other control-plane
  machines get the CA from the join bundle and issue their own certificates). The control plane
  also writes `ROOT/etc/skiff/skiff-config` (0600), the `skiff` CLI's config as the admin.
- The join token is a Kubernetes bootstrap token (`<id>.<secret>`); `join-command` (re)creates
  its Secret, valid 24 hours. The control plane publishes the cluster description (api-servers,
  CIDRs, proxy mode, the CA certificate; no secret) on namespace kube-public, signed with an
  HMAC keyed by the token; a worker reads it anonymously (it cannot verify the api-server yet,
  so it sends no secret), refuses it unless the signature matches, and then trusts that CA. Its
  node agent presents the token once, over TLS verified against that CA, to get its own
  certificate through a CertificateSigningRequest (nodeagent/bootstrap.py); an expired or
  deleted token gets nothing (docs/security.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from deploy import cleanup, procs, render
from deploy import containerd as node_containerd
from skiff import bootstraptoken, conditions, defaults, errors, hostconfig, images, pki, tls
from skiff import config as skiff_config
from skiff.client import ApiClient, Client
from skiff.retry import retry_on_conflict
from skiffpb.api.v1 import types_pb2 as t

UNIT_PREFIX = "skiff-"
JOIN_TOKEN_TTL = 24 * 3600.0  # seconds the join token printed by join-command is valid (kubeadm's default)
CLUSTER_INFO_NAMESPACE = "kube-public"
CLUSTER_INFO_KEY = "skiff.io/cluster-info"
CLUSTER_INFO_SIGNATURE_KEY = "skiff.io/cluster-info-signature"
DEFAULT_CGROUP_PARENT = render.HostConfig("", "", (), Path("/")).cgroup_parent  # "/skiff-pods"
TOKEN_RE = bootstraptoken.TOKEN_RE
CA_CERT_KEY = "certificateAuthorityData"  # the CA certificate (PEM) in the signed cluster information
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


T = TypeVar("T")


class InstallError(Exception):
    """Something the user must fix; the message says what and where."""


# ---------------------------------------------------------------- where things go


@dataclass(frozen=True)
class Layout:
    root: Path
    state_dir: Path

    @classmethod
    def make(cls, root: str | Path = "/", state_dir: str | Path = "") -> Layout:
        r = Path(root).resolve()
        return cls(r, Path(state_dir).resolve() if state_dir else r / "var/lib/skiff")

    @property
    def etc(self) -> Path:
        return self.root / "etc/skiff"

    @property
    def units(self) -> Path:
        return self.root / "etc/systemd/system"

    @property
    def run(self) -> Path:
        return self.root / "run/skiff"

    @property
    def cluster_file(self) -> Path:
        return self.etc / "cluster.json"

    @property
    def host_file(self) -> Path:
        return self.etc / "host.json"

    @property
    def password_file(self) -> Path:
        return self.etc / "store-password"

    @property
    def token_file(self) -> Path:
        return self.etc / "join-token"

    @property
    def bundle_file(self) -> Path:
        return self.etc / "control-plane-join.json"

    @property
    def images(self) -> Path:
        return self.state_dir / "images"

    @property
    def pki(self) -> Path:
        return self.etc / "pki"

    @property
    def client_config(self) -> Path:
        """The `skiff` CLI's config as the admin (control-plane machines; SKIFF_CONFIG=...)."""
        return self.etc / "skiff-config"

    @property
    def admin(self) -> tls.Credentials | None:
        """The admin's credentials when this machine holds them (a control plane), else None."""
        pair = pki.PKIDir(self.pki).pair(pki.ADMIN)
        return tls.Credentials.from_pki(self.pki, pki.ADMIN) if pair.cert.exists() else None

    def node_credentials(self, node: str) -> tls.Credentials | None:
        pair = pki.PKIDir(self.pki).pair(pki.node_cert(node))
        return tls.Credentials.from_pki(self.pki, pki.node_cert(node)) if pair.cert.exists() else None


def unit_name(daemon: str) -> str:
    return f"{UNIT_PREFIX}{daemon}.service"


# ---------------------------------------------------------------- pure decisions


def check_name(name: str, what: str = "--name") -> str:
    if not NAME_RE.match(name):
        raise InstallError(f'{what} "{name}": use lowercase letters, digits and "-" (a DNS label)')
    return name


def check_ip(ip: str, what: str = "--ip") -> str:
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise InstallError(f'{what} "{ip}" is not an IPv4 address') from None
    return ip


def check_token(token: str, what: str = "--token") -> str:
    if not TOKEN_RE.match(token):
        raise InstallError(f"{what}: expected a bootstrap token, <6 of [a-z0-9]>.<16 of [a-z0-9]> (as printed by "
                           "the control-plane install or `skiff token create`)")
    return token


def parse_peers(text: str) -> list[tuple[str, str]]:
    """`cp2=10.0.0.2,cp3=10.0.0.3` -> [(name, ip)]."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, ip = part.partition("=")
        if not sep:
            raise InstallError(f'--peers: expected name=ip, got "{part}"')
        out.append((check_name(name.strip(), "--peers"), check_ip(ip.strip(), f"--peers {name}")))
    return out


def parse_endpoint(text: str, what: str = "--join") -> str:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(defaults.API_PORT)
    check_ip(host, what)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InstallError(f'{what} "{text}": expected IP:PORT')
    return f"{host}:{port}"


def plan_cluster(name: str, ip: str, peers: Sequence[tuple[str, str]], *, proxy_mode: str = "",
                 iptables_backend: str = "", service_cidr: str = "", cluster_cidr: str = "",
                 cluster_token: str = "", python: str = sys.executable,
                 external_store: render.ExternalStore | None = None) -> render.ClusterConfig:
    """A new cluster whose control plane is `name` plus `peers` (3 store members in all, or
    only api-servers there when `external_store` is an etcd cluster of the user's)."""
    hosts = [(name, ip), *peers]
    names = [h for h, _ in hosts]
    if len(set(names)) != len(names):
        raise InstallError(f"--peers: host names must differ, got {', '.join(names)}")
    if len(hosts) not in (1, 3):
        raise InstallError(f"the control plane runs on 1 or 3 machines, got {len(hosts)} ({', '.join(names)})")
    settings = {"clusterToken": cluster_token or f"skiff-{secrets.token_hex(4)}"}
    if proxy_mode:
        settings["proxyMode"] = proxy_mode
    if iptables_backend:
        settings["iptablesBackend"] = iptables_backend
    if service_cidr:
        settings["serviceCidr"] = service_cidr
    if cluster_cidr:
        settings["clusterCidr"] = cluster_cidr
    data = render.cluster_to_dict(render.ClusterConfig(members=render.plan_members(hosts),
                                                       external_store=external_store))
    data.update(settings)
    try:
        return render.cluster_from_dict(data, python=python)
    except render.ConfigError as exc:
        raise InstallError(str(exc)) from exc


def external_store(args: argparse.Namespace) -> render.ExternalStore | None:
    """--external-etcd and its TLS files; the files must exist (they are read by every api-server)."""
    files = {"--etcd-cafile": args.etcd_cafile, "--etcd-certfile": args.etcd_certfile,
             "--etcd-keyfile": args.etcd_keyfile}
    if not args.external_etcd:
        given = [flag for flag, path in files.items() if path]
        if given:
            raise InstallError(f"{', '.join(given)} without --external-etcd")
        return None
    if bool(args.etcd_certfile) != bool(args.etcd_keyfile):
        raise InstallError("--etcd-certfile and --etcd-keyfile go together")
    for flag, path in files.items():
        if path and not Path(path).is_file():
            raise InstallError(f"{flag} {path}: no such file")
    return render.ExternalStore(args.external_etcd, *(str(Path(p).resolve()) if p else "" for p in files.values()))


def check_unchanged(cluster: render.ClusterConfig, *, peers: Sequence[tuple[str, str]], proxy_mode: str,
                    iptables_backend: str, service_cidr: str, cluster_cidr: str, where: Path) -> None:
    """A re-run keeps the installed cluster; a flag asking for something else is an error, not ignored."""
    asked = {"--proxy-mode": (proxy_mode, cluster.proxy_mode),
             "--iptables-backend": (iptables_backend, cluster.iptables_backend),
             "--service-cidr": (service_cidr, cluster.service_cidr),
             "--cluster-cidr": (cluster_cidr, cluster.cluster_cidr)}
    for flag, (want, have) in asked.items():
        if want and want != have:
            raise InstallError(f"{flag} {want}: this machine is already installed with {have} ({where}); "
                               "run `python -m deploy.install remove` first to change it")
    hosts = {(m.host, m.ip) for m in cluster.members}
    missing = [f"{n}={ip}" for n, ip in peers if (n, ip) not in hosts]
    if missing:
        raise InstallError(f"--peers {','.join(missing)}: not in the installed cluster ({where})")


def host_to_dict(host: render.HostConfig) -> dict[str, object]:
    """What host.json keeps (never the bootstrap token: it is used once)."""
    return {"name": host.name, "ip": host.ip, "roles": list(host.roles), "stateDir": str(host.state_dir),
            "agentPort": host.agent_port, "nodeLabels": dict(host.node_labels), "cgroupParent": host.cgroup_parent,
            "joined": host.joined}


def host_from_dict(data: dict[str, object], layout: Layout) -> render.HostConfig:
    try:
        roles = data["roles"]
        labels = data.get("nodeLabels", {})
        assert isinstance(roles, list) and isinstance(labels, dict)
        return make_host(str(data["name"]), str(data["ip"]), tuple(str(r) for r in roles), layout,
                         agent_port=int(str(data.get("agentPort", defaults.AGENT_PORT))),
                         node_labels={str(k): str(v) for k, v in labels.items()},
                         cgroup_parent=str(data.get("cgroupParent", DEFAULT_CGROUP_PARENT)),
                         joined=bool(data.get("joined", False)))
    except (KeyError, AssertionError, ValueError) as exc:
        raise InstallError(f"{layout.host_file}: not a Skiff host description ({exc!r})") from None


def make_host(name: str, ip: str, roles: tuple[str, ...], layout: Layout, *, agent_port: int = defaults.AGENT_PORT,
              node_labels: dict[str, str] | None = None, cgroup_parent: str = DEFAULT_CGROUP_PARENT,
              joined: bool = False, bootstrap_token: str = "") -> render.HostConfig:
    if not re.match(r"^/[A-Za-z0-9_.-]+$", cgroup_parent):
        raise InstallError(f'--cgroup-parent "{cgroup_parent}": expected one level below the root, e.g. /skiff-pods')
    containerd = shutil.which("containerd") or "/usr/bin/containerd"
    return render.HostConfig(
        name, ip, roles, layout.state_dir,
        store_password_file=layout.password_file if render.CONTROL_PLANE in roles else None,
        agent_port=agent_port, node_labels=node_labels or {}, cgroup_parent=cgroup_parent, containerd_bin=containerd,
        pki_dir=layout.pki, joined=joined, bootstrap_token=bootstrap_token)


def sign_cluster_info(text: str, token: str) -> str:
    return "hmac-sha256:" + hmac.new(token.encode(), text.encode(), hashlib.sha256).hexdigest()


def cluster_info_text(cluster: render.ClusterConfig, ca_pem: str = "") -> str:
    data = render.cluster_to_dict(cluster)
    if ca_pem:
        data[CA_CERT_KEY] = ca_pem
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def verify_cluster_info(text: str, signature: str, token: str, *, python: str = sys.executable,
                        source: str = "") -> tuple[render.ClusterConfig, str]:
    """The cluster described by `text` and its CA certificate (PEM), if `signature` is its HMAC
    under `token`."""
    if not hmac.compare_digest(sign_cluster_info(text, token), signature):
        raise InstallError(f"the cluster information at {source or 'the control plane'} is not signed with this "
                           "token: wrong --token, or --join points at another cluster")
    try:
        data = json.loads(text)
        ca_pem = str(data.pop(CA_CERT_KEY, "")) if isinstance(data, dict) else ""
        return render.cluster_from_dict(data, python=python), ca_pem
    except (ValueError, render.ConfigError) as exc:
        raise InstallError(f"the cluster information at {source} is unusable: {exc}") from exc


def restart_plan(cluster: render.ClusterConfig, host: render.HostConfig, *,
                 containerd_changed: bool) -> list[tuple[str, str]]:
    """The safe order of an upgrade on one host: [(action, daemon)], action "restart" or a wait.

    Store members go one at a time, each waited for until it is healthy again (so a 3-member
    store on one machine never loses its quorum), then the api-servers one at a time, then the
    controllers and the scheduler. On a worker containerd restarts only when its unit or config
    changed (its pods survive: KillMode=process), then the node agent (waited for until the Node
    is Ready again), then netproxy and clusterdns.
    """
    steps: list[tuple[str, str]] = []
    names = [s.name for s in render.daemons_for(cluster, host)]
    for name in names:
        if name.startswith("store-"):
            steps += [("restart", name), ("wait-store", name.removeprefix("store-"))]
    for name in names:
        if name.startswith("apiserver-"):
            steps += [("restart", name), ("wait-api", name.removeprefix("apiserver-"))]
    steps += [("restart", n) for n in names if n in ("controllers", "scheduler")]
    if render.WORKER in host.roles:
        if containerd_changed:
            steps += [("restart", "containerd"), ("wait-containerd", host.name)]
        steps += [("import-images", host.name), ("restart", "nodeagent"), ("wait-node", host.name),
                  ("restart", "netproxy"), ("restart", "clusterdns")]
    return steps


# Remove: the node agent first (it would recreate pods), containerd last (pods go through it).
_STOP_ORDER = ("nodeagent", "netproxy", "clusterdns", "controllers", "scheduler", "apiserver-", "store-", "containerd")


def stop_order(units: Sequence[str]) -> list[str]:
    def rank(unit: str) -> tuple[int, str]:
        daemon = unit.removeprefix(UNIT_PREFIX).removesuffix(".service")
        for i, prefix in enumerate(_STOP_ORDER):
            if daemon == prefix or (prefix.endswith("-") and daemon.startswith(prefix)):
                return i, daemon
        return len(_STOP_ORDER), daemon

    return sorted(units, key=rank)


# ---------------------------------------------------------------- side effects behind seams


class ServiceManager(Protocol):
    """Starts and stops rendered units. `starts` is False when nothing is run (render only)."""

    starts: bool

    def reload(self) -> None: ...
    def start(self, unit: str) -> None: ...  # enable and start (no-op when running)
    def restart(self, unit: str) -> None: ...
    def stop(self, unit: str) -> None: ...  # no error when not running
    def disable(self, unit: str) -> None: ...
    def active(self, unit: str) -> bool: ...


class Systemd:
    """The real thing: systemctl."""

    starts = True

    def __init__(self) -> None:
        if not Path("/run/systemd/system").is_dir():
            raise InstallError("systemd is not running on this machine: use --no-systemd to only render the files")

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise InstallError(f"systemctl {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def reload(self) -> None:
        self._ctl("daemon-reload")

    def start(self, unit: str) -> None:
        self._ctl("enable", "--now", unit)

    def restart(self, unit: str) -> None:
        self._ctl("restart", unit)

    def stop(self, unit: str) -> None:
        self._ctl("stop", unit, check=False)

    def disable(self, unit: str) -> None:
        self._ctl("disable", unit, check=False)

    def active(self, unit: str) -> bool:
        return self._ctl("is-active", "--quiet", unit, check=False).returncode == 0


def parse_unit(text: str) -> tuple[list[str], dict[str, str]]:
    """ExecStart argv and Environment of a rendered unit (the subset render.systemd_unit writes)."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "ExecStart":
            argv = shlex.split(value)
        elif key == "Environment":
            k, _, v = value.partition("=")
            env[k] = v
    if not argv:
        raise InstallError("unit has no ExecStart")
    return argv, env


class Processes:
    """Runs each rendered unit's ExecStart as a background daemon of this machine (or of the
    network namespace the install runs in), through deploy/procs.py: for labs and tests where
    systemd is not PID 1. Pid files and logs go to the layout's run dir."""

    starts = True

    def __init__(self, units: Path, run_dir: Path) -> None:
        self.units = units
        self.run_dir = run_dir

    def _running(self, unit: str) -> procs.Daemon | None:
        for d in procs.recorded(self.run_dir):
            if d.name == unit.removesuffix(".service"):
                return d
        return None

    def reload(self) -> None:
        pass

    def start(self, unit: str) -> None:
        if self._running(unit) is not None:
            return
        argv, env = parse_unit((self.units / unit).read_text())
        procs.start(unit.removesuffix(".service"), argv, self.run_dir, env=env)

    def restart(self, unit: str) -> None:
        self.stop(unit)
        self.start(unit)

    def stop(self, unit: str) -> None:
        daemon = self._running(unit)
        if daemon is not None:
            procs.stop(daemon, timeout=20)

    def disable(self, unit: str) -> None:
        pass

    def active(self, unit: str) -> bool:
        return self._running(unit) is not None


class RenderOnly:
    """--no-systemd: files are rendered, nothing is started or stopped."""

    starts = False

    def reload(self) -> None:
        pass

    def start(self, unit: str) -> None:
        pass

    def restart(self, unit: str) -> None:
        pass

    def stop(self, unit: str) -> None:
        pass

    def disable(self, unit: str) -> None:
        pass

    def active(self, unit: str) -> bool:
        return False


class Health(Protocol):
    """Waits until a part of the cluster answers; raises InstallError on timeout."""

    def wait_api(self, endpoints: str, *, timeout: float) -> None: ...
    def wait_store(self, member: render.StoreMember, *, timeout: float) -> None: ...
    def wait_containerd(self, endpoint: str, *, timeout: float) -> None: ...
    def wait_node_ready(self, api_servers: str, node: str, *, since: float, timeout: float) -> None: ...


def _poll(what: str, check: Callable[[], str], timeout: float, *, interval: float = 0.5) -> None:
    """Call `check` until it returns "" (ready) or the deadline passes; it returns why not."""
    deadline = time.monotonic() + timeout
    why = "no answer yet"
    while True:
        try:
            why = check()
        except Exception as exc:  # anything is "not ready yet" until the deadline
            why = f"{type(exc).__name__}: {exc}"
        if not why:
            return
        if time.monotonic() > deadline:
            raise InstallError(f"{what} not ready after {timeout:.0f}s: {why}")
        time.sleep(interval)


class LiveHealth:
    """Health checks over the network: the api-server, the store's etcd API, CRI. They present
    the admin's certificate on a control plane, the node's on a worker."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def _credentials(self, node: str = "") -> tls.Credentials | None:
        return self.layout.admin or (self.layout.node_credentials(node) if node else None)

    def wait_api(self, endpoints: str, *, timeout: float) -> None:
        async def check() -> str:
            async with Client(endpoints, timeout=5, credentials=self._credentials()) as c:
                await c.list(t.Namespace)  # served from the store: needs its quorum
            return ""

        _poll(f"api-server {endpoints}", lambda: asyncio.run(check()), timeout)

    def wait_store(self, member: render.StoreMember, *, timeout: float) -> None:
        import grpc

        from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc

        def check() -> str:
            creds = self._credentials()
            channel = (grpc.insecure_channel(member.client_url) if creds is None
                       else grpc.secure_channel(member.client_url, creds.channel_credentials()))
            with channel as ch:
                st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=3)
            return "" if st.leader else "no leader"

        _poll(f"store member {member.name} ({member.client_url})", check, timeout)

    def wait_containerd(self, endpoint: str, *, timeout: float) -> None:
        import grpc

        from skiffpb.cri.v1 import api_pb2 as cri
        from skiffpb.cri.v1 import api_pb2_grpc as cri_grpc

        def check() -> str:
            with grpc.insecure_channel(endpoint) as ch:
                st = cri_grpc.RuntimeServiceStub(ch).Status(cri.StatusRequest(), timeout=3)
            ready = any(c.type == "RuntimeReady" and c.status for c in st.status.conditions)
            return "" if ready else "RuntimeReady is false"

        _poll(f"containerd {endpoint}", check, timeout, interval=0.2)

    def wait_node_ready(self, api_servers: str, node: str, *, since: float, timeout: float) -> None:
        async def check() -> str:
            async with Client(api_servers, timeout=5, credentials=self._credentials(node)) as c:
                obj = await c.get(t.Node, node)
            cond = conditions.node_ready_condition(obj)
            if cond is None:
                return "no Ready condition yet"
            if cond.status != conditions.TRUE:
                return f"Ready={cond.status} ({cond.reason}: {cond.message})"
            if cond.last_heartbeat_time.ToSeconds() < int(since):
                return "no heartbeat since the restart"
            return ""

        _poll(f"node {node}", lambda: asyncio.run(check()), timeout, interval=1.0)


# ---------------------------------------------------------------- the join information


async def publish_cluster_info(api: ApiClient, cluster: render.ClusterConfig, token: str, ca_pem: str = "") -> None:
    """Put the signed cluster description (and CA certificate) on namespace kube-public (created
    when missing)."""
    text = cluster_info_text(cluster, ca_pem)
    annotations = {CLUSTER_INFO_KEY: text, CLUSTER_INFO_SIGNATURE_KEY: sign_cluster_info(text, token)}

    async def publish() -> None:
        try:
            ns = await api.get(t.Namespace, CLUSTER_INFO_NAMESPACE)
        except errors.NotFoundError:
            ns = t.Namespace(api_version="v1", kind="Namespace", metadata=t.ObjectMeta(name=CLUSTER_INFO_NAMESPACE))
            ns.metadata.annotations.update(annotations)
            try:
                await api.create(ns)
                return
            except errors.AlreadyExistsError as exc:
                # Created meanwhile (another control-plane host): a lost race; update it next time.
                raise errors.ConflictError(f"namespace {CLUSTER_INFO_NAMESPACE} created meanwhile") from exc
        ns.metadata.annotations.update(annotations)
        await api.update(ns)

    try:
        await retry_on_conflict(publish, attempts=10)
    except errors.ConflictError as exc:
        raise InstallError(f"could not publish the cluster information on namespace {CLUSTER_INFO_NAMESPACE}: "
                           "too many conflicting updates") from exc


async def ensure_bootstrap_token(api: ApiClient, token: str, *, ttl: float) -> None:
    """The token's Secret, valid `ttl` seconds from now (replaced when it exists)."""
    import datetime as dt

    secret = bootstraptoken.make_secret(token, expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl),
                                        description="the join token of deploy.install")
    try:
        await api.create(secret)
    except errors.AlreadyExistsError:
        old = await api.get(t.Secret, secret.metadata.name, secret.metadata.namespace)
        old.ClearField("data")
        old.data.update(secret.data)
        await api.update(old)


async def fetch_cluster_info(api: ApiClient, token: str, *, source: str,
                             python: str = sys.executable) -> tuple[render.ClusterConfig, str]:
    try:
        ns = await api.get(t.Namespace, CLUSTER_INFO_NAMESPACE)
    except errors.NotFoundError:
        ns = t.Namespace()
    text = ns.metadata.annotations.get(CLUSTER_INFO_KEY, "")
    signature = ns.metadata.annotations.get(CLUSTER_INFO_SIGNATURE_KEY, "")
    if not text or not signature:
        raise InstallError(f"{source} has published no cluster information: run "
                           "`python -m deploy.install join-command` on a control-plane machine")
    return verify_cluster_info(text, signature, token, python=python, source=source)


class AnonymousDiscovery:
    """Reads kube-public over the api-server's HTTPS port without credentials and without
    verifying the server (a joining worker has no CA yet): what it reads is trusted only after
    its HMAC under the token checks out. Only `get` of a Namespace."""

    def __init__(self, endpoint: str) -> None:
        host, _, port = endpoint.rpartition(":")
        # The REST port sits beside the gRPC port with the same shift (render.plan_members).
        self.url = f"https://{host}:{defaults.KUBE_API_PORT + int(port) - defaults.API_PORT}"

    async def get(self, cls: type[t.Namespace], name: str, namespace: str = "") -> t.Namespace:
        import aiohttp

        from skiff.convert import from_data

        url = f"{self.url}/api/v1/namespaces/{name}"
        try:
            async with aiohttp.ClientSession() as session, session.get(url, ssl=False) as response:
                body = await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise errors.UnavailableError(f"{url}: {exc}") from exc
        if response.status == 404:
            raise errors.NotFoundError(f"namespace {name} not found at {self.url}")
        if response.status != 200:
            raise errors.UnavailableError(f"{url}: {response.status} {body.get('message', '')}")
        return from_data(body, t.Namespace, unknown=[])

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------- the installer


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InstallError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InstallError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, data: object, *, mode: int = 0o644) -> bool:
    return hostconfig.write_if_changed(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=mode)


def _ensure_secret(path: Path, value: str) -> str:
    """Keep an existing secret unless `value` replaces it; written 0600 from the first byte."""
    if path.exists() and not value:
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    path.chmod(0o600)
    return value


@dataclass
class Installer:
    layout: Layout
    manager: ServiceManager
    health: Health
    python: str = sys.executable
    timeout: float = 120.0
    say: Callable[[str], None] = field(default=print)
    # endpoints -> a client: the admin's over TLS by default (tests pass an in-memory one)
    api: Callable[[str], ApiClient] | None = None
    # endpoint -> what a joining worker reads kube-public with (anonymous HTTPS by default)
    discovery: Callable[[str], ApiClient] | None = None

    def _admin_api(self, endpoints: str) -> ApiClient:
        return Client(endpoints, credentials=self.layout.admin)

    def _call_api(self, endpoints: str, fn: Callable[[ApiClient], Awaitable[T]], *,
                  discovery: bool = False) -> T:
        make: Callable[[str], Any] = ((self.discovery or self.api or AnonymousDiscovery) if discovery
                                      else (self.api or self._admin_api))

        async def run() -> T:
            api = make(endpoints)
            try:
                return await fn(api)
            finally:
                close = getattr(api, "close", None)
                if close is not None:
                    await close()

        return asyncio.run(run())

    # -- files

    def write_units(self, specs: Sequence[render.DaemonSpec]) -> set[str]:
        """Render every unit of this host; remove Skiff units it no longer runs. Returns the
        daemons whose unit changed."""
        changed = set()
        wanted = {unit_name(s.name) for s in specs}
        for stale in sorted(p.name for p in self.layout.units.glob(f"{UNIT_PREFIX}*.service")):
            if stale not in wanted:
                self.manager.stop(stale)
                self.manager.disable(stale)
                (self.layout.units / stale).unlink(missing_ok=True)
                self.say(f"removed unit {stale}")
        for spec in specs:
            if hostconfig.write_if_changed(self.layout.units / unit_name(spec.name), render.systemd_unit(spec)):
                changed.add(spec.name)
        self.manager.reload()
        return changed

    def save(self, cluster: render.ClusterConfig, host: render.HostConfig) -> None:
        _write_json(self.layout.cluster_file, render.cluster_to_dict(cluster))
        _write_json(self.layout.host_file, host_to_dict(host))

    def load(self) -> tuple[render.ClusterConfig, render.HostConfig] | None:
        if not self.layout.host_file.exists() or not self.layout.cluster_file.exists():
            return None
        try:
            cluster = render.cluster_from_dict(_read_json(self.layout.cluster_file), python=self.python)
        except render.ConfigError as exc:
            raise InstallError(f"{self.layout.cluster_file}: {exc}") from exc
        return cluster, host_from_dict(_read_json(self.layout.host_file), self.layout)

    # -- control plane

    def control_plane(self, *, name: str, ip: str, peers: Sequence[tuple[str, str]] = (), bundle: Path | None = None,
                      token: str = "", proxy_mode: str = "", iptables_backend: str = "",
                      service_cidr: str = "", cluster_cidr: str = "",
                      external_store: render.ExternalStore | None = None) -> int:
        check_name(name)
        check_ip(ip)
        if token:
            check_token(token)
        password = ""
        data: dict[str, object] = {}
        if bundle is not None:
            data = _read_json(bundle)
            try:
                cluster = render.cluster_from_dict(data.get("cluster"), python=self.python)
            except render.ConfigError as exc:
                raise InstallError(f"{bundle}: {exc}") from exc
            password, token = str(data.get("storePassword", "")), token or str(data.get("joinToken", ""))
            if not password or not token:
                raise InstallError(f"{bundle}: no storePassword or joinToken: not a control-plane join bundle")
        else:
            existing = self.load()
            if existing is not None:
                cluster = existing[0]
                check_unchanged(cluster, peers=peers, proxy_mode=proxy_mode, iptables_backend=iptables_backend,
                                service_cidr=service_cidr, cluster_cidr=cluster_cidr, where=self.layout.cluster_file)
            else:
                cluster = plan_cluster(name, ip, peers, proxy_mode=proxy_mode, iptables_backend=iptables_backend,
                                       service_cidr=service_cidr, cluster_cidr=cluster_cidr, python=self.python,
                                       external_store=external_store)
        mine = cluster.members_on(name)
        if not mine:
            hosts = sorted({m.host for m in cluster.members})
            raise InstallError(f"host {name} runs no store member of this cluster (control-plane hosts: "
                               f"{', '.join(hosts)})")
        if any(m.ip != ip for m in mine):
            raise InstallError(f"--ip {ip}: the cluster expects {name} at {mine[0].ip}")
        host = make_host(name, ip, (render.CONTROL_PLANE,), self.layout)
        _ensure_secret(self.layout.password_file, password or ("" if self.layout.password_file.exists()
                                                               else secrets.token_urlsafe(32)))
        token = _ensure_secret(self.layout.token_file, token or ("" if self.layout.token_file.exists()
                                                                 else bootstraptoken.generate()))
        self.save(cluster, host)
        issued = self._ensure_pki(cluster, host, bundle_data=data if bundle is not None else None)
        if issued:
            self.say(f"certificates in {self.layout.pki}: {', '.join(issued)}")
        skiff_config.write_config(cluster.api_servers, path=self.layout.client_config, credentials=self.layout.admin)
        if len({m.host for m in cluster.members}) > 1:  # what the other control-plane machines join with
            d = pki.PKIDir(self.layout.pki)
            # The service-account key pair travels too (as kubeadm copies sa.key/sa.pub): every
            # api-server must verify the tokens any other one issued.
            _write_json(self.layout.bundle_file, {
                "cluster": render.cluster_to_dict(cluster), "joinToken": token,
                "storePassword": self.layout.password_file.read_text().strip(),
                "caCert": d.ca.cert.read_text(), "caKey": d.ca.key.read_text(),
                "saKey": d.sa_key.read_text(), "saPub": d.sa_pub.read_text()}, mode=0o600)
        specs = render.daemons_for(cluster, host)
        self.write_units(specs)
        self.say(f"rendered {len(specs)} units in {self.layout.units} and the cluster in {self.layout.cluster_file}")
        if not self.manager.starts:
            self.say("not started (--no-systemd). Start the units, then run `python -m deploy.install join-command"
                     f"{self._root_flag()}` here to print the worker join command.")
            return 0
        for spec in specs:
            self.manager.start(unit_name(spec.name))
        self.say("started " + ", ".join(unit_name(s.name) for s in specs))
        quorum = len(cluster.members) // 2 + 1
        if bundle is None and len(mine) < quorum:
            others = sorted({m.host for m in cluster.members} - {name})
            self.say(f"the store needs {quorum} of {len(cluster.members)} members to answer: copy "
                     f"{self.layout.bundle_file} (secret!) to {', '.join(others)} and run there:\n"
                     f"  python -m deploy.install control-plane --name NAME --ip IP --join-bundle FILE\n"
                     "The last one to join prints the worker join command.")
            return 0
        return self.join_command()

    def _ensure_pki(self, cluster: render.ClusterConfig, host: render.HostConfig, *,
                    bundle_data: dict[str, object] | None) -> list[str]:
        """This control-plane machine's certificates, from the cluster CA (the bundle's when joining
        another control-plane machine; created on the first one)."""
        d = pki.PKIDir(self.layout.pki)
        if bundle_data is not None and not d.ca.cert.exists():
            ca_cert, ca_key = str(bundle_data.get("caCert", "")), str(bundle_data.get("caKey", ""))
            if not ca_cert or not ca_key:
                raise InstallError("the join bundle holds no cluster CA (caCert, caKey): re-create it on the first "
                                   "control-plane machine with this version")
            pki.write_atomic(d.ca.key, ca_key.encode(), 0o600)
            pki.write_atomic(d.ca.cert, ca_cert.encode(), 0o644)
        if bundle_data is not None and not d.sa_key.exists():
            sa_key, sa_pub = str(bundle_data.get("saKey", "")), str(bundle_data.get("saPub", ""))
            if sa_key and sa_pub:
                pki.write_atomic(d.sa_key, sa_key.encode(), 0o600)
                pki.write_atomic(d.sa_pub, sa_pub.encode(), 0o644)
        return d.ensure(render.pki_specs_for(cluster, [(host.name, host.ip, host.roles)]), now=pki.utcnow())

    def _root_flag(self) -> str:
        return "" if self.layout.root == Path("/") else f" --root {self.layout.root}"

    def join_command(self) -> int:
        """Wait for the api-server, publish the signed cluster information, print the join command."""
        loaded = self.load()
        if loaded is None or render.CONTROL_PLANE not in loaded[1].roles:
            raise InstallError(f"no control plane is installed under {self.layout.root} ({self.layout.host_file})")
        cluster, host = loaded
        if not self.layout.token_file.exists():
            raise InstallError(f"{self.layout.token_file} is missing: re-run the control-plane install")
        token = check_token(self.layout.token_file.read_text().strip(), str(self.layout.token_file))
        local = [m.api_url for m in cluster.members_on(host.name)]
        endpoints = ",".join(local + [m.api_url for m in cluster.members if m.api_url not in local])
        self.say(f"waiting for the api-server at {local[0]} ...")
        self.health.wait_api(endpoints, timeout=self.timeout)

        ca_pem = pki.PKIDir(self.layout.pki).ca.cert.read_text()
        self._call_api(endpoints, lambda api: ensure_bootstrap_token(api, token, ttl=JOIN_TOKEN_TTL))
        self._call_api(endpoints, lambda api: publish_cluster_info(api, cluster, token, ca_pem))
        self.say(f"the control plane is up; `SKIFF_CONFIG={self.layout.client_config} skiff ...` as the admin. "
                 f"Join workers (the token is valid {JOIN_TOKEN_TTL / 3600:.0f}h; re-run join-command for a fresh one) "
                 f"with:\n  python -m deploy.install worker --name NAME --ip IP --join {local[0]} --token {token}")
        return 0

    # -- worker

    def worker(self, *, name: str, ip: str, join: str = "", token: str = "", cluster_file: Path | None = None,
               node_labels: dict[str, str] | None = None, cgroup_parent: str = DEFAULT_CGROUP_PARENT) -> int:
        check_name(name)
        check_ip(ip)
        check_token(token)
        ca_pem = ""
        if cluster_file is not None:
            try:
                cluster = render.cluster_from_dict(_read_json(cluster_file), python=self.python)
            except render.ConfigError as exc:
                raise InstallError(f"{cluster_file}: {exc}") from exc
            join = str(cluster_file)
            if not pki.PKIDir(self.layout.pki).ca.cert.exists():
                raise InstallError(f"--cluster-file: copy the cluster CA certificate (ca.crt of a control-plane "
                                   f"machine's /etc/skiff/pki) to {pki.PKIDir(self.layout.pki).ca.cert} first")
        else:
            join = parse_endpoint(join)
            cluster, ca_pem = self.fetch_cluster(join, token)
            if not ca_pem:
                raise InstallError(f"--join {join}: the cluster information carries no CA certificate")
        host = make_host(name, ip, (render.WORKER,), self.layout, node_labels=node_labels, cgroup_parent=cgroup_parent,
                         joined=True, bootstrap_token=token)
        self.save(cluster, host)
        if ca_pem:
            pki.write_atomic(pki.PKIDir(self.layout.pki).ca.cert, ca_pem.encode(), 0o644)
        hostconfig.write_node_config(host.node_paths)  # the same text as render.containerd_config(host)
        tars = images.build_presets(self.layout.images)
        specs = render.daemons_for(cluster, host)
        self.write_units(specs)
        self.say(f"joined cluster at {join}: rendered {len(specs)} units, containerd config {host.node_paths.config}")
        if not self.manager.starts:
            self.say("not started (--no-systemd). Start skiff-containerd, import the images with "
                     f"`ctr -a {host.node_paths.socket} -n k8s.io images import` of {', '.join(map(str, tars))}, "
                     "then start skiff-nodeagent, skiff-netproxy and skiff-clusterdns.")
            return 0
        since = time.time()
        self.manager.start(unit_name("containerd"))
        self.health.wait_containerd(host.node_paths.endpoint, timeout=self.timeout)
        images.import_tars(tars, endpoint=host.node_paths.endpoint)
        self.manager.start(unit_name("nodeagent"))
        # The agent joins first (its certificate from the token); proxy and DNS present that certificate.
        node_cert = pki.PKIDir(self.layout.pki).pair(pki.node_cert(name)).cert
        _poll(f"node {name}'s certificate (the agent's join with the token; see its log)",
              lambda: "" if node_cert.exists() else "not signed yet", self.timeout)
        self.say(f"node {name} joined: its certificate is {node_cert}")
        for daemon in ("netproxy", "clusterdns"):
            self.manager.start(unit_name(daemon))
        self.say(f"started containerd, node agent, netproxy and clusterdns; waiting for node {name} to be Ready ...")
        self.health.wait_node_ready(cluster.api_servers, name, since=since, timeout=self.timeout)
        self.say(f"node {name} is Ready")
        return 0

    def fetch_cluster(self, join: str, token: str) -> tuple[render.ClusterConfig, str]:
        try:
            return self._call_api(join, lambda api: fetch_cluster_info(api, token, source=join, python=self.python),
                                  discovery=True)
        except errors.SkiffError as exc:
            raise InstallError(f"--join {join}: cannot read the cluster information: {exc}") from exc

    # -- upgrade

    def upgrade(self) -> int:
        loaded = self.load()
        if loaded is None:
            raise InstallError(f"nothing is installed under {self.layout.root} ({self.layout.host_file} is missing)")
        cluster, host = loaded
        host = dataclasses.replace(host, containerd_bin=shutil.which("containerd") or host.containerd_bin)
        specs = render.daemons_for(cluster, host)
        changed = self.write_units(specs)
        config_changed = False
        if render.WORKER in host.roles:
            config_changed = hostconfig.write_node_config(host.node_paths)
        self.say(f"re-rendered {len(specs)} units ({len(changed)} changed)")
        if not self.manager.starts:
            return 0
        members = {m.name: m for m in cluster.members}
        since = time.time()
        for action, arg in restart_plan(cluster, host, containerd_changed=config_changed or "containerd" in changed):
            if action == "restart":
                self.say(f"restarting {unit_name(arg)}")
                self.manager.restart(unit_name(arg))
                since = time.time()
            elif action == "wait-store":
                self.health.wait_store(members[arg], timeout=self.timeout)
            elif action == "wait-api":
                self.health.wait_api(members[arg].api_url, timeout=self.timeout)
            elif action == "wait-containerd":
                self.health.wait_containerd(host.node_paths.endpoint, timeout=self.timeout)
            elif action == "import-images":
                images.import_tars(images.build_presets(self.layout.images), endpoint=host.node_paths.endpoint)
            elif action == "wait-node":
                self.health.wait_node_ready(cluster.api_servers, arg, since=since, timeout=self.timeout)
        self.say("upgrade done")
        return 0

    # -- remove

    def remove(self) -> int:
        loaded = self.load()
        units = stop_order([p.name for p in self.layout.units.glob(f"{UNIT_PREFIX}*.service")])
        for unit in units:
            if unit != unit_name("containerd"):
                self.manager.stop(unit)
        worker = loaded is not None and render.WORKER in loaded[1].roles
        if loaded is not None and worker:
            cluster, host = loaded
            # Pods go through containerd while it still runs (CNI DEL, unmounts, cgroups).
            if host.node_paths.socket.exists():
                for note in node_containerd.remove_all_sandboxes(host.node_paths.endpoint):
                    self.say(note)
            self._netproxy_cleanup(cluster, host)
        if unit_name("containerd") in units:
            self.manager.stop(unit_name("containerd"))
        if loaded is not None and worker:
            cluster, host = loaded
            for note in node_containerd.crash_cleanup(host.node_paths, host.cgroup_parent):
                self.say(note)
            for note in cleanup.remove_node_network(cluster.cluster_cidr):
                self.say(note)
        for unit in units:
            self.manager.disable(unit)
            (self.layout.units / unit).unlink(missing_ok=True)
        self.manager.reload()
        for f in (self.layout.cluster_file, self.layout.host_file, self.layout.password_file,
                  self.layout.token_file, self.layout.bundle_file, self.layout.client_config):
            f.unlink(missing_ok=True)
        shutil.rmtree(self.layout.pki, ignore_errors=True)
        if self.layout.run.is_dir():  # logs and pid files of --service-manager processes
            for f in self.layout.run.glob(f"{UNIT_PREFIX}*"):
                f.unlink(missing_ok=True)
        for d in (self.layout.etc, self.layout.run):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        for mnt in reversed(node_containerd.mounts_under(self.layout.state_dir)):
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        shutil.rmtree(self.layout.state_dir, ignore_errors=True)
        self.say(f"removed {len(units)} unit(s), the configuration in {self.layout.etc} and the state in "
                 f"{self.layout.state_dir}" if units or loaded else "nothing installed; nothing left to remove")
        return 0

    def _netproxy_cleanup(self, cluster: render.ClusterConfig, host: render.HostConfig) -> None:
        spec = next(s for s in render.worker_daemons(cluster, host) if s.name == "netproxy")
        try:
            proc = subprocess.run([*spec.argv, "--cleanup"], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.say(f"warning: netproxy --cleanup failed: {exc}")
            return
        if proc.returncode != 0:
            self.say(f"warning: netproxy --cleanup exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
        else:
            self.say("removed netproxy's rules (netproxy --cleanup)")


# ---------------------------------------------------------------- command line


def _labels(text: str) -> dict[str, str]:
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise InstallError(f'--node-labels: expected key=value, got "{part}"')
        out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default="/", help="install under this directory instead of / (tests, labs)")
    common.add_argument("--state-dir", default="", help="where the host keeps its state (default ROOT/var/lib/skiff)")
    common.add_argument("--python", default=sys.executable,
                        help="the Python the units run the components with (default: this one, %(default)s)")
    mode = common.add_mutually_exclusive_group()
    mode.add_argument("--no-systemd", action="store_const", dest="manager", const="none",
                      help="only render the files; start nothing")
    mode.add_argument("--service-manager", dest="manager", choices=("systemd", "processes", "none"),
                      help="systemd (default); processes: run the units' command lines as background processes "
                           "of this machine or network namespace (labs, tests); none: same as --no-systemd")
    common.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each step (default 120)")
    common.set_defaults(manager="systemd")

    p = argparse.ArgumentParser(prog="python -m deploy.install", description="Install Skiff on this machine.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cp = sub.add_parser("control-plane", parents=[common], help="install a control-plane machine")
    cp.add_argument("--name", required=True, help="this machine's name (a DNS label)")
    cp.add_argument("--ip", required=True, help="this machine's address the others reach it at")
    cp.add_argument("--peers", default="", help="the other control-plane machines, name=ip,name=ip (3 in all)")
    cp.add_argument("--join-bundle", type=Path, help="join an existing control plane with the bundle copied from "
                    "its first machine (/etc/skiff/control-plane-join.json)")
    cp.add_argument("--token", default="", help="the worker join token (default: a random one)")
    cp.add_argument("--proxy-mode", choices=render.PROXY_MODES, default="", help="netproxy mode (default iptables)")
    cp.add_argument("--iptables-backend", choices=("auto", "nft", "legacy"), default="",
                    help="iptables flavour netproxy uses (default auto)")
    cp.add_argument("--service-cidr", default="", help=f"ClusterIP range (default {defaults.SERVICE_CIDR})")
    cp.add_argument("--cluster-cidr", default="", help=f"pod CIDR of the cluster (default {defaults.CLUSTER_CIDR})")
    cp.add_argument("--external-etcd", default="", metavar="ENDPOINTS",
                    help="use this etcd cluster (https://IP:2379,...) instead of running Skiff's store members")
    cp.add_argument("--etcd-cafile", default="", help="CA of the external etcd's serving certificates")
    cp.add_argument("--etcd-certfile", default="", help="client certificate for the external etcd")
    cp.add_argument("--etcd-keyfile", default="", help="the client certificate's key")
    w = sub.add_parser("worker", parents=[common], help="install a worker and join it to a cluster")
    w.add_argument("--name", required=True, help="the node's name (a DNS label)")
    w.add_argument("--ip", required=True, help="the node's address (its InternalIP)")
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("--join", help="an api-server of the cluster, IP:PORT (with --token)")
    src.add_argument("--cluster-file", type=Path,
                     help="instead of --join: the cluster.json of a control-plane machine (offline installs)")
    w.add_argument("--token", default="", help="the join token printed by the control-plane install")
    w.add_argument("--node-labels", default="", help="extra Node labels, key=value,...")
    w.add_argument("--cgroup-parent", default=DEFAULT_CGROUP_PARENT,
                   help="cgroup of the node's pods (default %(default)s; unique per node on one machine)")
    sub.add_parser("join-command", parents=[common],
                   help="on a control-plane machine: publish the cluster information and print the join command")
    sub.add_parser("upgrade", parents=[common], help="re-render the units from this code and restart them safely")
    sub.add_parser("remove", parents=[common], help="stop and remove everything Skiff installed here")
    return p


def make_manager(kind: str, layout: Layout) -> ServiceManager:
    if kind == "systemd":
        return Systemd()
    if kind == "processes":
        return Processes(layout.units, layout.run)
    return RenderOnly()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if os.geteuid() != 0 and args.root == "/":
            raise InstallError("run as root (or give --root DIR to render elsewhere)")
        layout = Layout.make(args.root, args.state_dir)
        inst = Installer(layout, make_manager(args.manager, layout), LiveHealth(layout), python=args.python,
                         timeout=args.timeout)
        if args.command == "control-plane":
            return inst.control_plane(name=args.name, ip=args.ip, peers=parse_peers(args.peers),
                                      bundle=args.join_bundle, token=args.token, proxy_mode=args.proxy_mode,
                                      iptables_backend=args.iptables_backend, service_cidr=args.service_cidr,
                                      cluster_cidr=args.cluster_cidr, external_store=external_store(args))
        if args.command == "worker":
            if args.join and not args.token:
                raise InstallError("--join needs --token (printed by the control-plane install)")
            return inst.worker(name=args.name, ip=args.ip, join=args.join or "", token=args.token,
                               cluster_file=args.cluster_file, node_labels=_labels(args.node_labels),
                               cgroup_parent=args.cgroup_parent)
        if args.command == "join-command":
            return inst.join_command()
        if args.command == "upgrade":
            return inst.upgrade()
        return inst.remove()
    except (InstallError, images.ImageError) as exc:
        print(f"skiff install: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
