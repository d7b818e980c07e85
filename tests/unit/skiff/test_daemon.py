"""skiff.daemon: the duration flag type and `-v` every daemon shares, and running until a signal."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from controlplane.apiserver.__main__ import build_parser as apiserver_parser
from controlplane.store.__main__ import build_parser as store_parser
from nodeagent.__main__ import build_parser as nodeagent_parser
from skiff.daemon import duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1.5", 1.5), ("40s", 40.0), ("1m30s", 90.0),
    ("2h", 7200.0), ("1h30m", 5400.0), ("1s500ms", 1.5), (" 1 s ", 1.0), ("0.25s", 0.25),
], ids=["zero", "seconds", "millis", "minutes", "bare", "controller-default", "compound", "hours", "hours-minutes",
        "seconds-millis", "spaces", "fraction"])
def test_duration(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1", "-5s", "inf", "nan", "1e3", "30s1m", "5d", "1m1m"],
                         ids=["empty", "word", "negative", "negative-unit", "inf", "nan", "exponent", "out-of-order",
                              "days", "unit-twice"])
def test_bad_duration_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        duration(text)


# A daemon whose main task writes "started", then waits; its `finally` must run on SIGTERM.
DAEMON = textwrap.dedent("""
    import asyncio, sys
    from skiff.daemon import run_until_signalled

    async def main():
        try:
            print("started", flush=True)
            await asyncio.sleep(60)
        finally:
            print("cleaned up", flush=True)

    sys.exit(run_until_signalled(main()))
""")


def test_sigterm_cancels_the_main_task_and_exits_0() -> None:
    proc = subprocess.Popen([sys.executable, "-c", DAEMON], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert out.strip() == "cleaned up"
    assert proc.returncode == 0


def test_an_error_in_the_main_task_propagates() -> None:
    code = "import sys\nfrom skiff.daemon import run_until_signalled\n\n" \
           "async def main():\n    raise ValueError('boom')\n\nrun_until_signalled(main())\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "ValueError: boom" in proc.stderr


_STORE_REQUIRED = ["--name", "s1", "--data-dir", "/d", "--listen-client", "127.0.0.1:2379", "--listen-peer",
                   "127.0.0.1:2380", "--initial-cluster", "s1=127.0.0.1:2380"]
_AGENT_REQUIRED = ["--node-name", "n1", "--api-servers", "a:6443"]

CONVENTION_CASES = [
    ("store", store_parser, [*_STORE_REQUIRED, "-v", "--request-timeout", "2s", "--election-timeout", "500ms",
                             "--progress-notify-interval", "1m", "--auto-compaction-seconds", "1h"],
     {"verbose": True, "request_timeout": 2.0, "election_timeout": 0.5, "progress_notify_interval": 60.0,
      "auto_compaction_seconds": 3600.0}),
    ("store-bare-seconds", store_parser, [*_STORE_REQUIRED, "--request-timeout", "1.5"],
     {"verbose": False, "request_timeout": 1.5}),
    ("apiserver", apiserver_parser, ["-v", "--bookmark-interval", "500ms", "--compaction-interval", "5m",
                                     "--event-ttl", "1h30m"],
     {"verbose": True, "bookmark_interval": 0.5, "compaction_interval": 300.0, "event_ttl": 5400.0}),
    ("apiserver-bare-seconds", apiserver_parser, ["--compaction-interval", "0", "--event-ttl", "3600"],
     {"verbose": False, "compaction_interval": 0.0, "event_ttl": 3600.0}),
    ("nodeagent", nodeagent_parser, [*_AGENT_REQUIRED, "-v", "--backoff-base", "10s", "--backoff-max", "5m",
                                     "--relist-period", "500ms", "--lease-period", "0.5"],
     {"verbose": True, "backoff_base": 10.0, "backoff_max": 300.0, "relist_period": 0.5, "lease_period": 0.5}),
]


@pytest.mark.parametrize(("parser", "argv", "expected"), [c[1:] for c in CONVENTION_CASES],
                         ids=[c[0] for c in CONVENTION_CASES])
def test_daemons_share_the_flag_convention(parser: Callable[[], argparse.ArgumentParser], argv: list[str],
                                           expected: dict[str, object]) -> None:
    args = parser().parse_args(argv)
    assert {key: getattr(args, key) for key in expected} == expected


@pytest.mark.parametrize(("parser", "required"), [(store_parser, _STORE_REQUIRED), (apiserver_parser, []),
                                                (nodeagent_parser, _AGENT_REQUIRED)],
                         ids=["store", "apiserver", "nodeagent"])
def test_log_level_is_gone_in_favour_of_v(parser: Callable[[], argparse.ArgumentParser], required: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    parser().parse_args(required)  # the rest is complete: only the flag below is refused
    with pytest.raises(SystemExit):
        parser().parse_args([*required, "--log-level", "debug"])
    assert "unrecognized arguments: --log-level" in capsys.readouterr().err
