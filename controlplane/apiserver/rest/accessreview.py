"""SelfSubjectAccessReview (authorization.k8s.io/v1) over HTTP: read the request, JSON or
Kubernetes' protobuf encoding, and build the answer. Pure functions; http.py asks the
authorizer in between.

SelfSubjectRulesReview (`kubectl auth can-i --list`): the RBAC rules that apply to the caller in a
namespace; `incomplete` when another authorizer (Node) may allow more.

What must hold: the attributes read are exactly the review's spec (resourceAttributes:
namespace, verb, group, resource, subresource, name; or nonResourceAttributes: path, verb), in
either encoding; a body that is neither is a ValueError naming the problem. The answer echoes the
spec with `status.allowed` and `status.reason`, in JSON.

Kubernetes' protobuf encoding: the 4 bytes `k8s\\0`, then a runtime.Unknown message (field 2 the
raw object); the object is SelfSubjectAccessReview {1 metadata, 2 spec}; spec {1
resourceAttributes, 2 nonResourceAttributes}; ResourceAttributes {1 namespace, 2 verb, 3 group,
4 version, 5 resource, 6 subresource, 7 name}; NonResourceAttributes {1 path, 2 verb}
(k8s.io/api/authorization/v1/generated.proto), read with k8sproto.py's wire reader.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.apiserver.rbac import Attributes
from controlplane.apiserver.rest.k8sproto import MAGIC, PROTOBUF, fields
from skiffpb.api.v1 import types_pb2 as t

GROUP = "authorization.k8s.io"
VERSION = "v1"
RESOURCE = "selfsubjectaccessreviews"
PATH = ["apis", GROUP, VERSION, RESOURCE]
RULES_RESOURCE = "selfsubjectrulesreviews"
RULES_PATH = ["apis", GROUP, VERSION, RULES_RESOURCE]

_RESOURCE_FIELDS = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource", 7: "name"}
_NON_RESOURCE_FIELDS = {1: "path", 2: "verb"}


@dataclass(frozen=True)
class Review:
    resource_attributes: dict[str, str] | None
    non_resource_attributes: dict[str, str] | None

    @property
    def attributes(self) -> Attributes:
        if self.resource_attributes is not None:
            r = self.resource_attributes
            return Attributes(r.get("verb", ""), r.get("resource", ""), r.get("subresource", ""), r.get("group", ""),
                              r.get("namespace", ""), r.get("name", ""))
        n = self.non_resource_attributes or {}
        return Attributes(n.get("verb", ""), path=n.get("path", ""))


def _strings(data: bytes, names: dict[int, str]) -> dict[str, str]:
    return {names[n]: v.decode() for n, v in fields(data).items() if n in names}


def parse_protobuf(body: bytes) -> Review:
    if not body.startswith(MAGIC):
        raise ValueError("a Kubernetes protobuf body starts with k8s\\0")
    raw = fields(body[len(MAGIC):]).get(2, b"")
    spec = fields(fields(raw).get(2, b""))
    return Review(_strings(spec[1], _RESOURCE_FIELDS) if 1 in spec else None,
                  _strings(spec[2], _NON_RESOURCE_FIELDS) if 2 in spec else None)


def parse_json(body: bytes) -> Review:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    spec = data.get("spec") if isinstance(data, dict) else None
    if not isinstance(spec, dict):
        raise ValueError("spec: required")
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if not isinstance(res, dict | None) or not isinstance(non, dict | None):
        raise ValueError("spec.resourceAttributes and spec.nonResourceAttributes must be objects")
    return Review({k: str(v) for k, v in res.items() if isinstance(v, str)} if res is not None else None,
                  {k: str(v) for k, v in non.items() if isinstance(v, str)} if non is not None else None)


def parse(body: bytes, content_type: str) -> Review:
    review = parse_protobuf(body) if content_type == PROTOBUF else parse_json(body)
    if (review.resource_attributes is None) == (review.non_resource_attributes is None):
        raise ValueError("exactly one of spec.resourceAttributes and spec.nonResourceAttributes must be set")
    return review


def parse_rules_namespace(body: bytes, content_type: str) -> str:
    """The namespace a SelfSubjectRulesReview asks about (spec.namespace; protobuf: spec = 2,
    namespace = 1)."""
    if content_type == PROTOBUF:
        if not body.startswith(MAGIC):
            raise ValueError("a Kubernetes protobuf body starts with k8s\\0")
        wire = fields(fields(fields(body[len(MAGIC):]).get(2, b"")).get(2, b""))
        return wire.get(1, b"").decode()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    spec = data.get("spec") if isinstance(data, dict) else None
    namespace = spec.get("namespace", "") if isinstance(spec, dict) else ""
    return namespace if isinstance(namespace, str) else ""


def rules_response(namespace: str, rules: Sequence[t.PolicyRule], *, incomplete: bool) -> dict[str, Any]:
    """A SelfSubjectRulesReview's answer: the RBAC rules that apply in `namespace` (`kubectl auth can-i --list`)."""
    resource_rules = [{"verbs": list(r.verbs), "apiGroups": list(r.api_groups), "resources": list(r.resources),
                       **({"resourceNames": list(r.resource_names)} if r.resource_names else {})}
                      for r in rules if not r.non_resource_urls]
    non_resource_rules = [{"verbs": list(r.verbs), "nonResourceURLs": list(r.non_resource_urls)}
                          for r in rules if r.non_resource_urls]
    return {"kind": "SelfSubjectRulesReview", "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {"creationTimestamp": None}, "spec": {"namespace": namespace},
            "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                       "incomplete": incomplete}}


def response(review: Review, allowed: bool, reason: str) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if review.resource_attributes is not None:
        spec["resourceAttributes"] = review.resource_attributes
    if review.non_resource_attributes is not None:
        spec["nonResourceAttributes"] = review.non_resource_attributes
    status: dict[str, Any] = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return {"kind": "SelfSubjectAccessReview", "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}
