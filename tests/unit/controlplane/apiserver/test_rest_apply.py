"""Server-side apply on the JSON form (controlplane/apiserver/rest/apply.py): field sets, FieldsV1,
ownership after apply and update, conflicts naming the field and the manager, removal of fields a
manager stops applying."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controlplane.apiserver.rest import apply
from skiffpb.api.v1 import types_pb2 as t

DESC = t.Deployment.DESCRIPTOR
NOW = "2026-12-07T05:00:00Z"


def deploy(*, replicas: int | None = 2, image: str = "web:1", labels: dict[str, str] | None = None,
           env: list[dict[str, str]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "web", "image": image}
    if env is not None:
        container["env"] = env
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    meta: dict[str, Any] = {"name": "web"}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


WEB = '.spec.template.spec.containers[name="web"]'


@pytest.mark.parametrize(("doc", "expected"), [
    (deploy(replicas=3), {("f:spec", "f:replicas")}),
    (deploy(labels={"tier": "x"}), {("f:metadata", "f:labels", "f:tier")}),
    (deploy(), {("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"web"}', "f:image"),
                ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"web"}', "f:name")}),
], ids=["scalar", "map-key", "keyed-list-element"])
def test_leaves_hold(doc: dict[str, Any], expected: set[apply.Path]) -> None:
    got = apply.leaves(doc, DESC)
    assert expected <= got
    assert not any(p[:2] == ("f:metadata", "f:name") for p in got)  # system fields are nobody's


def test_fields_v1_round_trip() -> None:
    paths = apply.leaves(deploy(env=[{"name": "A", "value": "1"}]), DESC)
    v1 = apply.to_fields_v1(paths)
    assert v1["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']["."] == {}
    assert apply.from_fields_v1(v1) == paths


def test_first_apply_creates_and_owns_everything() -> None:
    obj, owners = apply.apply(None, deploy(), DESC, manager="kubectl", owners=[], force=False, now=NOW)
    assert obj["spec"]["replicas"] == 2
    assert [(o.manager, o.operation) for o in owners] == [("kubectl", "Apply")]
    assert owners[0].fields == apply.leaves(deploy(), DESC)


@pytest.mark.parametrize(("other_value", "force", "conflicts"), [
    (5, False, [(".spec.replicas", "kubectl-scale")]),
    (2, False, []),  # the same value: shared, no conflict
    (5, True, []),
], ids=["different-value-conflicts", "same-value-shared", "force-takes-it"])
def test_conflicts_with_another_manager(other_value: int, force: bool, conflicts: list[tuple[str, str]]) -> None:
    live, owners = apply.apply(None, deploy(replicas=3), DESC, manager="kubectl", owners=[], force=False, now=NOW)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = other_value
    owners = apply.update(live, scaled, DESC, manager="kubectl-scale", owners=owners, now=NOW,
                          api_version="apps/v1")
    assert ("f:spec", "f:replicas") in next(o.fields for o in owners if o.manager == "kubectl-scale") \
        or other_value == 3
    try:
        obj, after = apply.apply(scaled, deploy(replicas=2), DESC, manager="helm", owners=owners, force=force, now=NOW)
    except apply.ConflictError as exc:
        assert [(c.field, c.manager) for c in exc.conflicts] == conflicts
        assert "kubectl-scale" in str(exc) and ".spec.replicas" in str(exc)
        return
    assert conflicts == []
    assert obj["spec"]["replicas"] == 2
    scaler = [o for o in after if o.manager == "kubectl-scale"]
    if force:
        assert all(("f:spec", "f:replicas") not in o.fields for o in scaler)


def test_update_takes_changed_fields_from_the_applier() -> None:
    live, owners = apply.apply(None, deploy(image="web:1"), DESC, manager="kubectl", owners=[], force=False, now=NOW)
    changed = copy.deepcopy(live)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"
    owners = apply.update(live, changed, DESC, manager="kubectl-set", owners=owners, now=NOW, api_version="apps/v1")
    image = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"web"}', "f:image")
    by = {o.manager: o for o in owners}
    assert image in by["kubectl-set"].fields and image not in by["kubectl"].fields
    with pytest.raises(apply.ConflictError) as info:
        apply.apply(changed, deploy(image="web:3"), DESC, manager="kubectl", owners=owners, force=False, now=NOW)
    assert [(c.field, c.manager) for c in info.value.conflicts] == [(WEB + ".image", "kubectl-set")]


@pytest.mark.parametrize(("second", "expect_label", "expect_env"), [
    (deploy(labels={"a": "1"}, env=[{"name": "A", "value": "1"}]), True, ["A"]),
    (deploy(env=[{"name": "A", "value": "1"}]), False, ["A"]),
    (deploy(labels={"a": "1"}, env=[]), True, None),
    (deploy(labels={"a": "1"}), True, None),
], ids=["unchanged", "label-dropped", "env-emptied", "env-dropped"])
def test_fields_no_longer_applied_are_removed(second: dict[str, Any], expect_label: bool,
                                              expect_env: list[str] | None) -> None:
    first = deploy(labels={"a": "1"}, env=[{"name": "A", "value": "1"}])
    live, owners = apply.apply(None, first, DESC, manager="m", owners=[], force=False, now=NOW)
    obj, _ = apply.apply(live, second, DESC, manager="m", owners=owners, force=False, now=NOW)
    assert ("a" in (obj["metadata"].get("labels") or {})) == expect_label
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "web" and container["image"] == "web:1"
    env = container.get("env")
    assert ([e["name"] for e in env] if env else None) == expect_env


def test_fields_another_manager_owns_stay_when_one_stops_applying() -> None:
    live, owners = apply.apply(None, deploy(labels={"a": "1"}), DESC, manager="m1", owners=[], force=False, now=NOW)
    live, owners = apply.apply(live, deploy(labels={"a": "1"}), DESC, manager="m2", owners=owners, force=False,
                               now=NOW)
    obj, owners = apply.apply(live, deploy(), DESC, manager="m1", owners=owners, force=False, now=NOW)
    assert obj["metadata"]["labels"] == {"a": "1"}  # m2 still applies it
    assert sorted(o.manager for o in owners) == ["m1", "m2"]


def test_managed_fields_json_round_trip() -> None:
    _, owners = apply.apply(None, deploy(), DESC, manager="helm", owners=[], force=False, now=NOW)
    doc = apply.with_owners(deploy(), owners)
    entry = doc["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"], entry["fieldsType"], entry["time"]) == ("helm", "Apply", "FieldsV1",
                                                                                         NOW)
    assert apply.owners_of(doc) == owners


@pytest.mark.parametrize(("agent", "manager"), [
    ("kubectl/v1.35.0 (linux/amd64) kubernetes/abc", "kubectl"),
    ("Helm/4.0.0", "Helm"),
    ("", "unknown"),
], ids=["kubectl", "helm", "none"])
def test_default_manager(agent: str, manager: str) -> None:
    assert apply.default_manager(agent) == manager
