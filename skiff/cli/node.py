"""`skiff node setup`: write the containerd config a Skiff node needs, and its images.

Renders skiff.hostconfig for a node directory (root, state, socket, runc root, CNI dirs) and,
with --images, builds and imports the pause and web images once containerd runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skiff import hostconfig, images


def _setup(args: argparse.Namespace) -> int:
    paths = hostconfig.NodePaths(Path(args.state_dir))
    changed = hostconfig.write_node_config(paths, sandbox_image=args.sandbox_image)
    print(f"{'wrote' if changed else 'unchanged'} {paths.config}")
    print(f"start containerd with: containerd --config {paths.config}")
    print(f"node agent flags: --container-runtime-endpoint {paths.endpoint} --state-dir {paths.base}")
    if args.images:
        tars = images.build_presets(paths.base / "images")
        images.import_tars(tars, endpoint=paths.endpoint)
        print("imported " + ", ".join(str(t) for t in tars))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("node", help="node host configuration")
    nsub = p.add_subparsers(dest="node_command", metavar="SUBCOMMAND")
    nsub.required = True
    s = nsub.add_parser("setup", help="write the node's containerd config (and import images)")
    s.add_argument("--state-dir", default="/var/lib/skiff/node", help="the node's directory")
    s.add_argument("--sandbox-image", default=hostconfig.DEFAULT_SANDBOX_IMAGE)
    s.add_argument("--images", action="store_true", help="build and import Skiff's offline images (pause, "
                   "web:1.0, web:2.0; containerd must be running with this config)")
    s.set_defaults(func=_setup)
