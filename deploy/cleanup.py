"""Removing what a Skiff node left on its host: pods, shims, mounts, cgroups, CNI leftovers.

Used by `python -m deploy.install remove`. The normal way out is through containerd's CRI
(stop and remove every sandbox: CNI DEL, unmounts and cgroups come with it); the rest is the
fallback for a node whose containerd crashed or was killed (shared/containerd.md, section 7):
SIGKILL the shims of this node's socket and the processes left in its cgroup parent, unmount
everything under its state dir, remove its CNI result files and shim sockets, rmdir its cgroups.

What must hold: every step is idempotent and touches only what belongs to this node (found by
its socket path, its cgroup parent and its state dir), so it is safe next to other nodes, labs
or a system containerd on the same machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc

from skiff import hostconfig
from skiffpb.cri.v1 import api_pb2 as cri
from skiffpb.cri.v1 import api_pb2_grpc as cri_grpc

CNI_RESULTS = Path("/var/lib/cni/results")
SHIM_SOCKETS = Path("/run/containerd/s")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def remove_pods(paths: hostconfig.NodePaths, *, timeout: float = 30.0) -> list[str]:
    """Stop and remove every pod sandbox through CRI; returns one line per removed pod.

    Does nothing when containerd does not answer on the node's socket (the fallback is then
    `kill_leftovers`).
    """
    if not paths.socket.exists():
        return []
    done: list[str] = []
    with grpc.insecure_channel(paths.endpoint) as channel:
        stub = cri_grpc.RuntimeServiceStub(channel)
        try:
            sandboxes = stub.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=5).items
        except grpc.RpcError:
            return []
        for sb in sandboxes:
            with contextlib.suppress(grpc.RpcError):
                stub.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sb.id), timeout=timeout)
                stub.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sb.id), timeout=timeout)
                done.append(f"{sb.metadata.namespace}/{sb.metadata.name}")
    return done


def pids_with_cmdline(fragment: str) -> list[int]:
    """Processes whose command line (arguments joined by spaces) contains `fragment`."""
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


def cgroup_dirs(parent: str) -> list[Path]:
    """The directories of cgroup `parent` ("/skiff-x-n1") in the v2 tree and every v1 hierarchy."""
    name = parent.strip("/")
    if not name or not CGROUP_ROOT.is_dir():
        return []
    out = [CGROUP_ROOT / name] if (CGROUP_ROOT / name).is_dir() else []
    out += [p / name for p in CGROUP_ROOT.iterdir() if p.is_dir() and (p / name).is_dir()]
    return out


def mounts_under(base: Path) -> list[str]:
    """Mount points below `base`, in mount order (unmount them in reverse)."""
    prefix = str(base.resolve()) + "/"
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt.startswith(prefix):
            out.append(mnt)
    return out


def _rmdir_retry(path: Path, deadline: float) -> bool:
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def kill_leftovers(paths: hostconfig.NodePaths, cgroup_parent: str) -> list[str]:
    """The crash fallback: kill this node's shims and cgroup processes, unmount, remove CNI
    results and shim sockets, rmdir its cgroups. Returns what it had to do."""
    notes: list[str] = []
    sock = str(paths.socket)
    for pid in sorted(set(pids_with_cmdline(f"-address {sock}"))):
        notes.append(f"killed shim {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for d in cgroup_dirs(cgroup_parent):
        for procs in d.rglob("cgroup.procs"):
            for pid_text in procs.read_text().split():
                notes.append(f"killed {pid_text} in cgroup {cgroup_parent}")
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_text), signal.SIGKILL)
    for mnt in reversed(mounts_under(paths.base)):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        notes.append(f"unmounted {mnt}")
    sandbox_dir = paths.root / "io.containerd.grpc.v1.cri" / "sandboxes"
    for sid in [p.name for p in sandbox_dir.iterdir()] if sandbox_dir.is_dir() else []:
        if CNI_RESULTS.is_dir():
            for f in CNI_RESULTS.glob(f"*-{sid}-*"):
                f.unlink(missing_ok=True)
        shim = SHIM_SOCKETS / hashlib.sha256(f"{sock}/k8s.io/{sid}".encode()).hexdigest()
        if shim.exists():
            shim.unlink(missing_ok=True)
            notes.append(f"removed shim socket {shim.name[:12]}")
    deadline = time.monotonic() + 10
    for d in sorted(cgroup_dirs(cgroup_parent), key=lambda p: -len(p.parts)):
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir_retry(sub, deadline)
        if not _rmdir_retry(d, deadline):
            notes.append(f"could not remove cgroup {d}")
    return notes


def plan_route_removal(routes: list[dict[str, object]], cluster_cidr: str) -> list[str]:
    """Destinations (from `ip -j route show`) inside the cluster's pod CIDR: the host-gw routes
    the node agent installed and the route of its own podCIDR on the CNI bridge."""
    cluster = ipaddress.ip_network(cluster_cidr)
    out = []
    for r in routes:
        dst = str(r.get("dst", ""))
        if not dst or dst == "default":
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if net.version == cluster.version and net.subnet_of(cluster):  # type: ignore[arg-type]
            out.append(dst)
    return out


def remove_node_network(cluster_cidr: str, *, bridge: str = "cni0") -> list[str]:
    """Delete the pod routes and the CNI bridge of this host (its current network namespace)."""
    notes = []
    proc = subprocess.run(["ip", "-j", "route", "show"], capture_output=True, text=True, check=False)
    routes = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []
    for dst in plan_route_removal(routes, cluster_cidr):
        if subprocess.run(["ip", "route", "del", dst], capture_output=True, check=False).returncode == 0:
            notes.append(f"deleted route {dst}")
    if subprocess.run(["ip", "link", "show", bridge], capture_output=True, check=False).returncode == 0:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        notes.append(f"deleted bridge {bridge}")
    return notes
