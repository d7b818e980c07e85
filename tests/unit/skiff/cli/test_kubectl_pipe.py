"""`skiff kubectl ...` runs the bundled kubectl with the arguments untouched and the kubeconfig
`make up` writes; `skiff` whose reader went away (`| head`) ends quietly, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skiff.cli import kubectl

ROOT = Path(__file__).resolve().parents[4]
SKIFF = [sys.executable, "-m", "skiff.cli.main"]


def fake_kubectl(tmp_path: Path) -> Path:
    """A kubectl that prints its arguments and KUBECONFIG, and exits with 7."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl"
    script.write_text('#!/bin/sh\necho "args:$*"\necho "kubeconfig:$KUBECONFIG"\nexit 7\n')
    script.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(("environ", "expected"), [
    ({"HOME": "/home/u"}, "/home/u/.kube/config"),
    ({"HOME": "/home/u", "KUBECONFIG": "/etc/k.yaml:/other"}, "/etc/k.yaml:/other"),
], ids=["home-default", "kubeconfig-kept"])
def test_command_environment(environ: dict[str, str], expected: str, tmp_path: Path) -> None:
    env = {**environ, "PATH": str(fake_kubectl(tmp_path))}
    argv, out_env = kubectl.command(["get", "pods", "-o", "wide"], env)
    assert argv[1:] == ["get", "pods", "-o", "wide"] and argv[0].endswith("kubectl")
    assert out_env["KUBECONFIG"] == expected


def test_skiff_kubectl_passes_everything_through(tmp_path: Path) -> None:
    """Run as a user would; the fake kubectl on PATH stands in only when none is bundled."""
    env = {**os.environ, "PATH": f"{fake_kubectl(tmp_path)}:{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    env.pop("KUBECONFIG", None)
    bundled = (Path(sys.executable).parent / "kubectl").is_file()
    args = ["version", "--client", "-o", "json"] if bundled else ["get", "pods", "-o", "wide", "--", "x"]
    done = subprocess.run([*SKIFF, "kubectl", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    if bundled:  # the real kubectl 1.35
        assert done.returncode == 0, done.stderr
        assert '"gitVersion": "v1.35' in done.stdout
    else:
        assert done.returncode == 7
        assert done.stdout.splitlines() == ["args:get pods -o wide -- x",
                                            f"kubeconfig:{tmp_path}/.kube/config"]


@pytest.mark.parametrize("args", [["version", "--client"], ["--help"]], ids=["version", "help"])
def test_closed_pipe_ends_quietly(args: list[str]) -> None:
    proc = subprocess.Popen([*SKIFF, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before skiff writes a byte (it is still importing)
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    # argparse's help swallows the failed write itself (0); anything of ours ends as SIGPIPE would (141).
    assert code == (0 if args == ["--help"] else 141), (code, err)
