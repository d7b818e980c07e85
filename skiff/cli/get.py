"""`skiff get KIND[,KIND...] [NAME...] [-o wide|yaml|json|name] [-l SEL] [-w] [-n NS | -A]`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from google.protobuf.message import Message

from skiff import errors, kinds
from skiff.cli import common, printers
from skiff.client import Client

OUTPUTS = ("wide", "yaml", "json", "name")
ALL = ("pods", "services", "daemonsets", "deployments", "replicasets", "statefulsets", "cronjobs", "jobs")


def register(sub: Any) -> None:
    p = sub.add_parser("get", help="list or show objects",
                       description="List objects of one or more kinds (comma-separated), or show named ones.")
    p.add_argument("kinds", metavar="KIND[,KIND...]|KIND/NAME", help="po, deploy, rs, svc, ep, no, ev, ns, ... or all")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-o", "--output", default="", choices=OUTPUTS, help="wide, yaml, json or name")
    p.add_argument("-l", "--selector", default="", help="label selector, e.g. app=web,tier!=db")
    p.add_argument("--field-selector", default="", help="field selector, e.g. spec.nodeName=n1")
    p.add_argument("-w", "--watch", action="store_true", help="after listing, print changes as they happen")
    p.add_argument("--watch-timeout", type=int, default=0, metavar="SECONDS", help=argparse.SUPPRESS)
    common.add_connection_flags(p, all_namespaces=True)
    p.set_defaults(func=main)


def parse_targets(kinds_arg: str, names: list[str]) -> list[tuple[kinds.Kind, list[str]]]:
    """[(kind, names)] from `pods,svc`, `deploy web api` or `deploy/web pod/x`."""
    if "/" in kinds_arg:
        out: list[tuple[kinds.Kind, list[str]]] = []
        for kind, name in common.targets([kinds_arg, *names]):
            if out and out[-1][0] is kind:
                out[-1][1].append(name)
            else:
                out.append((kind, [name]))
        return out
    words = [w for w in kinds_arg.split(",") if w]
    expanded = [r for w in words for r in (ALL if w == "all" else (w,))]
    resolved = [common.kind_of(w) for w in expanded]
    if names and len(resolved) > 1:
        raise errors.InvalidError("names cannot be given with several kinds; use KIND/NAME instead")
    return [(k, list(names)) for k in resolved]


async def fetch(client: Client, kind: kinds.Kind, names: list[str], *, namespace: str, selector: str,
                field_selector: str) -> tuple[list[Message], str]:
    if names:
        objs = [await client.get(kind.message, name, namespace) for name in names]
        return objs, ""
    listed = await client.list(kind.message, namespace=namespace if kind.namespaced else "",
                               label_selector=selector, field_selector=field_selector)
    return list(listed.items), listed.resource_version


def main(args: argparse.Namespace) -> int:
    targets = parse_targets(args.kinds, args.names)
    namespace = "" if args.all_namespaces else common.namespace(args)
    if args.watch and len(targets) != 1:
        raise errors.InvalidError("--watch works with one kind at a time")

    async def body(client: Client) -> int:
        now = time.time()
        several = len(targets) > 1
        outputs: list[str] = []
        everything: list[Message] = []
        single = len(targets) == 1 and len(targets[0][1]) == 1
        rv = ""
        for kind, names in targets:
            objs, rv = await fetch(client, kind, names, namespace=namespace, selector=args.selector,
                                   field_selector=args.field_selector)
            everything.extend(objs)
            if args.output in ("", "wide") and objs:
                header, body_rows = printers.rows(kind, objs, now=now, wide=args.output == "wide",
                                                  with_namespace=args.all_namespaces, with_kind=several)
                outputs.append(printers.table(header, body_rows))
        if args.output == "yaml":
            print(printers.render_yaml(everything, single=single), end="")
        elif args.output == "json":
            print(printers.render_json(everything, single=single))
        elif args.output == "name":
            if everything:
                print(printers.render_names(everything))
        elif outputs:
            print("\n\n".join(outputs))
        if not everything and args.output in ("", "wide") and not args.watch:
            where = f" in {namespace} namespace" if namespace and any(k.namespaced for k, _ in targets) else ""
            print(f"No resources found{where}.", file=sys.stderr)
        if args.watch:
            kind, names = targets[0]
            await watch(client, kind, names, namespace=namespace, resource_version=rv, args=args,
                        header_printed=bool(everything))
        return 0

    return common.run(args, body)


async def watch(client: Client, kind: kinds.Kind, names: list[str], *, namespace: str, resource_version: str,
                args: argparse.Namespace, header_printed: bool) -> None:
    field_selector = args.field_selector
    if len(names) == 1:
        field_selector = ",".join(filter(None, [field_selector, f"metadata.name={names[0]}"]))
    if not resource_version:
        listed = await client.list(kind.message, namespace=namespace if kind.namespaced else "",
                                   label_selector=args.selector, field_selector=field_selector)
        resource_version = listed.resource_version
    async for event in client.watch(kind.message, namespace=namespace if kind.namespaced else "",
                                    label_selector=args.selector, field_selector=field_selector,
                                    resource_version=resource_version, timeout_seconds=args.watch_timeout):
        if event.type == "BOOKMARK" or (names and event.obj.metadata.name not in names):  # type: ignore[attr-defined]
            continue
        if args.output in ("yaml", "json", "name"):
            render = {"yaml": lambda o: "---\n" + printers.render_yaml([o], single=True),
                      "json": lambda o: printers.render_json([o], single=True),
                      "name": lambda o: printers.render_names([o])}[args.output]
            print(render(event.obj), flush=True)
            continue
        header, body_rows = printers.rows(kind, [event.obj], now=time.time(), wide=args.output == "wide",
                                          with_namespace=args.all_namespaces)
        lines = printers.table(header, body_rows).splitlines()
        print("\n".join(lines if not header_printed else lines[1:]), flush=True)
        header_printed = True
