"""One source of truth for a host's configuration: which daemons it runs, with which flags.

The network-namespace lab, `make up`, the Vagrant lab and a bare-metal install all describe a
cluster with `ClusterConfig` and a host with `HostConfig`, and get the same daemons from
`daemons_for()`: command lines the lab starts (inside the host's netns) and the bare-metal
install turns into systemd units with `systemd_unit()`. Each daemon's command line itself is
defined once, in skiff.daemons (the all-in-one `python -m controlplane` builds its children's
from there too); this module decides which daemons a host runs and with which values.
containerd's config and the CNI conflist come from skiff.hostconfig, which the node agent
uses too.

Every daemon speaks TLS with certificates from the host's PKI directory (`HostConfig.pki`,
skiff/pki.py's layout; the launchers create it with `pki_specs_for`); `insecure` renders the
development mode instead (`--insecure` everywhere).

Everything here is pure: no process is started and no file is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from skiff import daemons, defaults, hostconfig, pki, tls
from skiff.daemon import duration

CONTROL_PLANE = "control-plane"
WORKER = "worker"
PROXY_MODES = ("iptables", "ipvs")


@dataclass(frozen=True)
class StoreMember:
    name: str  # "s1"
    host: str  # the host running it ("cp")
    ip: str
    client_port: int = defaults.STORE_CLIENT_PORT
    peer_port: int = defaults.STORE_PEER_PORT
    api_port: int = defaults.API_PORT  # the api-server beside this member
    http_port: int = defaults.KUBE_API_PORT  # its Kubernetes REST API

    # /metrics of the member and its api-server on the host's loopback (docs/observability.md):
    # "" (the daemon's default port) for the first member of a host, shifted as the client and
    # gRPC ports are for the others (plan_members), so members sharing a host differ.
    @property
    def store_metrics(self) -> str:
        shift = self.client_port - defaults.STORE_CLIENT_PORT
        return f"127.0.0.1:{defaults.STORE_METRICS_PORT + shift}" if shift > 0 else ""

    @property
    def apiserver_metrics(self) -> str:
        shift = self.api_port - defaults.API_PORT
        return f"127.0.0.1:{defaults.APISERVER_METRICS_PORT + shift}" if shift > 0 else ""

    @property
    def client_url(self) -> str:
        return f"{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.ip}:{self.peer_port}"

    @property
    def api_url(self) -> str:
        return f"{self.ip}:{self.api_port}"

    @property
    def http_url(self) -> str:
        return f"{self.ip}:{self.http_port}"


@dataclass(frozen=True)
class ExternalStore:
    """An etcd cluster used instead of Skiff's store members (k3s's --datastore-endpoint)."""

    endpoints: str  # "https://10.0.0.5:2379,..." (or host:port without TLS)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def tls(self) -> tuple[str, str, str]:
        return (self.ca_file, self.cert_file, self.key_file)


@dataclass(frozen=True)
class ClusterConfig:
    # Where the store members would run; with `external_store` only the api-servers run there.
    members: tuple[StoreMember, ...]
    service_cidr: str = defaults.SERVICE_CIDR
    cluster_cidr: str = defaults.CLUSTER_CIDR
    node_cidr_mask_size: int = defaults.NODE_CIDR_MASK_SIZE
    node_port_range: str = defaults.NODE_PORT_RANGE
    proxy_mode: str = "iptables"  # or "ipvs"
    iptables_backend: str = "auto"
    min_sync_period: str = "1s"
    node_monitor_grace_period: str = "40s"
    node_lease_period: str = "10s"  # how often node agents renew their Lease; well below the grace period
    # The api-server's DefaultTolerationSeconds: how long a pod stays on a NoExecute-tainted node.
    default_toleration_seconds: int = 300
    cluster_token: str = "skiff-store"  # tells store clusters apart (initial-cluster-token)
    cluster_domain: str = defaults.CLUSTER_DOMAIN
    cluster_dns: str = defaults.NODE_LOCAL_DNS_IP  # each host's clusterdns listens here; pods use it
    dns_upstreams: str = ""  # where clusterdns forwards names outside the cluster (ip[:port],...); none: SERVFAIL
    python: str = sys.executable
    external_store: ExternalStore | None = None

    @property
    def store_endpoints(self) -> str:
        if self.external_store is not None:
            return self.external_store.endpoints
        return ",".join(m.client_url for m in self.members)

    @property
    def api_servers(self) -> str:
        return ",".join(m.api_url for m in self.members)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def members_on(self, host: str) -> list[StoreMember]:
        return [m for m in self.members if m.host == host]


@dataclass(frozen=True)
class HostConfig:
    name: str
    ip: str
    roles: tuple[str, ...]
    state_dir: Path  # everything this host keeps on disk lives under here
    store_password_file: Path | None = None
    agent_port: int = defaults.AGENT_PORT
    node_labels: Mapping[str, str] = field(default_factory=dict)
    node_taints: tuple[str, ...] = ()  # "key[=value]:Effect", set when the Node registers
    # cgroupfs parent of this node's pods; unique per node on a machine (labs share one).
    cgroup_parent: str = "/skiff-pods"
    containerd_bin: str = "containerd"  # an absolute path in installed units (systemd wants one)
    proxy_mode: str = ""  # this host's proxy mode when not the cluster's (the VM lab shows both)
    pki_dir: Path | None = None  # default: state_dir/pki
    insecure: bool = False  # development mode: plaintext, no authentication
    # A worker that joined with a bootstrap token: its agent obtained nodes/<name> from the cluster
    # (a CSR; with `bootstrap_token` set it does so on start), and its proxy and DNS present
    # that node identity (the host has no other certificate).
    joined: bool = False
    bootstrap_token: str = ""

    @property
    def node_paths(self) -> hostconfig.NodePaths:
        return hostconfig.NodePaths(self.state_dir / "node")

    @property
    def pki(self) -> Path:
        return self.pki_dir if self.pki_dir is not None else self.state_dir / "pki"

    def credentials(self, name: str) -> tls.Credentials | None:
        return None if self.insecure else tls.Credentials.from_pki(self.pki, name)


@dataclass(frozen=True)
class DaemonSpec:
    name: str  # "store-s1", "apiserver-s1", "controllers", "nodeagent", ...
    argv: tuple[str, ...]
    description: str
    env: Mapping[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()  # daemons that should start first (unit ordering)


def plan_members(hosts: Sequence[tuple[str, str]], *, members: int = 3) -> tuple[StoreMember, ...]:
    """Spread `members` store members over control-plane hosts [(name, ip)], one per host when
    there are enough hosts, otherwise several per host on shifted ports (2379/2380, 2479/2480, ...)."""
    if not hosts:
        raise ValueError("a cluster needs at least one control-plane host")
    out = []
    for i in range(members):
        host, ip = hosts[i % len(hosts)]
        slot = i // len(hosts)
        out.append(StoreMember(f"s{i + 1}", host, ip, defaults.STORE_CLIENT_PORT + 100 * slot,
                               defaults.STORE_PEER_PORT + 100 * slot, defaults.API_PORT + slot,
                               defaults.KUBE_API_PORT + slot))
    return tuple(out)


def apiserver_tls(host: HostConfig, external: ExternalStore | None) -> tls.ApiServerTLS:
    """The api-server's TLS from the host's PKI; towards an external etcd, that etcd's client
    files instead of the cluster's (no files: plaintext to it)."""
    own = tls.apiserver_tls(host.pki)
    if external is None:
        return own
    store = tls.Credentials(*external.tls) if all(external.tls) else None
    return dataclasses.replace(own, store=store)


