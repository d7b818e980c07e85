"""Hollow nodes against a real control plane: 20 agents in this process x a 200-replica Deployment.

Correctness, not timing: every hollow node registers its own Node and Lease; every pod ends up
Running on exactly one node, whose own CRI server (a real gRPC server per node) holds its
sandbox and container, with an IP from that node's range, unique in the cluster; injected CRI
failures are retried by the agents; deleting the Deployment empties every runtime.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.loopback import control_plane
from nodeagent import cri as rt
from nodeagent.fakecri import Faults
from nodeagent.hollow import HollowConfig, HollowNodes, hollow_node_name, hollow_pod_cidr
from skiff.client import Client
from skiffpb.api.v1 import types_pb2 as t
from tests.support.cluster import start_controllers, start_scheduler
from tests.support.prereq import require_binaries

pytestmark = pytest.mark.integration

NODES, REPLICAS = 20, 200


def _deployment() -> t.Deployment:
    d = t.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = "many", "default"
    d.spec.replicas = REPLICAS
    d.spec.selector.match_labels["app"] = "many"
    d.spec.template.metadata.labels["app"] = "many"
    d.spec.template.spec.containers.add(name="c", image="registry.local/app:1")
    return d


async def _until(what: str, cond: Callable[[], object], timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not after {timeout:.0f} s")
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("fail_rate", [0.0, 0.1], ids=["no-faults", "10pct-cri-failures"])
async def test_hollow_nodes_run_a_deployment(tmp_path: Path, fail_rate: float) -> None:
    require_binaries("etcd")
    sockets = tempfile.mkdtemp(prefix="hollow-", dir="/tmp")  # unix socket paths must stay short
    with control_plane(tmp_path) as cp:
        procs = [start_controllers(tmp_path, cp.apiserver_endpoints), start_scheduler(tmp_path, cp.apiserver_endpoints)]
        hollow = HollowNodes(HollowConfig(api_servers=cp.apiserver_endpoints, nodes=NODES, socket_dir=sockets,
                                          faults=Faults(fail_rate=fail_rate, seed=7), relist_period=1.0,
                                          status_check_period=1.0, lease_period=2.0))
        client = Client(cp.apiserver_endpoints)
        try:
            await hollow.start()
            names = {hollow_node_name("hollow-", i) for i in range(NODES)}
            nodes = (await client.list(t.Node)).items
            assert {n.metadata.name for n in nodes} == names
            assert all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in nodes)

            async def leases_held() -> bool:  # the lease loop starts with the agent; its first write follows
                leases = (await client.list(t.Lease, namespace="kube-node-lease")).items
                return {ls.spec.holder_identity for ls in leases} == names

            await _until("every node holds its Lease", leases_held, 30)

            await client.create(_deployment())

            async def all_running() -> bool:
                pods = (await client.list(t.Pod, namespace="default", label_selector="app=many")).items
                return len(pods) == REPLICAS and all(p.status.phase == "Running" for p in pods)

            await _until("all pods Running", all_running, 180)
            pods = (await client.list(t.Pod, namespace="default", label_selector="app=many")).items
            ips = [p.status.pod_ip for p in pods]
            assert len(set(ips)) == REPLICAS, "pod IPs are not unique"
            by_node = Counter(p.spec.node_name for p in pods)
            assert set(by_node) <= names and sum(by_node.values()) == REPLICAS
            for i, node in enumerate(hollow.nodes):
                name = node.agent.config.node_name
                mine = {p.metadata.uid for p in pods if p.spec.node_name == name}
                running = {s.config.labels[rt.LABEL_POD_UID] for s in node.fake.sandboxes.values()
                           if s.state == 0}  # SANDBOX_READY
                assert running == mine, f"{name}: runtime holds {len(running)} pods, the API binds {len(mine)}"
                net = ipaddress.ip_network(hollow_pod_cidr(i))
                assert all(ipaddress.ip_address(p.status.pod_ip) in net for p in pods if p.spec.node_name == name)
            if fail_rate:
                assert hollow.injected_failures() > 0, "no failure was injected: the retry path did not run"

            await client.delete(t.Deployment, "many", "default", propagation_policy="Foreground")

            def runtimes_empty() -> bool:
                return all(not n.fake.sandboxes and not n.fake.containers for n in hollow.nodes)

            await _until("every runtime empty after the delete", runtimes_empty, 180)
        finally:
            await client.close()
            await hollow.stop()
            for p in procs:
                p.stop()
            shutil.rmtree(sockets, ignore_errors=True)
