"""A private containerd for one test node, in its own network namespace, and its full teardown.

Follows shared/containerd.md: containerd is started with `nsenter --net=` (never `ip netns
exec`, which hides the cgroup mounts), with a private root/state/socket/runc root/CNI conf and
IPAM dirs rendered by skiff.hostconfig, pods under a per-node cgroup parent, and Skiff's pause
and web images imported. Teardown is idempotent and also cleans up after a crashed containerd
(section 7): CRI stop/remove, SIGTERM, then SIGKILL leftovers (shims, cgroup procs), unmount,
remove CNI result files and shim sockets, delete the netns, rmdir the cgroups, rm -rf the dir.

Every name carries a prefix unique to the run, so several of these can run side by side.
Generic on purpose: the e2e lab builds on it (several nodes, a LAN between their netns).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from skiff import hostconfig, images
from skiffpb.cri.v1 import api_pb2 as cri
from skiffpb.cri.v1 import api_pb2_grpc as cri_grpc

PREREQS = ("containerd", "ctr", "runc", "nsenter", "ip")
CNI_RESULTS = Path("/var/lib/cni/results")
SHIM_SOCKETS = Path("/run/containerd/s")


class PrereqError(RuntimeError):
    pass


def missing_prereqs() -> list[str]:
    """What this machine lacks to run real containerd tests (empty when all is there)."""
    out = [p for p in PREREQS if shutil.which(p) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        out.append("/usr/lib/cni/bridge (containernetworking-plugins)")
    if not Path(images.BUSYBOX).exists():
        out.append("busybox-static")
    if os.geteuid() != 0:
        out.append("root")
    return out


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
    proc: subprocess.Popen[bytes] | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.netns = self.netns or f"{self.prefix}-{self.name}"
        self.paths = hostconfig.NodePaths(self.base)
        self.log_file = self.base / "containerd.log"

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
            hostconfig.write_node_config(self.paths)
            self.start_containerd(timeout=timeout)
            if images_to_import:
                images.import_tars(ensure_images(images_to_import), endpoint=self.endpoint)
        except BaseException:
            self.teardown()
            raise
        return self

    def start_containerd(self, *, timeout: float = 30.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net={netns_path(self.netns)}", "containerd", "--config", str(self.paths.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd for {self.name} exited ({self.proc.returncode}); see {self.log_file}")
            if self.paths.socket.exists():
                try:
                    with self.channel() as ch:
                        st = cri_grpc.RuntimeServiceStub(ch).Status(cri.StatusRequest(), timeout=2)
                    if any(c.type == "RuntimeReady" and c.status for c in st.status.conditions):
                        return
                except grpc.RpcError as exc:
                    last = str(exc.details() if hasattr(exc, "details") else exc)
            time.sleep(0.05)
        raise RuntimeError(f"containerd for {self.name} not ready in {timeout}s: {last}; see {self.log_file}")

    def stop_containerd(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        """Stop the daemon only (pods keep running under their shims), as in a containerd restart."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

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
        import json

        with self.channel() as ch:
            resp = cri_grpc.RuntimeServiceStub(ch).ContainerStatus(
                cri.ContainerStatusRequest(container_id=container_id, verbose=True), timeout=10)
        return int(json.loads(resp.info["info"])["pid"])

    # ------------------------------------------------------------ teardown

    def teardown(self) -> list[str]:
        """Remove everything this node created; returns what needed the crash fallback."""
        notes: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            try:
                with self.channel() as ch:
                    stub = cri_grpc.RuntimeServiceStub(ch)
                    for sb in stub.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=10).items:
                        with contextlib.suppress(grpc.RpcError):
                            stub.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sb.id), timeout=30)
                            stub.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sb.id), timeout=30)
            except grpc.RpcError as exc:
                notes.append(f"CRI cleanup failed: {exc}")
        self.stop_containerd()
        sock = str(self.paths.socket)
        for pid in _pids_with_cmdline(f"-address {sock}") + _pids_with_cmdline(f"-address\x00{sock}"):
            notes.append(f"killed shim {pid}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for procs in _cgroup_dirs(self.cgroup_parent.strip("/")):
            for f in procs.rglob("cgroup.procs"):
                for line in f.read_text().split():
                    notes.append(f"killed cgroup process {line}")
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(line), signal.SIGKILL)
        for mnt in reversed(_mounts_under(self.base)):
            run("umount", "-l", mnt, check=False)
            notes.append(f"unmounted {mnt}")
        sandbox_dir = self.paths.root / "io.containerd.grpc.v1.cri" / "sandboxes"
        ids = [p.name for p in sandbox_dir.iterdir()] if sandbox_dir.is_dir() else []
        for sid in ids:
            for f in CNI_RESULTS.glob(f"*-{sid}-*") if CNI_RESULTS.is_dir() else []:
                f.unlink(missing_ok=True)
            shim = SHIM_SOCKETS / hashlib.sha256(f"{sock}/k8s.io/{sid}".encode()).hexdigest()
            if shim.exists():
                shim.unlink(missing_ok=True)
        if self.own_netns:
            del_netns(self.netns)
        deadline = time.monotonic() + 10
        for d in sorted(_cgroup_dirs(self.cgroup_parent.strip("/")), key=lambda p: -len(p.parts)):
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                _rmdir_retry(sub, deadline)
            _rmdir_retry(d, deadline)
        shutil.rmtree(self.base, ignore_errors=True)
        return notes


def _rmdir_retry(path: Path, deadline: float) -> None:
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)


def _cgroup_dirs(name: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    out = [root / name] if (root / name).is_dir() else []
    out += [p / name for p in root.iterdir() if p.is_dir() and (p / name).is_dir()]
    return out


def _pids_with_cmdline(fragment: str) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment.replace("\x00", " ") in cmd:
            out.append(int(proc.name))
    return out


def _mounts_under(base: Path) -> list[str]:
    out = []
    prefix = str(base.resolve()) + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt.startswith(prefix):
            out.append(mnt)
    return out


def leftovers(node: ContainerdNode) -> list[str]:
    """Anything of `node` still on the machine (for tests that check a clean teardown)."""
    out = []
    if Path(netns_path(node.netns)).exists() and node.own_netns:
        out.append(f"netns {node.netns}")
    out += [f"cgroup {d}" for d in _cgroup_dirs(node.cgroup_parent.strip("/"))]
    out += [f"mount {m}" for m in _mounts_under(node.base)]
    out += [f"process {p}" for p in _pids_with_cmdline(f"-address {node.paths.socket}")]
    if node.base.exists():
        out.append(f"dir {node.base}")
    return out
