"""Server-side apply and field ownership (Kubernetes' managedFields), on the JSON form of objects.

Pure functions of (live object, applied configuration, owners, message descriptor). A field set
is a set of leaf paths; a path element is `f:<key>` for a field or map key, and
`k:{"<merge key>":<value>}` for an element of a list merged by key (the keys of
`patch.MERGE_KEYS`, as Kubernetes' listMapKeys); any other list is atomic (one leaf, replaced
whole). The sets travel as Kubernetes' FieldsV1 (`{"f:spec": {"f:replicas": {}}}`).

What must hold:
- An apply by manager M makes M own exactly the leaves of its configuration (operation Apply);
  the values there become the configuration's; leaves M owned before and no longer applies are
  removed from the object unless another manager owns them.
- A leaf of the configuration that another manager owns with a different value is a conflict
  (naming the field and the manager) unless `force`, which takes the leaf from that manager.
- Any other write (create, update, patch) by manager M makes M own the leaves it changed or set
  (operation Update) and takes them from every other manager; a leaf removed is nobody's.
- The system's fields (name, namespace, uid, resourceVersion, generation, timestamps,
  managedFields) and status are never owned by an apply of the main resource.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from controlplane.apiserver.rest import patch

Path = tuple[str, ...]
APPLY, UPDATE = "Apply", "Update"
SYSTEM_META = frozenset({"name", "namespace", "generateName", "uid", "resourceVersion", "generation",
                         "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
                         "selfLink"})
TOP_SKIPPED = frozenset({"apiVersion", "kind", "status"})
ATOMIC_MESSAGES = frozenset({"skiff.api.v1.IntOrString", "google.protobuf.Timestamp"})


@dataclass(frozen=True)
class Conflict:
    path: Path
    manager: str

    @property
    def field(self) -> str:
        return render(self.path)


class ConflictError(Exception):
    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        managers = sorted({c.manager for c in conflicts})
        super().__init__(f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''}: "
                         + "; ".join(f'conflict with "{c.manager}": {c.field}' for c in conflicts)
                         + (f" (managers: {', '.join(managers)})" if managers else ""))


@dataclass(frozen=True)
class Owner:
    """One managedFields entry: a manager, its operation, and the leaves it owns."""

    manager: str
    operation: str
    fields: frozenset[Path]
    time: str = ""
    api_version: str = ""


def render(path: Path) -> str:
    """A path as Kubernetes names it in conflicts: `.spec.template.spec.containers[name="web"].image`."""
    out = ""
    for element in path:
        if element.startswith("f:"):
            out += "." + element[2:]
        elif element.startswith("k:"):
            key = json.loads(element[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
    return out


# ---------------------------------------------------------------- field sets


def _field(desc: Descriptor | None, key: str) -> FieldDescriptor | None:
    return desc.fields_by_camelcase_name.get(key) if desc is not None else None


def leaves(doc: dict[str, Any], desc: Any) -> frozenset[Path]:
    """The leaf paths an object (or an applied configuration) sets."""
    out: set[Path] = set()
    for key, value in doc.items():
        if key in TOP_SKIPPED:
            continue
        if key == "metadata" and isinstance(value, dict):
            meta = {k: v for k, v in value.items() if k not in SYSTEM_META}
            _walk(meta, _field(desc, key), ("f:metadata",), out)
            continue
        _walk(value, _field(desc, key), (f"f:{key}",), out)
    return frozenset(out)


def _walk(value: Any, field: FieldDescriptor | None, path: Path, out: set[Path]) -> None:
    msg = field.message_type if field is not None else None
    if field is not None and msg is not None and msg.GetOptions().map_entry:
        value_msg = msg.fields_by_name["value"].message_type
        if isinstance(value, dict) and value:
            for k, v in value.items():
                if value_msg is not None and isinstance(v, dict) and v:
                    _walk_message(v, value_msg, (*path, f"f:{k}"), out)
                else:
                    out.add((*path, f"f:{k}"))
            return
        out.add(path)
        return
    if field is not None and field.is_repeated and isinstance(value, list):
        key = patch.MERGE_KEYS.get(msg.full_name) if msg is not None else None
        if key is None or not value or not all(isinstance(v, dict) and key in v for v in value):
            out.add(path)  # an atomic list: one leaf
            return
        for item in value:
            _walk_message(item, msg, (*path, item_element(key, item[key])), out)
        return
    if msg is not None and msg.full_name not in ATOMIC_MESSAGES and isinstance(value, dict) and value:
        _walk_message(value, msg, path, out)
        return
    out.add(path)


def _walk_message(value: dict[str, Any], desc: Descriptor | None, path: Path, out: set[Path]) -> None:
    if not value:
        out.add(path)
    for k, v in value.items():
        _walk(v, _field(desc, k), (*path, f"f:{k}"), out)


def item_element(key: str, value: Any) -> str:
    return "k:" + json.dumps({key: value}, separators=(",", ":"), sort_keys=True)


def to_fields_v1(paths: frozenset[Path]) -> dict[str, Any]:
    """Kubernetes' FieldsV1 of a set of leaves; list elements are marked owned (".") as Kubernetes does."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
            if element.startswith("k:"):
                node.setdefault(".", {})
    return root


def from_fields_v1(data: Any, prefix: Path = ()) -> frozenset[Path]:
    out: set[Path] = set()
    if isinstance(data, dict):
        children = {k: v for k, v in data.items() if k != "."}
        if not children and prefix:
            out.add(prefix)
        for k, v in children.items():
            out |= from_fields_v1(v, (*prefix, k))
    return frozenset(out)


# ---------------------------------------------------------------- values at paths


