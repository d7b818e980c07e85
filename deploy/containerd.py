"""A node's private containerd: start it in the node's netns, wait for CRI, tear it all down.

Follows docs/containerd.md: the daemon is started with `nsenter --net=` (never `ip netns
exec`, which hides the cgroup mounts) with a private root/state/socket/runc root, CNI conf and
IPAM dirs (skiff.hostconfig renders them), pods under a per-node cgroup parent. Teardown is
idempotent and also works after a crash (docs/containerd.md, "Teardown"): CRI stop/remove of
every sandbox, SIGTERM, then SIGKILL of leftover shims and cgroup processes, unmount what is mounted under the node's
directory, remove CNI result files and shim sockets, rmdir the cgroups, remove the directory.
Nothing here needs the Popen of the daemon, so a later `down` from another process works.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc

from deploy import procs
from skiff import hostconfig, images
from skiffpb.cri.v1 import api_pb2 as cri
from skiffpb.cri.v1 import api_pb2_grpc as cri_grpc

PREREQS = ("containerd", "ctr", "runc", "nsenter", "ip")
CNI_RESULTS = Path("/var/lib/cni/results")
SHIM_SOCKETS = Path("/run/containerd/s")


def missing_prereqs() -> list[str]:
    """What this machine lacks to run real containerd (empty when all is there)."""
    out = [p for p in PREREQS if shutil.which(p) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        out.append("/usr/lib/cni/bridge (containernetworking-plugins)")
    if not Path(images.BUSYBOX).exists():
        out.append("busybox-static")
    if os.geteuid() != 0:
        out.append("root")
    return out


def runtime_ready(endpoint: str, *, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether containerd at `endpoint` answers CRI Status with RuntimeReady (and why not)."""
    try:
        with grpc.insecure_channel(endpoint) as ch:
            st = cri_grpc.RuntimeServiceStub(ch).Status(cri.StatusRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        return False, str(exc.details() if hasattr(exc, "details") else exc)
    ready = any(c.type == "RuntimeReady" and c.status for c in st.status.conditions)
    return ready, "" if ready else "RuntimeReady is false"


def wait_ready(paths: hostconfig.NodePaths, *, alive: object = None, timeout: float = 30.0,
               log_file: Path | None = None) -> None:
    """Block until containerd serves CRI; `alive()` (if given) says whether the daemon still runs."""
    deadline = time.monotonic() + timeout
    why = "socket not created"
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise RuntimeError(f"containerd exited during start; see {log_file}")
        if paths.socket.exists():
            ok, why = runtime_ready(paths.endpoint)
            if ok:
                return
        time.sleep(0.05)
    raise RuntimeError(f"containerd not ready in {timeout:.0f}s: {why}; see {log_file}")


def start(paths: hostconfig.NodePaths, run_dir: Path, *, netns: str, name: str = "containerd",
          timeout: float = 30.0) -> procs.Daemon:
    """Write the node's containerd config, start containerd in `netns`, wait for CRI."""
    hostconfig.write_node_config(paths)
    daemon = procs.start(name, ["containerd", "--config", str(paths.config)], run_dir, netns=netns)
    try:
        wait_ready(paths, alive=daemon.alive, timeout=timeout, log_file=daemon.log_path)
    except BaseException:
        procs.stop(daemon)
        raise
    return daemon


IMAGES = images.NODE_PRESETS


def import_images(paths: hostconfig.NodePaths, image_cache: Path, names: tuple[str, ...] = IMAGES) -> None:
    """Build (cached, reproducible) and import Skiff's offline images into this containerd."""
    images.import_tars(images.build_presets(image_cache, names), endpoint=paths.endpoint)


def remove_all_sandboxes(endpoint: str) -> list[str]:
    """CRI stop + remove of every sandbox: unmounts rootfs/shm/netns, runs CNI DEL, frees cgroups."""
    notes: list[str] = []
    try:
        with grpc.insecure_channel(endpoint) as ch:
            stub = cri_grpc.RuntimeServiceStub(ch)
            for sb in stub.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=10).items:
                with contextlib.suppress(grpc.RpcError):
                    stub.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sb.id), timeout=30)
                    stub.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sb.id), timeout=30)
    except grpc.RpcError as exc:
        notes.append(f"CRI cleanup failed: {exc.details() if hasattr(exc, 'details') else exc}")
    return notes


def crash_cleanup(paths: hostconfig.NodePaths, cgroup_parent: str) -> list[str]:
    """Remove what a dead (or killed) containerd left: shims, pod processes, mounts, caches, cgroups.

    Call after the daemon has stopped; returns what it had to clean (empty after a clean stop).
    """
    notes: list[str] = []
    sock = str(paths.socket)
    for pid in pids_with_cmdline(f"-address {sock}"):
        notes.append(f"killed shim {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for group in cgroup_dirs(cgroup_parent.strip("/")):
        for procs_file in group.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for line in procs_file.read_text().split():
                    notes.append(f"killed cgroup process {line}")
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(line), signal.SIGKILL)
    for mnt in reversed(mounts_under(paths.base)):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        notes.append(f"unmounted {mnt}")
    sandbox_dir = paths.root / "io.containerd.grpc.v1.cri" / "sandboxes"
    ids = [p.name for p in sandbox_dir.iterdir()] if sandbox_dir.is_dir() else []
    for sid in ids:
        for f in CNI_RESULTS.glob(f"*-{sid}-*") if CNI_RESULTS.is_dir() else []:
            f.unlink(missing_ok=True)
        shim = SHIM_SOCKETS / hashlib.sha256(f"{sock}/k8s.io/{sid}".encode()).hexdigest()
        shim.unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    for group in sorted(cgroup_dirs(cgroup_parent.strip("/")), key=lambda p: -len(p.parts)):
        for sub in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir_retry(sub, deadline)
        _rmdir_retry(group, deadline)
    return notes


def teardown(paths: hostconfig.NodePaths, cgroup_parent: str, daemon: procs.Daemon | None) -> list[str]:
    """Everything of this node's containerd, gone: pods, daemon, leftovers, its directory."""
    notes: list[str] = []
    if daemon is not None and daemon.alive():
        notes += remove_all_sandboxes(paths.endpoint)
        procs.stop(daemon, timeout=20)
    notes += crash_cleanup(paths, cgroup_parent)
    shutil.rmtree(paths.base, ignore_errors=True)
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


def cgroup_dirs(name: str) -> list[Path]:
    """`name`'s directory in every cgroup v1 controller (and the v2 root, if unified)."""
    root = Path("/sys/fs/cgroup")
    out = [root / name] if (root / name).is_dir() else []
    out += [p / name for p in root.iterdir() if p.is_dir() and (p / name).is_dir()]
    return out


def pids_with_cmdline(fragment: str) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmd:
            out.append(int(proc.name))
    return out


def mounts_under(base: Path) -> list[str]:
    out = []
    prefix = str(base.resolve()) + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt.startswith(prefix):
            out.append(mnt)
    return out


def leftovers(paths: hostconfig.NodePaths, cgroup_parent: str) -> list[str]:
    """Anything of this node's containerd still on the machine (for checks of a clean teardown)."""
    out = [f"cgroup {d}" for d in cgroup_dirs(cgroup_parent.strip("/"))]
    out += [f"mount {m}" for m in mounts_under(paths.base)]
    out += [f"process {p}" for p in pids_with_cmdline(f"-address {paths.socket}")]
    out += [f"process {p}" for p in pids_with_cmdline(f"--config {paths.config}")]
    if paths.base.exists():
        out.append(f"dir {paths.base}")
    return out
