"""Where benchmark results go, and what each result file records beside the figures.

Every benchmark writes one JSON file under bench/results/ (committed), shaped
`{"bench": NAME, "command": ARGV, "meta": META, "results": {...}}`. META says when and where
the figures were measured, so a reader can judge them: the date (UTC), the machine (CPUs,
memory, kernel, OS), the 1/5/15-minute load average before and after the run, and the versions
of what was measured (Skiff's git commit, Python, grpcio, protobuf, and, where installed,
containerd, runc, iptables and etcd). bench/report.py builds README.md's performance table
from these files alone, so no figure there lacks a file behind it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
# Tool -> the command that prints its version (first line kept).
TOOLS = {
    "containerd": ["containerd", "--version"],
    "runc": ["runc", "--version"],
    "iptables": ["iptables", "--version"],
    "etcd": ["etcd", "--version"],
}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 and out.stdout + out.stderr else ""


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _memory_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "memory_mib": _memory_mib(), "kernel": platform.release(), "os": _os_name(),
            "arch": platform.machine()}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {"python": platform.python_version()}
    for dist in ("grpcio", "protobuf"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    commit = _first_line(["git", "rev-parse", "--short=12", "HEAD"])
    if commit:
        dirty = _first_line(["git", "status", "--porcelain", "--untracked-files=no"])
        out["skiff"] = commit + ("+dirty" if dirty else "")
    for tool, argv in TOOLS.items():
        line = _first_line(argv)
        if line:
            out[tool] = line
    return out


@dataclass
class Run:
    """One benchmark run: `start()` it before measuring, `write(results)` at the end."""

    name: str
    started: float = field(default_factory=time.time)
    load_before: list[float] = field(default_factory=loadavg)

    def meta(self) -> dict[str, Any]:
        return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "duration_s": round(time.time() - self.started, 1), "machine": machine(),
                "load_before": self.load_before, "load_after": loadavg(), "versions": versions()}

    def write(self, results: dict[str, Any], path: Path | None = None) -> Path:
        path = path or RESULTS_DIR / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"bench": self.name, "command": ["python", "-m", f"bench.{self.name}", *sys.argv[1:]],
               "meta": self.meta(), "results": results}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return path


def start(name: str) -> Run:
    return Run(name)
