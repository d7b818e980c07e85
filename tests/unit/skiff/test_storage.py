"""skiff.storage: default class, claim/volume matching, node selectors, volume placement."""

from __future__ import annotations

import pytest

from skiff import storage
from skiffpb.api.v1 import types_pb2 as t


def term(*reqs: tuple[str, str, list[str]], fields: tuple[tuple[str, str, list[str]], ...] = ()) -> t.NodeSelectorTerm:
    out = t.NodeSelectorTerm()
    for key, op, values in reqs:
        out.match_expressions.add(key=key, operator=op, values=values)
    for key, op, values in fields:
        out.match_fields.add(key=key, operator=op, values=values)
    return out


LABELS = {"kubernetes.io/hostname": "n1", "zone": "a", "disks": "4"}


@pytest.mark.parametrize(("terms", "want"), [
    ([term(("zone", "In", ["a", "b"]))], True),
    ([term(("zone", "NotIn", ["a"]))], False),
    ([term(("ssd", "DoesNotExist", []))], True),
    ([term(("zone", "Exists", []), ("ssd", "Exists", []))], False),
    ([term(("zone", "In", ["b"])), term(("disks", "Gt", ["3"]))], True),
    ([term(("disks", "Lt", ["3"]))], False),
    ([term()], False),
    ([term(fields=(("metadata.name", "In", ["n1"]),))], True),
    ([term(fields=(("metadata.name", "In", ["n2"]),))], False),
], ids=["in", "not-in", "does-not-exist", "and-within-a-term", "or-across-terms", "lt", "empty-term-matches-nothing",
        "match-fields-name", "match-fields-other"])
def test_node_selector(terms: list[t.NodeSelectorTerm], want: bool) -> None:
    assert storage.node_selector_matches(t.NodeSelector(node_selector_terms=terms), "n1", LABELS) is want


def sc(name: str, *, default: str | None = None, created: int = 0) -> t.StorageClass:
    out = t.StorageClass(provisioner="p")
    out.metadata.name = name
    out.metadata.creation_timestamp.FromSeconds(created)
    if default is not None:
        out.metadata.annotations[storage.DEFAULT_CLASS_ANNOTATION] = default
    return out


@pytest.mark.parametrize(("classes", "want"), [
    ([], None),
    ([sc("a"), sc("b", default="false")], None),
    ([sc("a", default="true"), sc("b")], "a"),
    ([sc("old", default="true", created=1), sc("new", default="true", created=2)], "new"),
], ids=["none", "none-marked", "one", "newest-of-two"])
def test_default_class(classes: list[t.StorageClass], want: str | None) -> None:
    found = storage.default_class(classes)
    assert (found.metadata.name if found else None) == want


def test_volume_matching_selector_and_size() -> None:
    claim = t.PersistentVolumeClaim()
    claim.spec.storage_class_name = ""
    claim.spec.access_modes.append("ReadWriteOnce")
    claim.spec.resources.requests["storage"] = "1Gi"
    claim.spec.selector.match_labels["tier"] = "gold"
    vols = []
    for name, size, tier in (("small-gold", "512Mi", "gold"), ("big-gold", "4Gi", "gold"), ("mid-gold", "2Gi", "gold"),
                             ("mid-silver", "1Gi", "silver")):
        v = t.PersistentVolume()
        v.metadata.name = name
        v.metadata.labels["tier"] = tier
        v.spec.capacity["storage"] = size
        v.spec.access_modes.append("ReadWriteOnce")
        vols.append(v)
    best = storage.best_volume(claim, vols)
    assert best is not None and best.metadata.name == "mid-gold"


def test_claim_names_and_paths() -> None:
    assert storage.claim_name_for("data", "db", 2) == "data-db-2"
    assert storage.local_path("/s", "pvc-1", "ns", "c") == "/s/pvc-1_ns_c"
    assert storage.volume_node(t.PersistentVolume(spec=t.PersistentVolumeSpec(
        node_affinity=storage.node_affinity_for("n7")))) == "n7"


def _c(name: str, cpu: str, *, sidecar: bool = False) -> t.Container:
    c = t.Container(name=name)
    c.resources.requests["cpu"] = cpu
    if sidecar:
        c.restart_policy = "Always"
    return c


@pytest.mark.parametrize(("app", "init", "want"), [
    (["100m", "200m"], [], 300),
    (["100m"], [("500m", False)], 500),
    (["400m"], [("100m", False), ("200m", False)], 400),
    (["100m"], [("50m", True), ("300m", False)], 350),
    (["100m"], [("300m", False), ("50m", True)], 300),
    (["100m"], [("50m", True), ("60m", True)], 210),
], ids=["apps-only", "big-init", "init-below-apps", "sidecar-beside-later-init", "sidecar-after-init",
        "sidecars-add-to-apps"])
def test_effective_cpu_request_with_init_containers(app: list[str], init: list[tuple[str, bool]], want: int) -> None:
    from skiff import podresources, quantity

    p = t.Pod()
    p.spec.containers.extend(_c(f"a{i}", cpu) for i, cpu in enumerate(app))
    p.spec.init_containers.extend(_c(f"i{i}", cpu, sidecar=side) for i, (cpu, side) in enumerate(init))
    assert podresources.effective(p.spec, lambda c: quantity.cpu_millis(c.resources.requests["cpu"]), 0) == want


def test_claim_quota_usage() -> None:
    from skiff import quota

    pvc = t.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    pvc.spec.storage_class_name = "fast"
    pvc.spec.resources.requests["storage"] = "2Gi"
    used = quota.usage(pvc)
    assert used["requests.storage"] == 2 << 30
    assert used["fast.storageclass.storage.k8s.io/requests.storage"] == 2 << 30
    assert used["persistentvolumeclaims"] == 1
    assert quota.fmt("requests.storage", used["requests.storage"]) == "2Gi"
