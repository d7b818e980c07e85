"""`skiff delete -f FILE | KIND NAME... | KIND/NAME... | KIND -l SEL | KIND --all`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from skiff import errors, kinds
from skiff.cli import common
from skiff.cli.apply import load, place
from skiff.client import Client

CASCADE = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan"}


def register(sub: Any) -> None:
    p = sub.add_parser("delete", help="delete objects",
                       description="Delete objects named on the command line, selected by label, or in manifests.")
    p.add_argument("targets", nargs="*", metavar="KIND NAME...|KIND/NAME...")
    p.add_argument("-f", "--filename", action="append", metavar="FILE|DIR|-", help="delete what these manifests name")
    p.add_argument("-R", "--recursive", action="store_true", help="descend into directories given with -f")
    p.add_argument("-l", "--selector", default="", help="delete every object of KIND matching this label selector")
    p.add_argument("--all", action="store_true", help="delete every object of KIND in the namespace")
    p.add_argument("--grace-period", type=int, default=None, metavar="SECONDS",
                   help="seconds pods get to stop (default: the pod's own)")
    p.add_argument("--force", action="store_true", help="remove at once (grace period 0)")
    p.add_argument("--cascade", default="background", choices=sorted(CASCADE),
                   help="dependents: deleted in the background, before the owner (foreground), or kept (orphan)")
    p.add_argument("--ignore-not-found", action="store_true", help="objects that do not exist are not errors")
    p.add_argument("--wait", action="store_true", help="wait until the objects are gone")
    p.add_argument("--timeout", type=float, default=60.0, help="how long --wait waits (default %(default)s s)")
    common.add_connection_flags(p)
    p.set_defaults(func=main)


async def resolve(client: Client, args: argparse.Namespace) -> list[tuple[kinds.Kind, str, str]]:
    """(kind, namespace, name) of everything to delete."""
    if args.filename:
        if args.targets:
            raise errors.InvalidError("give either -f or KIND NAME, not both")
        loaded = load(args)
        out = []
        for item in loaded:
            namespace = place(item.obj, item.kind, args)
            out.append((item.kind, namespace, str(common.meta(item.obj).name)))
        return out
    namespace = common.namespace(args)
    if args.selector or args.all:
        if len(args.targets) != 1 or "/" in args.targets[0]:
            raise errors.InvalidError("with -l or --all, give exactly one KIND")
        kind = common.kind_of(args.targets[0])
        listed = await client.list(kind.message, namespace=namespace if kind.namespaced else "",
                                   label_selector=args.selector)
        return [(kind, common.meta(o).namespace, common.meta(o).name) for o in listed.items]
    return [(kind, namespace if kind.namespaced else "", name) for kind, name in common.targets(args.targets)]


def main(args: argparse.Namespace) -> int:
    grace = 0 if args.force else args.grace_period

    async def body(client: Client) -> int:
        failed = 0
        deleted: list[tuple[kinds.Kind, str, str]] = []
        for kind, namespace, name in await resolve(client, args):
            label = f'{kind.qualified} "{name}"'
            try:
                await client.delete(kind.message, name, namespace, grace_period_seconds=grace,
                                    propagation_policy=CASCADE[args.cascade])
            except errors.NotFoundError as exc:
                if not args.ignore_not_found:
                    print(f"error: {exc}", file=sys.stderr)
                    failed += 1
                continue
            except errors.SkiffError as exc:
                print(f"error: {label}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"{label} deleted" + (" (forced)" if args.force else ""), flush=True)
            deleted.append((kind, namespace, name))
        if args.wait:
            await wait_gone(client, deleted, timeout=args.timeout)
        return 1 if failed else 0

    return common.run(args, body)


async def wait_gone(client: Client, objs: list[tuple[kinds.Kind, str, str]], *, timeout: float) -> None:
    end = time.monotonic() + timeout
    for kind, namespace, name in objs:
        while True:
            try:
                await client.get(kind.message, name, namespace)
            except errors.NotFoundError:
                break
            if time.monotonic() > end:
                raise errors.TimeoutError_(f'timed out waiting for {kind.qualified} "{name}" to be deleted')
            await asyncio.sleep(0.5)
