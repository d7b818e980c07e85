"""`skiff image build` and `skiff image import`: offline OCI images (see skiff.images)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from skiff import images
from skiff.errors import InvalidError


def _build(args: argparse.Namespace) -> int:
    if args.preset:
        spec = images.PRESETS[args.preset]()
        if args.name:
            spec.name = args.name
    else:
        if not args.name:
            raise InvalidError("--name is required (or use --preset pause|web)")
        if not args.from_dir and not args.busybox:
            raise InvalidError("give --from-dir DIR and/or --busybox: an image needs some content")
        spec = images.ImageSpec(name=args.name, busybox=args.busybox,
                                from_dir=Path(args.from_dir) if args.from_dir else None)
    if args.entrypoint is not None:
        spec.entrypoint = shlex.split(args.entrypoint)
    if args.cmd is not None:
        spec.cmd = shlex.split(args.cmd)
    for item in args.env or []:
        if "=" not in item:
            raise InvalidError(f"--env {item!r}: expected NAME=VALUE")
        spec.env.append(item)
    if args.workdir:
        spec.workdir = args.workdir
    try:
        out = images.write_oci_tar(spec, Path(args.output))
    except images.ImageError as exc:
        raise InvalidError(str(exc)) from exc
    print(f"{images.normalize_ref(spec.name)} -> {out}")
    if args.import_to:
        images.import_tars([out], endpoint=args.import_to)
        print(f"imported into {args.import_to}")
    return 0


def _import(args: argparse.Namespace) -> int:
    try:
        images.import_tars([Path(p) for p in args.tars], endpoint=args.address)
    except images.ImageError as exc:
        raise InvalidError(str(exc)) from exc
    for p in args.tars:
        print(f"imported {p}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("image", help="build and import offline container images")
    isub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND")
    isub.required = True
    b = isub.add_parser("build", help="build an OCI image tar from a directory and/or busybox-static")
    b.add_argument("--preset", choices=sorted(images.PRESETS), help="a built-in image (pause, web)")
    b.add_argument("--name", help="image reference, e.g. skiff/web:1.0")
    b.add_argument("--from-dir", help="directory whose content becomes the image's files")
    b.add_argument("--busybox", action="store_true", help="add /bin/busybox with its applets as symlinks")
    b.add_argument("--entrypoint", help='entrypoint as a shell-quoted string, e.g. "/bin/sh -c \'echo hi\'"')
    b.add_argument("--cmd", help="default arguments (cmd) as a shell-quoted string")
    b.add_argument("--env", action="append", help="NAME=VALUE (repeatable)")
    b.add_argument("--workdir", help="working directory")
    b.add_argument("-o", "--output", required=True, help="where to write the tar")
    b.add_argument("--import-to", metavar="ENDPOINT", help="also import into containerd at this socket")
    b.set_defaults(func=_build)
    i = isub.add_parser("import", help="import image tars into containerd (namespace k8s.io)")
    i.add_argument("tars", nargs="+")
    i.add_argument("--address", default="unix:///run/containerd/containerd.sock", help="containerd socket")
    i.set_defaults(func=_import)
