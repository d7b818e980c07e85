"""`make vm-e2e`: the lab e2e flow on the VM lab (workers as QEMU guests), timed.

Runs tests/e2e/test_cluster.py with SKIFF_E2E_VM=1 (docs/vm.md: the seed manifests of
examples/web, the ClusterIP from every host and from a pod, pod-to-pod across hosts, NodePort,
scale, a rolling update; n1's proxy in IPVS mode, n2's in iptables mode, on the guests' own
kernels) and writes bench/results/vm-e2e.json: the whole run's duration, each test's outcome
and duration (from pytest's JUnit XML), and pytest's exit status. It is not part of `make
test`: the guests' Python is 10-20 times slower than the host's, so the run takes many minutes.

What must hold: the result records a failed run as failed (the exit status is pytest's), and
only this file's figures appear in README.md's table (bench/report.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench import meta

TESTS = "tests/e2e/test_cluster.py"


def parse_junit(xml_text: str) -> list[dict[str, Any]]:
    """Each test case's name, outcome and seconds from pytest's JUnit XML."""
    out = []
    for case in ET.fromstring(xml_text).iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
        out.append({"test": case.get("name", ""), "outcome": outcome, "seconds": round(float(case.get("time", 0)), 1)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vm_e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/vm-e2e.json")
    parser.add_argument("--budget", type=float, default=3600.0,
                        help="seconds before pytest is interrupted (it still tears the lab down)")
    args, pytest_args = parser.parse_known_args(argv)  # the rest goes to pytest (e.g. -x)
    run = meta.start("vm-e2e")
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "pytest", TESTS, "-v", "-p", "no:cacheprovider",
                                 f"--junitxml={junit}", *pytest_args], cwd=meta.ROOT,
                                env={**os.environ, "SKIFF_E2E_VM": "1"})
        try:
            proc.wait(timeout=args.budget)
        except subprocess.TimeoutExpired:
            # SIGINT, not a kill: pytest then runs the lab fixture's teardown, which stops the guests.
            print(f"vm-e2e: over the {args.budget:.0f}s budget; interrupting pytest", flush=True)
            proc.send_signal(signal.SIGINT)
            proc.wait()
        seconds = time.monotonic() - started
        tests = parse_junit(junit.read_text()) if junit.exists() else []
    results = {"seconds": round(seconds, 1), "exit_status": proc.returncode, "tests": tests,
               "passed": sum(t["outcome"] == "passed" for t in tests),
               "failed": sum(t["outcome"] in ("failed", "error") for t in tests)}
    print(f"vm-e2e: exit {proc.returncode} after {seconds:.0f}s: {results['passed']} passed, "
          f"{results['failed']} failed")
    if not args.no_write:
        print(f"wrote {run.write(results, meta.RESULTS_DIR / 'vm-e2e.json')}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
