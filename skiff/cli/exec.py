"""`skiff exec POD [-c CONTAINER] -- COMMAND [ARG...]`: run a command in a container (no TTY)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from skiff import errors
from skiff.cli import common
from skiff.client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("exec", help="run a command in a container")
    p.add_argument("pod", metavar="POD", help="pod name (or pod/NAME)")
    p.add_argument("cmd", nargs="*", metavar="-- COMMAND [ARG...]")
    p.add_argument("-c", "--container", default="", help="container (needed when the pod has several)")
    p.add_argument("--timeout", type=int, default=0, metavar="SECONDS", help="kill the command after this long")
    common.add_connection_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    command = list(args.cmd) + list(getattr(args, "passthrough", []))
    if not command:
        raise errors.InvalidError("you must specify at least one command: skiff exec POD -- COMMAND [ARG...]")
    pod = args.pod.removeprefix("pod/").removeprefix("pods/").removeprefix("po/")
    namespace = common.namespace(args)

    async def body(client: Client) -> int:
        result = await client.exec(namespace, pod, command, container=args.container,
                                   timeout_seconds=args.timeout)
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.buffer.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.buffer.flush()
        if result.exit_code:
            print(f"command terminated with exit code {result.exit_code}", file=sys.stderr)
        return result.exit_code

    return common.run(args, body)
