"""The authorizer's pure parts: RBAC rule matching (Kubernetes' edge cases), bindings and scopes,
modes, the refusal message and impersonation."""

from __future__ import annotations

import pytest

from controlplane.apiserver import authorizer as az
from controlplane.apiserver import bootstrappolicy as bp
from controlplane.apiserver.rbac import Attributes, Policy, rbac_authorize, rule_allows, rules_for, subject_matches
from skiff import identity
from skiff.identity import UserInfo
from skiffpb.api.v1 import types_pb2 as t

ALICE = UserInfo("alice", ("devs", identity.AUTHENTICATED))


def rule(verbs: str, groups: str = "", resources: str = "", names: str = "", urls: str = "") -> t.PolicyRule:
    def split(text: str) -> list[str]:
        return [] if text == "-" else text.split(",") if text else []
    return t.PolicyRule(verbs=split(verbs), api_groups=[""] if groups == "" and resources else split(groups),
                        resources=split(resources), resource_names=split(names), non_resource_urls=split(urls))


@pytest.mark.parametrize(("r", "attrs", "allowed"), [
    (rule("get", "", "pods"), Attributes("get", "pods", namespace="ns"), True),
    (rule("get", "", "pods"), Attributes("list", "pods"), False),
    (rule("*", "", "pods"), Attributes("delete", "pods", name="x"), True),
    (rule("get", "", "pods"), Attributes("get", "pods", "log"), False),  # pods does not cover pods/log
    (rule("get", "", "pods/log"), Attributes("get", "pods", "log"), True),
    (rule("get", "", "*/log"), Attributes("get", "pods", "log"), True),
    (rule("get", "", "*/log"), Attributes("get", "pods"), False),
    (rule("get", "", "*"), Attributes("get", "pods", "log"), True),  # * covers subresources
    (rule("create", "", "pods/exec"), Attributes("create", "pods", "exec", name="web"), True),
    (rule("get", "apps", "deployments"), Attributes("get", "deployments", group="apps"), True),
    (rule("get", "", "deployments"), Attributes("get", "deployments", group="apps"), False),  # wrong group
    (rule("get", "*", "deployments"), Attributes("get", "deployments", group="apps"), True),
    (rule("get", "", "pods", names="web"), Attributes("get", "pods", name="web"), True),
    (rule("get", "", "pods", names="web"), Attributes("get", "pods", name="db"), False),
    (rule("list", "", "pods", names="web"), Attributes("list", "pods"), False),  # names never match a collection
    (rule("create", "", "pods", names="web"), Attributes("create", "pods"), False),  # nor a create
    (rule("get", urls="/healthz"), Attributes("get", path="/healthz"), True),
    (rule("get", urls="/healthz"), Attributes("get", path="/healthz/etcd"), False),
    (rule("get", urls="/apis/*"), Attributes("get", path="/apis/apps/v1"), True),
    (rule("get", urls="*"), Attributes("get", path="/anything"), True),
    (rule("get", urls="*"), Attributes("get", "pods"), False),  # URL rules never allow resources
    (rule("get", "*", "*"), Attributes("get", path="/healthz"), False),  # nor resource rules paths
    (rule("-", "", "pods"), Attributes("get", "pods"), False),  # no verbs: nothing
], ids=["verb", "other-verb", "verb-star", "pods-not-log", "pods-log", "star-log", "star-log-not-pods",
        "star-all", "exec", "group", "wrong-group", "group-star", "name", "other-name", "names-list",
        "names-create", "url", "url-exact", "url-prefix", "url-star", "url-rule-on-resource",
        "resource-rule-on-url", "no-verbs"])
def test_rule_allows(r: t.PolicyRule, attrs: Attributes, allowed: bool) -> None:
    assert rule_allows(r, attrs) is allowed


@pytest.mark.parametrize(("subject", "user", "ns", "matches"), [
    (t.Subject(kind="User", name="alice"), ALICE, "", True),
    (t.Subject(kind="User", name="bob"), ALICE, "", False),
    (t.Subject(kind="Group", name="devs"), ALICE, "", True),
    (t.Subject(kind="Group", name="alice"), ALICE, "", False),  # a group is not a user name
    (t.Subject(kind="ServiceAccount", name="ci", namespace="build"), identity.service_account_user("build", "ci"),
     "", True),
    (t.Subject(kind="ServiceAccount", name="ci"), identity.service_account_user("build", "ci"), "build", True),
    (t.Subject(kind="ServiceAccount", name="ci"), identity.service_account_user("build", "ci"), "other", False),
    (t.Subject(kind="ServiceAccount", name="ci", namespace="build"), UserInfo("ci"), "", False),
], ids=["user", "other-user", "group", "group-vs-user", "sa", "sa-binding-namespace", "sa-other-namespace",
        "sa-vs-plain-user"])
def test_subject_matches(subject: t.Subject, user: UserInfo, ns: str, matches: bool) -> None:
    assert subject_matches(subject, user, ns) is matches