def control_plane_daemons(cluster: ClusterConfig, host: HostConfig) -> list[DaemonSpec]:
    specs: list[DaemonSpec] = []
    external = cluster.external_store
    for m in cluster.members_on(host.name) if external is None else ():
        argv = daemons.store(
            cluster.python, name=m.name, data_dir=str(host.state_dir / "store" / m.name),
            listen_client=m.client_url, listen_peer=m.peer_url, initial_cluster=cluster.initial_cluster,
            initial_cluster_token=cluster.cluster_token,
            password_file=str(host.store_password_file) if host.store_password_file is not None else "",
            insecure_no_password=host.store_password_file is None, metrics_bind_address=m.store_metrics,
            tls=None if host.insecure else tls.store_tls(host.pki, m.name))
        specs.append(DaemonSpec(f"store-{m.name}", tuple(argv), f"Skiff store member {m.name}"))
    for m in cluster.members_on(host.name):
        # Each api-server prefers its own member, then the others.
        endpoints = [m.client_url] + [o.client_url for o in cluster.members if o is not m]
        argv = daemons.apiserver(cluster.python, listen=m.api_url, http_listen=m.http_url,
                                 store_endpoints=external.endpoints if external else ",".join(endpoints),
                                 service_cidr=cluster.service_cidr, node_port_range=cluster.node_port_range,
                                 node_name=host.name, tls=None if host.insecure else apiserver_tls(host, external),
                                 default_not_ready_toleration_seconds=cluster.default_toleration_seconds,
                                 default_unreachable_toleration_seconds=cluster.default_toleration_seconds,
                                 audit_log_path=str(host.state_dir / "apiserver" / f"audit-{m.name}.log"),
                                 metrics_bind_address=m.apiserver_metrics)
        specs.append(DaemonSpec(f"apiserver-{m.name}", tuple(argv), f"Skiff api-server beside store {m.name}",
                                after=(f"store-{m.name}",) if external is None else ()))
    local_apis = [m.api_url for m in cluster.members_on(host.name)]
    others = [m.api_url for m in cluster.members if m.api_url not in local_apis]
    api_servers = ",".join(local_apis + others)
    # default/kubernetes leads to each api-server's HTTPS port (the Kubernetes REST API).
    by_api = {m.api_url: m.http_url for m in cluster.members}
    https_endpoints = ",".join(by_api[a] for a in local_apis + others)
    apis_after = tuple(f"apiserver-{m.name}" for m in cluster.members_on(host.name))
    specs.append(DaemonSpec("controllers", tuple(daemons.controllers(
        cluster.python, api_servers=api_servers, cluster_cidr=cluster.cluster_cidr,
        node_cidr_mask_size=cluster.node_cidr_mask_size, node_monitor_grace_period=cluster.node_monitor_grace_period,
        identity=host.name, service_cidr=cluster.service_cidr,
        credentials=host.credentials(pki.CONTROLLER_MANAGER),
        cluster_signing_cert_file="" if host.insecure else str(pki.PKIDir(host.pki).ca.cert),
        cluster_signing_key_file="" if host.insecure else str(pki.PKIDir(host.pki).ca.key),
        root_ca_file="" if host.insecure else str(pki.PKIDir(host.pki).ca.cert),
        kubernetes_service_endpoints=https_endpoints,
    )), "Skiff controller manager", after=apis_after))
    specs.append(DaemonSpec("scheduler", tuple(daemons.scheduler(cluster.python, api_servers=api_servers,
                                                                 identity=host.name,
                                                                 credentials=host.credentials(pki.SCHEDULER))),
                            "Skiff scheduler", after=apis_after))
    return specs


