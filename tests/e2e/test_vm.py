"""deploy/vm's runner on real QEMU: a guest runs a command and reports back; a guest is always killed;
a guest on a lab namespace's bridge talks to that namespace.

Two boots and one guest killed while booting: about 20 s.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy.vm import guest, image
from tests.support.prereq import require, require_binaries, require_root

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def prerequisites() -> None:
    require_root()
    require_binaries("qemu-system-x86_64", "timeout", "busybox")
    try:
        image.find_kernel()
    except FileNotFoundError as exc:
        require(False, str(exc))


def qemu_processes(run_dir: Path) -> list[int]:
    """PIDs of processes whose command line names `run_dir` (its QEMU, or its timeout wrapper)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(run_dir).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_guest_runs_the_command_in_its_own_kernel_and_reports_back(tmp_path: Path) -> None:
    script = ('uname -r; test "$(hostname)" = probe; echo written > "$SKIFF_VM_SHARE/out"; '
              'touch /work-is-read-only 2>/dev/null && echo WRITABLE; ip -o link | grep -c ": eth" ; exit 3')
    result = guest.run(["sh", "-c", script], name="probe", timeout=300, run_dir=tmp_path)
    assert result.status == 3, result.explain()
    lines = result.output.split()
    # Debian's kernel, not the host's; the host root is read-only; no network device at all.
    assert lines == [image.find_kernel()[0], "0"], result.explain()
    assert (result.share / "out").read_text() == "written\n"
    assert qemu_processes(tmp_path) == []


def test_a_guest_past_its_deadline_is_killed_and_leaves_nothing(tmp_path: Path) -> None:
    vm = guest.Guest(guest.GuestSpec("hang"), tmp_path)
    vm.start(["sleep", "1000"], timeout=300)
    assert vm.proc is not None
    result = vm.wait(timeout=3)  # the caller's deadline, long before the guest could finish
    assert result.status is None
    assert qemu_processes(tmp_path) == []
    assert vm.proc is None


def test_a_guest_on_a_tap_link_reaches_the_lab_namespace_and_nothing_is_left(tmp_path: Path) -> None:
    """A busybox httpd in a fresh namespace (10.123.5.1 on its bridge) answers the guest (10.123.5.2)."""
    ns = f"vmt{os.getpid() % 100:02d}{os.urandom(1).hex()}"
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("lab namespace\n")
    server = None
    try:
        for argv in (["ip", "netns", "add", ns], ["ip", "-n", ns, "link", "set", "lo", "up"],
                     ["ip", "-n", ns, "link", "add", "br0", "type", "bridge"],
                     ["ip", "-n", ns, "addr", "add", "10.123.5.1/24", "dev", "br0"],
                     ["ip", "-n", ns, "link", "set", "br0", "up"]):
            subprocess.run(argv, check=True, capture_output=True)
        server = subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", "10.123.5.1:8080",
                                   "-h", str(www)], stdin=subprocess.DEVNULL)
        script = ("ip addr add 10.123.5.2/24 dev eth0 && ip link set eth0 up && for i in 1 2 3 4 5; do "
                  "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 10.123.5.1 8080 | busybox tail -n 1 "
                  "| grep . && exit 0; sleep 1; done; exit 1")
        spec = guest.GuestSpec("tap", links=(guest.TapLink(ns, "br0", "vmtap0", "52:54:00:12:34:56"),))
        result = guest.run(["sh", "-c", script], spec=spec, timeout=300, run_dir=tmp_path / "run")
        assert result.status == 0, result.explain()
        assert result.output.strip().splitlines()[-1] == "lab namespace"
        links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert "vmtap0" not in links  # the guest's tap is gone with it
        assert qemu_processes(tmp_path / "run") == []
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