def policy() -> Policy:
    reader = t.ClusterRole(metadata=t.ObjectMeta(name="pod-reader"), rules=[rule("get,list", "", "pods")])
    deployer = t.Role(metadata=t.ObjectMeta(name="deployer", namespace="team"),
                      rules=[rule("create,update", "apps", "deployments")])
    return Policy.of(
        roles=[deployer],
        cluster_roles=[reader],
        role_bindings=[
            t.RoleBinding(metadata=t.ObjectMeta(name="alice-deploys", namespace="team"),
                          subjects=[t.Subject(kind="User", name="alice")],
                          role_ref=t.RoleRef(kind="Role", name="deployer")),
            t.RoleBinding(metadata=t.ObjectMeta(name="devs-read", namespace="team"),
                          subjects=[t.Subject(kind="Group", name="devs")],
                          role_ref=t.RoleRef(kind="ClusterRole", name="pod-reader")),
            t.RoleBinding(metadata=t.ObjectMeta(name="dangling", namespace="team"),
                          subjects=[t.Subject(kind="User", name="alice")],
                          role_ref=t.RoleRef(kind="Role", name="missing")),
        ],
        cluster_role_bindings=[t.ClusterRoleBinding(metadata=t.ObjectMeta(name="carol-reads"),
                                                    subjects=[t.Subject(kind="User", name="carol")],
                                                    role_ref=t.RoleRef(kind="ClusterRole", name="pod-reader"))])


@pytest.mark.parametrize(("user", "attrs", "allowed", "reason"), [
    (ALICE, Attributes("create", "deployments", group="apps", namespace="team"), True,
     'RBAC: allowed by RoleBinding "alice-deploys/team" of Role "deployer" to User "alice"'),
    (ALICE, Attributes("create", "deployments", group="apps", namespace="other"), False, ""),
    (ALICE, Attributes("list", "pods", namespace="team"), True,
     'RBAC: allowed by RoleBinding "devs-read/team" of ClusterRole "pod-reader" to Group "devs"'),
    (ALICE, Attributes("list", "pods"), False, ""),  # a RoleBinding of a ClusterRole is not cluster-wide
    (UserInfo("carol"), Attributes("list", "pods"), True,
     'RBAC: allowed by ClusterRoleBinding "carol-reads" of ClusterRole "pod-reader" to User "carol"'),
    (UserInfo("carol"), Attributes("delete", "pods", namespace="team", name="x"), False, ""),
    (UserInfo("dave"), Attributes("get", "pods", namespace="team"), False, ""),
], ids=["role-in-namespace", "role-elsewhere", "clusterrole-via-rolebinding", "rolebinding-not-cluster-wide",
        "clusterrolebinding", "clusterrole-verbs-only", "nobody"])
def test_rbac_authorize(user: UserInfo, attrs: Attributes, allowed: bool, reason: str) -> None:
    decision = rbac_authorize(user, attrs, policy())
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_rules_for_collects_cluster_and_namespace_rules() -> None:
    assert [list(r.resources) for r in rules_for(ALICE, "team", policy())] == [["deployments"], ["pods"]]
    assert rules_for(ALICE, "", policy()) == []


@pytest.mark.parametrize(("modes", "user", "attrs", "allowed"), [
    (("Node", "RBAC"), identity.INSECURE_ADMIN, Attributes("delete", "nodes", name="n1"), True),  # masters
    (("AlwaysDeny",), identity.INSECURE_ADMIN, Attributes("delete", "nodes", name="n1"), True),  # masters first
    (("AlwaysAllow",), UserInfo("nobody"), Attributes("delete", "nodes", name="n1"), True),
    (("AlwaysDeny", "AlwaysAllow"), UserInfo("nobody"), Attributes("get", "pods"), False),  # first opinion wins
    (("RBAC",), UserInfo("carol"), Attributes("list", "pods"), True),
    (("Node",), UserInfo("carol"), Attributes("list", "pods"), False),  # no mode with an opinion: denied
    (("Node", "RBAC"), identity.node_user("n1"), Attributes("get", "services", namespace="x", name="s"), True),
    (("RBAC",), identity.node_user("n1"), Attributes("get", "services", namespace="x", name="s"), False),
], ids=["masters", "masters-before-modes", "always-allow", "first-opinion", "rbac", "no-opinion-denies",
        "node", "node-needs-node-mode"])
def test_decide_modes(modes: tuple[str, ...], user: UserInfo, attrs: Attributes, allowed: bool) -> None:
    assert az.decide(user, attrs, policy(), modes).allowed is allowed


@pytest.mark.parametrize(("text", "modes"), [
    ("Node,RBAC", ("Node", "RBAC")), ("AlwaysAllow", ("AlwaysAllow",)), (" RBAC , Node ", ("RBAC", "Node")),
    ("ABAC", None), ("RBAC,RBAC", None), ("", None),
], ids=["default", "allow", "spaces", "unknown", "repeated", "empty"])
def test_parse_modes(text: str, modes: tuple[str, ...] | None) -> None:
    if modes is None:
        with pytest.raises(ValueError, match="--authorization-mode"):
            az.parse_modes(text)
    else:
        assert az.parse_modes(text) == modes


