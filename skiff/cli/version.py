"""`skiff version [--client]`: client and api-server versions."""

from __future__ import annotations

import argparse
from typing import Any

from skiff import __version__
from skiff.cli import common
from skiff.client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="print the client and server versions")
    p.add_argument("--client", action="store_true", help="only the client version (no server needed)")
    common.add_connection_flags(p, namespaced=False)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    print(f"Client Version: v{__version__}")
    if args.client:
        return 0

    async def body(client: Client) -> int:
        v = await client.version()
        print(f"Server Version: v{v.version}")
        return 0

    return common.run(args, body)