def worker_daemons(cluster: ClusterConfig, host: HostConfig, *, netns_path: str = "") -> list[DaemonSpec]:
    paths = host.node_paths
    node_tls = None if host.insecure else tls.node_tls(host.pki, host.name)
    node_creds = node_tls[1] if node_tls is not None else None
    proxy_creds = node_creds if host.joined else host.credentials(pki.NETPROXY)
    dns_creds = node_creds if host.joined else host.credentials(pki.CLUSTERDNS)
    containerd = DaemonSpec("containerd", (host.containerd_bin, "--config", str(paths.config)), "containerd for Skiff")
    agent = daemons.nodeagent(
        cluster.python, node_name=host.name, api_servers=cluster.api_servers,
        container_runtime_endpoint=paths.endpoint, node_ip=host.ip, listen=f"{host.ip}:{host.agent_port}",
        state_dir=str(host.state_dir / "agent"), cni_conf_dir=str(paths.cni_conf_dir),
        ipam_dir=str(paths.ipam_dir), pod_log_dir=str(paths.pod_logs), cgroup_parent=host.cgroup_parent,
        lease_period=cluster.node_lease_period, node_labels=host.node_labels,
        register_with_taints=host.node_taints, netns=netns_path,
        cluster_dns=cluster.cluster_dns, cluster_domain=cluster.cluster_domain, tls=node_tls,
        bootstrap_token=host.bootstrap_token, bootstrap_servers=[f"https://{m.http_url}" for m in cluster.members])
    proxy = daemons.netproxy(cluster.python, api_servers=cluster.api_servers, node_name=host.name,
                             mode=host.proxy_mode or cluster.proxy_mode, cluster_cidr=cluster.cluster_cidr,
                             min_sync_period=cluster.min_sync_period, iptables_backend=cluster.iptables_backend,
                             credentials=proxy_creds)
    dns = daemons.clusterdns(cluster.python, api_servers=cluster.api_servers, listen=f"{cluster.cluster_dns}:53",
                             cluster_domain=cluster.cluster_domain,
                             reverse_cidrs=(cluster.service_cidr, cluster.cluster_cidr),
                             upstreams=cluster.dns_upstreams, credentials=dns_creds)
    return [
        containerd,
        DaemonSpec("nodeagent", tuple(agent), "Skiff node agent", after=("containerd",)),
        DaemonSpec("netproxy", tuple(proxy), "Skiff network proxy"),
        DaemonSpec("clusterdns", tuple(dns), "Skiff node-local cluster DNS"),
    ]


