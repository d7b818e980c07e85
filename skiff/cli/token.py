"""`skiff token create [--ttl 24h] | list | delete ID`: bootstrap tokens for joining nodes
(kubeadm token's verbs). A token is a Secret in kube-system (skiff/bootstraptoken.py); deleting
the Secret, or its expiry, ends the token at once."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from skiff import bootstraptoken, errors
from skiff.cli import common
from skiff.client import Client
from skiff.daemon import duration
from skiffpb.api.v1 import types_pb2 as t


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="bootstrap tokens for joining nodes (create, list, delete)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="make a token; prints it")
    create.add_argument("--ttl", type=duration, default=bootstraptoken.DEFAULT_TTL.total_seconds(),
                        help="how long it is valid (default 24h; 0: until deleted)")
    create.add_argument("--description", default="", help="what it is for")
    common.add_connection_flags(create, namespaced=False)
    create.set_defaults(func=create_main)
    ls = verbs.add_parser("list", help="the tokens and when they expire")
    common.add_connection_flags(ls, namespaced=False)
    ls.set_defaults(func=list_main)
    delete = verbs.add_parser("delete", help="end a token now (by its id or the whole token)")
    delete.add_argument("token")
    common.add_connection_flags(delete, namespaced=False)
    delete.set_defaults(func=delete_main)


def create_main(args: argparse.Namespace) -> int:
    token = bootstraptoken.generate()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.ttl) if args.ttl > 0 else None

    async def body(client: Client) -> int:
        await client.create(bootstraptoken.make_secret(token, expires=expires, description=args.description))
        print(token)
        return 0

    return common.run(args, body)


def list_main(args: argparse.Namespace) -> int:
    async def body(client: Client) -> int:
        secrets = await client.list(t.Secret, namespace=bootstraptoken.NAMESPACE)
        print(f"{'TOKEN ID':<10}{'EXPIRES':<22}DESCRIPTION")
        for s in secrets.items:
            if s.type != bootstraptoken.SECRET_TYPE:
                continue
            print(f"{s.data.get('token-id', b'').decode():<10}"
                  f"{s.data.get('expiration', b'<never>').decode():<22}{s.data.get('description', b'').decode()}")
        return 0

    return common.run(args, body)


def delete_main(args: argparse.Namespace) -> int:
    token_id = args.token.split(".")[0]
    if not bootstraptoken.TOKEN_RE.match(f"{token_id}.{'0' * 16}"):
        raise errors.InvalidError(f"{args.token!r} is not a bootstrap token or token id")

    async def body(client: Client) -> int:
        await client.delete(t.Secret, bootstraptoken.secret_name(token_id), bootstraptoken.NAMESPACE)
        print(f"bootstrap token {token_id} deleted")
        return 0

    return common.run(args, body)
