"""`skiff lab up|down|status|list`: network-namespace labs (several hosts on this machine).

The lab itself is deploy/lab.py; it is imported only when a lab command runs, so the rest of
the CLI never needs root or the deploy tree.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skiff import kubeconfig


def register(sub: Any) -> None:
    parser = sub.add_parser("lab", help="run a multi-host cluster in network namespaces on this machine")
    lab_sub = parser.add_subparsers(dest="lab_command", metavar="ACTION")
    lab_sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--prefix", default="lab", help="names the lab's namespaces and links (<= 6 chars)")
        p.add_argument("--dir", type=Path, default=None, help="where labs keep their state")

    up = lab_sub.add_parser("up", help="create and start a lab")
    common(up)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--control-planes", type=int, default=1, help="control-plane hosts (store members spread)")
    up.add_argument("--lan", default="10.77.0.0/24", help="the lab LAN (the root netns gets its first address)")
    up.add_argument("--proxy-mode", choices=("iptables", "ipvs"), default="iptables")
    up.set_defaults(func=_up)
    down = lab_sub.add_parser("down", help="stop a lab and remove everything it created")
    common(down)
    down.set_defaults(func=_down)
    status = lab_sub.add_parser("status", help="show a lab's hosts and daemons")
    common(status)
    status.set_defaults(func=_status)


def _root(args: argparse.Namespace) -> Path:
    from deploy.lab import DEFAULT_ROOT

    return args.dir or DEFAULT_ROOT


def _up(args: argparse.Namespace) -> int:
    from deploy.lab import Lab, LabSpec

    lab = Lab(LabSpec(prefix=args.prefix, workers=args.workers, control_planes=args.control_planes,
                      lan_cidr=args.lan, proxy_mode=args.proxy_mode), _root(args))
    lab.up(progress=lambda line: print(f"[lab {args.prefix}] {line}", flush=True))
    print(f"api-servers: {','.join(lab.api_servers)}")
    print(f"use it:      export SKIFF_SERVER={','.join(lab.api_servers)}")
    context = f"skiff-{args.prefix}"
    path = kubeconfig.write_entry(lab.http_servers[0], name=context)
    print(f"kubectl:     context {context} in {path} ({lab.http_servers[0]}), now the current context")
    return 0


def _down(args: argparse.Namespace) -> int:
    from deploy.lab import Lab

    lab = Lab.load(args.prefix, _root(args))
    for note in lab.down(progress=print):
        print(f"cleaned: {note}")
    if kubeconfig.remove_entry(lab.http_servers[0], name=f"skiff-{args.prefix}"):
        print(f"cleaned: kubectl context skiff-{args.prefix} in {kubeconfig.kubeconfig_path()}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from deploy.lab import Lab

    print("\n".join(Lab.load(args.prefix, _root(args)).status()))
    return 0