_MISSING = object()


def value_at(doc: Any, path: Path) -> Any:
    node = doc
    for element in path:
        if element.startswith("f:") and isinstance(node, dict):
            node = node.get(element[2:], _MISSING)
        elif element.startswith("k:") and isinstance(node, list):
            key, want = next(iter(json.loads(element[2:]).items()))
            node = next((i for i in node if isinstance(i, dict) and i.get(key) == want), _MISSING)
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def remove_at(doc: dict[str, Any], path: Path) -> None:
    """Take the leaf at `path` out of `doc` (in place). Containers left empty go too, and so do list
    elements left holding nothing but their merge key (every field of theirs went)."""
    _remove(doc, path)


def _remove(node: Any, path: Path) -> bool:
    """Whether `node` is left empty (for its parent to drop it)."""
    element, rest = path[0], path[1:]
    if element.startswith("f:") and isinstance(node, dict):
        key = element[2:]
        if key not in node:
            return False
        if not rest or _remove(node[key], rest):
            del node[key]
        return not node
    if element.startswith("k:") and isinstance(node, list):
        key, want = next(iter(json.loads(element[2:]).items()))
        for i, item in enumerate(node):
            if isinstance(item, dict) and item.get(key) == want:
                if rest == (f"f:{key}",):  # the merge key goes only with the element's last field
                    rest = ()
                    if set(item) > {key}:
                        break
                if not rest or _remove(item, rest) or set(item) <= {key}:
                    del node[i]
                break
        return not node
    return False


# ---------------------------------------------------------------- apply and update


def apply(live: dict[str, Any] | None, config: dict[str, Any], desc: Any, *, manager: str,
          owners: list[Owner], force: bool, now: str) -> tuple[dict[str, Any], list[Owner]]:
    """The object after `manager` applies `config` to `live` (None: it does not exist yet), and the
    new owners. Raises ConflictError naming each conflicting field and its manager."""
    applied = leaves(config, desc)
    base = copy.deepcopy(live) if live is not None else {}
    # Owners are (manager, operation): the same manager's earlier Update (`kubectl scale`, then
    # `kubectl apply --server-side`) is another owner, as in Kubernetes.
    conflicts = [Conflict(p, o.manager) for o in owners if (o.manager, o.operation) != (manager, APPLY)
                 for p in sorted(applied & o.fields)
                 if value_at(base, p) != value_at(config, p) and value_at(base, p) is not _MISSING]
    if conflicts and not force:
        raise ConflictError(conflicts)
    taken = {c.path for c in conflicts}
    others = [Owner(o.manager, o.operation, o.fields - taken, o.time, o.api_version)
              if (o.manager, o.operation) != (manager, APPLY) else o for o in owners]
    before = next((o.fields for o in owners if o.manager == manager and o.operation == APPLY), frozenset())
    kept_by_others = frozenset().union(*(o.fields for o in others if not (o.manager == manager
                                                                          and o.operation == APPLY)))
    out = base
    for path in sorted(before - applied - kept_by_others):
        remove_at(out, path)
    merged = patch.strategic_merge(out, _strip(config), desc)
    new_owners = [o for o in others if not (o.manager == manager and o.operation == APPLY) and o.fields]
    new_owners.append(Owner(manager, APPLY, applied, now, config.get("apiVersion", "")))
    return merged, new_owners


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k != "status"}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in ("managedFields", "resourceVersion")}
    return out


def update(old: dict[str, Any] | None, new: dict[str, Any], desc: Any, *, manager: str,
           owners: list[Owner], now: str, api_version: str) -> list[Owner]:
    """The owners after a write that is not an apply: `manager` takes the leaves it set or changed."""
    new_leaves = leaves(new, desc)
    old_doc = old or {}
    changed = frozenset(p for p in new_leaves if value_at(old_doc, p) != value_at(new, p))
    gone = (leaves(old_doc, desc) if old else frozenset()) - new_leaves
    out: list[Owner] = []
    mine: frozenset[Path] = changed
    for o in owners:
        if o.manager == manager and o.operation == UPDATE:
            mine = mine | (o.fields - gone)
            continue
        rest = o.fields - changed - gone
        if rest:
            out.append(Owner(o.manager, o.operation, rest, o.time, o.api_version))
    if mine:
        out.append(Owner(manager, UPDATE, mine, now, api_version))
    return out


# ---------------------------------------------------------------- managedFields JSON


def owners_of(doc: dict[str, Any]) -> list[Owner]:
    entries = (doc.get("metadata") or {}).get("managedFields") or []
    return [Owner(e.get("manager", ""), e.get("operation", UPDATE), from_fields_v1(e.get("fieldsV1") or {}),
                  e.get("time", ""), e.get("apiVersion", "")) for e in entries if isinstance(e, dict)]


def managed_fields(owners: list[Owner]) -> list[dict[str, Any]]:
    out = []
    for o in owners:
        entry: dict[str, Any] = {"manager": o.manager, "operation": o.operation, "apiVersion": o.api_version,
                                 "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(o.fields)}
        if o.time:
            entry["time"] = o.time
        out.append(entry)
    return out


def with_owners(doc: dict[str, Any], owners: list[Owner]) -> dict[str, Any]:
    out = dict(doc)
    meta = dict(out.get("metadata") or {})
    meta["managedFields"] = managed_fields(owners)
    if not meta["managedFields"]:
        del meta["managedFields"]
    out["metadata"] = meta
    return out


def default_manager(user_agent: str) -> str:
    """Kubernetes' default field manager: the user agent up to its first "/" (`kubectl`, `helm`)."""
    return (user_agent.split("/", 1)[0] or "unknown")[:128]
