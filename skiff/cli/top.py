"""`skiff top nodes|pods`: CPU and memory in use, from the api-server's metrics.k8s.io (as
`kubectl top`), read over gRPC.

What must hold: the figures printed are the api-server's, only formatted here (`rows_*` are
pure); nodes show their share of allocatable as kubectl does; a cluster with no figures yet
says so and exits 1 (kubectl's "metrics not available yet").
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from skiff import errors, quantity
from skiff.cli import common
from skiff.cli.printers import table
from skiff.client import Client
from skiffpb.api.v1 import metrics_pb2 as m
from skiffpb.api.v1 import types_pb2 as t


def register(sub: Any) -> None:
    p = sub.add_parser("top", help="show CPU and memory in use by nodes or pods (metrics.k8s.io)")
    p.add_argument("what", choices=("nodes", "node", "no", "pods", "pod", "po"), help="nodes or pods")
    p.add_argument("name", nargs="?", default="", help="one node or pod")
    p.add_argument("-l", "--selector", default="", help="label selector")
    p.add_argument("--containers", action="store_true", help="pods: one line per container")
    common.add_connection_flags(p, all_namespaces=True)
    p.set_defaults(func=main)


def cpu(nano_cores: int) -> str:
    return f"{nano_cores // 1_000_000}m"


def memory(size: int) -> str:
    return f"{size // (1 << 20)}Mi"


def _percent(used: float, allocatable: float) -> str:
    return f"{round(100 * used / allocatable)}%" if allocatable > 0 else "<unknown>"


def rows_nodes(items: Sequence[m.NodeMetricsItem], nodes: dict[str, t.Node]) -> list[list[str]]:
    rows = []
    for item in sorted(items, key=lambda i: i.name):
        node = nodes.get(item.name)
        alloc = node.status.allocatable if node is not None else {}
        cpu_alloc = quantity.cpu_millis(alloc["cpu"]) * 1_000_000 if "cpu" in alloc else 0
        mem_alloc = int(quantity.parse(alloc["memory"])) if "memory" in alloc else 0
        rows.append([item.name, cpu(item.usage.cpu_nano_cores), _percent(item.usage.cpu_nano_cores, cpu_alloc),
                     memory(item.usage.memory_working_set_bytes),
                     _percent(item.usage.memory_working_set_bytes, mem_alloc)])
    return rows


def rows_pods(items: Sequence[m.PodMetricsItem], *, all_namespaces: bool, containers: bool) -> list[list[str]]:
    rows = []
    for item in sorted(items, key=lambda i: (i.namespace, i.name)):
        prefix = [item.namespace] if all_namespaces else []
        if containers:
            rows += [[*prefix, item.name, c.name, cpu(c.cpu_nano_cores), memory(c.memory_working_set_bytes)]
                     for c in item.containers]
        else:
            rows.append([*prefix, item.name, cpu(sum(c.cpu_nano_cores for c in item.containers)),
                         memory(sum(c.memory_working_set_bytes for c in item.containers))])
    return rows


def main(args: argparse.Namespace) -> int:
    nodes_wanted = args.what in ("nodes", "node", "no")

    async def body(client: Client) -> int:
        if nodes_wanted:
            found = await client.node_metrics(name=args.name, label_selector=args.selector)
            if not found.items:
                raise errors.NotFoundError("metrics not available yet")
            nodes = {n.metadata.name: n for n in (await client.list(t.Node)).items}
            print(table(["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], rows_nodes(found.items,
                                                                                                  nodes)))
            return 0
        namespace = "" if args.all_namespaces else common.namespace(args)
        pods = await client.pod_metrics(namespace=namespace, name=args.name, label_selector=args.selector)
        if not pods.items:
            raise errors.NotFoundError(f"metrics not available yet in namespace {namespace or '(all)'}")
        header = (["NAMESPACE"] if args.all_namespaces else []) + ["NAME"] + (
            ["CONTAINER"] if args.containers else []) + ["CPU(cores)", "MEMORY(bytes)"]
        print(table(header, rows_pods(pods.items, all_namespaces=args.all_namespaces, containers=args.containers)))
        return 0

    return common.run(args, body)
