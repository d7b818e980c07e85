"""metrics.k8s.io from usage summaries: which nodes and pods get a figure, the JSON metrics-server
sends, and `skiff top`'s rows (pure parts)."""

from __future__ import annotations

import pytest

from controlplane.apiserver import resourcemetrics as rm
from skiff.cli.top import rows_nodes, rows_pods
from skiffpb.api.v1 import metrics_pb2 as m
from skiffpb.api.v1 import types_pb2 as t

S = 1_000_000_000


def node(name: str, **labels: str) -> t.Node:
    n = t.Node(metadata=t.ObjectMeta(name=name, labels=labels))
    n.status.allocatable.update({"cpu": "2", "memory": "4Gi"})
    return n


def pod(name: str, uid: str, node_name: str = "n1") -> t.Pod:
    p = t.Pod(metadata=t.ObjectMeta(name=name, namespace="default", uid=uid, labels={"app": "web"}))
    p.spec.node_name = node_name
    return p


SUMMARIES = {
    "n1": m.UsageSummary(node_name="n1", timestamp=1800000000.0, window_seconds=10.0,
                         node=m.ResourceUsage(cpu_nano_cores=S // 2, memory_working_set_bytes=1 << 30),
                         pods=[m.PodUsage(namespace="default", name="web-1", uid="u1", containers=[
                             m.ContainerUsage(name="web", cpu_nano_cores=250_000_000,
                                              memory_working_set_bytes=8 << 20)])]),
    "n2": m.UsageSummary(node_name="n2", timestamp=1800000000.0),  # one sample so far: no figures
}


@pytest.mark.parametrize(("nodes", "named"), [
    ([node("n1"), node("n2"), node("n3")], ["n1"]),  # n2 has no window yet, n3 did not answer
    ([node("n2")], []),
], ids=["only-measured", "none-yet"])
def test_plan_node_metrics_leaves_out_nodes_without_figures(nodes: list[t.Node], named: list[str]) -> None:
    assert [i.name for i in rm.plan_node_metrics(nodes, SUMMARIES)] == named


@pytest.mark.parametrize(("pods", "named"), [
    ([pod("web-1", "u1")], ["web-1"]),
    ([pod("web-1", "other-uid")], []),  # a new pod of the same name is not the measured one
    ([pod("web-2", "u2")], []),
], ids=["measured", "recreated", "unmeasured"])
def test_plan_pod_metrics_joins_on_namespace_name_and_uid(pods: list[t.Pod], named: list[str]) -> None:
    assert [i.name for i in rm.plan_pod_metrics(pods, SUMMARIES)] == named


def test_json_is_what_metrics_server_sends() -> None:
    n = node("n1", zone="a")
    item = rm.plan_node_metrics([n], SUMMARIES)[0]
    assert rm.node_metrics_data(n, item, now=1800000005.0) == {
        "kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": "n1", "creationTimestamp": "2027-01-15T08:00:05Z", "labels": {"zone": "a"}},
        "timestamp": "2027-01-15T08:00:00Z", "window": "10s", "usage": {"cpu": "500000000n", "memory": "1048576Ki"}}
    p = pod("web-1", "u1")
    pitem = rm.plan_pod_metrics([p], SUMMARIES)[0]
    data = rm.pod_metrics_data(p, pitem, now=1800000005.0)
    assert data["metadata"]["namespace"] == "default" and data["metadata"]["labels"] == {"app": "web"}
    assert data["containers"] == [{"name": "web", "usage": {"cpu": "250000000n", "memory": "8192Ki"}}]
    assert rm.list_data("PodMetrics", [data])["kind"] == "PodMetricsList"


def test_skiff_top_rows() -> None:
    items = rm.plan_node_metrics([node("n1")], SUMMARIES)
    assert rows_nodes(items, {"n1": node("n1")}) == [["n1", "500m", "25%", "1024Mi", "25%"]]
    assert rows_nodes(items, {}) == [["n1", "500m", "<unknown>", "1024Mi", "<unknown>"]]
    pods = rm.plan_pod_metrics([pod("web-1", "u1")], SUMMARIES)
    assert rows_pods(pods, all_namespaces=False, containers=False) == [["web-1", "250m", "8Mi"]]
    assert rows_pods(pods, all_namespaces=True, containers=True) == [["default", "web-1", "web", "250m", "8Mi"]]
