"""`skiff get roles,clusterroles,rolebindings,clusterrolebindings`: kubectl's columns and cells."""

from __future__ import annotations

import pytest

from skiff import kinds
from skiff.cli import printers
from skiff.clock import stamp
from skiffpb.api.v1 import types_pb2 as t

NOW = 1_700_000_000.0


def binding(cls: type[t.RoleBinding] | type[t.ClusterRoleBinding],
            role_kind: str) -> t.RoleBinding | t.ClusterRoleBinding:
    b = cls(metadata=t.ObjectMeta(name="b", namespace="team" if cls is t.RoleBinding else ""),
            role_ref=t.RoleRef(kind=role_kind, name="edit"),
            subjects=[t.Subject(kind="User", name="alice"), t.Subject(kind="Group", name="devs"),
                      t.Subject(kind="User", name="bob"), t.Subject(kind="ServiceAccount", name="ci", namespace="b")])
    stamp(b.metadata.creation_timestamp, NOW - 120)
    return b


@pytest.mark.parametrize(("resource", "obj", "wide", "header", "row"), [
    ("clusterroles", t.ClusterRole(metadata=t.ObjectMeta(name="view")), False, ["NAME", "CREATED AT"], None),
    ("rolebindings", binding(t.RoleBinding, "ClusterRole"), False, ["NAME", "ROLE", "AGE"],
     ["b", "ClusterRole/edit", "2m"]),
    ("clusterrolebindings", binding(t.ClusterRoleBinding, "ClusterRole"), True,
     ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
     ["b", "ClusterRole/edit", "2m", "alice, bob", "devs", "b/ci"]),
], ids=["clusterrole", "rolebinding", "clusterrolebinding-wide"])
def test_rbac_columns(resource: str, obj: object, wide: bool, header: list[str], row: list[str] | None) -> None:
    kind = kinds.by_resource(resource)
    assert kind is not None
    got_header, rows = printers.rows(kind, [obj], now=NOW, wide=wide)  # type: ignore[list-item]
    assert got_header == header
    if row is not None:
        assert rows == [row]
    assert kinds.by_alias("clusterrolebinding") is kinds.by_resource("clusterrolebindings")
