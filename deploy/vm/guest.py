"""Boot a QEMU guest that runs one command on the host's userspace and reports back.

The guest is a real second kernel (Debian's, see `image`) under QEMU's software emulation
(TCG: this machine has no VT-x), with the host's root mounted read-only and a per-run
directory shared writable at SHARE_DIR: the host writes `command.sh` (and `hostname`) there,
the guest writes `output.log` and `status`.

What must hold:
- Every guest runs under coreutils `timeout` (so it dies even if its caller does) and under the
  caller's own deadline; teardown kills it by its PIDs (`timeout`'s and QEMU's own, from QEMU's
  pidfile) and waits for them; nothing is left running after `Guest.stop()` or `run()`.
- A guest has no network device by default (`-nic none`). Its only links are QEMU socket
  netdevs on 127.0.0.1 joining it to other guests on this machine, or tap devices on a bridge
  inside a lab's network namespace (QEMU then runs in that namespace, never in the root one).
- One emulated CPU (`-smp 1`) by default: the machine is shared and emulation is CPU-bound.
- A guest with `systemd` boots Debian's systemd (the host's, read-only over 9p) as PID 1 into
  SYSTEMD_TARGET, a target of our own that pulls in only sysinit and basic.target and the
  guest's command (never the host's multi-user.target and the services enabled there); the
  writable overlays it needs are made by stage 2 (guest-init.sh) on the guest's tmpfs.
- `qemu_argv`, `kernel_cmdline`, `command_script` and `systemd_units` are pure and unit-tested.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.vm.image import REPO_TAG, ROOT, ROOT_TAG, SHARE_DIR, SHARE_TAG, Image, build

GUEST_INIT = Path(__file__).resolve().with_name("guest-init.sh")
LOOPBACK = "127.0.0.1"
QEMU = "qemu-system-x86_64"
SYSTEMD_TARGET = "skiff-guest.target"
SYSTEMD_SERVICE = "skiff-guest.service"
# Units of the host's sysinit that do nothing for a guest but cost seconds each under emulation
# (measured: 10-25 s each at load 10): time sync over a network the guest does not have (enabled
# on the host), kernel modules and binfmt for what it does not run, and udev (its coldplug is the
# slowest step of the boot; the guest has no hotplug, devtmpfs has its few devices, and its NIC
# keeps the kernel's name). The rest of Debian's sysinit runs (journald, modules-load, sysctl,
# tmpfiles, sysusers, random-seed, ...).
SYSTEMD_MASKED = ("systemd-timesyncd.service", "systemd-pstore.service", "systemd-binfmt.service",
                  "modprobe@drm.service", "modprobe@fuse.service", "modprobe@dm_mod.service",
                  "modprobe@loop.service", "modprobe@efi_pstore.service", "modprobe@configfs.service",
                  "systemd-udevd.service", "systemd-udev-trigger.service", "systemd-udevd-control.socket",
                  "systemd-udevd-kernel.socket")
# The host's PATH may lack sbin (ip, modprobe, iptables); the guest's command always has it.
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Link:
    """A virtio-net NIC joined to another guest's by a TCP socket on 127.0.0.1.

    One guest `listen`s on `port`, the other `connect`s to it: a point-to-point cable.
    """

    mode: str  # "listen" or "connect"
    port: int
    mac: str

    def __post_init__(self) -> None:
        if self.mode not in ("listen", "connect"):
            raise ValueError(f"link mode {self.mode!r}: want listen or connect")
        if not 1024 <= self.port <= 65535:
            raise ValueError(f"link port {self.port}: want 1024-65535")


@dataclass(frozen=True)
class TapLink:
    """A virtio-net NIC on a bridge inside a lab's network namespace.

    The tap device is made in `netns` and put on `bridge` before QEMU starts; QEMU itself then
    runs in that namespace (a tap belongs to the namespace of the process that opens it), and
    the tap is deleted when the guest stops. The guest reaches what that namespace reaches.
    """

    netns: str
    bridge: str
    tap: str
    mac: str

    def __post_init__(self) -> None:
        if not self.netns or "/" in self.netns:
            raise ValueError(f"tap link netns {self.netns!r}: want the name of a lab namespace")
        if not 1 <= len(self.tap) <= 15:
            raise ValueError(f"tap name {self.tap!r}: want 1-15 characters")


@dataclass(frozen=True)
class GuestSpec:
    name: str
    memory_mb: int = 1024
    cpus: int = 1
    links: tuple[Link | TapLink, ...] = ()
    systemd: bool = False  # boot systemd as PID 1 and run the command as a unit (see systemd_units)

    def __post_init__(self) -> None:
        if len({link.netns for link in self.links if isinstance(link, TapLink)}) > 1:
            raise ValueError("a guest's tap links must all be in one namespace (QEMU runs in it)")

    @property
    def netns(self) -> str:
        """The namespace QEMU runs in: its tap links' ("" for the caller's)."""
        return next((link.netns for link in self.links if isinstance(link, TapLink)), "")


def kernel_cmdline(*, init: Path = GUEST_INIT, repo: Path = ROOT, systemd: bool = False) -> str:
    # quiet: the serial console is slow under emulation; panic=-1 with -no-reboot ends QEMU on a panic.
    line = f"console=ttyS0 quiet panic=-1 rdinit=/init skiff.init={init} skiff.repo={repo}"
    if systemd:
        # net.ifnames=0: udev keeps the NIC's kernel name (eth0), which the lab's plan configures.
        line += f" skiff.systemd=1 systemd.unit={SYSTEMD_TARGET} systemd.show_status=0 net.ifnames=0"
        line += "".join(f" systemd.mask={unit}" for unit in SYSTEMD_MASKED)
    return line


def systemd_units(*, init: Path = GUEST_INIT) -> dict[str, str]:
    """The runtime units (/run/systemd/system) a systemd guest boots into: {file name: text}.

    The service has systemd's default dependencies (after sysinit.target and basic.target: the
    journal, udev, modules-load and sysctl have run, as on any Debian machine); the target asks
    for nothing else, so the host's enabled services (multi-user.target) never start in a guest.
    """
    service = "\n".join([
        "[Unit]",
        "Description=Skiff guest command (deploy/vm: command.sh on the share)",
        "[Service]",
        "Type=simple",
        f"ExecStart=/bin/bash {init} run",
        "StandardOutput=journal+console",
        "",
    ])
    target = "\n".join([
        "[Unit]",
        "Description=Skiff guest (deploy/vm)",
        f"Requires={SYSTEMD_SERVICE}",
        f"After={SYSTEMD_SERVICE}",
        "AllowIsolate=yes",
        "",
    ])
    return {SYSTEMD_SERVICE: service, SYSTEMD_TARGET: target}


def qemu_argv(spec: GuestSpec, image: Image, share: Path, *, console: Path, pidfile: Path,
              init: Path = GUEST_INIT) -> list[str]:
    argv = [QEMU, "-name", spec.name, "-accel", "tcg", "-machine", "q35", "-cpu", "qemu64",
            "-m", str(spec.memory_mb), "-smp", str(spec.cpus),
            "-display", "none", "-monitor", "none", "-serial", f"file:{console}", "-no-reboot",
            "-pidfile", str(pidfile), "-nic", "none",
            "-kernel", str(image.vmlinux), "-initrd", str(image.initrd),
            "-append", kernel_cmdline(init=init, systemd=spec.systemd),
            "-fsdev", f"local,id={ROOT_TAG},path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", f"virtio-9p-pci,fsdev={ROOT_TAG},mount_tag={ROOT_TAG}",
            "-fsdev", f"local,id={REPO_TAG},path={ROOT},security_model=none,readonly=on,multidevs=remap",
            "-device", f"virtio-9p-pci,fsdev={REPO_TAG},mount_tag={REPO_TAG}",
            "-fsdev", f"local,id={SHARE_TAG},path={share},security_model=none,multidevs=remap",
            "-device", f"virtio-9p-pci,fsdev={SHARE_TAG},mount_tag={SHARE_TAG}"]
    for i, link in enumerate(spec.links):
        if isinstance(link, TapLink):
            netdev = f"tap,id=n{i},ifname={link.tap},script=no,downscript=no"
        else:
            netdev = f"socket,id=n{i},{link.mode}={LOOPBACK}:{link.port}"
        argv += ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=n{i},mac={link.mac}"]
    if spec.netns:
        argv = ["nsenter", f"--net=/run/netns/{spec.netns}", "--", *argv]
    return argv


def command_script(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> str:
    """The guest's command.sh: `argv` run in `cwd` with `env` added to a minimal environment."""
    base = {"PATH": GUEST_PATH, "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "SKIFF_VM_SHARE": SHARE_DIR}
    lines = ["set -e", f"cd {shlex.quote(str(cwd))}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in {**base, **env}.items()]
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


@dataclass
class GuestResult:
    status: int | None  # the command's exit status; None when the guest never reported one
    output: str  # the command's stdout and stderr
    console: str  # the guest's serial console (kernel and init messages)
    seconds: float
    share: Path  # the command's results stay here until the run directory is removed

    def explain(self) -> str:
        return (f"guest status {self.status} after {self.seconds:.1f}s\n--- output\n{self.output[-6000:]}"
                f"\n--- console\n{self.console[-3000:]}")


def _qemu_pid(pidfile: Path) -> int | None:
    """QEMU's PID from its pidfile, if that process is still the QEMU that wrote it."""
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(pidfile).encode() in cmdline else None


@dataclass
class Guest:
    """One booted guest. `start()`, then `wait()`; `stop()` always (it is idempotent)."""

    spec: GuestSpec
    run_dir: Path
    image: Image = field(default_factory=build)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    @property
    def share(self) -> Path:
        return self.run_dir / "share"

    @property
    def console(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "qemu.pid"

    def start(self, argv: Sequence[str], *, timeout: float, cwd: Path = ROOT,
              env: Mapping[str, str] | None = None) -> None:
        self.share.mkdir(parents=True, exist_ok=True)
        (self.share / "command.sh").write_text(command_script(argv, cwd=cwd, env=env or {}))
        (self.share / "hostname").write_text(self.spec.name + "\n")
        if self.spec.systemd:
            units = self.share / "systemd"
            units.mkdir(exist_ok=True)
            for name, text in systemd_units().items():
                (units / name).write_text(text)
        qemu = qemu_argv(self.spec, self.image, self.share, console=self.console, pidfile=self.pidfile)
        for link in self.spec.links:
            if isinstance(link, TapLink):
                subprocess.run(["ip", "-n", link.netns, "tuntap", "add", "dev", link.tap, "mode", "tap"], check=True)
                subprocess.run(["ip", "-n", link.netns, "link", "set", link.tap, "master", link.bridge, "up"],
                               check=True)
        with open(self.run_dir / "qemu.log", "wb") as log:
            self.proc = subprocess.Popen(["timeout", "--kill-after=5", f"{timeout:.0f}", *qemu],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.started = time.monotonic()

    def wait(self, timeout: float) -> GuestResult:
        assert self.proc is not None, "start() first"
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.stop()
        status_file = self.share / "status"
        status = int(status_file.read_text()) if status_file.exists() else None

        def text(p: Path) -> str:
            return p.read_text(errors="replace") if p.exists() else ""

        return GuestResult(status, text(self.share / "output.log"),
                           text(self.console) + text(self.run_dir / "qemu.log"),
                           time.monotonic() - self.started, self.share)

    def stop(self) -> None:
        """Kill the guest by its PIDs (QEMU's and its `timeout` wrapper's), reap it, delete its taps."""
        if self.proc is not None:
            self._kill(self.proc)
            self.proc = None
        for link in self.spec.links:
            if isinstance(link, TapLink):
                subprocess.run(["ip", "-n", link.netns, "link", "del", link.tap], capture_output=True, check=False)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # Only PIDs known to be ours: the unreaped wrapper, and QEMU checked against its pidfile.
            pids = [proc.pid] if proc.poll() is None else []
            qemu = _qemu_pid(self.pidfile)
            pids += [qemu] if qemu is not None else []
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 5
            while _qemu_pid(self.pidfile) is not None and time.monotonic() < deadline:
                time.sleep(0.1)


def run(argv: Sequence[str], *, name: str = "skiff-vm", timeout: float = 300, cwd: Path = ROOT,
        env: Mapping[str, str] | None = None, run_dir: Path | None = None,
        spec: GuestSpec | None = None) -> GuestResult:
    """Boot a guest, run `argv` in it, power it off; the results stay in `<run_dir>/share`."""
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="skiff-vm-"))
    guest = Guest(spec or GuestSpec(name), run_dir)
    try:
        guest.start(argv, timeout=timeout, cwd=cwd, env=env)
        return guest.wait(timeout + 10)
    finally:
        guest.stop()
