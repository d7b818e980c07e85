"""The api-server's authorizer: `decide(user, attrs, policy, modes)` is a pure function from a
user, the request's attributes and a policy snapshot to a verdict with its reason; `Authorizer`
is the thin adapter the front ends call, which takes the policy from the api-server's own watch
caches and writes the audit log.

What must hold:
- Modes as kube-apiserver's `--authorization-mode`, tried in order: `AlwaysAllow` (development,
  `--insecure`), `AlwaysDeny`, `Node`, `RBAC`; the default is `Node,RBAC`. The first mode with
  an opinion decides; when none has one the request is denied. `system:masters` is allowed
  before any mode runs (as Kubernetes' privileged-group authorizer), so the admin cannot lock
  itself out by deleting a binding.
- A refusal is ForbiddenError (gRPC PERMISSION_DENIED, HTTP 403) in Kubernetes' words:
  `pods "web" is forbidden: User "x" cannot get resource "pods" in API group "" in the
  namespace "y"`.
- The policy is read from the watch caches (no store read per request); a snapshot is rebuilt
  only when one of the four RBAC caches has moved.
- Impersonation (`--as`): allowed only when the real user may `impersonate` the user and every
  group asked for; the request then runs as the impersonated user, and the audit line names both.
- Every mutating request (create, update, patch, delete, deletecollection) writes one audit
  line, allowed or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver import nodeauthz
from controlplane.apiserver.audit import AuditLog
from controlplane.apiserver.rbac import Attributes, Policy, rbac_authorize
from skiff import errors, identity, kinds
from skiff.identity import UserInfo
from skiffpb.api.v1 import types_pb2 as t

ALWAYS_ALLOW = "AlwaysAllow"
ALWAYS_DENY = "AlwaysDeny"
NODE = "Node"
RBAC = "RBAC"
MODES = (ALWAYS_ALLOW, ALWAYS_DENY, NODE, RBAC)
DEFAULT_MODES = (NODE, RBAC)
MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def parse_modes(text: str) -> tuple[str, ...]:
    """`Node,RBAC` -> ("Node", "RBAC"); unknown or repeated modes are a ValueError."""
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown or len(set(modes)) != len(modes):
        raise ValueError(f"--authorization-mode: {text!r}: expected a comma-separated list of "
                         f"{', '.join(MODES)}, each at most once")
    return modes


def decide(user: UserInfo, attrs: Attributes, policy: Policy, modes: Sequence[str], *,
           pods_on: nodeauthz.PodsOn = nodeauthz.no_pods, lookup: nodeauthz.Lookup = nodeauthz.no_objects,
           ) -> Decision:
    """Whether `user` may make the request `attrs` (see the module docstring); `pods_on(node)`:
    the pods bound to a node (the Node mode lets a node read what they refer to); `lookup`: a
    cached object by (resource, namespace, name) (claims and volumes, for the same)."""
    if user.in_group(identity.MASTERS):
        return Decision(True, f'allowed: member of group "{identity.MASTERS}"')
    reasons: list[str] = []
    for mode in modes:
        if mode == ALWAYS_ALLOW:
            return Decision(True, "AlwaysAllow")
        if mode == ALWAYS_DENY:
            return Decision(False, "AlwaysDeny")
        if mode == NODE:
            verdict, reason = nodeauthz.node_authorize(user, attrs, pods_on, lookup)
            if verdict is not None:
                return Decision(verdict, reason)
            if reason:
                reasons.append(reason)
        elif mode == RBAC:
            rbac = rbac_authorize(user, attrs, policy)
            if rbac.allowed:
                return Decision(True, rbac.reason)
    return Decision(False, "; ".join(reasons))


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def forbidden_message(user: UserInfo, attrs: Attributes, reason: str = "") -> str:
    """Kubernetes' message for a refused request."""
    if not attrs.resource_request:
        return f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    what = (f'User "{user.name}" cannot {attrs.verb} resource "{attrs.combined_resource}" in API group '
            f'"{attrs.group}" {where}')
    subject = _qualified(attrs.resource, attrs.group)
    head = f'{subject} "{attrs.name}" is forbidden' if attrs.name else f"{subject} is forbidden"
    return f"{head}: {what}" + (f": {reason}" if reason else "")


def impersonation_attributes(user: str, groups: Sequence[str]) -> list[Attributes]:
    """What the real user must be allowed to impersonate `user` with `groups`."""
    out: list[Attributes] = []
    sa = UserInfo(user).service_account
    if sa is not None:
        out.append(Attributes("impersonate", "serviceaccounts", namespace=sa[0], name=sa[1]))
    else:
        out.append(Attributes("impersonate", "users", name=user))
    out += [Attributes("impersonate", "groups", name=g) for g in groups]
    return out


