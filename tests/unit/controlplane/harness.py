"""Building blocks for controller and scheduler tests: objects, and informers over the real
api-server registry in this process (controlplane.apiserver.inprocess)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from controlplane.apiserver.inprocess import InProcessApi
from skiff.clock import FakeClock, stamp
from skiff.events import EventRecorder
from skiff.informer import InformerFactory, Transform
from skiffpb.api.v1 import types_pb2 as t

M = TypeVar("M", bound=Message)


def pod(name: str, *, ns: str = "default", node: str = "", ready: bool | None = None, ip: str = "",
        phase: str = "", labels: dict[str, str] | None = None, cpu: str = "", memory: str = "",
        ready_since: float = 0.0, created: float = 0.0, owner: Any = None, restarts: int = 0,
        host_ports: tuple[int, ...] = (), node_selector: dict[str, str] | None = None,
        tolerations: tuple[t.Toleration, ...] = ()) -> t.Pod:
    p = t.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, ns
    p.metadata.labels.update(labels or {})
    if created:
        stamp(p.metadata.creation_timestamp, created)
    c = p.spec.containers.add(name="c", image="img")
    if cpu:
        c.resources.requests["cpu"] = cpu
    if memory:
        c.resources.requests["memory"] = memory
    for hp in host_ports:
        c.ports.add(container_port=hp, host_port=hp)
    p.spec.node_name = node
    p.spec.node_selector.update(node_selector or {})
    p.spec.tolerations.extend(tolerations)
    p.status.phase = phase
    p.status.pod_ip = ip
    if ready is not None:
        cond = p.status.conditions.add(type="Ready", status="True" if ready else "False")
        stamp(cond.last_transition_time, ready_since)
    if restarts:
        p.status.container_statuses.add(name="c", restart_count=restarts)
    if owner is not None:
        from controlplane.common.podutil import owner_reference
        p.metadata.owner_references.append(owner_reference(owner))
    return p


def deployment(name: str = "web", *, replicas: int = 3, image: str = "img:1", strategy: str = "",
               max_surge: int | str | None = None, max_unavailable: int | str | None = None,
               history: int | None = None, paused: bool = False, min_ready: int = 0,
               deadline: int | None = None) -> t.Deployment:
    d = t.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = name, "default"
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    d.spec.template.spec.containers.add(name="c", image=image)
    if strategy:
        d.spec.strategy.type = strategy
    for value, field in ((max_surge, "max_surge"), (max_unavailable, "max_unavailable")):
        if value is not None:
            ios = getattr(d.spec.strategy.rolling_update, field)
            if isinstance(value, int):
                ios.int_val = value
            else:
                ios.str_val = value
    if history is not None:
        d.spec.revision_history_limit = history
    if deadline is not None:
        d.spec.progress_deadline_seconds = deadline
    d.spec.paused = paused
    d.spec.min_ready_seconds = min_ready
    return d


def replicaset(name: str, *, app: str = "", replicas: int = 0, labels: dict[str, str] | None = None,
               owner: Any = None) -> t.ReplicaSet:
    """A valid ReplicaSet (selector app=`app`, default: its name) with no pods of its own."""
    rs = t.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name, rs.metadata.namespace = name, "default"
    rs.metadata.labels.update(labels or {})
    rs.spec.replicas = replicas
    rs.spec.selector.match_labels["app"] = app or name
    rs.spec.template.metadata.labels["app"] = app or name
    rs.spec.template.spec.containers.add(name="c", image="img")
    if owner is not None:
        from controlplane.common.podutil import owner_reference
        rs.metadata.owner_references.append(owner_reference(owner))
    return rs


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110", ready: bool = True,
         labels: dict[str, str] | None = None, taints: tuple[t.Taint, ...] = (), unschedulable: bool = False) -> t.Node:
    n = t.Node(api_version="v1", kind="Node")
    n.metadata.name = name
    n.metadata.labels.update(labels or {})
    n.status.allocatable.update({"cpu": cpu, "memory": memory, "pods": pods})
    n.status.capacity.update({"cpu": cpu, "memory": memory, "pods": pods})
    n.status.conditions.add(type="Ready", status="True" if ready else "False")
    n.spec.taints.extend(taints)
    n.spec.unschedulable = unschedulable
    return n


class Cluster:
    """The in-process api-server + informers + a fake clock; `settle()` waits until informers saw
    every write."""

    def __init__(self, *, transforms: Mapping[type[Message], Transform] | None = None) -> None:
        """`transforms`: the informers' transforms, as a component sets them (none by default)."""
        self.clock = FakeClock()
        self.api = InProcessApi(clock=self.clock.now)
        self.factory = InformerFactory(self.api, transforms=transforms)
        self.recorder = EventRecorder(self.api, "test", clock=self.clock)

    async def create(self, obj: M) -> M:
        """Create `obj`, then write the status it carries as its owner would (the api-server resets
        the status of a new Pod, ReplicaSet, ...), so tests can start from any observed state."""
        created = await self.api.create(obj)
        if "status" in obj.DESCRIPTOR.fields_by_name and obj.HasField("status"):  # type: ignore[arg-type]
            if created.status != obj.status:  # type: ignore[attr-defined]
                created.status.CopyFrom(obj.status)  # type: ignore[attr-defined]
                created = await self.api.update_status(created)
        return created

    async def start(self) -> None:
        await self.api.start()
        await self.factory.start()
        await self.factory.wait_synced(5)
        await self.settle()

    async def settle(self) -> None:
        await self.api.settle()

    async def stop(self) -> None:
        await self.factory.stop()
        await self.api.close()

    async def drain(self, controller: Any, *, rounds: int = 50) -> None:
        """Sync every queued key of `controller` (and what that enqueues) until its queue is empty."""
        for _ in range(rounds):
            await self.settle()
            if not len(controller.queue):
                return
            while len(controller.queue):
                key = await controller.queue.get()
                try:
                    await controller.sync(key)
                finally:
                    controller.queue.done(key)
        raise AssertionError(f"{controller.name} did not settle in {rounds} rounds")

    def writes(self, verb: str, resource: str) -> int:
        return self.api.count(verb, resource)
