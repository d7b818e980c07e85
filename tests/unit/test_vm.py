"""deploy/vm's pure parts: module order, the initramfs archive, the kernel extraction, QEMU's argv."""

from __future__ import annotations

import itertools
import lzma
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from deploy.vm import guest, image
from tests.support.prereq import require

DEPS = {
    "kernel/fs/9p/9p.ko": ["kernel/net/9p/9pnet.ko", "kernel/fs/fscache/fscache.ko", "kernel/fs/netfs/netfs.ko"],
    "kernel/fs/fscache/fscache.ko": ["kernel/fs/netfs/netfs.ko"],
    "kernel/fs/netfs/netfs.ko": [],
    "kernel/net/9p/9pnet.ko": [],
    "kernel/net/9p/9pnet_virtio.ko": ["kernel/net/9p/9pnet.ko", "kernel/drivers/virtio/virtio.ko",
                                      "kernel/drivers/virtio/virtio_ring.ko"],
    "kernel/drivers/virtio/virtio.ko": ["kernel/drivers/virtio/virtio_ring.ko"],
    "kernel/drivers/virtio/virtio_ring.ko": [],
    "kernel/drivers/net/net-failover.ko.xz": [],
}


@pytest.mark.parametrize("wanted,expected", [
    (["9p"], ["kernel/fs/netfs/netfs.ko", "kernel/fs/fscache/fscache.ko", "kernel/net/9p/9pnet.ko",
              "kernel/fs/9p/9p.ko"]),
    (["9pnet_virtio", "9p"], ["kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko",
                              "kernel/net/9p/9pnet.ko", "kernel/net/9p/9pnet_virtio.ko", "kernel/fs/netfs/netfs.ko",
                              "kernel/fs/fscache/fscache.ko", "kernel/fs/9p/9p.ko"]),
    (["virtio_pci"], []),  # not in modules.dep: built in
    (["net_failover"], ["kernel/drivers/net/net-failover.ko.xz"]),  # - and _ alike, compressed name
], ids=["deps-first", "shared-deps-once", "built-in-skipped", "dash-underscore"])
def test_load_order_puts_every_dependency_first(wanted: list[str], expected: list[str]) -> None:
    order = image.load_order(DEPS, wanted)
    assert order == expected
    for i, path in enumerate(order):
        assert set(DEPS[path]) <= set(order[:i])


def test_load_order_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        image.load_order({"a.ko": ["b.ko"], "b.ko": ["a.ko"]}, ["a"])


def test_parse_modules_dep_reads_paths_and_dependencies() -> None:
    text = "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko:\n\n"
    assert image.parse_modules_dep(text) == {"kernel/a.ko": ["kernel/b.ko", "kernel/c.ko"], "kernel/b.ko": []}


ELF = b"\x7fELF" + bytes(range(256)) * 8


@pytest.mark.parametrize("bzimage", [
    b"MZ setup code" + lzma.compress(ELF, format=lzma.FORMAT_XZ) + b"\0" * 64,
    b"\xfd7zXZ\x00 not a stream" + lzma.compress(ELF, format=lzma.FORMAT_XZ),
    lzma.compress(b"not an ELF", format=lzma.FORMAT_XZ) + lzma.compress(ELF, format=lzma.FORMAT_XZ),
], ids=["stream-between-setup-and-padding", "false-magic-first", "non-elf-stream-first"])
def test_decompress_kernel_finds_the_elf_stream(bzimage: bytes) -> None:
    assert image.decompress_kernel(bzimage) == ELF


def test_decompress_kernel_refuses_an_image_without_one() -> None:
    with pytest.raises(ValueError, match="no xz-compressed ELF"):
        image.decompress_kernel(b"MZ" + lzma.compress(b"text", format=lzma.FORMAT_XZ))


