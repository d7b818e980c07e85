"""`skiff apply -f FILE|DIR|-`: create what is missing, update what changed, like kubectl.

Prints one line per object: `deployment.apps/web created|configured|unchanged`.

How an update is computed (kubectl's client-side three-way merge, simplified): the manifest
last applied is kept in the `kubectl.kubernetes.io/last-applied-configuration` annotation.
Starting from the live object, fields that were in the last applied manifest but are gone
from the new one are removed, and every field of the new manifest is set (maps merge key by
key, lists are replaced). Fields nobody applied stay as the cluster set them (status,
clusterIP, replicas changed by `skiff scale` when the manifest does not set them).
The result is sent as an Update with the live resourceVersion; the api-server writes
nothing when it equals the stored object, which is how "unchanged" is told apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from google.protobuf.message import Message

from skiff import errors, kinds, manifests
from skiff.cli import common
from skiff.client import Client
from skiff.convert import FieldError, from_data, to_data
from skiff.retry import retry_on_conflict

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def register(sub: Any) -> None:
    p = sub.add_parser("apply", help="create or update objects from manifests",
                       description="Create or update objects from YAML/JSON manifests (files, directories or -).")
    add_file_flags(p)
    common.add_connection_flags(p)
    p.set_defaults(func=main)


def add_file_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR|-",
                   help="manifest file, directory of manifests, or - for stdin (repeatable)")
    p.add_argument("-R", "--recursive", action="store_true", help="descend into directories given with -f")


def load(args: argparse.Namespace) -> list[manifests.Loaded]:
    return manifests.load(args.filename, recursive=args.recursive)


def place(obj: Message, kind: kinds.Kind, args: argparse.Namespace) -> str:
    """Set the object's namespace from -n when it names none; refuse a contradiction."""
    meta = common.meta(obj)
    if not kind.namespaced:
        return ""
    flag = getattr(args, "namespace", "")
    if meta.namespace and flag and meta.namespace != flag:
        raise errors.InvalidError(f'the namespace from the provided object "{meta.namespace}" does not match the '
                                  f'namespace "{flag}": pass --namespace={meta.namespace} or remove one of them')
    meta.namespace = meta.namespace or common.namespace(args)
    return str(meta.namespace)


def merge(live: Any, last: Any, desired: Any) -> Any:
    """Three-way merge of plain data (see the module docstring)."""
    if not isinstance(desired, dict) or not isinstance(live, dict):
        return desired
    last = last if isinstance(last, dict) else {}
    out = dict(live)
    for key in last:
        if key not in desired:
            out.pop(key, None)
    for key, value in desired.items():
        out[key] = merge(live.get(key), last.get(key), value) if isinstance(value, dict) else value
    return out


def with_last_applied(obj: Message) -> tuple[Message, dict[str, Any]]:
    """The object to send, carrying its own manifest as the last-applied annotation."""
    data = to_data(obj)
    annotations = data.get("metadata", {}).get("annotations", {})
    annotations.pop(LAST_APPLIED, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    out = type(obj)()
    out.CopyFrom(obj)
    common.meta(out).annotations[LAST_APPLIED] = text
    return out, to_data(out)


def merged_object(live: Message, desired: Message) -> Message:
    """What to send as the Update of `live` for the manifest `desired` (which has its annotation)."""
    live_data = to_data(live)
    last_text = common.meta(live).annotations.get(LAST_APPLIED, "")
    try:
        last = json.loads(last_text) if last_text else {}
    except ValueError:
        last = {}
    merged = merge(live_data, last, to_data(desired))
    try:
        out = from_data(merged, type(live))
    except FieldError as exc:
        raise errors.InvalidError(f"cannot merge the manifest into the live object: {exc}") from exc
    common.meta(out).resource_version = common.meta(live).resource_version
    return out


async def apply_one(client: Client, obj: Message, kind: kinds.Kind) -> str:
    """Create or update one object; "created", "configured" or "unchanged".

    A lost race (the object changed, or was created, meanwhile) re-reads it and tries again.
    """
    desired, _ = with_last_applied(obj)
    meta = common.meta(desired)

    async def attempt() -> str:
        try:
            live = await client.get(kind.message, meta.name, meta.namespace)
        except errors.NotFoundError:
            try:
                await client.create(desired)
                return "created"
            except errors.AlreadyExistsError as exc:
                # Created meanwhile: a race lost like a conflict; the next attempt updates it.
                raise errors.ConflictError(
                    f"{common.ref(kind, meta.name)}: created by others while applying; try again") from exc
        updated = await client.update(merged_object(live, desired))
        same = common.meta(updated).resource_version == common.meta(live).resource_version
        return "unchanged" if same else "configured"

    return await retry_on_conflict(attempt)


def main(args: argparse.Namespace) -> int:
    loaded = load(args)
    for item in loaded:
        place(item.obj, item.kind, args)

    async def body(client: Client) -> int:
        failed = 0
        for item in loaded:
            name = common.meta(item.obj).name
            if not name:
                print(f"error: {item.source}: {item.kind.kind} needs metadata.name to be applied "
                      "(generateName works with `skiff create`)", file=sys.stderr)
                failed += 1
                continue
            try:
                outcome = await apply_one(client, item.obj, item.kind)
            except errors.SkiffError as exc:
                print(f"error: {common.ref(item.kind, name)}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"{common.ref(item.kind, name)} {outcome}", flush=True)
        return 1 if failed else 0

    return common.run(args, body)
