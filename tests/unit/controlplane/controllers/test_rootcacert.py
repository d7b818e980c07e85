"""Root CA publisher: kube-root-ca.crt with exactly {ca.crt: bundle} in every active namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.controllers.rootcacert import RootCACertPublisher, plan
from skiff.clock import stamp
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster

BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def ns(name: str, *, terminating: bool = False) -> t.Namespace:
    out = t.Namespace(metadata=t.ObjectMeta(name=name))
    out.status.phase = "Active"
    if terminating:
        stamp(out.metadata.deletion_timestamp, 1.0)
        out.status.phase = "Terminating"
    return out


def cm(data: dict[str, str], *, binary: dict[str, bytes] | None = None, labels: dict[str, str] | None = None,
       deleting: bool = False) -> t.ConfigMap:
    out = t.ConfigMap(metadata=t.ObjectMeta(name="kube-root-ca.crt", namespace="a", labels=labels or {}),
                      data=data, binary_data=binary or {})
    if deleting:
        stamp(out.metadata.deletion_timestamp, 1.0)
    return out


@pytest.mark.parametrize(("namespace", "existing", "want"), [
    (ns("a"), None, "create"),
    (ns("a"), cm({"ca.crt": BUNDLE}), None),
    (ns("a"), cm({"ca.crt": "tampered"}), "update"),
    (ns("a"), cm({"ca.crt": BUNDLE, "extra": "x"}), "update"),
    (ns("a"), cm({}), "update"),
    (ns("a"), cm({"ca.crt": BUNDLE}, binary={"b": b"1"}), "update"),
    (ns("a"), cm({"ca.crt": BUNDLE}, deleting=True), None),
    (ns("a", terminating=True), None, None),
    (None, None, None),
], ids=["missing", "same", "changed", "extra-key", "emptied", "binary-data", "being-deleted", "terminating",
        "no-namespace"])
def test_plan(namespace: t.Namespace | None, existing: t.ConfigMap | None, want: str | None) -> None:
    write = plan(namespace, existing, BUNDLE)
    assert (write.verb if write else None) == want
    if write is not None:
        assert dict(write.config_map.data) == {"ca.crt": BUNDLE} and not write.config_map.binary_data
        assert (write.config_map.metadata.namespace, write.config_map.metadata.name) == ("a", "kube-root-ca.crt")


def test_plan_keeps_user_metadata() -> None:
    write = plan(ns("a"), cm({"ca.crt": "x"}, labels={"team": "blue"}), BUNDLE)
    assert write is not None and dict(write.config_map.metadata.labels) == {"team": "blue"}


async def test_published_everywhere_and_repaired(cluster: Cluster, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(BUNDLE)
    ctrl = RootCACertPublisher(cluster.api, cluster.factory, root_ca_file=str(ca))
    await cluster.create(t.Namespace(api_version="v1", kind="Namespace", metadata=t.ObjectMeta(name="team-a")))
    await cluster.start()
    await cluster.drain(ctrl)
    published = {c.metadata.namespace: dict(c.data) for c in cluster.api.objects(t.ConfigMap)
                 if c.metadata.name == "kube-root-ca.crt"}
    assert published["team-a"] == {"ca.crt": BUNDLE} and published["default"] == {"ca.crt": BUNDLE}
    assert published.keys() >= {"kube-system", "kube-public"}

    edited = await cluster.api.get(t.ConfigMap, "kube-root-ca.crt", "team-a")
    edited.data["ca.crt"] = "not the CA"
    await cluster.api.update(edited)
    await cluster.drain(ctrl)
    assert dict((await cluster.api.get(t.ConfigMap, "kube-root-ca.crt", "team-a")).data) == {"ca.crt": BUNDLE}

    await cluster.api.delete(t.ConfigMap, "kube-root-ca.crt", "team-a")
    await cluster.drain(ctrl)
    assert dict((await cluster.api.get(t.ConfigMap, "kube-root-ca.crt", "team-a")).data) == {"ca.crt": BUNDLE}

    updates = cluster.writes("update", "configmaps")
    ctrl.queue.add("team-a")
    await cluster.drain(ctrl)
    assert cluster.writes("update", "configmaps") == updates, "a correct ConfigMap is left alone"
