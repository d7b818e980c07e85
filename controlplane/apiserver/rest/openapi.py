"""A minimal /openapi/v3: for each served group version, the object paths with their PATCH
operation, its GroupVersionKind and its query parameters.

Why this much and no more: kubectl (default `--validate=strict`) asks /openapi/v3 whether the
server validates fields itself (the PATCH operation of the kind has a `fieldValidation` query
parameter); when it does, kubectl sends `fieldValidation=Strict` and leaves validation to the
server, which Skiff always does strictly (skiff.convert refuses unknown fields). Schemas are not
published yet, so `kubectl explain` does not work; and the PATCH request body lists no
strategic-merge content type, so client-side apply takes its merge keys from kubectl's built-in
types instead of from schemas Skiff does not publish.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from controlplane.apiserver.rest import discovery
from skiff import kinds

QUERY_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation", "force")
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")


def gv_path(gv: str) -> str:
    """"api/v1" or "apis/apps/v1": the key in the root document and the suffix of its URL."""
    return "api/v1" if gv == "v1" else f"apis/{gv}"


def _gvk(kind: kinds.Kind) -> dict[str, str]:
    version = kind.api_version.split("/")[-1]
    return {"group": kind.group, "version": version, "kind": kind.kind}


def gv_document(gv: str) -> dict[str, Any] | None:
    if gv not in discovery.group_versions():
        return None
    paths: dict[str, Any] = {}
    for kind in kinds.KINDS:
        if kind.api_version != gv:
            continue
        base = f"/{gv_path(gv)}/" + ("namespaces/{namespace}/" if kind.namespaced else "") + kind.resource
        params = [{"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                  for p in QUERY_PARAMETERS]
        paths[base + "/{name}"] = {"patch": {
            "operationId": f"patch{kind.kind}",
            "x-kubernetes-group-version-kind": _gvk(kind),
            "x-kubernetes-action": "patch",
            "parameters": params,
            "requestBody": {"content": {t: {"schema": {"type": "object"}} for t in PATCH_TYPES}, "required": True},
            "responses": {"200": {"description": "OK"}},
        }}
    return {"openapi": "3.0.0", "info": {"title": "Skiff", "version": discovery.version_info()["gitVersion"]},
            "paths": paths, "components": {"schemas": {}}}


def digest(gv: str) -> str:
    return hashlib.sha256(json.dumps(gv_document(gv), sort_keys=True).encode()).hexdigest()[:32].upper()


def root() -> dict[str, Any]:
    return {"paths": {gv_path(gv): {"serverRelativeURL": f"/openapi/v3/{gv_path(gv)}?hash={digest(gv)}"}
                      for gv in discovery.group_versions()}}
