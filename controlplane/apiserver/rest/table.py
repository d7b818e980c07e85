"""`meta.k8s.io/v1` Tables for `kubectl get`: the columns come from skiff.cli.printers, the one
place that knows what each kind shows.

What must hold: the columns `skiff get` prints without -o wide have priority 0, the extra
-o wide columns priority 1 (kubectl shows those only with -o wide); the NAME column has format
"name"; every row carries the object's metadata (PartialObjectMetadata) so kubectl can add the
NAMESPACE column for -A itself, or the whole object when includeObject=Object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from skiff import kinds
from skiff.cli import printers
from skiff.convert import to_data


def column_definitions(kind: kinds.Kind, *, now: float) -> list[dict[str, Any]]:
    narrow, _ = printers.rows(kind, [], now=now, wide=False)
    wide, _ = printers.rows(kind, [], now=now, wide=True)
    return [{"name": name.title() if name != "NAME" else "Name", "type": "string",
             "format": "name" if name == "NAME" else "", "description": "",
             "priority": 0 if i < len(narrow) else 1}
            for i, name in enumerate(wide)]


def row_object(obj: Message, include_object: str) -> dict[str, Any] | None:
    data = to_data(obj)
    if include_object == "None":
        return None
    if include_object == "Object":
        return data
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": data.get("metadata", {})}


def table(kind: kinds.Kind, objs: Sequence[Message], *, now: float, resource_version: str = "",
          continue_token: str = "", include_object: str = "Metadata", with_columns: bool = True) -> dict[str, Any]:
    _, body = printers.rows(kind, objs, now=now, wide=True)
    if kind.resource == "events":  # printers sorts events; keep each row with its own object
        objs = sorted(objs, key=lambda e: (printers.event_time(e).seconds, printers.event_time(e).nanos))  # type: ignore[arg-type]
    rows = []
    for obj, cells in zip(objs, body, strict=True):
        row: dict[str, Any] = {"cells": cells}
        ro = row_object(obj, include_object)
        if ro is not None:
            row["object"] = ro
        rows.append(row)
    meta: dict[str, Any] = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    out["columnDefinitions"] = column_definitions(kind, now=now) if with_columns else []
    out["rows"] = rows
    return out
