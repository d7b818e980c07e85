"""Pod workers: one asyncio task per pod uid, never two for the same pod.

A worker loops: observe the pod's sandboxes and containers in the runtime, ask the pure
`plan.compute_plan` what to do, apply the FIRST action (one CRI call), observe again; when no
action is left it writes the pod status (only if it changed), reconciles the pod's probe loops
and sleeps until kicked (pod event, relist change, probe change) or until the plan's wake-up
time (a backoff expiring). A worker whose pod is gone tears everything down and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from nodeagent import cri as rt
from nodeagent import plan as P
from nodeagent.netns import NodeNetwork
from nodeagent.podconfig import PodConfigSettings, container_config, pod_log_dir, sandbox_config
from nodeagent.probes import ProbeLoop
from skiff import errors
from skiff.client import ApiClient
from skiff.events import NORMAL, WARNING, Recorder
from skiff.retry import Backoff, Delays
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

log = logging.getLogger("nodeagent.worker")

# A sync that failed (CRI or api-server error): try again after 0.5 s doubling to 10 s.
SYNC_BACKOFF = Backoff(initial=0.5, max=10.0)
MAX_STEPS = 32  # actions per sync before yielding (a plan that never converges must not spin)
_STATE = {cri.CONTAINER_CREATED: "created", cri.CONTAINER_RUNNING: "running", cri.CONTAINER_EXITED: "exited",
          cri.CONTAINER_UNKNOWN: "unknown"}


@dataclass
class WorkerContext:
    """What every worker of a node shares."""

    client: ApiClient
    runtime: rt.Runtime
    net: NodeNetwork
    events: Recorder  # never blocks: a pod worker only notes the event
    pod_settings: PodConfigSettings
    plan_config: P.PlanConfig
    host_ip: str
    pod: Callable[[str], t.Pod | None]  # latest known Pod object for a uid (None: gone from the API)
    clock: Callable[[], float] = time.time
    on_status_written: Callable[[t.Pod], None] | None = None


@dataclass
class _Cache:
    """Facts that never change once seen: exited container statuses, sandbox IPs."""

    exited: dict[str, cri.ContainerStatus] = field(default_factory=dict)
    running: dict[str, cri.ContainerStatus] = field(default_factory=dict)
    sandbox_ip: dict[str, str] = field(default_factory=dict)


def _revision(pod: t.Pod) -> int:
    try:
        return int(pod.metadata.resource_version or 0)
    except ValueError:
        return 0


def status_write_needed(status: bytes, pod: t.Pod, last: tuple[bytes, int] | None) -> bool:
    """Whether to write `status` (serialized) for `pod`, as the informer cache has it.

    Not when the pod says it already; not when it is what we wrote last and the cache has not
    seen a later change (the cache may lag our own write); but yes when someone else changed
    the pod after our write: the node lifecycle controller marks a lost node's pods not Ready,
    and when the node is back our Ready must be written again, though it is what we wrote last.
    """
    if status == pod.status.SerializeToString(deterministic=True):
        return False
    if last is None or status != last[0]:
        return True
    return _revision(pod) > last[1]


class PodWorker:
    def __init__(self, ctx: WorkerContext, uid: str) -> None:
        self.ctx = ctx
        self.uid = uid
        self.kicked = asyncio.Event()
        self.memory = P.Memory()
        self.cache = _Cache()
        self.probes: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self.wake_at: float | None = None
        self.deleted = False
        self.last_written: tuple[bytes, int] | None = None  # the status we last wrote, and its revision
        self.last_pod: t.Pod | None = None
        self.syncs = 0

    def kick(self) -> None:
        self.kicked.set()

    # ------------------------------------------------------------ observe

    async def observe(self, pod: t.Pod | None) -> P.Observed:
        runtime = self.ctx.runtime
        sel = {rt.LABEL_POD_UID: self.uid}
        sandboxes = await runtime.list_pod_sandbox(labels=sel)
        containers = await runtime.list_containers(labels=sel)
        sobs = []
        for s in sandboxes:
            ready = s.state == cri.SANDBOX_READY
            ip = self.cache.sandbox_ip.get(s.id, "")
            if ready and not ip:
                with contextlib.suppress(rt.NotFound):
                    ip = (await runtime.pod_sandbox_status(s.id)).network.ip
                    self.cache.sandbox_ip[s.id] = ip
            sobs.append(P.SandboxObs(s.id, s.metadata.attempt, ready, s.created_at, ip))
        cobs = []
        for c in containers:
            state = _STATE.get(c.state, "unknown")
            st = self.cache.exited.get(c.id)
            if st is None:
                cached = self.cache.running.get(c.id)
                if cached is not None and _STATE.get(cached.state) == state:
                    st = cached
                else:
                    try:
                        st = await runtime.container_status(c.id)
                    except rt.NotFound:
                        continue
                    state = _STATE.get(st.state, "unknown")
                    if state == "exited":
                        self.cache.exited[c.id] = st
                        self.cache.running.pop(c.id, None)
                    elif state == "running":
                        self.cache.running[c.id] = st
            cobs.append(P.ContainerObs(
                id=c.id, name=c.metadata.name or c.labels.get(rt.LABEL_CONTAINER_NAME, ""), attempt=c.metadata.attempt,
                sandbox_id=c.pod_sandbox_id, state=state, created_at=st.created_at, started_at=st.started_at,
                finished_at=st.finished_at, exit_code=st.exit_code, reason=st.reason, message=st.message,
                image_ref=st.image_ref or c.image_ref))
        images: dict[str, bool] = {}
        if pod is not None and not P.is_deleting(pod):
            live = {(c.name) for c in cobs if c.state in ("running", "created")}
            for spec in pod.spec.containers:
                if spec.name not in live and spec.image not in images:
                    images[spec.image] = await runtime.image_status(spec.image) is not None
        known = {c.id for c in containers}
        for cache in (self.cache.exited, self.cache.running):
            for cid in [cid for cid in cache if cid not in known]:
                del cache[cid]
        return P.Observed(tuple(sobs), tuple(cobs), images)

    # ------------------------------------------------------------ the loop

    def current_pod(self) -> t.Pod | None:
        return None if self.deleted else self.ctx.pod(self.uid)

    async def run(self) -> None:
        delays = Delays(SYNC_BACKOFF)
        while True:
            self.kicked.clear()
            try:
                done = await self.sync()
                delays.reset()
            except rt.RuntimeUnavailable as exc:
                log.debug("pod %s: runtime unavailable: %s", self.uid, exc)
                done, self.wake_at = False, self.ctx.clock() + 1.0
            except (rt.CriError, errors.SkiffError) as exc:
                delay = delays.next()
                log.warning("pod %s: %s (retrying in %.1fs)", self._name(), exc, delay)
                done, self.wake_at = False, self.ctx.clock() + delay
            if done:
                self.stop_probes()
                return
            timeout = None if self.wake_at is None else max(self.wake_at - self.ctx.clock(), 0.01)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.kicked.wait(), timeout)

    def _name(self) -> str:
        pod = self.last_pod
        return f"{pod.metadata.namespace}/{pod.metadata.name}" if pod is not None else self.uid

    async def sync(self) -> bool:
        """One reconcile pass; True when the pod is gone and nothing of it is left on the node."""
        self.syncs += 1
        pod = self.current_pod()
        if pod is not None:
            self.last_pod = pod
        plan = P.Plan()
        obs = P.Observed()
        for _ in range(MAX_STEPS):
            obs = await self.observe(pod)
            plan = P.compute_plan(pod, obs, self.memory, self.ctx.clock(), self.ctx.plan_config)
            if plan.done:
                self._remove_logs()
                return True
            if not plan.actions:
                break
            await self.apply(plan.actions[0], pod, obs)
            pod = self.current_pod()
        self.wake_at = plan.wake_at
        if pod is not None and not P.is_deleting(pod):
            self.reconcile_probes(pod, obs)
            await self.write_status(pod, obs, plan)
        elif plan.actions:
            self.wake_at = self.ctx.clock() + 1.0
        return False

    # ------------------------------------------------------------ actions

    async def apply(self, action: P.Action, pod: t.Pod | None, obs: P.Observed) -> None:
        runtime = self.ctx.runtime
        log.debug("pod %s: %s", self._name(), action)
        if isinstance(action, P.RunSandbox):
            assert pod is not None
            await runtime.run_pod_sandbox(sandbox_config(pod, action.attempt, self.ctx.pod_settings))
        elif isinstance(action, P.StopSandbox):
            with contextlib.suppress(rt.NotFound):
                await runtime.stop_pod_sandbox(action.sandbox_id)
        elif isinstance(action, P.RemoveSandbox):
            with contextlib.suppress(rt.NotFound):
                await runtime.remove_pod_sandbox(action.sandbox_id)
            self.cache.sandbox_ip.pop(action.sandbox_id, None)
        elif isinstance(action, P.PullImage):
            assert pod is not None
            await self._pull(pod, action)
        elif isinstance(action, P.CreateContainer):
            assert pod is not None
            spec = next(c for c in pod.spec.containers if c.name == action.container)
            sb_cfg = sandbox_config(pod, next(s.attempt for s in obs.sandboxes if s.id == action.sandbox_id),
                                    self.ctx.pod_settings)
            try:
                await runtime.create_container(action.sandbox_id, container_config(pod, spec, action.attempt), sb_cfg)
            except rt.CriError as exc:
                self.ctx.events.event(pod, WARNING, "Failed", f"Error: {exc}")
                raise
            self.memory = replace(self.memory, backoff={**self.memory.backoff, action.container: action.next_backoff})
            self.ctx.events.event(pod, NORMAL, "Created", f"Created container {action.container}")
        elif isinstance(action, P.StartContainer):
            assert pod is not None
            try:
                await runtime.start_container(action.container_id)
            except rt.CriError as exc:
                self.ctx.events.event(pod, WARNING, "Failed", f"Error: {exc}")
                # A container that cannot start is removed, so the plan retries through backoff.
                with contextlib.suppress(rt.CriError):
                    await runtime.remove_container(action.container_id)
                raise
            self.ctx.events.event(pod, NORMAL, "Started", f"Started container {action.container}")
        elif isinstance(action, P.StopContainer):
            if pod is not None:
                msg = {"Unhealthy": f"Container {action.container} failed liveness probe, will be restarted",
                       "StartupFailed": f"Container {action.container} failed startup probe, will be restarted"}.get(
                    action.reason, f"Stopping container {action.container}")
                self.ctx.events.event(pod, NORMAL, "Killing", msg)
            self.stop_probes(action.container_id)
            with contextlib.suppress(rt.NotFound):
                await runtime.stop_container(action.container_id, action.grace)
            probes = dict(self.memory.probes)
            probes.pop(action.container_id, None)
            self.memory = replace(self.memory, probes=probes)
        elif isinstance(action, P.RemoveContainer):
            with contextlib.suppress(rt.NotFound):
                await runtime.remove_container(action.container_id)
        elif isinstance(action, P.DeletePod):
            assert pod is not None
            try:
                await self.ctx.client.delete(t.Pod, pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0,
                                             preconditions=api.Preconditions(uid=pod.metadata.uid))
            except errors.NotFoundError:
                pass
            except errors.ConflictError:
                pass  # a new pod with the same name: ours is gone already
            self.deleted = True

    async def _pull(self, pod: t.Pod, action: P.PullImage) -> None:
        now = self.ctx.clock()
        self.ctx.events.event(pod, NORMAL, "Pulling", f'Pulling image "{action.image}"')
        try:
            await self.ctx.runtime.pull_image(action.image, sandbox_config=None)
        except rt.RuntimeUnavailable:
            raise
        except rt.CriError as exc:
            prev = self.memory.image_failures.get(action.container)
            failure = P.image_failure(prev, "ErrImagePull", str(exc), now, self.ctx.plan_config)
            self.memory = replace(self.memory, image_failures={**self.memory.image_failures,
                                                               action.container: failure})
            self.ctx.events.event(pod, WARNING, "Failed", f'Failed to pull image "{action.image}": {exc}')
            self.ctx.events.event(pod, NORMAL, "BackOff", f'Back-off pulling image "{action.image}"')
            return
        failures = dict(self.memory.image_failures)
        failures.pop(action.container, None)
        self.memory = replace(self.memory, image_failures=failures,
                              pulled={**self.memory.pulled, action.container: action.attempt})
        self.ctx.events.event(pod, NORMAL, "Pulled", f'Successfully pulled image "{action.image}"')

    # ------------------------------------------------------------ status

    async def write_status(self, pod: t.Pod, obs: P.Observed, plan: P.Plan) -> None:
        status = P.compute_status(pod, obs, self.memory, plan, self.ctx.clock(), host_ip=self.ctx.host_ip)
        for name, w in plan.waiting.items():
            if w.reason == "CrashLoopBackOff" and not _was_waiting(pod, name, "CrashLoopBackOff"):
                self.ctx.events.event(pod, WARNING, "BackOff", f"Back-off restarting failed container {name}")
        data = status.SerializeToString(deterministic=True)
        if not status_write_needed(data, pod, self.last_written):
            return
        new = t.Pod()
        new.CopyFrom(pod)
        new.status.CopyFrom(status)
        new.metadata.resource_version = ""
        try:
            written = await self.ctx.client.update_status(new)
        except errors.NotFoundError:
            return
        self.last_written = (data, _revision(written))
        if self.ctx.on_status_written is not None:
            self.ctx.on_status_written(written)

    # ------------------------------------------------------------ probes

    def _probe_changed(self, container_id: str, kind: str, result: bool, message: str) -> None:
        state = self.memory.probes.get(container_id, P.ProbeState())
        if kind == "readiness":
            state = replace(state, ready=result)
        elif kind == "liveness":
            state = replace(state, live=result)
        elif kind == "startup":
            state = replace(state, started=result)
        elif kind == "startup-failed":
            state = replace(state, live=False)
        self.memory = replace(self.memory, probes={**self.memory.probes, container_id: state})
        pod = self.last_pod
        if pod is not None and not result:
            what = {"liveness": "Liveness", "readiness": "Readiness"}.get(kind, "Startup")
            self.ctx.events.event(pod, WARNING, "Unhealthy", f"{what} probe failed: {message}")
        self.kick()

    def reconcile_probes(self, pod: t.Pod, obs: P.Observed) -> None:
        sandbox = P.current_sandbox(obs)
        want: dict[tuple[str, str], tuple[t.Container, t.Probe, str]] = {}
        for spec in pod.spec.containers:
            latest = P.latest_instance(obs, spec.name)
            if latest is None or latest.state != "running" or sandbox is None or not sandbox.ip:
                continue
            for kind, field_name in (("startup", "startup_probe"), ("liveness", "liveness_probe"),
                                     ("readiness", "readiness_probe")):
                if spec.HasField(field_name):
                    want[(latest.id, kind)] = (spec, getattr(spec, field_name), sandbox.ip)
        for key in [k for k in self.probes if k not in want]:
            self.probes.pop(key).cancel()
        for key, (spec, probe, ip) in want.items():
            task = self.probes.get(key)
            if task is not None and not task.done():
                continue
            if task is not None and task.done() and key[1] == "startup":
                continue
            cid, kind = key
            has_startup = spec.HasField("startup_probe")

            def gate(cid: str = cid, kind: str = kind, has_startup: bool = has_startup) -> bool:
                return kind == "startup" or not has_startup or self.memory.probes.get(cid, P.ProbeState()).started

            loop = ProbeLoop(kind, probe, pod_ip=ip, container=spec, container_id=cid, runtime=self.ctx.runtime,
                             net=self.ctx.net, on_change=self._probe_changed, gate=gate)
            self.probes[key] = asyncio.get_running_loop().create_task(loop.run(), name=f"probe-{kind}-{cid[:12]}")

    def stop_probes(self, container_id: str | None = None) -> None:
        for key in [k for k in self.probes if container_id is None or k[0] == container_id]:
            self.probes.pop(key).cancel()

    def _remove_logs(self) -> None:
        pod = self.last_pod
        if pod is None:
            return
        path = pod_log_dir(self.ctx.pod_settings.pod_log_dir, pod.metadata.namespace, pod.metadata.name, self.uid)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def _was_waiting(pod: t.Pod, name: str, reason: str) -> bool:
    return any(s.name == name and s.state.waiting.reason == reason for s in pod.status.container_statuses)
