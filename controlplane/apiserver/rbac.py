"""RBAC as Kubernetes' rbac.authorization.k8s.io/v1 evaluates it, as pure functions over a policy
snapshot: `rbac_authorize(user, attrs, policy)` answers Allow (naming the binding and role that
allow) or NoOpinion; RBAC never denies, it only fails to allow.

What must hold (Kubernetes' `rbac/v1` helpers, checked by table tests):
- A rule allows a resource request when its verbs, apiGroups, resources and resourceNames all
  match: `*` matches any verb, group or resource; `pods` does not match the subresource
  `pods/log` (only `pods/log`, `*` or `*/log` do); an empty resourceNames matches every name,
  a non-empty one never matches a request without a name (list, create). A rule with
  nonResourceURLs allows only non-resource requests (`/healthz`; a trailing `*` is a prefix).
- A ClusterRoleBinding grants its ClusterRole everywhere; a RoleBinding grants its Role, or a
  ClusterRole's rules, in the binding's namespace only. A binding to a role that does not exist
  grants nothing. Subjects: User by name, Group by membership, ServiceAccount as the user
  `system:serviceaccount:<namespace>:<name>`.
- No aggregation, no escalation check (see docs/security.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from skiff import identity
from skiff.identity import UserInfo
from skiffpb.api.v1 import types_pb2 as t

GROUP = "rbac.authorization.k8s.io"
ALL = "*"


@dataclass(frozen=True)
class Attributes:
    """What an authorizer decides on (Kubernetes' authorizer.Attributes)."""

    verb: str
    resource: str = ""
    subresource: str = ""
    group: str = ""  # the API group: "" for the core group
    namespace: str = ""
    name: str = ""
    path: str = ""  # for a non-resource request: "/healthz"

    @property
    def resource_request(self) -> bool:
        return bool(self.resource)

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Policy:
    """The RBAC objects an api-server holds in its watch cache at one moment."""

    roles: Mapping[tuple[str, str], t.Role] = field(default_factory=dict)  # (namespace, name)
    cluster_roles: Mapping[str, t.ClusterRole] = field(default_factory=dict)
    role_bindings: Mapping[str, Sequence[t.RoleBinding]] = field(default_factory=dict)  # by namespace
    cluster_role_bindings: Sequence[t.ClusterRoleBinding] = ()

    @staticmethod
    def of(roles: Iterable[t.Role], cluster_roles: Iterable[t.ClusterRole], role_bindings: Iterable[t.RoleBinding],
           cluster_role_bindings: Iterable[t.ClusterRoleBinding]) -> Policy:
        by_ns: dict[str, list[t.RoleBinding]] = {}
        for rb in role_bindings:
            by_ns.setdefault(rb.metadata.namespace, []).append(rb)
        return Policy({(r.metadata.namespace, r.metadata.name): r for r in roles},
                      {c.metadata.name: c for c in cluster_roles}, by_ns, tuple(cluster_role_bindings))


# ---------------------------------------------------------------- rule matching

def verb_matches(rule: t.PolicyRule, verb: str) -> bool:
    return ALL in rule.verbs or verb in rule.verbs


def api_group_matches(rule: t.PolicyRule, group: str) -> bool:
    return ALL in rule.api_groups or group in rule.api_groups


def resource_matches(rule: t.PolicyRule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule.resources:
        if r == ALL or r == combined:
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def resource_name_matches(rule: t.PolicyRule, name: str) -> bool:
    return not rule.resource_names or name in rule.resource_names


def non_resource_url_matches(rule: t.PolicyRule, path: str) -> bool:
    for url in rule.non_resource_urls:
        if url == ALL or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def rule_allows(rule: t.PolicyRule, attrs: Attributes) -> bool:
    if not verb_matches(rule, attrs.verb):
        return False
    if attrs.resource_request:
        return (api_group_matches(rule, attrs.group) and resource_matches(rule, attrs.resource, attrs.subresource)
                and resource_name_matches(rule, attrs.name))
    return non_resource_url_matches(rule, attrs.path)


def subject_matches(subject: t.Subject, user: UserInfo, binding_namespace: str = "") -> bool:
    """A ServiceAccount subject without a namespace is in the RoleBinding's namespace."""
    if subject.kind == "User":
        return subject.name == user.name
    if subject.kind == "Group":
        return user.in_group(subject.name)
    if subject.kind == "ServiceAccount":
        namespace = subject.namespace or binding_namespace
        return user.name == f"{identity.SERVICE_ACCOUNT_PREFIX}{namespace}:{subject.name}"
    return False


def describe_subject(subject: t.Subject) -> str:
    return f'{subject.kind} "{subject.name}"'


# ---------------------------------------------------------------- the authorizer

@dataclass(frozen=True)
class RbacDecision:
    allowed: bool
    reason: str


def _role_rules(policy: Policy, ref: t.RoleRef, namespace: str) -> Sequence[t.PolicyRule] | None:
    if ref.kind == "ClusterRole":
        cr = policy.cluster_roles.get(ref.name)
        return None if cr is None else cr.rules
    if ref.kind == "Role":
        role = policy.roles.get((namespace, ref.name))
        return None if role is None else role.rules
    return None


def rbac_authorize(user: UserInfo, attrs: Attributes, policy: Policy) -> RbacDecision:
    """Allowed, with the binding that allows it; otherwise not allowed (RBAC has no opinion)."""
    for crb in policy.cluster_role_bindings:
        subject = next((s for s in crb.subjects if subject_matches(s, user)), None)
        if subject is None:
            continue
        rules = _role_rules(policy, crb.role_ref, "")
        if crb.role_ref.kind != "ClusterRole" or rules is None:
            continue
        if any(rule_allows(r, attrs) for r in rules):
            return RbacDecision(True, f'RBAC: allowed by ClusterRoleBinding "{crb.metadata.name}" of ClusterRole '
                                      f'"{crb.role_ref.name}" to {describe_subject(subject)}')
    if attrs.namespace:
        for rb in policy.role_bindings.get(attrs.namespace, ()):
            subject = next((s for s in rb.subjects if subject_matches(s, user, attrs.namespace)), None)
            if subject is None:
                continue
            rules = _role_rules(policy, rb.role_ref, attrs.namespace)
            if rules is None:
                continue
            if any(rule_allows(r, attrs) for r in rules):
                return RbacDecision(True, f'RBAC: allowed by RoleBinding "{rb.metadata.name}/{attrs.namespace}" of '
                                          f'{rb.role_ref.kind} "{rb.role_ref.name}" to '
                                          f'{describe_subject(subject)}')
    return RbacDecision(False, "")


def rules_for(user: UserInfo, namespace: str, policy: Policy) -> list[t.PolicyRule]:
    """Every rule that applies to `user` in `namespace` (cluster-wide ones included)."""
    out: list[t.PolicyRule] = []
    for crb in policy.cluster_role_bindings:
        if crb.role_ref.kind == "ClusterRole" and any(subject_matches(s, user) for s in crb.subjects):
            out.extend(_role_rules(policy, crb.role_ref, "") or ())
    if namespace:
        for rb in policy.role_bindings.get(namespace, ()):
            if any(subject_matches(s, user, namespace) for s in rb.subjects):
                out.extend(_role_rules(policy, rb.role_ref, namespace) or ())
    return out
