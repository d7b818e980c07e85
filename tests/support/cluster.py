"""Start the controller manager, schedulers and simulated nodes as real processes on loopback.

For integration tests and benchmarks of the control plane: together with
`deploy.loopback.control_plane` (store + api-servers) this makes a whole cluster whose
nodes run the real node agent over its in-memory runtime (`--fake-runtime`: no containerd, no
host networking), so pods really go Pending -> scheduled -> Running -> Ready.

Timings are shortened for tests through flags (node grace period, default toleration seconds, lease
periods); the code paths are the production ones.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from controlplane.store.cluster import StoreCluster
from deploy.loopback import Process, free_port

FAST_LEADER_ELECTION = ("--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s",
                        "--leader-elect-retry-period", "1s")


# What the helpers below pass unless a test gives `tls` flags of its own (tls.client_flags etc.).
INSECURE = ("--insecure",)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def _started(proc: Process, timeout: float) -> None:
    """Daemons without a port of their own: started once the process is alive for a moment."""
    import time

    end = time.monotonic() + min(timeout, 1.0)
    while time.monotonic() < end:
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited during startup:\n{proc.log_tail()}")
        time.sleep(0.05)


def start_controllers(workdir: Path, api_servers: str, *, name: str = "controllers",
                      extra: Sequence[str] = (), tls: Sequence[str] = INSECURE) -> Process:
    argv = [sys.executable, "-m", "controlplane.controllers", "--api-servers", api_servers, "--identity", name,
            *FAST_LEADER_ELECTION, *tls, *extra]
    return Process(name, argv, workdir / f"{name}.log", "127.0.0.1", 0, env=_env(), ready=_started).start()


def start_scheduler(workdir: Path, api_servers: str, *, name: str = "scheduler",
                    extra: Sequence[str] = (), tls: Sequence[str] = INSECURE) -> Process:
    argv = [sys.executable, "-m", "controlplane.scheduler", "--api-servers", api_servers, "--identity", name,
            *FAST_LEADER_ELECTION, *tls, *extra]
    return Process(name, argv, workdir / f"{name}.log", "127.0.0.1", 0, env=_env(), ready=_started).start()


def start_fake_node(workdir: Path, api_servers: str, name: str, *, capacity: str = "cpu=4,memory=8Gi,pods=110",
                    pod_cidr: str = "", lease_period: float = 1.0, extra: Sequence[str] = (),
                    tls: Sequence[str] = INSECURE) -> Process:
    """A node agent over the in-memory runtime, serving logs/exec on a free loopback port."""
    port = free_port()
    state = workdir / name
    state.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "nodeagent", "--node-name", name, "--api-servers", api_servers,
            "--fake-runtime", "--no-network", "--node-ip", "127.0.0.1", "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(state), "--capacity", capacity, "--lease-period", str(lease_period),
            "--relist-period", "0.5"]
    if pod_cidr:
        argv += ["--pod-cidr", pod_cidr]
    argv += [*tls, *extra]
    return Process(name, argv, workdir / f"{name}.log", "127.0.0.1", port, env=_env()).start(timeout=60)


@contextlib.contextmanager
def running_store(members: int) -> Iterator[StoreCluster]:
    """A Skiff store of `members` real processes for a test module's fixture; when the module's
    tests fail while it runs, each member's log tail is printed (a store problem shows there)."""
    c = StoreCluster(members)
    try:
        c.start()
        yield c
    except BaseException:
        for name in c.members:
            print(f"----- {name}.log\n{c.log(name)[-4000:]}")
        raise
    finally:
        c.close()
