"""`skiff logs POD [-c CONTAINER] [-f] [--tail N] [--previous]`: through the api-server to the node agent."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from skiff.cli import common
from skiff.client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("logs", help="print a container's log")
    p.add_argument("pod", metavar="POD", help="pod name (or pod/NAME)")
    p.add_argument("-c", "--container", default="", help="container (needed when the pod has several)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")
    p.add_argument("-p", "--previous", action="store_true", help="the previous (crashed) instance's log")
    common.add_connection_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    pod = args.pod.removeprefix("pod/").removeprefix("pods/").removeprefix("po/")
    namespace = common.namespace(args)

    async def body(client: Client) -> int:
        out = sys.stdout.buffer
        async for chunk in client.logs(namespace, pod, container=args.container, follow=args.follow,
                                       tail_lines=args.tail, previous=args.previous):
            out.write(chunk)
            out.flush()
        return 0

    return common.run(args, body)
