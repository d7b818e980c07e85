"""deploy/vm's runner on real QEMU: a guest runs a command and reports back; a guest is always killed.

One boot (the first test) and one guest killed while booting: about the time of one boot.
"""

from __future__ import annotations

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
