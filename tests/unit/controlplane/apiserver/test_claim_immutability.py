"""A PersistentVolumeClaim's spec after creation: only requests change, and volumeName and
storageClassName may be set once while unset (strategy.update_problems)."""

from __future__ import annotations

import pytest

from controlplane.apiserver.strategy import update_problems
from skiffpb.api.v1 import types_pb2 as t


def claim(*, size: str = "1Gi", class_name: str | None = None, volume: str = "",
          modes: tuple[str, ...] = ("ReadWriteOnce",)) -> t.PersistentVolumeClaim:
    spec = t.PersistentVolumeClaimSpec(access_modes=list(modes), volume_name=volume)
    spec.resources.requests["storage"] = size
    if class_name is not None:
        spec.storage_class_name = class_name
    return t.PersistentVolumeClaim(metadata=t.ObjectMeta(name="c", namespace="default"), spec=spec)


@pytest.mark.parametrize(("old", "new", "changed"), [
    (claim(), claim(), None),
    (claim(), claim(size="2Gi"), None),
    (claim(), claim(class_name="local-path"), None),
    (claim(), claim(volume="pvc-1"), None),
    (claim(class_name="local-path"), claim(class_name="fast"), "storageClassName"),
    (claim(volume="pvc-1"), claim(volume="pvc-2"), "volumeName"),
    (claim(), claim(modes=("ReadWriteMany",)), "accessModes"),
], ids=["same", "requests", "class-set-once", "volume-set-once", "class-changed", "volume-changed", "modes"])
def test_claim_spec_changes(old: t.PersistentVolumeClaim, new: t.PersistentVolumeClaim, changed: str | None) -> None:
    problems = update_problems(old, new)
    if changed is None:
        assert problems == []
    else:
        assert len(problems) == 1 and f"changed: {changed}" in problems[0].problem
