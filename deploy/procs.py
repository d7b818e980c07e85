"""Starting and stopping the daemons of a lab or local cluster, optionally inside a netns.

Each daemon runs in its own session (so a Ctrl-C of the caller does not reach it), logs to
`<dir>/<name>.log`, and is recorded in `<dir>/<name>.pid` as "pid starttime" so that a stop
after the caller has exited never signals a recycled pid. Stopping is idempotent.
Long-lived daemons are started with `nsenter --net=` rather than `ip netns exec`, which would
give them a private mount namespace without the cgroup mounts (docs/containerd.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """argv run inside network namespace `netns` (the root namespace when empty)."""
    if not netns:
        return list(argv)
    return ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]


def _start_time(pid: int) -> str:
    """The process's start time (field 22 of /proc/PID/stat); "" when it is gone or a zombie.

    A daemon whose starter has exited is reparented to init, which may reap it only much later:
    a zombie counts as stopped.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()  # after the ")" that ends the command name
    if fields[0] in ("Z", "X"):
        return ""
    return fields[19]


@dataclass
class Daemon:
    name: str
    pid: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return bool(_start_time(self.pid))


def start(name: str, argv: Sequence[str], run_dir: Path, *, netns: str = "",
          env: Mapping[str, str] | None = None) -> Daemon:
    """Start a daemon; its pid file and log go under `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(in_netns(netns, argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=full_env)
    record(run_dir / f"{name}.pid", proc.pid)
    return Daemon(name, proc.pid, log_path, proc)


def record(pid_file: Path, pid: int) -> None:
    """Record a running process as "pid starttime", the form `recorded` and `stop` trust."""
    pid_file.write_text(f"{pid} {_start_time(pid)}\n")


def recorded(run_dir: Path) -> list[Daemon]:
    """Daemons recorded under `run_dir` whose process still exists (same pid and start time)."""
    out = []
    for pid_file in sorted(run_dir.glob("*.pid")):
        try:
            pid_text, started = pid_file.read_text().split()
            pid = int(pid_text)
        except ValueError:
            continue
        if started and _start_time(pid) == started:
            out.append(Daemon(pid_file.stem, pid, run_dir / f"{pid_file.stem}.log"))
    return out


def stop(daemon: Daemon, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal the daemon's whole session, wait up to `timeout`, then SIGKILL it."""
    if daemon.alive():
        try:
            os.killpg(daemon.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while daemon.alive() and time.monotonic() < deadline:
            if daemon.process is not None:
                try:
                    daemon.process.wait(0.05)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.05)
        if daemon.alive():
            try:
                os.killpg(daemon.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if daemon.process is not None:
        try:
            daemon.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
    pid_file = daemon.log_path.with_suffix(".pid")
    pid_file.unlink(missing_ok=True)


def kill(daemon: Daemon) -> None:
    """kill -9 the daemon's session at once (failure tests)."""
    stop(daemon, timeout=0.0, sig=signal.SIGKILL)


def stop_all(run_dir: Path, *, order: Sequence[str] = (), timeout: float = 10.0) -> None:
    """Stop every recorded daemon: those named in `order` first, in that order."""
    daemons = {d.name: d for d in recorded(run_dir)}
    for name in [*order, *sorted(daemons)]:
        daemon = daemons.pop(name, None)
        if daemon is not None:
            stop(daemon, timeout=timeout)
