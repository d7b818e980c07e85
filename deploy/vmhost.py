"""A lab host that is a QEMU guest: its own kernel running containerd, the node agent and the proxy.

The host side (`VmHost`) writes the host's plan (`plan()`: its LAN commands, the kernel modules,
the image tars and the daemons deploy/render.py renders for it) to the guest's writable share
and boots the guest (deploy/vm/guest.py) with one tap on the lab's LAN bridge. In the guest,
`python -m deploy.vmhost` (`serve`) applies the plan, starts the daemons with their logs on the
share (`<share>/logs/`), writes `ready`, then answers requests until the host asks it to stop.

Requests are files on the share, because the guest has no other channel to the host:
`req/<id>.json` ({"argv": [...]} or {"get": url}, and a timeout) is answered by
`req/<id>.out.json` ({"rc", "stdout", "stderr"}); both are written to a temporary name and
renamed, so neither side reads half a file. `handle()` is what answers one request; a URL is
fetched with Python's urllib in the server (no process to start, and a real timeout:
busybox's `wget -T` segfaults).

What must hold:
- the guest runs under a timeout and is killed by its PIDs on `stop()` from any process: the
  `timeout` wrapper is recorded like a daemon (pid and start time, deploy/procs.py) in the
  host's directory and QEMU's own PID is checked against its pidfile; the tap goes with it;
- a stop first asks the guest to stop its pods and daemons (`stop` on the share), then kills;
- the guest's writable state (containerd's root, CNI caches) is on its tmpfs, never the host's.

A provisioned host (`provision_plan()`, `python -m deploy.vmhost provision`) is the other way a
guest becomes a lab host: the guest boots systemd (deploy/vm/guest.py, GuestSpec.systemd) and
runs the Vagrant lab's own `deploy/vagrant/provision-worker.sh` (that is, `deploy.install worker
--join ... --token ...`): the install writes and enables the systemd units, systemd starts
containerd, the node agent, the proxy and the DNS server, and the agent gets its certificate
through a CSR with the bootstrap token. `ready` then carries the boot and provisioning times and
what `systemctl is-enabled` / `is-active` said of each unit; requests are answered as above.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy import procs
from deploy.vm.image import ROOT, SHARE_DIR

# The guest's writable directories the host root (read-only there) would otherwise provide.
GUEST_TMPFS = ("/var/lib/cni",)
# IPVS mode, the CNI bridge and Service rules need these; built in or absent is fine.
GUEST_MODULES = ("br_netfilter", "overlay", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack",
                 "veth", "bridge", "xt_MASQUERADE", "xt_comment", "xt_mark", "xt_set", "ip_set")
POLL = 0.2


def plan(*, network: Sequence[Sequence[str]], node_base: str, images: Sequence[str],
         daemons: Sequence[tuple[str, Sequence[str], Mapping[str, str]]]) -> dict[str, Any]:
    """The guest's plan (host.json): pure, so the host's rendering is checked without a guest."""
    if not node_base.startswith(("/run/", "/tmp/", "/var/tmp/")):
        raise ValueError(f"a guest's node state {node_base!r} must be on its tmpfs (/run, /tmp, /var/tmp)")
    names = [d[0] for d in daemons]
    if names[:1] != ["containerd"]:
        raise ValueError(f"a guest host starts containerd first, not {names[:1]}")
    return {"network": [list(c) for c in network], "modules": list(GUEST_MODULES), "tmpfs": list(GUEST_TMPFS),
            "node_base": node_base, "images": list(images),
            "daemons": [{"name": n, "argv": list(a), "env": dict(e)} for n, a, e in daemons]}


def provision_plan(*, network: Sequence[Sequence[str]], argv: Sequence[str], env: Mapping[str, str],
                   units: Sequence[str]) -> dict[str, Any]:
    """A provisioned guest's plan (host.json): its LAN, the modules, the provisioning command
    and the systemd units it must leave enabled and active."""
    if not argv or not units:
        raise ValueError("a provisioned guest needs a provisioning command and the units it starts")
    return {"network": [list(c) for c in network], "modules": list(GUEST_MODULES), "provision": list(argv),
            "env": dict(env), "units": list(units)}


# ---------------------------------------------------------------------- in the guest


def handle(request: Mapping[str, Any]) -> dict[str, Any]:
    """Answer one request: run argv, or GET a URL; never raises."""
    timeout = float(request.get("timeout", 30))
    try:
        if "get" in request:
            with urllib.request.urlopen(str(request["get"]), timeout=timeout) as resp:
                return {"rc": 0, "stdout": resp.read().decode(errors="replace"), "stderr": ""}
        done = subprocess.run([str(a) for a in request["argv"]], capture_output=True, text=True,
                              timeout=timeout, check=False)
        return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
    except Exception as exc:  # the host gets every failure as an answer, and the server keeps serving
        return {"rc": 255, "stdout": "", "stderr": f"{type(exc).__name__}: {exc}"}


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def serve_requests(share: Path, *, until: float = float("inf")) -> None:
    """Answer requests under `<share>/req/` until `<share>/stop` exists (or `until` passes)."""
    req = share / "req"
    req.mkdir(exist_ok=True)
    while not (share / "stop").exists() and time.monotonic() < until:
        pending = sorted(p for p in req.glob("*.json") if not p.name.endswith(".out.json"))
        for path in pending:
            try:
                request = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # not renamed into place yet
            _write_json(path.with_name(path.stem + ".out.json"), handle(request))
            path.unlink(missing_ok=True)
        if not pending:
            time.sleep(POLL)


def serve(share: Path) -> int:
    """The guest's command: apply the plan, start the daemons, answer requests, stop on request."""
    from deploy import containerd
    from skiff import hostconfig, images

    started = time.monotonic()
    p = json.loads((share / "host.json").read_text())
    logs = share / "logs"
    for d in p["tmpfs"]:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    for module in p["modules"]:
        subprocess.run(["modprobe", module], capture_output=True, check=False)
    for cmd in p["network"]:
        subprocess.run(cmd, check=True)
    paths = hostconfig.NodePaths(Path(p["node_base"]))
    daemons: list[procs.Daemon] = []
    try:
        daemons.append(containerd.start(paths, logs, netns="", timeout=120))
        images.import_tars([Path(t) for t in p["images"]], endpoint=paths.endpoint, timeout=300)
        for d in p["daemons"][1:]:
            daemons.append(procs.start(d["name"], d["argv"], logs, env=d["env"]))
        _write_json(share / "ready", {"seconds": round(time.monotonic() - started, 1)})
        serve_requests(share)
    except Exception as exc:
        _write_json(share / "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        for daemon in reversed(daemons):
            if daemon.name == "containerd":
                containerd.remove_all_sandboxes(paths.endpoint)
            procs.stop(daemon, timeout=20)
    return 0


def _units_state(units: Sequence[str]) -> dict[str, dict[str, str]]:
    out = {}
    for unit in units:
        state = {}
        for verb in ("is-enabled", "is-active"):
            done = subprocess.run(["systemctl", verb, unit], capture_output=True, text=True, check=False)
            state[verb] = done.stdout.strip()
        out[unit] = state
    return out


def _save_journal(logs: Path) -> None:
    with open(logs / "journal.log", "w") as f:
        subprocess.run(["journalctl", "--no-pager", "-o", "short-monotonic", "-u", "skiff-*"], stdout=f,
                       stderr=subprocess.STDOUT, timeout=120, check=False)


def provision(share: Path) -> int:
    """The systemd guest's command: its LAN, then the provisioning script; answer requests until stopped."""
    booted = float(Path("/proc/uptime").read_text().split()[0])  # kernel and systemd, until this unit
    started = time.monotonic()
    p = json.loads((share / "host.json").read_text())
    logs = share / "logs"
    logs.mkdir(exist_ok=True)
    for module in p["modules"]:
        subprocess.run(["modprobe", module], capture_output=True, check=False)
    for cmd in p["network"]:
        subprocess.run(cmd, check=True)
    try:
        with open(logs / "provision.log", "wb") as log:
            done = subprocess.run(p["provision"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **p["env"]},
                                  check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(p['provision'])} exited {done.returncode} (logs/provision.log)")
        provisioned = time.monotonic()
        _write_json(share / "ready", {"seconds": round(provisioned - started + booted, 1),
                                      "boot_seconds": round(booted, 1),
                                      "provision_seconds": round(provisioned - started, 1),
                                      "units": _units_state(p["units"])})
        serve_requests(share)
    except Exception as exc:
        _write_json(share / "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        _save_journal(logs)
    return 0


# ---------------------------------------------------------------------- on the host


class VmHostError(RuntimeError):
    pass


@dataclass
class VmHost:
    """The host side of one guest host; every method works from any process (state is on disk)."""

    name: str
    run_dir: Path  # <lab>/<host>/vm: the share, QEMU's console and pidfile, the wrapper's record

    @property
    def share(self) -> Path:
        return self.run_dir / "share"

    @property
    def logs(self) -> Path:
        return self.share / "logs"

    @property
    def record_dir(self) -> Path:
        return self.run_dir / "wrapper"

    def start(self, host_plan: Mapping[str, Any], *, links: tuple[Any, ...], timeout: float,
              memory_mb: int = 1536) -> None:
        """Boot the guest on `host_plan`: a `provision_plan` boots systemd and provisions, a `plan` serves."""
        from deploy.vm import guest

        self.share.mkdir(parents=True, exist_ok=True)
        _write_json(self.share / "host.json", host_plan)
        provisioned = "provision" in host_plan
        g = guest.Guest(guest.GuestSpec(self.name, memory_mb=memory_mb, links=links, systemd=provisioned),
                        self.run_dir)
        action = "provision" if provisioned else "serve"
        g.start([sys.executable, "-m", "deploy.vmhost", action, SHARE_DIR], timeout=timeout, cwd=ROOT)
        assert g.proc is not None
        self.record_dir.mkdir(exist_ok=True)
        procs.record(self.record_dir / "guest.pid", g.proc.pid)
        (self.run_dir / "links.json").write_text(json.dumps([vars(link) for link in links]))

    def running(self) -> bool:
        return bool(procs.recorded(self.record_dir))

    def console_tail(self, lines: int = 30) -> str:
        path = self.run_dir / "console.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        out = self.share / "output.log"
        text += "\n--- guest output\n" + (out.read_text(errors="replace") if out.exists() else "")
        return "\n".join(text.splitlines()[-lines:])

    def ready(self) -> dict[str, Any]:
        """What the guest reported when it became ready (seconds; a provisioned one's units too)."""
        data: dict[str, Any] = json.loads((self.share / "ready").read_text())
        return data

    def wait_ready(self, timeout: float) -> float:
        """Seconds the guest took to start its daemons; VmHostError if it failed or died."""
        deadline = time.monotonic() + timeout
        while not (self.share / "ready").exists():
            failed = self.share / "failed"
            if failed.exists() or not self.running():
                why = json.loads(failed.read_text())["error"] if failed.exists() else "the guest exited"
                raise VmHostError(f"guest host {self.name}: {why}\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise VmHostError(f"guest host {self.name} not ready after {timeout:.0f}s\n{self.console_tail()}")
            time.sleep(0.5)
        return float(json.loads((self.share / "ready").read_text())["seconds"])

    def request(self, request: Mapping[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
        """Have the guest answer `request` (see `handle`); waits `timeout` plus the polling slack."""
        req = self.share / "req"
        req.mkdir(parents=True, exist_ok=True)
        rid = f"{time.time_ns()}-{os.getpid()}"
        _write_json(req / f"{rid}.json", {**request, "timeout": timeout})
        answer = req / f"{rid}.out.json"
        deadline = time.monotonic() + timeout + 30  # the guest may be busy; its Python is slow
        while not answer.exists():
            if time.monotonic() > deadline or not self.running():
                (req / f"{rid}.json").unlink(missing_ok=True)
                raise VmHostError(f"guest host {self.name} did not answer {dict(request)}")
            time.sleep(0.05)
        out: dict[str, Any] = json.loads(answer.read_text())
        answer.unlink(missing_ok=True)
        return out

    def stop(self, *, grace: float = 60.0) -> None:
        """Ask the guest to stop its pods and daemons and power off; kill it by PID after `grace`."""
        if self.share.exists():
            (self.share / "stop").touch()
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.5)
        for wrapper in procs.recorded(self.record_dir):
            procs.stop(wrapper, timeout=5)  # its process group: `timeout` and QEMU
        from deploy.vm import guest

        qemu = guest._qemu_pid(self.run_dir / "qemu.pid")  # checked against its cmdline: never a recycled PID
        if qemu is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(qemu, signal.SIGKILL)
        links = self.run_dir / "links.json"
        for link in json.loads(links.read_text()) if links.exists() else []:
            if "netns" in link:
                subprocess.run(["ip", "-n", link["netns"], "link", "del", link["tap"]], capture_output=True,
                               check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.vmhost",
                                     description="run a lab host's daemons inside a QEMU guest (the guest's command)")
    parser.add_argument("action", choices=("serve", "provision"))
    parser.add_argument("share", type=Path)
    args = parser.parse_args(argv)
    return provision(args.share) if args.action == "provision" else serve(args.share)


if __name__ == "__main__":
    sys.exit(main())
