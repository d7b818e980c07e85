"""Startup refuses bad situations quickly and says why (no hangs)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.store.cluster import free_addr

pytestmark = pytest.mark.integration


def _run(args: list[str], *, env: dict[str, str] | None = None,
         timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlplane.store", *args], capture_output=True, text=True,
                          timeout=timeout, env=env if env is not None else dict(os.environ, SKIFF_STORE_PASSWORD="pw"))


def _args(name: str, data: Path, peer: str, client: str, cluster: str | None = None) -> list[str]:
    return ["--name", name, "--data-dir", str(data), "--listen-client", client, "--listen-peer", peer,
            "--initial-cluster", cluster or f"{name}={peer}", "--insecure"]


def test_refuses_without_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SKIFF_STORE_PASSWORD"}
    res = _run(_args("s1", tmp_path / "d", free_addr("127.0.0.1"), free_addr("127.0.0.1")), env=env)
    assert res.returncode != 0 and "cluster password is required" in res.stderr


def test_refuses_busy_peer_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = f"127.0.0.1:{s.getsockname()[1]}"
        res = _run(_args("s1", tmp_path / "d", busy, free_addr("127.0.0.1")))
    assert res.returncode != 0 and f"cannot listen for peers on {busy}" in res.stderr


def test_refuses_data_dir_of_another_member_or_cluster(tmp_path: Path) -> None:
    data = tmp_path / "d"
    peer, client = free_addr("127.0.0.1"), free_addr("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "controlplane.store", *_args("s1", data, peer, client)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SKIFF_STORE_PASSWORD="pw"))
    try:
        # The same data dir while the first process holds it.
        for _ in range(100):
            if (data / "member.json").exists():
                break
            subprocess.run(["sleep", "0.1"])
        res = _run(_args("s1", data, free_addr("127.0.0.1"), free_addr("127.0.0.1")))
        assert res.returncode != 0 and "is in use by another process" in res.stderr
    finally:
        proc.terminate()
        proc.wait(10)
    other = _run(_args("s2", data, free_addr("127.0.0.1"), free_addr("127.0.0.1")))
    assert other.returncode != 0 and "belongs to member 's1'" in other.stderr
    cluster = f"s1={peer},s2={free_addr('127.0.0.1')}"
    res = _run(_args("s1", data, peer, free_addr("127.0.0.1"), cluster))
    assert res.returncode != 0 and "belongs to cluster" in res.stderr


@pytest.mark.parametrize(
    ("cluster", "message"),
    [("s2=127.0.0.1:1", "must list this member"), ("s1", "expected name=host:port"), ("s1=nohost", "host:port")],
    ids=["not-listed", "no-address", "bad-address"],
)
def test_refuses_bad_initial_cluster(tmp_path: Path, cluster: str, message: str) -> None:
    res = _run(_args("s1", tmp_path / "d", free_addr("127.0.0.1"), free_addr("127.0.0.1"), cluster))
    assert res.returncode != 0 and message in res.stderr
