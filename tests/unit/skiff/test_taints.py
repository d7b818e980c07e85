"""When a lab (or a user) may count a node as taking new pods: Ready, uncordoned, untainted."""

from __future__ import annotations

import pytest

from skiff import taints
from skiffpb.api.v1 import types_pb2 as t


def node(ready: str, *, taint_keys: tuple[str, ...] = (), unschedulable: bool = False) -> t.Node:
    n = t.Node()
    n.metadata.name = "n1"
    n.spec.unschedulable = unschedulable
    for key in taint_keys:
        n.spec.taints.add(key=key, effect=taints.NO_SCHEDULE)
    if ready:
        n.status.conditions.add(type="Ready", status=ready)
    return n


@pytest.mark.parametrize(("n", "want"), [
    (node("True"), True),
    (node("True", taint_keys=(taints.NOT_READY,)), False),
    (node("True", taint_keys=(taints.UNREACHABLE,)), False),
    (node("True", taint_keys=("example.com/dedicated",)), True),
    (node("True", unschedulable=True), False),
    (node("False"), False),
    (node("Unknown"), False),
    (node(""), False),
], ids=["ready", "not-ready-taint-not-yet-lifted", "unreachable-taint", "user-taint-is-the-pods-business",
        "cordoned", "not-ready", "unknown", "no-condition"])
def test_takes_new_pods(n: t.Node, want: bool) -> None:
    assert taints.takes_new_pods(n) is want
