"""`skiff cluster-info`: where the control plane runs and what it stores into."""

from __future__ import annotations

import argparse
from typing import Any

from skiff import config
from skiff.cli import common, printers
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t


def register(sub: Any) -> None:
    p = sub.add_parser("cluster-info", help="show the control plane's endpoints")
    common.add_connection_flags(p, namespaced=False)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    server = config.resolve_server(args.server)

    async def body(client: Client) -> int:
        v = await client.version()
        nodes = (await client.list(t.Node)).items
        ready = sum(1 for n in nodes if printers.node_status(n).startswith("Ready"))
        print(f"Skiff control plane (v{v.version}) is running at {server}")
        print(f"Store:         {v.store}")
        print(f"Service CIDR:  {v.service_cidr}")
        print(f"Nodes:         {len(nodes)} ({ready} ready)")
        return 0

    return common.run(args, body)