def impersonated(user: str, groups: Sequence[str]) -> UserInfo:
    """The user a request runs as when it impersonates `user` in `groups` (Kubernetes adds
    system:authenticated, and a service account's own groups)."""
    sa = UserInfo(user).service_account
    if sa is not None:
        base = identity.service_account_user(*sa)
        extra = tuple(g for g in groups if g not in base.groups)
        return UserInfo(base.name, (*base.groups, *extra))
    out = tuple(dict.fromkeys(groups))
    if user != identity.ANONYMOUS and identity.AUTHENTICATED not in out:
        out = (*out, identity.AUTHENTICATED)
    return UserInfo(user, out)


RBAC_RESOURCES = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")


class Authorizer:
    """The adapter: policy from the watch caches (`revision(resource)`, `objects(resource)`), the
    decision from `decide`, a ForbiddenError for a refusal, an audit line for every write."""

    def __init__(self, revision: Callable[[str], int], objects: Callable[[str], Iterable[object]], *,
                 modes: Sequence[str] = DEFAULT_MODES, audit: AuditLog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`revision(resource)`: the cache's revision, which moves with every change of it;
        `objects(resource)`: its objects now (pods too: the Node mode looks at a node's)."""
        self._revision = revision
        self._objects = objects
        self.modes = tuple(modes)
        self.audit = audit
        self.clock = clock
        self._policy = Policy()
        self._revisions: tuple[int, ...] = ()

    @staticmethod
    def over_caches(caches: Mapping[str, Any], *, modes: Sequence[str] = DEFAULT_MODES, audit: AuditLog | None = None,
                    clock: Callable[[], float] = time.time) -> Authorizer:
        """An authorizer over a Registry's watch caches (`registry.caches`)."""
        return Authorizer(lambda r: int(caches[r].revision), lambda r: caches[r].objects.values(), modes=modes,
                          audit=audit, clock=clock)

    def policy(self) -> Policy:
        """The RBAC policy now: rebuilt only when one of the four RBAC caches has moved."""
        revisions = tuple(self._revision(r) for r in RBAC_RESOURCES)
        if revisions != self._revisions:
            roles, cluster_roles, role_bindings, cluster_role_bindings = (list(self._objects(r))
                                                                          for r in RBAC_RESOURCES)
            self._policy = Policy.of([r for r in roles if isinstance(r, t.Role)],
                                     [r for r in cluster_roles if isinstance(r, t.ClusterRole)],
                                     [r for r in role_bindings if isinstance(r, t.RoleBinding)],
                                     [r for r in cluster_role_bindings if isinstance(r, t.ClusterRoleBinding)])
            self._revisions = revisions
        return self._policy

    def review(self, user: UserInfo, attrs: Attributes) -> Decision:
        # The admin is allowed whatever the policy: no need to look at it.
        policy = self._policy if user.in_group(identity.MASTERS) else self.policy()
        return decide(user, attrs, policy, self.modes, pods_on=self._pods_on, lookup=self._lookup)

    def _pods_on(self, node: str) -> Iterable[t.Pod]:
        # Only a node's read of a referenced object asks: one pass over the cached pods.
        return (p for p in self._objects("pods") if isinstance(p, t.Pod) and p.spec.node_name == node)

    def _lookup(self, resource: str, namespace: str, name: str) -> Message | None:
        # Only a node's read of a PersistentVolume asks (a claim of one of its pods, the volume).
        for obj in self._objects(resource):
            meta = getattr(obj, "metadata", None)
            if meta is not None and meta.name == name and meta.namespace == namespace:
                return obj if isinstance(obj, Message) else None
        return None

    def check(self, user: UserInfo, attrs: Attributes, *, impersonator: UserInfo | None = None) -> Decision:
        """Allow or raise ForbiddenError; writes the audit line of a mutating request."""
        decision = self.review(user, attrs)
        if self.audit is not None and attrs.verb in MUTATING:
            self.audit.record(user, attrs, decision.allowed, decision.reason, now=self.clock(),
                              impersonator=impersonator)
        if not decision.allowed:
            raise errors.ForbiddenError(forbidden_message(user, attrs, decision.reason))
        return decision

    def impersonate(self, user: UserInfo, as_user: str, as_groups: Sequence[str]) -> UserInfo:
        """The user to act as, when `user` may impersonate `as_user` with `as_groups`; else ForbiddenError."""
        if not as_user:
            if as_groups:
                raise errors.ForbiddenError("impersonating groups needs a user to impersonate as well")
            return user
        for attrs in impersonation_attributes(as_user, as_groups):
            decision = self.review(user, attrs)
            if not decision.allowed:
                if self.audit is not None:
                    self.audit.record(user, attrs, False, decision.reason, now=self.clock())
                raise errors.ForbiddenError(forbidden_message(user, attrs, decision.reason))
        return impersonated(as_user, as_groups)


def kind_attributes(verb: str, kind: kinds.Kind, namespace: str = "", name: str = "",
                    subresource: str = "") -> Attributes:
    """The attributes of a request on `kind` (namespace ignored for cluster-scoped kinds)."""
    return Attributes(verb, kind.resource, subresource, kind.group, namespace if kind.namespaced else "", name)
