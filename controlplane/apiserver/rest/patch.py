"""Patches on the JSON form of an object: JSON patch (RFC 6902), merge patch (RFC 7386) and
Kubernetes' strategic merge patch.

Pure functions of (document, patch[, message descriptor]); they never change their inputs.
The strategic merge follows the schema: a list of objects with a merge key (containers by
name, container ports by containerPort, env by name, Service ports by port, conditions by
type, ...) is merged element by element, other lists are replaced, maps are merged, null
deletes. The directives kubectl sends are honoured: `$patch: replace|delete` (on a map or a
list element), `$deleteFromPrimitiveList/<field>`, `$retainKeys`; `$setElementOrder/<field>`
is accepted and the order left as merged (the order of list elements carries no meaning in
the kinds Skiff serves).

What must hold: a patch that names no field of an object leaves it equal; a malformed patch
raises PatchError (a 400/422 for the caller), never an unrelated exception. A JSON patch
operation that cannot be applied (a `test` that fails, a path that does not exist, an index out
of range) names the operation, the path it was given and the problem, and carries that path
in `PatchError.path`, so the caller's Status can name the field (kubectl prints the causes, and
only "is invalid" without them). A failed `test` never echoes the object's current value: the
object may be a Secret.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

# Message full name -> the JSON name of its merge key, as Kubernetes' patchMergeKey tags say.
MERGE_KEYS: dict[str, str] = {
    "skiff.api.v1.Container": "name",
    "skiff.api.v1.ContainerPort": "containerPort",
    "skiff.api.v1.EnvVar": "name",
    "skiff.api.v1.ServicePort": "port",
    "skiff.api.v1.PodCondition": "type",
    "skiff.api.v1.NodeCondition": "type",
    "skiff.api.v1.DeploymentCondition": "type",
    "skiff.api.v1.ReplicaSetCondition": "type",
    "skiff.api.v1.NodeAddress": "type",
    "skiff.api.v1.OwnerReference": "uid",
    "skiff.api.v1.Taint": "key",
    "skiff.api.v1.PodIP": "ip",
    "skiff.api.v1.Volume": "name",
    "skiff.api.v1.VolumeMount": "mountPath",
    "skiff.api.v1.LocalObjectReference": "name",
}
# Lists of scalars Kubernetes merges (patchStrategy:"merge") rather than replaces.
MERGED_SCALAR_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """A patch that cannot be applied; `path` is the JSON pointer of the JSON patch operation
    that failed ("" when the failure has no path: a malformed patch, a merge directive)."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------- merge patch (RFC 7386)

def merge_patch(doc: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ---------------------------------------------------------------- JSON patch (RFC 6902)

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON patch path "{path}" must start with "/"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit():
        raise PatchError(f'"{token}" is not a list index')
    i = int(token)
    if i > len(container) or (i == len(container) and not for_add):
        raise PatchError(f"list index {i} is out of range")
    return i


def _parent(doc: Any, tokens: list[str]) -> Any:
    here = doc
    for token in tokens[:-1]:
        if isinstance(here, dict):
            if token not in here:
                raise PatchError(f'path element "{token}" does not exist')
            here = here[token]
        elif isinstance(here, list):
            here = here[_index(here, token, for_add=False)]
        else:
            raise PatchError(f'path element "{token}" is inside a value that is not an object or a list')
    return here


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'path element "{last}" does not exist')
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise PatchError(f'"{last}" is inside a value that is not an object or a list')


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'cannot remove "{last}": it does not exist')
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, for_add=False))
    raise PatchError(f'cannot remove "{last}"')


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f'cannot add "{last}" inside a value that is not an object or a list')
    return doc


def _shown(value: Any, *, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    out = copy.deepcopy(doc)
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str) or not isinstance(op.get("path"), str):
            raise PatchError(f"operation {n}: must be an object with string fields op and path")
        kind, path = op["op"], op["path"]
        try:
            out = _apply_op(out, n, op)
        except PatchError as exc:
            if exc.path:
                raise
            raise PatchError(f"operation {n} ({kind}) at {path}: {exc}", path=path) from exc
    return out


