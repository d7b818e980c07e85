"""The store's Raft timing flags (etcd's names): what reaches RaftTimings, and etcd's 5-heartbeat rule."""

from __future__ import annotations

import pytest

from controlplane.store.__main__ import build_parser, config_from_args
from controlplane.store.raft import RaftTimings

_REQUIRED = ["--name", "s1", "--data-dir", "/d", "--listen-client", "127.0.0.1:2379", "--listen-peer",
             "127.0.0.1:2380", "--initial-cluster", "s1=127.0.0.1:2380", "--insecure"]


@pytest.mark.parametrize(("flags", "expected"), [
    ([], RaftTimings(heartbeat=0.1, election_min=0.8, election_max=1.6, leader_fallback=3.0, connection_timeout=3.5)),
    (["--heartbeat-interval", "300ms", "--election-timeout", "3s"],
     RaftTimings(heartbeat=0.3, election_min=3.0, election_max=6.0, leader_fallback=6.0, connection_timeout=6.5)),
    (["--heartbeat-interval", "100ms", "--election-timeout", "500ms"],
     RaftTimings(heartbeat=0.1, election_min=0.5, election_max=1.0, leader_fallback=3.0, connection_timeout=3.5)),
], ids=["defaults", "loaded-machine", "five-heartbeats-exactly"])
def test_timing_flags_reach_raft(flags: list[str], expected: RaftTimings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIFF_STORE_PASSWORD", "pw")
    assert config_from_args(build_parser().parse_args([*_REQUIRED, *flags])).timings == expected


@pytest.mark.parametrize("flags", [
    ["--heartbeat-interval", "300ms"],
    ["--heartbeat-interval", "200ms", "--election-timeout", "900ms"],
    ["--heartbeat-interval", "0"],
], ids=["heartbeat-above-default-election", "fewer-than-five-heartbeats", "zero-heartbeat"])
def test_election_timeout_must_cover_five_heartbeats(flags: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIFF_STORE_PASSWORD", "pw")
    with pytest.raises(SystemExit, match="at least 5 times --heartbeat-interval"):
        config_from_args(build_parser().parse_args([*_REQUIRED, *flags]))
