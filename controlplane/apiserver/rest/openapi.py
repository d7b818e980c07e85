"""/openapi/v3: for each served group version, the object paths with their PATCH operation, its
GroupVersionKind and its query parameters, and the schemas of its kinds generated from Skiff's own
API definitions (the protobuf descriptors of skiffpb, whose json_names are Kubernetes' names).

Why this shape: kubectl (default `--validate=strict`) asks /openapi/v3 whether the server
validates fields itself (the PATCH operation of the kind has a `fieldValidation` query
parameter); when it does, kubectl sends `fieldValidation=Strict` and leaves validation to the
server, which Skiff does strictly (skiff.convert refuses unknown fields). `kubectl explain` finds a
kind's schema by its `x-kubernetes-group-version-kind` and walks its properties through `$ref`s.
The PATCH request body lists no strategic-merge content type, so client-side apply takes its
merge keys from kubectl's built-in types.

What must hold: every field a kind accepts is in its schema under its JSON name, with the JSON
type skiff.convert reads (int64 as an integer, bytes as base64 strings, Timestamps as date-time
strings, IntOrString as `x-kubernetes-int-or-string`); each schema reachable from a kind of the
group version is in that document's components, once; the same input gives the same document
(its hash is in the root's URL).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from controlplane.apiserver.rest import discovery
from skiff import kinds
from skiff.convert import INT_OR_STRING, JSON_TEXT_FIELDS, TIMESTAMP

QUERY_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation", "force")
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")


def gv_path(gv: str) -> str:
    """"api/v1" or "apis/apps/v1": the key in the root document and the suffix of its URL."""
    return "api/v1" if gv == "v1" else f"apis/{gv}"


def _gvk(kind: kinds.Kind) -> dict[str, str]:
    version = kind.api_version.split("/")[-1]
    return {"group": kind.group, "version": version, "kind": kind.kind}


_SCALARS: dict[int, dict[str, str]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_INT64: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_ENUM: {"type": "string"},
}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _value_schema(field: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    msg = field.message_type
    if msg is None:
        if field.full_name in JSON_TEXT_FIELDS:
            return {"type": "object"}
        return dict(_SCALARS.get(field.type, {"type": "string"}))
    if msg.full_name == TIMESTAMP:
        return {"type": "string", "format": "date-time"}
    if msg.full_name == INT_OR_STRING:
        return {"x-kubernetes-int-or-string": True}
    message_schema(msg, schemas)
    # allOf: a $ref with siblings is ignored in OpenAPI 3.0; Kubernetes' documents use this form too
    return {"allOf": [ref(msg.full_name)], "default": {}}


def field_schema(field: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    """The schema of one field, adding the messages it refers to into `schemas`."""
    msg = field.message_type
    if msg is not None and msg.GetOptions().map_entry:
        return {"type": "object", "additionalProperties": _value_schema(msg.fields_by_name["value"], schemas)}
    if field.is_repeated:
        return {"type": "array", "items": _value_schema(field, schemas)}
    return _value_schema(field, schemas)


def message_schema(desc: Any, schemas: dict[str, Any]) -> None:
    """Put the schema of message `desc` (and of every message it refers to) into `schemas`."""
    if desc.full_name in schemas:
        return
    out: dict[str, Any] = {"type": "object", "properties": {}}
    schemas[desc.full_name] = out  # before the fields: messages that refer back find it
    for field in desc.fields:
        out["properties"][field.json_name] = field_schema(field, schemas)


def kind_schema(kind: kinds.Kind, schemas: dict[str, Any]) -> None:
    desc = kind.message.DESCRIPTOR
    message_schema(desc, schemas)
    schema = schemas[desc.full_name]
    schema["description"] = f"{kind.kind} ({kind.api_version}), as Skiff serves it."
    schema["properties"] = {"apiVersion": {"type": "string", "description": "APIVersion of this object."},
                            "kind": {"type": "string", "description": "Kind of this object."},
                            **{k: v for k, v in schema["properties"].items() if k not in ("apiVersion", "kind")}}
    schema["x-kubernetes-group-version-kind"] = [_gvk(kind)]


def gv_document(gv: str) -> dict[str, Any] | None:
    if gv not in discovery.group_versions():
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for kind in kinds.KINDS:
        if kind.api_version != gv:
            continue
        kind_schema(kind, schemas)
        base = f"/{gv_path(gv)}/" + ("namespaces/{namespace}/" if kind.namespaced else "") + kind.resource
        params = [{"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                  for p in QUERY_PARAMETERS]
        paths[base + "/{name}"] = {"patch": {
            "operationId": f"patch{kind.kind}",
            "x-kubernetes-group-version-kind": _gvk(kind),
            "x-kubernetes-action": "patch",
            "parameters": params,
            "requestBody": {"content": {t: {"schema": {"type": "object"}} for t in PATCH_TYPES}, "required": True},
            "responses": {"200": {"description": "OK", "content": {
                "application/json": {"schema": ref(kind.message.DESCRIPTOR.full_name)}}}},
        }}
    return {"openapi": "3.0.0", "info": {"title": "Skiff", "version": discovery.version_info()["gitVersion"]},
            "paths": paths, "components": {"schemas": dict(sorted(schemas.items()))}}


def digest(gv: str) -> str:
    return hashlib.sha256(json.dumps(gv_document(gv), sort_keys=True).encode()).hexdigest()[:32].upper()


def root() -> dict[str, Any]:
    return {"paths": {gv_path(gv): {"serverRelativeURL": f"/openapi/v3/{gv_path(gv)}?hash={digest(gv)}"}
                      for gv in discovery.group_versions()}}
