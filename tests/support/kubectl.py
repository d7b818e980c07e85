"""Running the real kubectl (`make setup` puts 1.35 in .venv/bin) against a cluster, for tests.

What must hold: every invocation has a timeout (a hung kubectl fails its test, it does not hang
the suite); a failed command raises with kubectl's stderr unless the test asked to look at it
(`check=False`); `require_kubectl` fails in CI and skips elsewhere when the binary is missing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.prereq import require

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def require_kubectl() -> None:
    require(KUBECTL.exists(), f"{KUBECTL} is missing: run `make setup`")


def runner(config: Path, *, timeout: float = 60) -> Kubectl:
    """`kubectl --kubeconfig config ARGS...`; `run.config` is the kubeconfig's path."""
    default_timeout = timeout

    def run(*args: str, check: bool = True, timeout: float = default_timeout,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(KUBECTL), "--kubeconfig", str(config), *args], capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    run.config = config  # type: ignore[attr-defined]
    return run


def until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll `check` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f}s")
        time.sleep(interval)


def with_token(server: str, ca_file: str, token: str, workdir: Path,
               *, timeout: float = 60) -> Callable[..., subprocess.CompletedProcess[str]]:
    """kubectl as the bearer of `token` (no client certificate, an empty kubeconfig), for RBAC
    tests; it answers the finished process, refusals included, for the test to look at."""
    empty = workdir / "empty-kubeconfig"
    empty.write_text("")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KUBECTL), "--kubeconfig", str(empty), "--server", server,
                               "--certificate-authority", ca_file, "--token", token, *args],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    return run