def pki_specs_for(cluster: ClusterConfig, hosts: Sequence[tuple[str, str, Sequence[str]]]) -> list[pki.CertSpec]:
    """The certificates a cluster's hosts [(name, ip, roles)] need when one CA key issues them all
    (the lab, `make up`, a control-plane install): the control plane's, and each worker's node
    certificate."""
    kubernetes_ip = str(ipaddress.IPv4Network(cluster.service_cidr, strict=False).network_address + 1)
    api_ips = sorted({m.ip for m in cluster.members} | {kubernetes_ip})
    specs = pki.control_plane_specs(apiserver_ips=api_ips, store_members=[(m.name, m.ip) for m in cluster.members],
                                    cluster_domain=cluster.cluster_domain)
    specs += [pki.node_spec(name, ip) for name, ip, roles in hosts if WORKER in roles]
    return specs


def daemons_for(cluster: ClusterConfig, host: HostConfig, *, netns_path: str = "") -> list[DaemonSpec]:
    """Every daemon `host` runs, in start order."""
    specs: list[DaemonSpec] = []
    if CONTROL_PLANE in host.roles:
        specs += control_plane_daemons(cluster, host)
    if WORKER in host.roles:
        specs += worker_daemons(cluster, host, netns_path=netns_path)
    return specs


# ---------------------------------------------------------------- the cluster as a file

# Settings that are the same on every host; `python` is not one (each host has its own).
# In the file they are camelCase ("serviceCidr"), like the rest of Skiff's JSON.
_CLUSTER_SETTINGS = {"".join(w if i == 0 else w.capitalize() for i, w in enumerate(f.name.split("_"))): f.name
                     for f in fields(ClusterConfig) if f.name not in ("members", "python", "external_store")}
_EXTERNAL_STORE = {"endpoints": "endpoints", "caFile": "ca_file", "certFile": "cert_file", "keyFile": "key_file"}


# Settings older cluster files may hold that no longer mean anything; they are ignored.
# podEvictionTimeout: eviction is by NoExecute taints and tolerations now, as in Kubernetes.
_REMOVED_SETTINGS = frozenset({"podEvictionTimeout"})


class ConfigError(ValueError):
    """A cluster description that cannot be used; the message names the field."""


def cluster_to_dict(cluster: ClusterConfig) -> dict[str, object]:
    """What every host of a cluster shares (cluster.json, and the join info workers fetch)."""
    out: dict[str, object] = {
        "members": [{"name": m.name, "host": m.host, "ip": m.ip, "clientPort": m.client_port,
                     "peerPort": m.peer_port, "apiPort": m.api_port, "httpPort": m.http_port}
                    for m in cluster.members],
    }
    out.update({key: getattr(cluster, name) for key, name in _CLUSTER_SETTINGS.items()})
    if cluster.external_store is not None:
        out["externalStore"] = {key: getattr(cluster.external_store, name) for key, name in _EXTERNAL_STORE.items()}
    return out