@pytest.mark.parametrize(("attrs", "message"), [
    (Attributes("list", "pods", namespace="y"),
     'pods is forbidden: User "x" cannot list resource "pods" in API group "" in the namespace "y"'),
    (Attributes("get", "pods", "log", namespace="y", name="web"),
     'pods "web" is forbidden: User "x" cannot get resource "pods/log" in API group "" in the namespace "y"'),
    (Attributes("delete", "deployments", group="apps", namespace="y", name="web"),
     'deployments.apps "web" is forbidden: User "x" cannot delete resource "deployments" in API group "apps" '
     'in the namespace "y"'),
    (Attributes("list", "nodes"),
     'nodes is forbidden: User "x" cannot list resource "nodes" in API group "" at the cluster scope'),
    (Attributes("get", path="/healthz"), 'forbidden: User "x" cannot get path "/healthz"'),
], ids=["list", "subresource", "group", "cluster", "path"])
def test_forbidden_message_is_kubernetes(attrs: Attributes, message: str) -> None:
    assert az.forbidden_message(UserInfo("x"), attrs) == message


def test_impersonation_needs_the_right_for_the_user_and_every_group() -> None:
    p = Policy.of([], [t.ClusterRole(metadata=t.ObjectMeta(name="imp"),
                                     rules=[rule("impersonate", "", "users", names="bob"),
                                            rule("impersonate", "", "groups", names="devs")])], [],
                  [t.ClusterRoleBinding(metadata=t.ObjectMeta(name="imp"), subjects=[t.Subject(kind="User",
                                                                                               name="alice")],
                                        role_ref=t.RoleRef(kind="ClusterRole", name="imp"))])
    objects = {"clusterroles": list(p.cluster_roles.values()),
               "clusterrolebindings": list(p.cluster_role_bindings)}
    authz = az.Authorizer(lambda resource: 1, lambda resource: objects.get(resource, []))
    assert authz.impersonate(ALICE, "bob", ["devs"]) == UserInfo("bob", ("devs", identity.AUTHENTICATED))
    with pytest.raises(az.errors.ForbiddenError, match='users "carol" is forbidden: User "alice" cannot impersonate'):
        authz.impersonate(ALICE, "carol", [])
    with pytest.raises(az.errors.ForbiddenError, match='groups "system:masters" is forbidden'):
        authz.impersonate(ALICE, "bob", [identity.MASTERS])
    assert authz.impersonate(ALICE, "", []) is ALICE
    assert az.impersonated("system:serviceaccount:ns:ci", []).groups == identity.service_account_user("ns", "ci").groups


def test_authorizer_rebuilds_the_policy_only_when_a_cache_moves() -> None:
    revision = [1]
    roles: list[object] = []
    read: list[str] = []

    def objects(resource: str) -> list[object]:
        read.append(resource)
        return roles if resource == "clusterroles" else []

    authz = az.Authorizer(lambda resource: revision[0], objects)
    first = authz.policy()
    assert authz.policy() is first and len(read) == 4  # unchanged revisions: the same snapshot, no reads
    roles.append(t.ClusterRole(metadata=t.ObjectMeta(name="r")))
    assert "r" not in authz.policy().cluster_roles  # the caches have not moved: not seen yet
    revision[0] = 2
    assert "r" in authz.policy().cluster_roles and len(read) == 8
    authz.review(identity.INSECURE_ADMIN, Attributes("get", "pods"))
    revision[0] = 3
    authz.review(identity.INSECURE_ADMIN, Attributes("get", "pods"))
    assert len(read) == 8  # the admin's requests never read the policy


def test_bootstrap_policy_is_valid_and_gives_masters_a_binding() -> None:
    from skiff.validation import validate
    for obj in bp.defaults():
        assert validate(obj) == [], obj.metadata.name
    bindings = {b.metadata.name: b for b in bp.cluster_role_bindings()}
    assert [s.name for s in bindings["cluster-admin"].subjects] == [identity.MASTERS]
    roles = {r.metadata.name for r in bp.cluster_roles()}
    assert {b.role_ref.name for b in bindings.values()} <= roles


@pytest.mark.parametrize(("existing", "actions"), [
    ({}, ["create"]),
    ({("ClusterRole", "view"): bp.cluster_role("view", bp.view_rules())}, []),
    ({("ClusterRole", "view"): bp.cluster_role("view", [])}, ["update"]),
    ({("ClusterRole", "view"): t.ClusterRole(metadata=t.ObjectMeta(
        name="view", annotations={bp.AUTOUPDATE: "false"}))}, []),
], ids=["missing", "same", "drifted", "operator-owned"])
def test_plan_reconcile(existing: dict[tuple[str, str], t.ClusterRole], actions: list[str]) -> None:
    wanted = [bp.cluster_role("view", bp.view_rules())]
    plan = bp.plan_reconcile(existing, wanted)
    assert [a for a, _ in plan] == actions
    for _, obj in plan:
        assert list(obj.rules) == list(wanted[0].rules)  # type: ignore[attr-defined]
