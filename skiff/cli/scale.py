"""`skiff scale deploy/NAME --replicas N` (also rs, sts): set spec.replicas, retrying on conflicts."""

from __future__ import annotations

import argparse
from typing import Any

from skiff import errors, kinds
from skiff.cli import common
from skiff.client import Client
from skiff.retry import retry_on_conflict

SCALABLE = ("deployments", "replicasets", "statefulsets")


def register(sub: Any) -> None:
    p = sub.add_parser("scale", help="set the number of replicas of a deployment, replica set or stateful set")
    p.add_argument("targets", nargs="+", metavar="deploy/NAME|KIND NAME")
    p.add_argument("--replicas", type=int, required=True, help="the new number of replicas")
    common.add_connection_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.replicas < 0:
        raise errors.InvalidError(f"--replicas must be 0 or more, got {args.replicas}")
    targets = common.targets(args.targets)
    for kind, _ in targets:
        if kind.resource not in SCALABLE:
            raise errors.InvalidError(f"{kind.resource} cannot be scaled "
                                      "(only deployments, replicasets and statefulsets)")
    namespace = common.namespace(args)

    async def body(client: Client) -> int:
        for kind, name in targets:

            async def scale(kind: kinds.Kind = kind, name: str = name) -> None:
                obj = await client.get(kind.message, name, namespace)
                obj.spec.replicas = args.replicas  # type: ignore[attr-defined]
                await client.update(obj)

            await retry_on_conflict(scale)
            print(f"{common.ref(kind, name)} scaled", flush=True)
        return 0

    return common.run(args, body)
