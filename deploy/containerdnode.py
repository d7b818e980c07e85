"""A private containerd for one test node, in its own network namespace, and its full teardown.

The daemon and its teardown are deploy/containerd.py's (the lab uses the same code); this adds
what node-agent tests and benchmarks want around it: a netns of its own with an address, Skiff's pause and web
images imported, CRI listing helpers, and `leftovers()` to assert a clean teardown.

Every name carries a prefix unique to the run, so several of these can run side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from deploy import containerd as ctrd
from deploy import procs
from deploy.containerd import missing_prereqs
from skiff import hostconfig, images
from skiffpb.cri.v1 import api_pb2 as cri
from skiffpb.cri.v1 import api_pb2_grpc as cri_grpc

__all__ = ["ContainerdNode", "PrereqError", "http_get", "in_netns", "leftovers", "missing_prereqs", "unique_prefix"]


class PrereqError(RuntimeError):
    pass


def run(*args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


def unique_prefix(tag: str = "t") -> str:
    """A short prefix unique to this process (interface names are limited to 15 chars)."""
    return f"{tag}{os.getpid() % 100000:05d}{int(time.time() * 1000) % 100:02d}"[:8]


def image_dir() -> Path:
    """Built images are cached per content (builds are reproducible, so reuse is safe)."""
    return Path(os.environ.get("SKIFF_IMAGE_CACHE", "/tmp/skiff-images"))


def ensure_images(names: Sequence[str] = ("pause", "web")) -> list[Path]:
    return images.build_presets(image_dir(), names)


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def add_netns(name: str, *, address: str = "", dev: str = "eth0") -> None:
    """A netns with lo up and, with `address` (e.g. 10.77.0.11/24), a `dev` carrying it.

    The kernel may lack the dummy driver, so `dev` is one end of a veth pair whose peer stays
    in the same netns (up, so the address is usable as a source and for on-link gateways).
    """
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        if address:
            run("ip", "-n", name, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            run("ip", "-n", name, "addr", "add", address, "dev", dev)
            run("ip", "-n", name, "link", "set", f"{dev}p", "up")
            run("ip", "-n", name, "link", "set", dev, "up")
    except subprocess.CalledProcessError:
        del_netns(name)
        raise


def del_netns(name: str) -> None:
    run("ip", "netns", "del", name, check=False)


def in_netns(netns: str, *cmd: str, timeout: float = 30.0, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a short command inside a netns (never send lab traffic from the root netns)."""
    return run("nsenter", f"--net={netns_path(netns)}", *cmd, timeout=timeout, check=check)


def http_get(netns: str, url: str, *, timeout: float = 10.0) -> str:
    """GET `url` from inside `netns` with busybox wget (no -T: it segfaults in busybox 1.35)."""
    out = in_netns(netns, images.BUSYBOX, "wget", "-qO-", url, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"wget {url} in {netns} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


@dataclass
class ContainerdNode:
    """One node's containerd. `start()` brings it up (netns too unless it exists); `teardown()` undoes all."""

    prefix: str
    name: str
    base: Path
    address: str = ""  # node address in its netns, e.g. 10.77.0.11/24 (dummy eth0)
    netns: str = ""
    own_netns: bool = True
    daemon: procs.Daemon | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.netns = self.netns or f"{self.prefix}-{self.name}"
        self.paths = hostconfig.NodePaths(self.base)
        self.log_file = self.base / "run" / "containerd.log"

    @property
    def endpoint(self) -> str:
        return self.paths.endpoint

    @property
    def cgroup_parent(self) -> str:
        return f"/skiff-{self.prefix}-{self.name}"

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    def start(self, *, images_to_import: Sequence[str] = ("pause", "web"), timeout: float = 30.0) -> ContainerdNode:
        problems = missing_prereqs()
        if problems:
            raise PrereqError("missing prerequisites for real containerd tests: " + ", ".join(problems))
        if self.own_netns and not Path(netns_path(self.netns)).exists():
            add_netns(self.netns, address=self.address)
        try:
            self.start_containerd(timeout=timeout)
            if images_to_import:
                images.import_tars(ensure_images(images_to_import), endpoint=self.endpoint)
        except BaseException:
            self.teardown()
            raise
        return self

    def start_containerd(self, *, timeout: float = 30.0) -> None:
        self.daemon = ctrd.start(self.paths, self.base / "run", netns=self.netns, timeout=timeout)

    def stop_containerd(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        """Stop the daemon only (pods keep running under their shims), as in a containerd restart."""
        if self.daemon is None:
            return
        if kill:
            procs.kill(self.daemon)
        else:
            procs.stop(self.daemon, timeout=timeout)
        self.daemon = None

    @contextlib.contextmanager
    def channel(self) -> Iterator[grpc.Channel]:
        ch = grpc.insecure_channel(self.endpoint)
        try:
            yield ch
        finally:
            ch.close()

    def sandboxes(self) -> list[cri.PodSandbox]:
        with self.channel() as ch:
            return list(cri_grpc.RuntimeServiceStub(ch).ListPodSandbox(cri.ListPodSandboxRequest(), timeout=10).items)

    def containers(self) -> list[cri.Container]:
        with self.channel() as ch:
            resp = cri_grpc.RuntimeServiceStub(ch).ListContainers(cri.ListContainersRequest(), timeout=10)
            return list(resp.containers)

    def container_pid(self, container_id: str) -> int:
        with self.channel() as ch:
            resp = cri_grpc.RuntimeServiceStub(ch).ContainerStatus(
                cri.ContainerStatusRequest(container_id=container_id, verbose=True), timeout=10)
        return int(json.loads(resp.info["info"])["pid"])

    def teardown(self) -> list[str]:
        """Remove everything this node created; returns what needed the crash fallback."""
        notes = ctrd.teardown(self.paths, self.cgroup_parent, self.daemon)
        self.daemon = None
        if self.own_netns:
            del_netns(self.netns)
        return notes


def leftovers(node: ContainerdNode) -> list[str]:
    """Anything of `node` still on the machine (for tests that check a clean teardown)."""
    out = []
    if Path(netns_path(node.netns)).exists() and node.own_netns:
        out.append(f"netns {node.netns}")
    return out + ctrd.leftovers(node.paths, node.cgroup_parent)