def _apply_op(out: Any, n: int, op: dict[str, Any]) -> Any:
    """`out` after operation `n`; it may be changed in place (json_patch works on a copy)."""
    kind, tokens = op["op"], _pointer(op["path"])
    if kind in ("add", "replace", "test") and "value" not in op:
        raise PatchError('"value" is required')
    if kind == "add":
        return _add(out, tokens, copy.deepcopy(op["value"]))
    if kind == "remove":
        _remove(out, tokens)
        return out
    if kind == "replace":
        _get(out, tokens)
        if not tokens:
            return copy.deepcopy(op["value"])
        _remove(out, tokens)
        return _add(out, tokens, copy.deepcopy(op["value"]))
    if kind in ("move", "copy"):
        source = op.get("from")
        if not isinstance(source, str):
            raise PatchError('"from" is required')
        try:
            from_tokens = _pointer(source)
            value = copy.deepcopy(_get(out, from_tokens))
            if kind == "move":
                _remove(out, from_tokens)
        except PatchError as exc:
            raise PatchError(f"operation {n} ({kind}) from {source}: {exc}", path=source) from exc
        return _add(out, tokens, value)
    if kind == "test":
        if _get(out, tokens) != op["value"]:
            raise PatchError(f"test failed: the value is not {_shown(op['value'])}")
        return out
    raise PatchError(f'unknown op "{kind}"')


# ---------------------------------------------------------------- strategic merge patch

def strategic_merge(doc: Any, patch: Any, desc: Any) -> Any:
    """`patch` applied to `doc` (the JSON form of a message of type `desc`)."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _merge_map(doc if isinstance(doc, dict) else {}, patch, desc)


def _merge_map(doc: dict[str, Any], patch: dict[str, Any], desc: Descriptor | None) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchError(f'unknown $patch directive "{directive}"')
    out = copy.deepcopy(doc)
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if not isinstance(value, list):
                raise PatchError(f"{key}: must be a list")
            if isinstance(out.get(name), list):
                out[name] = [v for v in out[name] if v not in value]
            continue
        if key.startswith("$"):
            raise PatchError(f'unknown directive "{key}"')
        if value is None:
            out.pop(key, None)
            continue
        field = desc.fields_by_camelcase_name.get(key) if desc is not None else None
        merged = _merge_field(out.get(key), value, field, key)
        if merged is None:
            out.pop(key, None)
        else:
            out[key] = merged
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_field(current: Any, value: Any, field: FieldDescriptor | None, key: str) -> Any:
    if field is None:  # not in the schema: from_data will name it; merge as plain JSON meanwhile
        return merge_patch(current, value)
    msg = field.message_type
    if msg is not None and msg.GetOptions().map_entry:
        if not isinstance(value, dict):
            return copy.deepcopy(value)
        out = dict(current) if isinstance(current, dict) else {}
        value_msg = msg.fields_by_name["value"].message_type
        for k, v in value.items():
            if v is None:
                out.pop(k, None)
            elif value_msg is not None and isinstance(v, dict):
                out[k] = _merge_map(out.get(k) or {}, v, value_msg)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if field.is_repeated:
        if not isinstance(value, list):
            return copy.deepcopy(value)
        if msg is not None and msg.full_name in MERGE_KEYS:
            return _merge_list(current if isinstance(current, list) else [], value, msg, MERGE_KEYS[msg.full_name])
        if msg is None and key in MERGED_SCALAR_LISTS:
            out_list = list(current) if isinstance(current, list) else []
            return out_list + [v for v in value if v not in out_list]
        return [v for v in copy.deepcopy(value) if not (isinstance(v, dict) and "$patch" in v)]
    if msg is not None and isinstance(value, dict) and msg.full_name not in ("skiff.api.v1.IntOrString",
                                                                            "google.protobuf.Timestamp"):
        return _merge_map(current if isinstance(current, dict) else {}, value, msg)
    return copy.deepcopy(value)


def _merge_list(current: list[Any], patch: list[Any], msg: Descriptor, merge_key: str) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    out = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f'list elements of {msg.name} are merged by "{merge_key}": every element of the '
                             f"patch needs it")
        at = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(merge_key) == item[merge_key]),
                  None)
        if item.get("$patch") == "delete":
            if at is not None:
                out.pop(at)
            continue
        if at is None:
            merged = _merge_map({}, item, msg)
            if merged is not None:
                out.append(merged)
        else:
            merged = _merge_map(out[at], item, msg)
            if merged is None:
                out.pop(at)
            else:
                out[at] = merged
    return out
