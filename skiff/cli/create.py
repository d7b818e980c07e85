"""`skiff create -f FILE|DIR|-`: create objects; an existing one is an error (use apply)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from skiff import errors
from skiff.cli import common
from skiff.cli.apply import add_file_flags, load, place
from skiff.client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("create", help="create objects from manifests",
                       description="Create objects from YAML/JSON manifests; existing objects are errors.")
    add_file_flags(p)
    p.add_argument("--dry-run", action="store_true", help="validate and default on the server, store nothing")
    common.add_connection_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    loaded = load(args)
    for item in loaded:
        place(item.obj, item.kind, args)

    async def body(client: Client) -> int:
        failed = 0
        for item in loaded:
            try:
                created = await client.create(item.obj, dry_run=args.dry_run)
            except errors.SkiffError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed += 1
                continue
            suffix = " (dry run)" if args.dry_run else ""
            print(f"{common.ref(item.kind, common.meta(created).name)} created{suffix}", flush=True)
        return 1 if failed else 0

    return common.run(args, body)