def test_cpio_archive_reads_back_with_busybox_cpio(tmp_path: Path) -> None:
    """busybox's own cpio reader (not ours) lists what was written: names, types, sizes, targets."""
    require(shutil.which("busybox") is not None, "needs busybox (make setup installs it)")
    entries = [image.CpioEntry("bin", stat.S_IFDIR | 0o755),
               image.CpioEntry("bin/tool", stat.S_IFREG | 0o755, b"x" * 5),
               image.CpioEntry("bin/link", stat.S_IFLNK | 0o777, b"tool"),
               image.CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
               image.CpioEntry("init", stat.S_IFREG | 0o644, b"abc")]
    archive = image.cpio_newc(entries)
    assert len(archive) % 4 == 0
    out = subprocess.run(["busybox", "cpio", "-t", "-v"], input=archive, capture_output=True, check=True).stdout
    listing = [line.split() for line in out.decode().splitlines()]
    assert [(row[0], row[-1] if row[-2] != "->" else f"{row[-3]}->{row[-1]}") for row in listing] == [
        ("drwxr-xr-x", "bin"), ("-rwxr-xr-x", "bin/tool"), ("lrwxrwxrwx", "bin/link->tool"),
        ("crw-------", "dev/console"), ("-rw-r--r--", "init")]
    assert listing[1][2] == "5" and listing[4][2] == "3"


def test_stage_one_is_valid_shell_and_loads_modules_in_order() -> None:
    text = image.render_init(["lib/modules/a.ko", "lib/modules/b.ko"])
    assert text.index("insmod /lib/modules/a.ko") < text.index("insmod /lib/modules/b.ko") < text.index("mount -t 9p")
    subprocess.run(["sh", "-n"], input=text.encode(), check=True)


def test_stage_two_is_valid_bash() -> None:
    """(shellcheck runs on it with every script under deploy/, in test_vagrant.py.)"""
    subprocess.run(["bash", "-n", str(guest.GUEST_INIT)], check=True)


IMG = image.Image("6.1.0-test", Path("/b/vmlinux"), Path("/b/initrd.gz"))


@pytest.mark.parametrize("spec,netdevs", [
    (guest.GuestSpec("a"), []),
    (guest.GuestSpec("b", links=(guest.Link("listen", 40001, "52:54:00:00:00:01"),
                                 guest.Link("connect", 40002, "52:54:00:00:00:02"))),
     ["socket,id=n0,listen=127.0.0.1:40001", "socket,id=n1,connect=127.0.0.1:40002"]),
], ids=["no-links", "two-socket-links"])
def test_qemu_argv_gives_no_way_out_of_the_machine(spec: guest.GuestSpec, netdevs: list[str]) -> None:
    argv = guest.qemu_argv(spec, IMG, Path("/r/share"), console=Path("/r/console.log"), pidfile=Path("/r/qemu.pid"))
    pairs = list(itertools.pairwise(argv))
    assert ("-nic", "none") in pairs and ("-smp", "1") in pairs and ("-accel", "tcg") in pairs
    assert [v for k, v in pairs if k == "-netdev"] == netdevs
    assert [v for k, v in pairs if k == "-device" and v.startswith("virtio-net")] == [
        f"virtio-net-pci,netdev=n{i},mac={link.mac}" for i, link in enumerate(spec.links)]
    root, repo, share = [v for k, v in pairs if k == "-fsdev"]
    assert "path=/," in root and "readonly=on" in root
    assert f"path={image.ROOT}," in repo and "readonly=on" in repo  # again, in case /tmp's tmpfs hides it
    assert "path=/r/share," in share and "readonly" not in share
    append = next(v for k, v in pairs if k == "-append")
    assert f"skiff.repo={image.ROOT}" in append.split()


def test_a_tap_link_runs_qemu_inside_the_lab_namespace() -> None:
    spec = guest.GuestSpec("w", links=(guest.TapLink("lab-lan", "br0", "lab-t1", "52:54:00:00:00:03"),))
    argv = guest.qemu_argv(spec, IMG, Path("/r/share"), console=Path("/r/console.log"), pidfile=Path("/r/qemu.pid"))
    assert argv[:3] == ["nsenter", "--net=/run/netns/lab-lan", "--"] and argv[3] == guest.QEMU
    pairs = list(itertools.pairwise(argv))
    assert [v for k, v in pairs if k == "-netdev"] == ["tap,id=n0,ifname=lab-t1,script=no,downscript=no"]


