"""Offline container images: build an OCI image layout tar in pure Python, import it into containerd.

No registry is reachable where Skiff is built and tested, so its images (the pause image, the
web image of examples/web/ and the tests) are made here, from a directory and/or Debian's
busybox-static. What must hold:

- busybox applets are SYMLINKS to /bin/busybox. Hard links in a layer come out of containerd's
  unpacking with the wrong mode (docs/containerd.md).
- the tar is reproducible: fixed mtimes, sorted entries, root ownership, so the same spec always
  gives the same digests and re-importing an image is a no-op.
- image names are normalized the way containerd's CRI looks them up (`skiff/web:1.0` is stored as
  `docker.io/skiff/web:1.0`), or the CRI would not find an imported image.
- every node imports the same images (`NODE_PRESETS`), whichever way it was provisioned: a pod
  of an image its node lacks waits in ImagePullBackOff forever (a Deployment rolled to web:2.0
  never got its new pod Ready on the VM lab's installed worker, which had pause and web:1.0 only).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = "/bin/busybox"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PAUSE_IMAGE = "docker.io/skiff/pause:1.0"
WEB_IMAGE = "docker.io/skiff/web:1.0"
WEB2_IMAGE = "docker.io/skiff/web:2.0"

# The pause process only has to hold the pod's namespaces; containerd stops it with SIGKILL.
_PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"
# The web page names its pod: the sandbox hostname is the pod name (or $POD_NAME when set), and
# the image version when the image sets WEB_VERSION (web:2.0 does; rolling-update tests tell them
# apart). sh stays PID 1 and traps TERM so a graceful stop takes milliseconds, not the grace
# period; with DRAIN_SECONDS it keeps serving that long first, as a well-behaved app drains while
# Service endpoints stop pointing at it.
_WEB_SCRIPT = (
    'mkdir -p /www; name="${POD_NAME:-$(hostname)}"; '
    'echo "hello from $name${WEB_VERSION:+ $WEB_VERSION}" > /www/index.html; echo "$name" > /www/name; '
    "trap 'sleep \"${DRAIN_SECONDS:-0}\"; exit 0' TERM INT; "
    'httpd -f -p "${PORT:-80}" -h /www & wait $!'
)


class ImageError(Exception):
    pass


def normalize_ref(ref: str) -> str:
    """`web` -> `docker.io/library/web:latest`, `skiff/web:1.0` -> `docker.io/skiff/web:1.0`."""
    if not ref or any(c.isspace() for c in ref):
        raise ImageError(f"invalid image reference {ref!r}")
    name, digest = [*ref.split("@", 1), ""][:2]
    last = name.rsplit("/", 1)[-1]
    tag = ""
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) == 1 or not ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if len(parts) == 1:
            parts = ["library", *parts]
        parts = ["docker.io", *parts]
    out = "/".join(parts)
    if digest:
        return f"{out}@{digest}"
    return f"{out}:{tag or 'latest'}"


def go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


@dataclass
class ImageSpec:
    """What goes into an image. `files` maps an absolute path in the image to (content, mode)."""

    name: str
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=lambda: [DEFAULT_PATH])
    workdir: str = "/"
    busybox: bool = False
    from_dir: Path | None = None
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)


def pause_spec() -> ImageSpec:
    return ImageSpec(name=PAUSE_IMAGE, entrypoint=["/bin/sh", "-c", _PAUSE_SCRIPT], busybox=True)


def web_spec() -> ImageSpec:
    return ImageSpec(name=WEB_IMAGE, entrypoint=["/bin/sh", "-c", _WEB_SCRIPT], busybox=True, workdir="/www",
                     exposed_ports=["80/tcp"])


def web2_spec() -> ImageSpec:
    spec = web_spec()
    spec.name = WEB2_IMAGE
    spec.env = [*spec.env, "WEB_VERSION=v2"]
    return spec


PRESETS = {"pause": pause_spec, "web": web_spec, "web2": web2_spec}
# Every image a Skiff node imports, however it is provisioned (a lab host, a VM lab guest,
# `deploy.install worker`, `skiff node setup`): no registry serves them, so an image left out
# here can never start on a node provisioned that way. web:2.0 is the rolling updates' target.
NODE_PRESETS: tuple[str, ...] = tuple(PRESETS)


def busybox_applets(busybox: str = BUSYBOX) -> list[str]:
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=False)
    if out.returncode == 0 and out.stdout.strip():
        return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    return sorted({f"bin/{line.strip()}" for line in out.stdout.splitlines() if line.strip()})


class _LayerWriter:
    """Collects entries and writes them sorted, with parents first and fixed metadata."""

    def __init__(self) -> None:
        self.entries: dict[str, tarfile.TarInfo] = {}
        self.data: dict[str, bytes] = {}

    def _info(self, path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mode = mode
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def dir(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        if not path or path in self.entries:
            return
        self.dir(os.path.dirname(path))
        self.entries[path] = self._info(path, tarfile.DIRTYPE, mode)

    def file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(content)
        self.entries[path] = info
        self.data[path] = content

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[path] = info

    def bytes(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                info = self.entries[path]
                data = self.data.get(path)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def build_layer(spec: ImageSpec, *, busybox: str = BUSYBOX) -> bytes:
    """The image's single layer as an uncompressed tar."""
    layer = _LayerWriter()
    for d in ("bin", "etc", "proc", "sys", "dev", "root", "var", "usr/bin", "usr/sbin", "sbin"):
        layer.dir(d)
    layer.dir("tmp", 0o1777)
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    if spec.busybox:
        if not os.path.exists(busybox):
            raise ImageError(f"{busybox} not found: install busybox-static")
        layer.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
        for applet in busybox_applets(busybox):
            applet = applet.strip("/")
            if applet == "bin/busybox":
                continue
            layer.symlink(applet, "busybox" if os.path.dirname(applet) == "bin" else "/bin/busybox")
    if spec.from_dir is not None:
        root = Path(spec.from_dir)
        if not root.is_dir():
            raise ImageError(f"--from-dir {root}: not a directory")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir != ".":
                layer.dir(rel_dir, os.stat(dirpath).st_mode & 0o7777)
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if os.path.islink(full):
                    layer.symlink(rel, os.readlink(full))
                elif os.path.isfile(full):
                    layer.file(rel, Path(full).read_bytes(), os.stat(full).st_mode & 0o7777)
    for path, (content, mode) in sorted(spec.files.items()):
        layer.file(path, content, mode)
    return layer.bytes()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_oci_layout(spec: ImageSpec, *, busybox: str = BUSYBOX) -> dict[str, bytes]:
    """All files of an OCI image layout (path -> content): oci-layout, index.json, blobs."""
    name = normalize_ref(spec.name)
    layer = build_layer(spec, busybox=busybox)
    arch = go_arch()
    config: dict[str, object] = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": list(spec.env),
            "Entrypoint": list(spec.entrypoint) or None,
            "Cmd": list(spec.cmd) or None,
            "WorkingDir": spec.workdir,
            "ExposedPorts": {p: {} for p in spec.exposed_ports} or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created_by": "skiff image build", "created": "1970-01-01T00:00:00Z"}],
        "created": "1970-01-01T00:00:00Z",
    }
    config_bytes = _json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": _digest(layer), "size": len(layer)}],
    }
    manifest_bytes = _json(manifest)
    tag = name.rsplit(":", 1)[-1] if "@" not in name else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": _digest(manifest_bytes),
            "size": len(manifest_bytes),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    }
    files = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}), "index.json": _json(index)}
    for blob in (layer, config_bytes, manifest_bytes):
        files["blobs/sha256/" + _digest(blob).split(":", 1)[1]] = blob
    return files


