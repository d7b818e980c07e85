"""Pod workers: one asyncio task per pod uid, never two for the same pod.

A worker loops: observe the pod's sandboxes and containers in the runtime, ask the pure
`plan.compute_plan` what to do, apply the FIRST action (one CRI call), observe again; when no
action is left it writes the pod status (only if it changed), reconciles the pod's probe loops
and sleeps until kicked (pod event, relist change, probe change) or until the plan's wake-up
time (a backoff expiring). A worker whose pod is gone tears everything down and ends.

What must hold for the observations (each CRI call costs the node, and at hundreds of agents
per process they were most of a hollow node's CPU, docs/scale.md):
- every pass starts with a full listing (ListPodSandbox, ListContainers by the pod's uid label),
  and so does every step after an action that removed, stopped or pulled something;
- after RunPodSandbox, CreateContainer or StartContainer only the object made or started is
  asked about (PodSandboxStatus / ContainerStatus; `observe_made`), and only while it is as the
  action left it (a sandbox Ready, a container created or running), else the pod is listed;
  the rest of the observation is the step's before: our call changed nothing else, and what
  changed by itself meanwhile the relist sees (`observed` is kept up to date, so it does);
- a CREATED container's listing is its status (it has not started: no ContainerStatus), and an
  image found present is not asked about again within the pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from nodeagent import cri as rt
from nodeagent import logs, metrics
from nodeagent import plan as P
from nodeagent.dns import hosts_file
from nodeagent.envs import ConfigSource, ContainerConfigError, container_env
from nodeagent.envvars import service_env
from nodeagent.netns import NodeNetwork
from nodeagent.podconfig import (
    PodConfigSettings,
    container_config,
    container_log_path,
    hosts_path,
    pod_log_dir,
    sandbox_config,
)
from nodeagent.probes import ProbeLoop, run_hook
from nodeagent.registryauth import pull_auth
from nodeagent.security import effective, run_as_non_root_problem
from nodeagent.tokens import TokenManager
from nodeagent.volumes import (
    ClaimSource,
    VolumeManager,
    VolumeNotReady,
    empty_dir_over_limit,
    limited_empty_dirs,
    plan_mounts,
    termination_message,
)
from skiff import downward, errors
from skiff.client import ApiClient
from skiff.eventloop import wait_event
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
    config: ConfigSource | None = None  # ConfigMaps and Secrets for env and volumes
    volumes: VolumeManager | None = None  # None: pods with volumes cannot be configured
    node_allocatable: Callable[[], dict[str, str]] = dict
    services: Callable[[], list[t.Service]] = list  # every Service the agent knows (environment variables)
    claims: ClaimSource | None = None  # PersistentVolumeClaims and PersistentVolumes (persistentVolumeClaim volumes)
    tokens: TokenManager | None = None  # service-account tokens (None: pods with token projections cannot start)
    # Whether every ConfigMap and Secret the pod refers to has been fetched (configrefs.py).
    config_synced: Callable[[t.Pod], bool] = lambda pod: True


@dataclass(frozen=True)
class Made:
    """The one sandbox (`sandbox`) or container (in `sandbox_id`) an action created or started."""

    id: str
    sandbox: bool = False
    sandbox_id: str = ""


class _ConfigFailure(Exception):
    """A container cannot be created yet: its env or volumes name something missing."""

    def __init__(self, container: str, message: str, *, mount: bool = False) -> None:
        super().__init__(message)
        self.container = container
        self.mount = mount  # a volume not ready yet (ContainerCreating, FailedMount), not a config error


class _NoConfig:
    def config_map(self, namespace: str, name: str) -> t.ConfigMap | None:
        return None

    def secret(self, namespace: str, name: str) -> t.Secret | None:
        return None


CONFIG_RETRY = 2.0  # seconds; ConfigMap/Secret events also kick the worker at once
DISK_CHECK_PERIOD = 10.0  # seconds between measurements of a pod's limited emptyDirs (the kubelet's housekeeping)
POST_START_TIMEOUT = 30.0  # seconds a postStart hook may take


@dataclass
class _Cache:
    """Facts that never change once seen: exited container statuses, sandbox IPs."""

    exited: dict[str, cri.ContainerStatus] = field(default_factory=dict)
    running: dict[str, cri.ContainerStatus] = field(default_factory=dict)
    sandbox_ip: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)  # exited container id -> termination message


def _revision(pod: t.Pod) -> int:
    try:
        return int(pod.metadata.resource_version or 0)
    except ValueError:
        return 0


def runtime_fingerprint(items: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """A pod's sandboxes and containers as the runtime lists them, (id, CRI state) each: what the
    relist compares with the last list and with what the pod's worker last observed."""
    return tuple(sorted(items))


