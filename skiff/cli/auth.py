"""`skiff auth can-i VERB RESOURCE[/NAME] | NONRESOURCEURL [-n NS] [-A] [--subresource S] [--as USER]`:
asks the api-server's authorizer (the AccessReview call), as `kubectl auth can-i` does.

What must hold: prints `yes` and exits 0 when allowed, prints `no` and exits 1 when not (as
kubectl); the question is the same one the api-server asks for that request (resource and group
from the kind the user names, namespace from -n or the config, cluster scope for a cluster-scoped
kind or -A).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from skiff import kinds
from skiff.cli import common
from skiff.client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("auth", help="inspect authorization")
    verbs = p.add_subparsers(dest="auth_command", required=True, metavar="COMMAND")
    c = verbs.add_parser("can-i", help="may I (or the user given with --as) do this?")
    c.add_argument("verb", help="get, list, watch, create, update, patch, delete, impersonate, ... or *")
    c.add_argument("resource", help="RESOURCE, RESOURCE/NAME (pods, deploy/web) or a path (/healthz)")
    c.add_argument("--subresource", default="", help="a subresource (log, status, exec, ...)")
    c.add_argument("-q", "--quiet", action="store_true", help="no output: only the exit status")
    common.add_connection_flags(c, all_namespaces=True)
    c.set_defaults(func=can_i)


def question(args: argparse.Namespace, namespace: str) -> dict[str, str]:
    """The AccessReview arguments for the command line (pure but for the kind table)."""
    if args.resource.startswith("/"):
        return {"verb": args.verb, "path": args.resource}
    word, _, name = args.resource.partition("/")
    kind = kinds.by_alias(word)
    if kind is None:
        resource, _, group = word.partition(".")
        if word != "*":
            print(f"Warning: the server doesn't have a resource type '{word}'", file=sys.stderr)
        namespaced = True
    else:
        resource, group, namespaced = kind.resource, kind.group, kind.namespaced
    return {"verb": args.verb, "resource": resource, "group": group, "subresource": args.subresource,
            "namespace": namespace if namespaced else "", "name": name}


def can_i(args: argparse.Namespace) -> int:
    namespace = "" if args.all_namespaces else common.namespace(args)
    asked = question(args, namespace)

    async def body(client: Client) -> int:
        answer = await client.access_review(**asked)
        if not args.quiet:
            print("yes" if answer.allowed else "no")
        return 0 if answer.allowed else 1

    return common.run(args, body)
