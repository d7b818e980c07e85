"""Host configuration a Skiff node needs, rendered by pure functions.

The node agent, `skiff node setup`, the test launchers and deploy/ (labs, Vagrant, bare metal)
all render containerd's config.toml and the CNI conflist here, so every node gets the same
essential settings (docs/containerd.md says why each is needed):

- `restrict_oom_score_adj = true`: without it runc fails with "can't get final child's PID".
- `netns_mounts_under_state_dir = true`: pod netns live under the node's state dir, not in the
  global /var/run/netns, so nodes sharing a machine never see each other's.
- a per-node runc `Root`, containerd root/state/socket and CNI IPAM `dataDir`: the defaults are
  global and collide when several nodes share a machine.
- `sandbox_image` is Skiff's own pause image (built offline by skiff.images).

Rendering never touches the disk; writers (`write_*`) only put rendered text in place, and only
rewrite a file whose content changed.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SANDBOX_IMAGE = "docker.io/skiff/pause:1.0"
DEFAULT_CNI_BIN_DIR = "/usr/lib/cni"
CNI_NETWORK_NAME = "skiff-podnet"
CNI_CONFLIST_NAME = "10-skiff-bridge.conflist"


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps its containerd and CNI state. `base` alone determines the rest."""

    base: Path
    cni_bin_dir: str = DEFAULT_CNI_BIN_DIR

    @property
    def config(self) -> Path:
        return self.base / "containerd.toml"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.base / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base / "cni"

    @property
    def ipam_dir(self) -> Path:
        return self.base / "ipam"

    @property
    def pod_logs(self) -> Path:
        return self.base / "pods"

    @property
    def pod_volumes(self) -> Path:
        return self.base / "volumes"

    @property
    def local_volumes(self) -> Path:
        """The local-path provisioner's volumes on this node (`<pv>_<namespace>_<claim>`)."""
        return self.base / "storage"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"


@dataclass(frozen=True)
class ContainerdSettings:
    root: str
    state: str
    socket: str
    runc_root: str
    cni_conf_dir: str
    cni_bin_dir: str = DEFAULT_CNI_BIN_DIR
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    snapshotter: str = "overlayfs"
    extra_plugins: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_node(cls, paths: NodePaths, *, sandbox_image: str = DEFAULT_SANDBOX_IMAGE) -> ContainerdSettings:
        return cls(root=str(paths.root), state=str(paths.state), socket=str(paths.socket),
                   runc_root=str(paths.runc_root), cni_conf_dir=str(paths.cni_conf_dir),
                   cni_bin_dir=paths.cni_bin_dir, sandbox_image=sandbox_image)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_containerd_config(s: ContainerdSettings) -> str:
    """containerd 1.6 config.toml (version 2) with the settings a Skiff node needs."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    lines = [
        "# Rendered by skiff.hostconfig; do not edit by hand.",
        "version = 2",
        f"root = {_toml_str(s.root)}",
        f"state = {_toml_str(s.state)}",
        "",
        "[grpc]",
        f"  address = {_toml_str(s.socket)}",
        "",
        f"[{cri}]",
        f"  sandbox_image = {_toml_str(s.sandbox_image)}",
        "  restrict_oom_score_adj = true",
        "  netns_mounts_under_state_dir = true",
        "  disable_tcp_service = true",
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        f"  [{cri}.cni]",
        f"    bin_dir = {_toml_str(s.cni_bin_dir)}",
        f"    conf_dir = {_toml_str(s.cni_conf_dir)}",
        "    max_conf_num = 1",
        f"  [{cri}.containerd]",
        f"    snapshotter = {_toml_str(s.snapshotter)}",
        '    default_runtime_name = "runc"',
        f"    [{cri}.containerd.runtimes.runc]",
        '      runtime_type = "io.containerd.runc.v2"',
        f"      [{cri}.containerd.runtimes.runc.options]",
        f"        Root = {_toml_str(s.runc_root)}",
        "        SystemdCgroup = false",
    ]
    for key, value in sorted(s.extra_plugins.items()):
        lines += ["", f"[{key}]", value]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CniSettings:
    pod_cidr: str
    ipam_data_dir: str
    bridge: str = "cni0"
    network_name: str = CNI_NETWORK_NAME
    mtu: int = 0


def render_cni_conflist(s: CniSettings) -> str:
    """The bridge + host-local conflist for a node's podCIDR (hairpin on, no masquerade).

    ipMasq is off so a pod on another node sees the client pod's own IP (host-gw keeps
    addresses); hairpinMode lets a pod reach itself through a Service VIP; the IPAM dataDir is
    per node because host-local's default (/var/lib/cni/networks) is shared by the machine;
    forceAddress replaces the bridge's gateway address when the podCIDR changed (a node deleted
    and registered again gets a new range; without it every new sandbox fails with "cni0
    already has an IP address different from ...").
    """
    try:
        net = ipaddress.ip_network(s.pod_cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"podCIDR {s.pod_cidr!r} is not a network address: {exc}") from exc
    if net.version != 4 or net.prefixlen > 30:
        raise ValueError(f"podCIDR {s.pod_cidr!r} must be an IPv4 network of /30 or larger")
    bridge: dict[str, object] = {
        "type": "bridge",
        "bridge": s.bridge,
        "isGateway": True,
        "forceAddress": True,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "dataDir": s.ipam_data_dir,
            "ranges": [[{"subnet": str(net)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    }
    if s.mtu:
        bridge["mtu"] = s.mtu
    conf = {
        "cniVersion": "0.4.0",
        "name": s.network_name,
        "plugins": [bridge, {"type": "portmap", "capabilities": {"portMappings": True}}],
    }
    return json.dumps(conf, indent=2, sort_keys=True) + "\n"


def write_if_changed(path: Path, text: str, *, mode: int = 0o644) -> bool:
    """Write `text` atomically (rename) unless the file already holds it; True if written."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def write_node_config(paths: NodePaths, *, sandbox_image: str = DEFAULT_SANDBOX_IMAGE) -> bool:
    """Create a node's directories and write its containerd config; True if the config changed."""
    for d in (paths.base, paths.root, paths.state, paths.runc_root, paths.cni_conf_dir, paths.ipam_dir,
              paths.pod_logs):
        d.mkdir(parents=True, exist_ok=True)
    text = render_containerd_config(ContainerdSettings.for_node(paths, sandbox_image=sandbox_image))
    return write_if_changed(paths.config, text)
