"""skiff.daemon: the duration flag type every daemon shares, and running until a signal."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest

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
