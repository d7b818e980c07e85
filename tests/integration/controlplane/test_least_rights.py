"""Least rights are enough: the real controller manager, scheduler, network proxy, cluster DNS and
node agent, each acting as its own identity (skiff/identity.py) against one api-server with
Node,RBAC on and only the bootstrap policy, run a Deployment end to end on a fake CRI.

In process (InProcessApi: the real registry and authorizer; `as_user` makes one client per
identity), so every refusal the authorizer makes is recorded and must not happen: a component
that lacked a right would retry quietly and the cluster would stall, which is what TLS and RBAC
on by default would do to the cluster otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from clusterdns.app import ClusterDns
from clusterdns.server import DnsServer
from clusterdns.zone import ZoneConfig, answer
from controlplane.apiserver.inprocess import InProcessApi
from controlplane.apiserver.rbac import Attributes
from controlplane.common.leaderelection import LeaderElectionConfig, LeaderElector
from controlplane.controllers import manager
from controlplane.scheduler import scheduler
from netproxy.app import NetProxy
from netproxy.config import ProxyConfig
from netproxy.iptables.command import MemoryIptables
from netproxy.iptables.proxier import IptablesProxier
from nodeagent.agent import AgentConfig, NodeAgent
from nodeagent.fakecri import FakeRuntime
from skiff import conditions, errors, identity
from skiff.identity import UserInfo
from skiffpb.api.v1 import types_pb2 as t

T = TypeVar("T")
IMAGE = "docker.io/skiff/web:1.0"
IMAGE2 = "docker.io/skiff/web:2.0"


def component(name: str) -> UserInfo:
    """A component's certificate identity (CN = the user, no group but system:authenticated)."""
    return UserInfo(name, (identity.AUTHENTICATED,))


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last {value!r}")
        await asyncio.sleep(0.05)


class Refusals:
    """Every refusal of the authorizer (and of NodeRestriction) during the test, with who and what."""

    def __init__(self, api: InProcessApi) -> None:
        self.items: list[str] = []
        check = api.authorizer.check

        def recording(user: UserInfo, attrs: Attributes, **kwargs: Any) -> Any:
            try:
                return check(user, attrs, **kwargs)
            except errors.ForbiddenError as exc:
                self.items.append(exc.message)
                raise

        api.authorizer.check = recording  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def running(*coros: Awaitable[Any]) -> AsyncIterator[None]:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        yield
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise AssertionError(f"a component failed: {task.exception()!r}")
    finally:
        for task in tasks:
            task.cancel()
        # Bounded: a component that swallows its cancellation would otherwise hang the test
        # (seen once at the 300 s pytest timeout); this names it instead.
        _, pending = await asyncio.wait(tasks, timeout=15)
        if pending:
            raise AssertionError(f"components still running 15 s after cancel: {[task.get_coro() for task in pending]}")