def write_oci_tar(spec: ImageSpec, out: Path, *, busybox: str = BUSYBOX) -> Path:
    """Write the image as an OCI layout tar (what `ctr images import` reads)."""
    files = build_oci_layout(spec, busybox=busybox)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(files[path]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[path]))
    tmp.replace(out)
    return out


def ctr_address(endpoint: str) -> str:
    """`unix:///run/x.sock` -> `/run/x.sock` (ctr takes a path)."""
    return endpoint[len("unix://"):] if endpoint.startswith("unix://") else endpoint


def import_tars(tars: Iterable[Path], *, endpoint: str, namespace: str = "k8s.io", timeout: float = 120.0) -> None:
    """Import image tars into containerd's `namespace` (CRI uses k8s.io) with `ctr images import`."""
    ctr = shutil.which("ctr")
    if ctr is None:
        raise ImageError("ctr not found: install containerd")
    for tar in tars:
        if not Path(tar).is_file():
            raise ImageError(f"image tar {tar} not found")
        proc = subprocess.run([ctr, "-a", ctr_address(endpoint), "-n", namespace, "images", "import", str(tar)],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise ImageError(f"ctr images import {tar} failed: {(proc.stderr or proc.stdout).strip()}")


def build_presets(out_dir: Path, names: Sequence[str] = NODE_PRESETS) -> list[Path]:
    """Build the built-in images into `out_dir` (reused when already there with the same content)."""
    paths = []
    for name in names:
        if name not in PRESETS:
            raise ImageError(f"unknown preset {name!r}: choose from {', '.join(sorted(PRESETS))}")
        paths.append(write_oci_tar(PRESETS[name](), out_dir / f"{name}.tar"))
    return paths