def created_status(container: cri.Container) -> cri.ContainerStatus:
    """A container's status from its listing while it is CREATED: not started yet, so the fields a
    ContainerStatus adds (started/finished time, exit code, reason, message) are all still empty."""
    return cri.ContainerStatus(id=container.id, metadata=container.metadata, state=container.state,
                               created_at=container.created_at, image=container.image,
                               image_ref=container.image_ref, labels=container.labels,
                               annotations=container.annotations)


def is_own_echo(pod: t.Pod, pending: set[int]) -> bool:
    """Whether `pod`, as an informer delivers it, is the very object one of our status writes made
    (its revision is in `pending`, the revisions of writes whose echo has not come yet); prunes
    `pending` of this and older revisions, whose echoes can no longer come.

    An echo is no news to the worker: a change by anyone else before our write came as an event
    of its own (with its own, earlier revision), and one after it has a later revision. During a
    burst every pod's writes came back as one more sync pass each.
    """
    revision = _revision(pod)
    own = revision in pending
    for r in [r for r in pending if r <= revision]:
        pending.discard(r)
    return own


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
        self.config_errors: dict[str, str] = {}  # container -> why it cannot be created yet
        self.mount_waits: set[str] = set()  # containers whose config error is a volume not ready yet
        self.next_disk_check = 0.0
        self.seen_at = time.monotonic()  # kubelet_pod_start_duration_seconds counts from here
        # What the last observe listed (runtime_fingerprint): the relist kicks only when it differs.
        self.observed: tuple[tuple[str, int], ...] | None = None
        self._states: dict[str, int] = {}  # id -> CRI state of what `observed` was made from
        self.kicks = 0
        self.pending_echoes: set[int] = set()  # revisions of our status writes the informer has not delivered

    def kick(self) -> None:
        self.kicks += 1
        self.kicked.set()

    # ------------------------------------------------------------ observe

    async def observe(self, pod: t.Pod | None, *, present: set[str] | None = None) -> P.Observed:
        """The pod's sandboxes, containers and images as the runtime has them now. `present`: the
        images already found present during this sync (they are not asked again; found ones are added)."""
        runtime = self.ctx.runtime
        sel = {rt.LABEL_POD_UID: self.uid}
        sandboxes = await runtime.list_pod_sandbox(labels=sel)
        containers = await runtime.list_containers(labels=sel)
        self._states = {**{s.id: s.state for s in sandboxes}, **{c.id: c.state for c in containers}}
        self.observed = runtime_fingerprint(self._states.items())
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
            if st is None and state == "created":
                # Nothing has happened to it yet: the listing holds all a status would add
                # (started, finished, exit code, reason are still empty), so no ContainerStatus.
                st = created_status(c)
            elif st is None:
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
            name = c.metadata.name or c.labels.get(rt.LABEL_CONTAINER_NAME, "")
            message = st.message
            if state == "exited" and pod is not None:
                message = self._termination_message(pod, name, c.id, c.metadata.attempt, st) or message
            cobs.append(P.ContainerObs(
                id=c.id, name=name, attempt=c.metadata.attempt,
                sandbox_id=c.pod_sandbox_id, state=state, created_at=st.created_at, started_at=st.started_at,
                finished_at=st.finished_at, exit_code=st.exit_code, reason=st.reason, message=message,
                image_ref=st.image_ref or c.image_ref))
        images: dict[str, bool] = {}
        if pod is not None and not P.is_deleting(pod):
            live = {(c.name) for c in cobs if c.state in ("running", "created")}
            for spec in (*pod.spec.init_containers, *pod.spec.containers):
                if spec.name not in live and spec.image not in images:
                    if present is not None and spec.image in present:
                        images[spec.image] = True
                        continue
                    images[spec.image] = await runtime.image_status(spec.image) is not None
                    if images[spec.image] and present is not None:
                        present.add(spec.image)
        known = {c.id for c in containers}
        for cache in (self.cache.exited, self.cache.running, self.cache.messages):
            for cid in [cid for cid in cache if cid not in known]:
                del cache[cid]
        return P.Observed(tuple(sobs), tuple(cobs), images)

    async def observe_made(self, made: Made, obs: P.Observed) -> P.Observed | None:
        """`obs` with the one sandbox or container the last action made or started as its own
        status call shows it now; None when it is not as the action left it (a sandbox not
        Ready, a container neither created nor running: the caller lists everything again)."""
        runtime = self.ctx.runtime
        try:
            if made.sandbox:
                sandbox = await runtime.pod_sandbox_status(made.id)
                if sandbox.state != cri.SANDBOX_READY:
                    return None
                self.cache.sandbox_ip[made.id] = sandbox.network.ip
                seen = P.SandboxObs(made.id, sandbox.metadata.attempt, True, sandbox.created_at, sandbox.network.ip)
                self._saw(made.id, sandbox.state)
                return replace(obs, sandboxes=(*(s for s in obs.sandboxes if s.id != made.id), seen))
            st = await runtime.container_status(made.id)
        except rt.NotFound:
            return None
        state = _STATE.get(st.state, "unknown")
        if state not in ("created", "running"):
            return None
        if state == "running":
            self.cache.running[made.id] = st
        container = P.ContainerObs(
            id=made.id, name=st.metadata.name or st.labels.get(rt.LABEL_CONTAINER_NAME, ""),
            attempt=st.metadata.attempt, sandbox_id=made.sandbox_id, state=state, created_at=st.created_at,
            started_at=st.started_at, finished_at=st.finished_at, exit_code=st.exit_code, reason=st.reason,
            message=st.message, image_ref=st.image_ref)
        self._saw(made.id, st.state)
        return replace(obs, containers=(*(c for c in obs.containers if c.id != made.id), container))

    def _saw(self, object_id: str, state: int) -> None:
        """One object's state seen by its status call: the relist compares with this (`observed`)."""
        self._states[object_id] = state
        self.observed = runtime_fingerprint(self._states.items())

    def _termination_message(self, pod: t.Pod, name: str, cid: str, attempt: int, st: cri.ContainerStatus) -> str:
        """terminated.message of an exited container, read once from its file (or its log)."""
        if cid in self.cache.messages:
            return self.cache.messages[cid]
        spec = P.container_spec(pod, name)
        if self.ctx.volumes is None or spec is None or not spec.termination_message_path:
            return ""
        try:
            with open(self.ctx.volumes.termination_file(self.uid, name, attempt), "rb") as f:
                written = f.read(4096)
        except OSError:
            written = b""
        tail = b""
        if not written and spec.termination_message_policy == "FallbackToLogsOnError" and st.exit_code != 0:
            log_dir = pod_log_dir(self.ctx.pod_settings.pod_log_dir, pod.metadata.namespace, pod.metadata.name,
                                  self.uid)
            tail = logs.tail(os.path.join(log_dir, container_log_path(name, attempt)), 80)
        message = termination_message(written, policy=spec.termination_message_policy, exit_code=st.exit_code,
                                      log_tail=tail)
        self.cache.messages[cid] = message
        return message

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
            await wait_event(self.kicked, timeout)

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
        disk_wake = self._check_empty_dirs(pod)
        token_wake = await self._ensure_tokens(pod)
        if token_wake is not None:
            disk_wake = token_wake if disk_wake is None else min(disk_wake, token_wake)
        # Images found present in this pass are not asked again after each of its actions (an
        # image is only removed by the node's image GC, never between two steps of one pass);
        # one missing is asked each time, so a pull's result is seen.
        present: set[str] = set()
        made: Made | None = None
        for _ in range(MAX_STEPS):
            # After an action that made or started one sandbox or container only that one is
            # asked about (its status call), as the kubelet's SyncPod goes on from RunPodSandbox
            # to CreateContainer and StartContainer without listing: nothing else of the pod
            # changed by our call, and what changed by itself meanwhile the relist (or the next
            # pass, which starts with a listing) sees. Every other step lists the pod again.
            narrowed = None if made is None else await self.observe_made(made, obs)
            obs = narrowed if narrowed is not None else await self.observe(pod, present=present)
            plan = P.compute_plan(pod, obs, self.memory, self.ctx.clock(), self.ctx.plan_config)
            if plan.done:
                self._remove_logs()
                if self.ctx.volumes is not None:
                    self.ctx.volumes.teardown(self.uid)
                if self.ctx.tokens is not None:
                    self.ctx.tokens.forget(self.uid)
                return True
            if not plan.actions:
                break
            if isinstance(plan.actions[0], (P.PullImage, P.CreateContainer)) and pod is not None and \
                    not self.ctx.config_synced(pod):
                # Its ConfigMaps/Secrets are being fetched: their first list kicks this worker.
                plan = replace(plan, wake_at=self.ctx.clock() + CONFIG_RETRY)
                break
            try:
                made = await self.apply(plan.actions[0], pod, obs)
            except _ConfigFailure as exc:
                if self.config_errors.get(exc.container) != str(exc) and pod is not None:
                    if exc.mount:
                        self.ctx.events.event(pod, WARNING, "FailedMount", f"Unable to attach or mount volumes: {exc}")
                    else:
                        self.ctx.events.event(pod, WARNING, "Failed", f"Error: {exc}")
                self.config_errors[exc.container] = str(exc)
                if exc.mount:
                    self.mount_waits.add(exc.container)
                else:
                    self.mount_waits.discard(exc.container)
                plan = replace(plan, wake_at=self.ctx.clock() + CONFIG_RETRY)
                break
            pod = self.current_pod()
        self.wake_at = plan.wake_at if disk_wake is None else min(disk_wake, plan.wake_at or disk_wake)
        if pod is not None and not P.is_deleting(pod):
            if self.ctx.volumes is not None and pod.spec.volumes and self.ctx.config_synced(pod):
                self.ctx.volumes.refresh(self._pod_view(pod, obs), self._config(),
                                         node_allocatable=self.ctx.node_allocatable(), tokens=self.ctx.tokens)
            self.reconcile_probes(pod, obs)
            await self.write_status(pod, obs, plan)
        elif plan.actions:
            self.wake_at = self.ctx.clock() + 1.0
        return False

    async def _ensure_tokens(self, pod: t.Pod | None) -> float | None:
        """Request or renew the pod's service-account tokens (tokens.py); when the next one is due."""
        tokens, volumes = self.ctx.tokens, self.ctx.volumes
        if tokens is None or pod is None or P.is_deleting(pod) or P.is_terminal(pod):
            return None
        await tokens.ensure(pod, on_disk=None if volumes is None else
                            lambda volume, path: volumes.read_file(self.uid, volume, path))
        return tokens.next_refresh(pod)

    def _check_empty_dirs(self, pod: t.Pod | None) -> float | None:
        """Measure the pod's limited disk emptyDirs (every DISK_CHECK_PERIOD); over a limit the pod is
        evicted (Memory.eviction). When to measure again, None when there is nothing to measure."""
        if pod is None or P.is_deleting(pod) or P.is_terminal(pod) or self.memory.eviction is not None \
                or self.ctx.volumes is None or not limited_empty_dirs(pod):
            return None
        now = self.ctx.clock()
        if now < self.next_disk_check:
            return self.next_disk_check
        self.next_disk_check = now + DISK_CHECK_PERIOD
        message = empty_dir_over_limit(pod, self.ctx.volumes.empty_dir_usage(pod))
        if message:
            log.info("evicting pod %s: %s", self._name(), message)
            self.memory = replace(self.memory, eviction=P.PodFailure("Evicted", message))
            self.ctx.events.event(pod, WARNING, "Evicted", message)
            return None
        return self.next_disk_check

    # ------------------------------------------------------------ actions

    async def apply(self, action: P.Action, pod: t.Pod | None, obs: P.Observed) -> Made | None:
        """Do `action` (one CRI call, or the API's delete); the sandbox or container it made or
        started, when it did (the next observation asks only about that one)."""
        runtime = self.ctx.runtime
        log.debug("pod %s: %s", self._name(), action)
        if isinstance(action, P.RunSandbox):
            assert pod is not None
            try:
                sandbox_id = await runtime.run_pod_sandbox(sandbox_config(pod, action.attempt, self.ctx.pod_settings))
            except rt.CriError as exc:
                if not _still_creating(exc):
                    self.ctx.events.event(pod, WARNING, "FailedCreatePodSandBox",
                                          f"Failed to create pod sandbox: {exc}")
                    raise
                # The runtime may still be creating this attempt: the plan waits for it to be
                # listed (adopted if Ready) instead of asking again at once, which only meets
                # "name is reserved" until the runtime is done with it.
                wait = P.sandbox_wait(self.memory.sandbox_wait, action.attempt, self.ctx.clock(),
                                      self.ctx.plan_config)
                self.memory = replace(self.memory, sandbox_wait=wait)
                if wait.failures == 1:
                    self.ctx.events.event(pod, WARNING, "FailedCreatePodSandBox",
                                          f"Failed to create pod sandbox: {exc}")
                log.info("pod %s: sandbox attempt %d may still be in the making (%s); looking for it, "
                         "asking again in %.0fs", self._name(), action.attempt, exc,
                         wait.retry_at - self.ctx.clock())
                return None
            if self.memory.sandbox_wait is not None:
                self.memory = replace(self.memory, sandbox_wait=None)
            return Made(sandbox_id, sandbox=True)
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
            spec = P.container_spec(pod, action.container)
            assert spec is not None
            sb_cfg = sandbox_config(pod, next(s.attempt for s in obs.sandboxes if s.id == action.sandbox_id),
                                    self.ctx.pod_settings)
            sandbox_ip = next((s.ip for s in obs.sandboxes if s.id == action.sandbox_id), "")
            if effective(pod, spec).run_as_non_root:  # the kubelet's check, before anything is created
                problem = run_as_non_root_problem(pod, spec, await runtime.image_status(spec.image))
                if problem:
                    raise _ConfigFailure(spec.name, problem)
            etc_hosts = self._write_hosts(pod, sandbox_ip)
            config = self._container_config(pod, spec, action.attempt, obs, etc_hosts=etc_hosts)
            try:
                container_id = await runtime.create_container(action.sandbox_id, config, sb_cfg)
            except rt.CriError as exc:
                self.ctx.events.event(pod, WARNING, "Failed", f"Error: {exc}")
                raise
            self.memory = replace(self.memory, backoff={**self.memory.backoff, action.container: action.next_backoff})
            self.ctx.events.event(pod, NORMAL, "Created", f"Created container {action.container}")
            return Made(container_id, sandbox_id=action.sandbox_id)
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
            await self._post_start(pod, action, obs)
            started = next((c for c in obs.containers if c.id == action.container_id), None)
            return None if started is None else Made(action.container_id, sandbox_id=started.sandbox_id)
        elif isinstance(action, P.StopContainer):
            if pod is not None:
                msg = {"Unhealthy": f"Container {action.container} failed liveness probe, will be restarted",
                       "StartupFailed": f"Container {action.container} failed startup probe, will be restarted"}.get(
                    action.reason, f"Stopping container {action.container}")
                self.ctx.events.event(pod, NORMAL, "Killing", msg)
            self.stop_probes(action.container_id)
            grace = await self._pre_stop(pod or self.last_pod, action, obs)
            with contextlib.suppress(rt.NotFound):
                await runtime.stop_container(action.container_id, grace)
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
        return None

    def _config(self) -> ConfigSource:
        return self.ctx.config or _NoConfig()

    def _pod_view(self, pod: t.Pod, obs: P.Observed) -> t.Pod:
        """The pod with the IPs the node knows before the API does (fieldRef status.podIP/hostIP)."""
        sandbox = P.current_sandbox(obs)
        if (sandbox is None or not sandbox.ip or pod.status.pod_ip == sandbox.ip) and \
                pod.status.host_ip == self.ctx.host_ip:
            return pod
        view = t.Pod()
        view.CopyFrom(pod)
        view.status.host_ip = self.ctx.host_ip
        if sandbox is not None and sandbox.ip:
            view.status.pod_ip = sandbox.ip
            del view.status.pod_ips[:]
            view.status.pod_ips.add(ip=sandbox.ip)
        return view

    def _container_config(self, pod: t.Pod, spec: t.Container, attempt: int, obs: P.Observed, *,
                          etc_hosts: str = "") -> cri.ContainerConfig:
        """Env, command line and mounts resolved now; _ConfigFailure when something is missing."""
        view = self._pod_view(pod, obs)
        allocatable = self.ctx.node_allocatable()
        try:
            paths: dict[str, str] = {}
            if pod.spec.volumes:
                if self.ctx.volumes is None:
                    raise ContainerConfigError("this node agent has no volume directory")
                paths = self.ctx.volumes.setup(view, self._config(), claims=self.ctx.claims,
                                               node_allocatable=allocatable, tokens=self.ctx.tokens)
                self.ctx.volumes.prepare_sub_paths(view, spec, paths)
            env = container_env(view, spec, self._config(), node_allocatable=allocatable,
                                service_env=service_env(pod, self.ctx.services()))
        except (ContainerConfigError, downward.DownwardError, OSError) as exc:
            raise _ConfigFailure(spec.name, str(exc), mount=isinstance(exc, VolumeNotReady)) from exc
        self.config_errors.pop(spec.name, None)
        self.mount_waits.discard(spec.name)
        mounts = plan_mounts(pod, spec, paths)
        if self.ctx.volumes is not None and spec.termination_message_path:
            try:
                mounts.append(self.ctx.volumes.termination_mount(pod, spec, attempt))
            except OSError as exc:
                raise _ConfigFailure(spec.name, f"termination message file: {exc}") from exc
        return container_config(pod, spec, attempt, env=env, mounts=mounts, etc_hosts=etc_hosts,
                                seccomp_dir=self.ctx.pod_settings.seccomp_dir)

    async def _post_start(self, pod: t.Pod, action: P.StartContainer, obs: P.Observed) -> None:
        """Run the postStart hook; a failed hook kills the container (restartPolicy decides what follows)."""
        spec = P.container_spec(pod, action.container)
        if spec is None or not spec.lifecycle.HasField("post_start"):
            return
        sandbox = P.current_sandbox(obs)
        ok, message = await run_hook(spec.lifecycle.post_start, pod_ip=sandbox.ip if sandbox else "", container=spec,
                                     container_id=action.container_id, runtime=self.ctx.runtime, net=self.ctx.net,
                                     timeout_seconds=POST_START_TIMEOUT)
        if not ok:
            self.ctx.events.event(pod, WARNING, "FailedPostStartHook", f"PostStartHook failed: {message}")
            with contextlib.suppress(rt.NotFound):
                await self.ctx.runtime.stop_container(action.container_id, 2)

    async def _pre_stop(self, pod: t.Pod | None, action: P.StopContainer, obs: P.Observed) -> int:
        """Run the preStop hook within the grace period; the seconds left for StopContainer (at least 2)."""
        spec = None if pod is None else P.container_spec(pod, action.container)
        if pod is None or spec is None or not spec.lifecycle.HasField("pre_stop") or action.grace <= 0:
            return action.grace
        started = self.ctx.clock()
        sandbox = P.current_sandbox(obs)
        ok, message = await run_hook(spec.lifecycle.pre_stop, pod_ip=sandbox.ip if sandbox else "", container=spec,
                                     container_id=action.container_id, runtime=self.ctx.runtime, net=self.ctx.net,
                                     timeout_seconds=action.grace)
        if not ok:
            self.ctx.events.event(pod, WARNING, "FailedPreStopHook", f"PreStopHook failed: {message}")
        return max(int(action.grace - (self.ctx.clock() - started)), 2)

    async def _pull(self, pod: t.Pod, action: P.PullImage) -> None:
        now = self.ctx.clock()
        self.ctx.events.event(pod, NORMAL, "Pulling", f'Pulling image "{action.image}"')
        try:
            await self.ctx.runtime.pull_image(action.image, sandbox_config=None,
                                              auth=pull_auth(pod, action.image, self._config()))
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
        for cs in (*status.init_container_statuses, *status.container_statuses):
            problem = self.config_errors.get(cs.name)
            if problem and cs.state.HasField("waiting"):
                reason = "ContainerCreating" if cs.name in self.mount_waits else "CreateContainerConfigError"
                cs.state.waiting.reason, cs.state.waiting.message = reason, problem
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
        kicks = self.kicks
        try:
            written = await self.ctx.client.update_status(new)
        except errors.NotFoundError:
            return
        self.last_written = (data, _revision(written))
        deadline = P.deadline_at(written)
        if deadline is not None and (self.wake_at is None or deadline < self.wake_at):
            # The first write sets status.startTime, so the pass that planned did not know the
            # activeDeadlineSeconds moment; the write's echo, which would have told it, is skipped.
            self.wake_at = deadline
        cached = self.ctx.pod(self.uid)
        if cached is not None and _revision(cached) >= self.last_written[1]:
            if self.kicks == kicks + 1 and _revision(cached) == self.last_written[1]:
                # The write's own echo reached the informer before the write returned, and was
                # the only kick meanwhile.
                self.kicked.clear()
        elif self.last_written[1]:
            self.pending_echoes.add(self.last_written[1])  # the agent skips its echo (is_own_echo)
        if written.status.phase == "Running" and pod.status.phase != "Running" and self.seen_at:
            # Once, at the first start: a pod adopted after the agent restarted was Running already.
            metrics.POD_START.observe(time.monotonic() - self.seen_at)
            self.seen_at = 0.0
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
        for spec in (*[c for c in pod.spec.init_containers if P.is_sidecar(c)], *pod.spec.containers):
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

    def _write_hosts(self, pod: t.Pod, pod_ip: str) -> str:
        """Write the pod's managed /etc/hosts (before each container create: the IP may be new); its path."""
        settings = self.ctx.pod_settings
        if not settings.pod_dir or pod.spec.host_network:
            return ""
        path = hosts_path(settings.pod_dir, self.uid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(hosts_file(pod, pod_ip, settings.dns))
        os.replace(tmp, path)
        return path

    def _remove_logs(self) -> None:
        if self.ctx.pod_settings.pod_dir:
            shutil.rmtree(os.path.join(self.ctx.pod_settings.pod_dir, self.uid), ignore_errors=True)
        pod = self.last_pod
        if pod is None:
            return
        path = pod_log_dir(self.ctx.pod_settings.pod_log_dir, pod.metadata.namespace, pod.metadata.name, self.uid)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def _still_creating(exc: rt.CriError) -> bool:
    """Whether a failed RunPodSandbox may have left the runtime creating the sandbox: the call's
    deadline passed (containerd goes on), or the attempt's name is held by such a creation."""
    return isinstance(exc, rt.NameReserved) or exc.code == grpc.StatusCode.DEADLINE_EXCEEDED


def _was_waiting(pod: t.Pod, name: str, reason: str) -> bool:
    return any(s.name == name and s.state.waiting.reason == reason for s in pod.status.container_statuses)
