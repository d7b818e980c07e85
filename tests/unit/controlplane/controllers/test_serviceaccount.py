"""Service account controller: every active namespace gets `default`, recreated when deleted."""

from __future__ import annotations

import pytest

from controlplane.controllers.serviceaccount import ServiceAccountController, needs_default
from skiff.clock import stamp
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster


def ns(name: str, *, terminating: bool = False) -> t.Namespace:
    out = t.Namespace(metadata=t.ObjectMeta(name=name))
    out.status.phase = "Active"
    if terminating:
        stamp(out.metadata.deletion_timestamp, 1.0)
        out.status.phase = "Terminating"
    return out


@pytest.mark.parametrize(("namespace", "existing", "want"), [
    (ns("a"), None, True),
    (ns("a"), t.ServiceAccount(metadata=t.ObjectMeta(name="default", namespace="a")), False),
    (ns("a", terminating=True), None, False),
    (None, None, False),
], ids=["missing", "present", "terminating", "no-namespace"])
def test_needs_default(namespace: t.Namespace | None, existing: t.ServiceAccount | None, want: bool) -> None:
    assert needs_default(namespace, existing) is want


async def test_every_namespace_gets_default_and_it_comes_back(cluster: Cluster) -> None:
    ctrl = ServiceAccountController(cluster.api, cluster.factory)
    await cluster.create(t.Namespace(api_version="v1", kind="Namespace", metadata=t.ObjectMeta(name="team-a")))
    await cluster.start()
    await cluster.drain(ctrl)
    names = sorted((sa.metadata.namespace, sa.metadata.name) for sa in cluster.api.objects(t.ServiceAccount))
    assert ("team-a", "default") in names and ("default", "default") in names and ("kube-system", "default") in names
    await cluster.api.delete(t.ServiceAccount, "default", "team-a")
    await cluster.drain(ctrl)
    assert (await cluster.api.get(t.ServiceAccount, "default", "team-a")).metadata.name == "default"
    creates = cluster.writes("create", "serviceaccounts")
    ctrl.queue.add("team-a")
    await cluster.drain(ctrl)
    assert cluster.writes("create", "serviceaccounts") == creates, "an existing default is left alone"