def _field(obj: Mapping[str, object], key: str, kind: type, where: str) -> object:
    if key not in obj:
        raise ConfigError(f"{where}.{key}: missing")
    value = obj[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        expected = {int: "an integer", str: "a string", list: "a list"}.get(kind, kind.__name__)
        raise ConfigError(f"{where}.{key}: expected {expected}, got {value!r}")
    return value


def _str(obj: Mapping[str, object], key: str, where: str) -> str:
    return str(_field(obj, key, str, where))


def _int(obj: Mapping[str, object], key: str, where: str) -> int:
    value = _field(obj, key, int, where)
    assert isinstance(value, int)
    return value


def cluster_from_dict(data: object, *, python: str = sys.executable) -> ClusterConfig:
    """The inverse of cluster_to_dict; unknown keys and bad values are errors naming the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"cluster: expected an object, got {type(data).__name__}")
    unknown = set(data) - {"members", "externalStore", *_CLUSTER_SETTINGS, *_REMOVED_SETTINGS}
    if unknown:
        raise ConfigError(f"cluster: unknown field(s) {', '.join(sorted(unknown))}")
    raw_members = _field(data, "members", list, "cluster")
    assert isinstance(raw_members, list)
    if not raw_members:
        raise ConfigError("cluster.members: a cluster needs at least one store member")
    members = []
    for i, m in enumerate(raw_members):
        where = f"cluster.members[{i}]"
        if not isinstance(m, Mapping):
            raise ConfigError(f"{where}: expected an object")
        ip = _str(m, "ip", where)
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise ConfigError(f"{where}.ip: {ip!r} is not an IPv4 address") from None
        api_port = _int(m, "apiPort", where)
        # Written before the REST API existed: its port keeps the gRPC port's shift (plan_members),
        # so several members on one host still get distinct ports.
        http_port = (_int(m, "httpPort", where) if "httpPort" in m
                     else defaults.KUBE_API_PORT + api_port - defaults.API_PORT)
        members.append(StoreMember(_str(m, "name", where), _str(m, "host", where), ip, _int(m, "clientPort", where),
                                   _int(m, "peerPort", where), api_port, http_port))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"cluster.members: duplicate member names in {names}")
    base = ClusterConfig(members=tuple(members), python=python)
    settings: dict[str, object] = {}
    for key, name in _CLUSTER_SETTINGS.items():
        if key in data:
            settings[name] = _field(data, key, type(getattr(base, name)), "cluster")
    external = None
    if "externalStore" in data:
        raw = data["externalStore"]
        if not isinstance(raw, Mapping):
            raise ConfigError("cluster.externalStore: expected an object")
        extra = set(raw) - set(_EXTERNAL_STORE)
        if extra:
            raise ConfigError(f"cluster.externalStore: unknown field(s) {', '.join(sorted(extra))}")
        external = ExternalStore(**{name: _str(raw, key, "cluster.externalStore")
                                    for key, name in _EXTERNAL_STORE.items() if key in raw or key == "endpoints"})
        if not external.endpoints:
            raise ConfigError("cluster.externalStore.endpoints: empty")
    cluster = ClusterConfig(members=tuple(members), python=python, external_store=external,
                            **settings)  # type: ignore[arg-type]
    for key, value in (("serviceCidr", cluster.service_cidr), ("clusterCidr", cluster.cluster_cidr)):
        try:
            ipaddress.IPv4Network(value)
        except ValueError:
            raise ConfigError(f"cluster.{key}: {value!r} is not an IPv4 network address") from None
    try:
        defaults.check_disjoint([("cluster.serviceCidr", cluster.service_cidr),
                                 ("cluster.clusterCidr", cluster.cluster_cidr)],
                                [(f"the address of {m.host}", m.ip) for m in members])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        duration(cluster.node_lease_period)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"cluster.nodeLeasePeriod: {exc}") from None
    if cluster.proxy_mode not in PROXY_MODES:
        raise ConfigError(f"cluster.proxyMode: {cluster.proxy_mode!r} is not one of {', '.join(PROXY_MODES)}")
    return cluster


def containerd_config(host: HostConfig) -> str:
    return hostconfig.render_containerd_config(hostconfig.ContainerdSettings.for_node(host.node_paths))


def systemd_unit(spec: DaemonSpec, *, prefix: str = "skiff-") -> str:
    """A systemd service unit running `spec` (bare metal and the Vagrant lab)."""
    after = " ".join(f"{prefix}{a}.service" for a in spec.after)
    lines = [
        "# Rendered by Skiff (deploy/render.py); edit the cluster configuration, not this file.",
        "[Unit]",
        f"Description={spec.description}",
        "After=network-online.target" + (f" {after}" if after else ""),
        "Wants=network-online.target" + (f" {after}" if after else ""),
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={shlex.join(spec.argv)}",
        "Restart=always",
        "RestartSec=2",
        "KillMode=" + ("process" if spec.name == "containerd" else "control-group"),
        "LimitNOFILE=1048576",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    lines += [f"Environment={k}={v}" for k, v in sorted(spec.env.items())]
    if spec.name == "containerd":
        lines += ["Delegate=yes", "OOMScoreAdjust=-999"]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
