"""What every `skiff` subcommand shares: connection flags, the client, namespaces, kinds.

Flags on every command that talks to the api-server: `--server`, `--request-timeout`,
`--certificate-authority`/`--client-certificate`/`--client-key`, `--as USER`/`--as-group GROUP`
(impersonation, for users allowed to), and for namespaced commands `-n/--namespace`. The server
comes from --server, $SKIFF_SERVER or the config file (skiff.config); the credentials from the
flags or the config file; the namespace from -n, the config file's `namespace`, or "default".
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from skiff import config, errors, kinds
from skiff.client import Client


def add_connection_flags(parser: argparse.ArgumentParser, *, namespaced: bool = True,
                         all_namespaces: bool = False) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--server", "-s", default="", help="api-server endpoint(s) HOST:PORT[,HOST:PORT...]")
    group.add_argument("--request-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long to keep retrying an unavailable api-server (default %(default)s)")
    group.add_argument("--certificate-authority", default="", help="CA file (default: from the config file)")
    group.add_argument("--client-certificate", default="", help="client certificate (default: from the config file)")
    group.add_argument("--client-key", default="", help="its key (default: from the config file)")
    group.add_argument("--as", dest="as_user", default="", metavar="USER",
                       help="act as this user (needs the impersonate right)")
    group.add_argument("--as-group", dest="as_groups", action="append", default=[], metavar="GROUP",
                       help="act with this group (repeatable; needs --as)")
    if namespaced:
        parser.add_argument("-n", "--namespace", default="", help="namespace (default: from the config, or default)")
    if all_namespaces:
        parser.add_argument("-A", "--all-namespaces", action="store_true", help="across all namespaces")


def namespace(args: argparse.Namespace) -> str:
    explicit = getattr(args, "namespace", "")
    if explicit:
        return str(explicit)
    return config.load_config().namespace or "default"


def run(args: argparse.Namespace, body: Callable[[Client], Awaitable[int]]) -> int:
    """Run `body` with a connected client; the client is closed however it ends."""
    server = config.resolve_server(getattr(args, "server", ""))
    credentials = config.resolve_credentials(ca=getattr(args, "certificate_authority", ""),
                                             cert=getattr(args, "client_certificate", ""),
                                             key=getattr(args, "client_key", ""))

    async def main() -> int:
        client = Client(server, timeout=getattr(args, "request_timeout", 10.0), credentials=credentials,
                        impersonate_user=getattr(args, "as_user", ""),
                        impersonate_groups=getattr(args, "as_groups", []))
        try:
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


def kind_of(text: str) -> kinds.Kind:
    """A kind from what a user types (`po`, `pods`, `deploy`, `deployment.apps`)."""
    kind = kinds.by_alias(text)
    if kind is None:
        known = ", ".join(sorted({k.resource for k in kinds.KINDS}))
        raise errors.InvalidError(f'the server doesn\'t have a resource type "{text}" (known: {known})')
    return kind


def targets(words: list[str]) -> list[tuple[kinds.Kind, str]]:
    """`deploy/web pod/x` or `deploy web api` -> [(kind, name), ...]."""
    if not words:
        raise errors.InvalidError("you must specify the type of resource and a name, e.g. deploy/web or pod web-1")
    if all("/" in w for w in words):
        out = []
        for w in words:
            kind_text, _, name = w.partition("/")
            if not name:
                raise errors.InvalidError(f'"{w}": expected TYPE/NAME')
            out.append((kind_of(kind_text), name))
        return out
    if any("/" in w for w in words):
        raise errors.InvalidError("there is no need to specify a resource type as a separate argument when "
                                  "passing arguments in resource/name form")
    kind = kind_of(words[0])
    if len(words) == 1:
        raise errors.InvalidError(f"a name is required: {words[0]} NAME")
    return [(kind, name) for name in words[1:]]


def ref(kind: kinds.Kind, name: str) -> str:
    """`deployment.apps/web`, as kubectl names an object in its output."""
    return f"{kind.qualified}/{name}"


def meta(obj: Message) -> Any:
    return obj.metadata  # type: ignore[attr-defined]