@pytest.mark.parametrize("links", [
    (guest.TapLink("a", "br0", "t1", "52:54:00:00:00:01"), guest.TapLink("b", "br0", "t2", "52:54:00:00:00:02")),
], ids=["taps-in-two-namespaces"])
def test_a_guest_refuses_taps_in_two_namespaces(links: tuple[guest.TapLink, ...]) -> None:
    with pytest.raises(ValueError, match="one namespace"):
        guest.GuestSpec("w", links=links)


@pytest.mark.parametrize("netns,tap", [("", "t1"), ("../x", "t1"), ("lab-lan", "a-tap-name-too-long")],
                         ids=["root-namespace", "a-path", "tap-name-too-long"])
def test_a_tap_link_refuses_the_root_namespace_and_bad_names(netns: str, tap: str) -> None:
    with pytest.raises(ValueError):
        guest.TapLink(netns, "br0", tap, "52:54:00:00:00:01")


@pytest.mark.parametrize("mode,port", [("bridge", 40000), ("listen", 80), ("connect", 70000)],
                         ids=["unknown-mode", "privileged-port", "port-out-of-range"])
def test_a_link_refuses_what_is_not_a_loopback_socket(mode: str, port: int) -> None:
    with pytest.raises(ValueError):
        guest.Link(mode, port, "52:54:00:00:00:01")


def test_command_script_runs_the_argv_in_cwd_with_env(tmp_path: Path) -> None:
    script = guest.command_script(["sh", "-c", 'echo "$X"; pwd; exit 7'], cwd=tmp_path, env={"X": "a b'c $HOME"})
    (tmp_path / "c.sh").write_text(script)
    out = subprocess.run(["sh", str(tmp_path / "c.sh")], capture_output=True, text=True, check=False)
    assert (out.returncode, out.stdout.splitlines()) == (7, ["a b'c $HOME", str(tmp_path)])


@pytest.mark.parametrize(("systemd", "present", "absent"), [
    (False, ["rdinit=/init", f"skiff.init={guest.GUEST_INIT}"], ["skiff.systemd=1", "net.ifnames=0"]),
    (True, ["rdinit=/init", "skiff.systemd=1", f"systemd.unit={guest.SYSTEMD_TARGET}", "net.ifnames=0",
            "systemd.mask=systemd-timesyncd.service"], []),
], ids=["direct", "systemd"])
def test_kernel_cmdline_boots_systemd_only_when_asked(systemd: bool, present: list[str], absent: list[str]) -> None:
    spec = guest.GuestSpec("g", systemd=systemd)
    argv = guest.qemu_argv(spec, IMG, Path("/r/share"), console=Path("/r/c"), pidfile=Path("/r/p"))
    words = argv[argv.index("-append") + 1].split()
    assert set(present) <= set(words) and not set(absent) & set(words)
    if systemd:  # what is masked is the host's sysinit noise, never what a node needs
        masked = {w.removeprefix("systemd.mask=") for w in words if w.startswith("systemd.mask=")}
        assert masked == set(guest.SYSTEMD_MASKED)
        assert not masked & {"systemd-journald.service", "systemd-modules-load.service", "systemd-sysctl.service",
                             "systemd-tmpfiles-setup.service"}


def _unit(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize(("name", "want"), [
    (guest.SYSTEMD_SERVICE, {"ExecStart": [f"/bin/bash {guest.GUEST_INIT} run"], "Type": ["simple"]}),
    (guest.SYSTEMD_TARGET, {"Requires": [guest.SYSTEMD_SERVICE], "AllowIsolate": ["yes"]}),
], ids=["service-runs-stage-2-run", "target-asks-only-for-the-service"])
def test_systemd_units_boot_into_the_guest_command_only(name: str, want: dict[str, list[str]]) -> None:
    units = guest.systemd_units()
    assert set(units) == {guest.SYSTEMD_SERVICE, guest.SYSTEMD_TARGET}
    unit = _unit(units[name])
    assert {k: unit.get(k) for k in want} == want
    # Never the host's multi-user.target (its enabled services: etcd, postgresql, containerd, ...),
    # and the default dependencies kept: the command starts after sysinit and basic.target.
    assert "multi-user.target" not in units[name] and "DefaultDependencies" not in unit
