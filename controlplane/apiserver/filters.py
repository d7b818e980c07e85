"""Which objects a List or Watch request wants: namespace, label selector, field selector.

Field selectors are limited to the fields Kubernetes supports for each resource (every
resource: metadata.name and metadata.namespace; pods: spec.nodeName, status.phase, ...),
so a typo is an error naming the supported fields rather than an empty result.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from skiff import errors, kinds, labels

COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
FIELDS: dict[str, frozenset[str]] = {
    "pods": frozenset({"spec.nodeName", "spec.schedulerName", "spec.restartPolicy", "status.phase",
                       "status.podIP", "status.hostIP"}),
    "events": frozenset({"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                         "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                         "involvedObject.fieldPath", "reason", "type", "source.component",
                         "reportingComponent"}),
    "nodes": frozenset({"spec.unschedulable"}),
    "namespaces": frozenset({"status.phase"}),
    "services": frozenset({"spec.clusterIP", "spec.type"}),
    "replicasets": frozenset({"status.replicas"}),
}


@dataclass(frozen=True)
class Filter:
    namespace: str  # "" = all namespaces
    selector: labels.Selector
    fields: tuple[labels.FieldRequirement, ...]

    @property
    def everything(self) -> bool:
        return not self.namespace and not self.selector and not self.fields

    @property
    def node_name(self) -> str | None:
        """The node of an exact `spec.nodeName=X` requirement (the watch cache indexes on it)."""
        for req in self.fields:
            if req.field == "spec.nodeName" and not req.negate:
                return req.value
        return None

    def matches(self, obj: Message) -> bool:
        meta = obj.metadata  # type: ignore[attr-defined]
        if self.namespace and meta.namespace != self.namespace:
            return False
        if self.selector and not labels.matches(self.selector, meta.labels):
            return False
        return not self.fields or labels.fields_match(self.fields, obj)


def make_filter(kind: kinds.Kind, *, namespace: str = "", label_selector: str = "",
                field_selector: str = "") -> Filter:
    """Parse the request's selectors; InvalidError naming the problem."""
    try:
        selector = labels.parse(label_selector)
    except labels.SelectorError as exc:
        raise errors.InvalidError(str(exc)) from exc
    allowed = COMMON_FIELDS | FIELDS.get(kind.resource, frozenset())
    try:
        fields = labels.parse_fields(field_selector, allowed=allowed)
    except labels.SelectorError as exc:
        raise errors.InvalidError(f"{kind.resource}: {exc}") from exc
    return Filter(namespace if kind.namespaced else "", selector, fields)


def selected_name(field_selector: str) -> str:
    """The name an exact `metadata.name=<name>` requirement selects ("" when none does). As
    Kubernetes' RequestInfo, the front ends give a list or watch this name, so authorizers judge
    it as a request for that one object (RBAC resourceNames, the Node authorizer)."""
    try:
        requirements = labels.parse_fields(field_selector)
    except labels.SelectorError:
        return ""  # the request itself is refused as invalid
    for req in requirements:
        if req.field == "metadata.name" and not req.negate:
            return req.value
    return ""
