"""What a guest boots: the host's Debian kernel, decompressed, and a small initramfs of our own.

Inputs are Debian packages installed by `make setup`: `linux-image-amd64` (the kernel in /boot
and its modules in /lib/modules; unlike this machine's own kernel it has IP_VS) and
`busybox-static`. Nothing is downloaded.

What must hold:
- The kernel is handed to QEMU decompressed (`vmlinux`, the xz stream inside Debian's bzImage):
  QEMU boots an ELF kernel directly and the guest skips decompressing itself, which is the
  slowest part of booting under emulation (about 13 s against 6 s).
- The initramfs holds only busybox, the modules needed to reach the host's root over virtio 9p
  (in dependency order), `/dev/console`, and `/init` (stage 1, below). Everything else comes
  from the host's filesystem, read-only, so the guest runs the same Python, venv and tools.
- Stage 1 mounts the host root read-only, tmpfs on /run, /tmp and /var/tmp, the writable
  share at SHARE_DIR, and switch_roots into stage 2 (`deploy/vm/guest-init.sh`, named by
  `skiff.init=` on the kernel command line). Any failure powers the guest off at once, so a
  broken image never waits for the caller's timeout.
- Building is idempotent and safe to run from several processes: outputs are written under
  a lock and renamed into place; a stamp (kernel version + content hash) decides a rebuild.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import lzma
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "build" / "vm"
BUSYBOX = Path("/bin/busybox")
SHARE_DIR = "/run/skiff-vm/share"
SHARE_TAG = "share"
ROOT_TAG = "hostroot"
# The repository, shared again at its own path: a checkout under /tmp, /var/tmp or /run would
# otherwise be hidden by the guest's tmpfs there (CI may clone anywhere).
REPO_TAG = "repo"
# The modules that reach the host's root (virtio PCI, 9p over virtio) and the guest links
# (virtio-net); everything else is loaded after the switch from the host's /lib/modules.
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "virtio_net")
XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclass(frozen=True)
class Image:
    version: str  # kernel release, e.g. 6.1.0-57-amd64
    vmlinux: Path
    initrd: Path


# ---------------------------------------------------------------------------------------- pure


def module_name(path: str) -> str:
    """`kernel/net/9p/9pnet_virtio.ko` -> `9pnet_virtio` (the kernel treats - and _ alike)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> {module path: [paths it depends on]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[path.strip()] = rest.split()
    return deps


def load_order(deps: Mapping[str, Sequence[str]], wanted: Iterable[str]) -> list[str]:
    """The module paths to insmod for `wanted` (names), every dependency before its user.

    A wanted module missing from modules.dep is built into the kernel (or absent) and is
    skipped; the result is deterministic for the same inputs.
    """
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(path: str) -> None:
        if path in order:
            return
        if path in visiting:
            raise ValueError(f"module dependency cycle at {path}")
        visiting.add(path)
        for dep in sorted(deps.get(path, ())):
            visit(dep)
        visiting.discard(path)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is not None:
            visit(path)
    return order


def decompress_kernel(bzimage: bytes) -> bytes:
    """The ELF kernel inside an xz-compressed bzImage (Debian's vmlinuz)."""
    start = bzimage.find(XZ_MAGIC)
    while start >= 0:
        try:
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
        except lzma.LZMAError:
            out = b""
        if out.startswith(b"\x7fELF"):
            return out
        start = bzimage.find(XZ_MAGIC, start + 1)
    raise ValueError("no xz-compressed ELF kernel found in the bzImage")


@dataclass(frozen=True)
class CpioEntry:
    name: str  # without a leading /
    mode: int  # file type and permission bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""  # file contents, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def cpio_newc(entries: Sequence[CpioEntry]) -> bytes:
    """An uncompressed cpio archive in the "newc" format the kernel unpacks as an initramfs."""
    out = bytearray()
    for ino, e in enumerate([*entries, CpioEntry("TRAILER!!!", 0)], start=1):
        name = e.name.encode() + b"\0"
        fields = (ino, e.mode, 0, 0, 2 if stat.S_ISDIR(e.mode) else 1, 0, len(e.data),
                  0, 0, e.rdev[0], e.rdev[1], len(name), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += header + name + _pad4(len(header) + len(name))
        out += e.data + _pad4(len(e.data))
    return bytes(out)


def render_init(modules: Sequence[str]) -> str:
    """Stage 1, `/init` of the initramfs (busybox sh); `modules` are initramfs paths in load order."""
    insmods = "\n".join(f"insmod /{m} || fail 'insmod {m}'" for m in modules)
    return f"""#!/bin/busybox sh
# Skiff guest, stage 1: reach the host's root over virtio 9p and hand over to stage 2.
/bin/busybox --install -s /bin
export PATH=/bin
fail() {{ echo "skiff-vm: stage 1: $*"; echo o > /proc/sysrq-trigger; sleep 30; }}
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{insmods}
stage2=$(sed -n 's/.*skiff\\.init=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
[ -n "$stage2" ] || fail "no skiff.init= on the kernel command line"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose {ROOT_TAG} /newroot \\
    || fail "cannot mount the host root"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp
repo=$(sed -n 's/.*skiff\\.repo=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$repo" ]; then
    mkdir -p "/newroot$repo" 2>/dev/null  # a directory in a tmpfs; elsewhere it is there already
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose {REPO_TAG} "/newroot$repo" \\
        || fail "cannot mount the repository at $repo"
fi
mkdir -p /newroot{SHARE_DIR}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 {SHARE_TAG} /newroot{SHARE_DIR} \\
    || fail "cannot mount the result share"
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash "$stage2"
"""


def initramfs_entries(busybox: bytes, modules: Mapping[str, bytes]) -> list[CpioEntry]:
    """The initramfs: busybox, `modules` ({initramfs path: .ko contents}, in load order), /init."""
    dirs = ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"]
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755) for d in dirs]
    entries.append(CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox))
    entries.append(CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    entries += [CpioEntry(path, stat.S_IFREG | 0o644, data) for path, data in modules.items()]
    entries.append(CpioEntry("init", stat.S_IFREG | 0o755, render_init(list(modules)).encode()))
    return entries


# ------------------------------------------------------------------------------------ adapters


def find_kernel(boot: Path = Path("/boot"), modules_root: Path = Path("/lib/modules")) -> tuple[str, Path]:
    """(release, vmlinuz) of the newest kernel in `boot` whose modules are installed."""
    found = sorted((p.name.removeprefix("vmlinuz-"), p) for p in boot.glob("vmlinuz-*")
                   if (modules_root / p.name.removeprefix("vmlinuz-") / "modules.dep").exists())
    if not found:
        raise FileNotFoundError(f"no kernel with modules in {boot} (make setup installs linux-image-amd64)")
    return found[-1]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build(out_dir: Path = BUILD_DIR, *, boot: Path = Path("/boot"),
          modules_root: Path = Path("/lib/modules"), busybox: Path = BUSYBOX) -> Image:
    """Build (or reuse) `vmlinux` and `initrd.gz` in `out_dir`."""
    version, vmlinuz = find_kernel(boot, modules_root)
    mod_dir = modules_root / version
    order = load_order(parse_modules_dep((mod_dir / "modules.dep").read_text()), MODULES)
    init_text = render_init([f"lib/modules/{module_name(p)}.ko" for p in order])
    stamp_text = f"{version}\n{hashlib.sha256(init_text.encode() + busybox.read_bytes()).hexdigest()}\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    image = Image(version, out_dir / "vmlinux", out_dir / "initrd.gz")
    stamp = out_dir / "stamp"
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == stamp_text and image.vmlinux.exists() and image.initrd.exists():
            return image
        modules: dict[str, bytes] = {}
        for p in order:
            data = (mod_dir / p).read_bytes()
            if p.endswith(".xz"):
                data = lzma.decompress(data)  # busybox insmod takes plain .ko files
            modules[f"lib/modules/{module_name(p)}.ko"] = data
        cpio = cpio_newc(initramfs_entries(busybox.read_bytes(), modules))
        _write_atomic(image.initrd, gzip.compress(cpio, compresslevel=6, mtime=0))
        _write_atomic(image.vmlinux, decompress_kernel(vmlinuz.read_bytes()))
        _write_atomic(stamp, stamp_text.encode())
    return image
