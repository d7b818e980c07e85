"""`skiff kubectl ARGS...`: the bundled kubectl against the current cluster (as `k3s kubectl`).

Skiff does not re-implement kubectl: the workload verbs (label, annotate, set image, rollout
restart, edit, wait, port-forward, `-o jsonpath`, ...) are kubectl's, talking to the api-server's
Kubernetes REST API. What must hold: the arguments reach kubectl untouched (nothing of skiff's
parses them), kubectl replaces this process (its exit status, signals and terminal are the
user's), and it reads the kubeconfig `make up` and `skiff lab up` write (`skiff.kubeconfig`:
`$KUBECONFIG`, else `~/.kube/config`, whose current context they set).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skiff import errors, kubeconfig


def register(sub: Any) -> None:
    p = sub.add_parser("kubectl", help="run the bundled kubectl against the current cluster (skiff kubectl get pods)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: run(args.args))


def find_kubectl(environ: Mapping[str, str] | None = None) -> str:
    """kubectl beside this Python (`.venv/bin`, where `make setup` puts it), else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    env = os.environ if environ is None else environ
    found = shutil.which("kubectl", path=env.get("PATH"))
    if found is None:
        raise errors.NotFoundError(f"kubectl not found beside {sys.executable} nor on PATH: run `make setup`")
    return found


def command(args: Sequence[str], environ: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of the kubectl to run."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("KUBECONFIG", str(kubeconfig.kubeconfig_path(env)))
    return [find_kubectl(env), *args], env


def run(args: Sequence[str]) -> int:
    argv, env = command(args)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)
    return 127  # not reached: execve replaces this process or raises
