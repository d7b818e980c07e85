"""`skiff lab` hands everything after `lab` to `python -m deploy.lab` (skiff/ never imports deploy/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.cli.main import main


@pytest.mark.parametrize(("args", "code", "out", "err"), [
    (["--help"], 0, "usage: skiff lab [-h] ACTION", ""),
    (["up", "--help"], 0, "--control-planes CONTROL_PLANES", ""),
    (["status", "--prefix", "zz", "--dir", "{tmp}"], 1, "", 'error: no lab "zz" under {tmp}'),
    (["sideways"], 2, "", "invalid choice: 'sideways'"),
], ids=["help", "action-help", "no-such-lab", "unknown-action"])
def test_lab_verb_runs_deploy_lab(args: list[str], code: int, out: str, err: str, tmp_path: Path,
                                  capfd: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(tmp=tmp_path) for a in args]
    assert main(["lab", *argv]) == code
    got = capfd.readouterr()
    assert out.format(tmp=tmp_path) in got.out
    assert err.format(tmp=tmp_path) in got.err