async def lead(api: InProcessApi, name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` under leader election, as the component's main does."""
    elector = LeaderElector(api, LeaderElectionConfig(name=name, identity=f"{name}-1", lease_duration=5.0,
                                                      renew_deadline=4.0, retry_period=0.2))
    await elector.run(work)


@pytest.fixture
async def admin() -> AsyncIterator[InProcessApi]:
    async with InProcessApi() as api:
        await api.ensure_policy()
        yield api


async def test_a_deployment_rolls_out_with_each_component_as_itself(admin: InProcessApi, tmp_path: Path) -> None:
    refusals = Refusals(admin)
    cm = admin.as_user(component(identity.CONTROLLER_MANAGER))
    sched = admin.as_user(component(identity.SCHEDULER))
    proxy_api = admin.as_user(component(identity.NETPROXY))
    dns_api = admin.as_user(component(identity.CLUSTERDNS))
    node_api = admin.as_user(identity.node_user("n1"))

    runtime = FakeRuntime(images={IMAGE, IMAGE2})
    agent = NodeAgent(node_api, runtime, AgentConfig(node_name="n1", node_ip="10.0.0.1", manage_network=False,
                                                     pod_log_dir=str(tmp_path), relist_period=0.05,
                                                     status_check_period=0.05, lease_period=0.5))
    ipt = MemoryIptables()
    proxy = NetProxy(proxy_api, IptablesProxier(ipt, ProxyConfig(cluster_cidr="10.244.0.0/16")), node_name="n1",
                     min_sync_period=0.0)
    dns = ClusterDns(dns_api, DnsServer(ZoneConfig()), min_rebuild_interval=0.0)
    options = manager.Options(cluster_cidr="10.244.0.0/16", node_monitor_period=0.5)

    await agent.start()
    try:
        async with running(lead(cm, "skiff-controller-manager", lambda: manager.run(cm, options)),
                           lead(sched, "skiff-scheduler", lambda: scheduler.run(sched)),
                           proxy.run(), dns.run()):
            await admin.create(deployment("web", IMAGE, replicas=2))
            await admin.create(service("web"))

            async def ready_pods() -> list[t.Pod] | None:
                pods = (await admin.list(t.Pod, namespace="default")).items
                ready = [p for p in pods if p.spec.node_name == "n1" and conditions.is_true(
                    p.status.conditions, "Ready") and p.spec.containers[0].image == IMAGE]
                return ready if len(ready) == 2 else None

            pods = await until(ready_pods, "2 Ready pods on n1")
            ips = sorted(p.status.pod_ip for p in pods)

            async def endpoints() -> list[str] | None:
                try:
                    ep = await admin.get(t.Endpoints, "web", "default")
                except errors.NotFoundError:
                    return None
                got = sorted(a.ip for s in ep.subsets for a in s.addresses)
                return got if got == ips else None

            await until(endpoints, "the Endpoints of web")

            async def rules() -> bool:
                nat = await ipt.save("nat")
                return all(f"--to-destination {ip}:8080" in nat for ip in ips)

            await until(rules, "DNAT rules for both pods")
            svc = await admin.get(t.Service, "web", "default")

            async def resolves() -> bool:
                zone = dns.server.zone
                return zone is not None and [r.data for r in answer(
                    zone, "web.default.svc.cluster.local", "A").answer] == [svc.spec.cluster_ip]

            await until(resolves, "web.default.svc resolving")

            # A rolling update: the Deployment controller makes a new ReplicaSet, the old pods go
            # (deleted by the ReplicaSet controller, removed by the node when their containers stop).
            d = await admin.get(t.Deployment, "web", "default")
            d.spec.template.spec.containers[0].image = IMAGE2
            await admin.update(d)

            async def rolled() -> bool:
                pods = (await admin.list(t.Pod, namespace="default")).items
                images = sorted(p.spec.containers[0].image for p in pods)
                ready = [p for p in pods if conditions.is_true(p.status.conditions, "Ready")]
                return images == [IMAGE2, IMAGE2] and len(ready) == 2

            await until(rolled, "the rollout to web:2.0")

            # Cascading delete: the garbage collector removes the ReplicaSets and their pods.
            await admin.delete(t.Deployment, "web", "default")

            async def collected() -> bool:
                return not (await admin.list(t.ReplicaSet, namespace="default")).items and \
                    not (await admin.list(t.Pod, namespace="default")).items

            await until(collected, "the garbage collector")
            node = await admin.get(t.Node, "n1")
            assert node.spec.pod_cidr  # node IPAM (controller manager) wrote the node
            lease = await admin.get(t.Lease, "n1", "kube-node-lease")
            assert lease.spec.holder_identity == "n1"
    finally:
        await agent.stop()
    assert refusals.items == []


async def test_the_identities_are_refused_what_they_do_not_need(admin: InProcessApi) -> None:
    """The other side of least rights: what each component must not be able to do."""
    await admin.create(deployment("web", IMAGE, replicas=1))
    await admin.create(t.Secret(metadata=t.ObjectMeta(name="s", namespace="default")))
    cases: list[tuple[UserInfo, Callable[[InProcessApi], Awaitable[Any]], str]] = [
        (component(identity.SCHEDULER), lambda a: a.delete(t.Deployment, "web", "default"),
         'cannot delete resource "deployments"'),
        (component(identity.SCHEDULER), lambda a: a.get(t.Secret, "s", "default"), 'cannot get resource "secrets"'),
        (component(identity.NETPROXY), lambda a: a.create(service("other")), 'cannot create resource "services"'),
        (component(identity.NETPROXY), lambda a: a.list(t.Secret), 'cannot list resource "secrets"'),
        (component(identity.NETPROXY), lambda a: a.update_status(t.Pod(metadata=t.ObjectMeta(
            name="p", namespace="default"))), 'cannot update resource "pods/status"'),
        (component(identity.CLUSTERDNS), lambda a: a.list(t.Secret), 'cannot list resource "secrets"'),
        (component(identity.CONTROLLER_MANAGER), lambda a: a.create(
            t.ClusterRoleBinding(metadata=t.ObjectMeta(name="x"))), 'cannot create resource "clusterrolebindings"'),
        (identity.node_user("n1"), lambda a: a.create(deployment("evil", IMAGE)),
         'cannot create resource "deployments"'),
        (UserInfo("alice", (identity.AUTHENTICATED,)), lambda a: a.list(t.Pod), 'cannot list resource "pods"'),
    ]
    for user, call, message in cases:
        with pytest.raises(errors.ForbiddenError, match=message):
            await call(admin.as_user(user))


def deployment(name: str, image: str, *, replicas: int = 2) -> t.Deployment:
    d = t.Deployment(api_version="apps/v1", kind="Deployment", metadata=t.ObjectMeta(name=name, namespace="default"))
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.strategy.rolling_update.max_unavailable.int_val = 1
    d.spec.template.metadata.labels["app"] = name
    c = d.spec.template.spec.containers.add(name="web", image=image)
    c.ports.add(container_port=8080)
    return d


def service(name: str) -> t.Service:
    s = t.Service(api_version="v1", kind="Service", metadata=t.ObjectMeta(name=name, namespace="default"))
    s.spec.selector["app"] = name
    s.spec.ports.add(port=80, target_port=t.IntOrString(int_val=8080))
    return s
