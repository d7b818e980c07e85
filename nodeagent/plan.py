"""The pure heart of a pod worker: what to do next, and what the pod's status is.

`compute_plan(pod, observed, memory, now, config)` looks at the pod spec (or its absence /
deletion), what the runtime reports for the pod (sandboxes and containers found by the pod uid
label), and the worker's small memory (restart backoff, image pull failures, probe results), and
returns the actions that move the pod toward its spec. The worker applies the FIRST action only,
then observes again (swarmkit/kubelet style), so every step is re-decided from fresh facts and a
restarted agent resumes exactly where the runtime is. (After an action that made or started one
sandbox or container, the worker observes that one by its status call instead of listing the
pod again, as the kubelet's SyncPod goes on without a listing; nodeagent/worker.py.)

`compute_status(...)` derives the PodStatus (phase, IPs, conditions, container states) from the
same inputs. Both functions read no clock and do no I/O: `now` is an argument, so table tests
cover backoff and probe timing without sleeping.

Rules that must hold:
- a deleted pod (deletionTimestamp) or a pod unknown to the API is torn down: running containers
  stopped with the grace period, sandboxes stopped and removed; only then is the Pod object deleted.
- restartPolicy Always restarts every exit, OnFailure only non-zero exits, Never none.
- the first restart is immediate; after it a container waits `backoff` (10 s doubling to 5 min)
  past its last exit (CrashLoopBackOff); a container that ran `reset_after` (10 min) starts over.
- image pull failures back off the same way (ErrImagePull, then ImagePullBackOff).
- restartCount is the container's CRI attempt number, so it survives agent restarts.
- a sandbox the runtime may still be creating (RunPodSandbox outlived the agent's CRI deadline,
  or the runtime answered that the attempt's name is reserved: Memory.sandbox_wait) is not asked
  for again before its backoff passes (5 s doubling to 1 min); the worker keeps observing, so a
  sandbox of that attempt that appears is adopted when Ready, or replaced by the next attempt when
  the runtime left it NotReady, as the kubelet's next sync does with ListPodSandbox.
- init containers run one at a time, in order, in the current sandbox, each only after the one
  before exited 0 (a native sidecar, `restartPolicy: Always`, only has to be started: running,
  and past its startup probe); app containers start only when all of them are done
  (Initialized). A failed init container restarts with the backoff when the pod's policy is
  Always or OnFailure; with Never the pod fails. Once an app container exists in the sandbox the
  pod counts as initialized (removed init containers are not run again); a new sandbox runs them
  all again. Sidecars restart on every exit and do not keep a pod from finishing.
- a pod past `activeDeadlineSeconds` (from status.startTime), or one the worker has evicted
  (Memory.eviction: an emptyDir over its sizeLimit), fails: its containers are stopped and the
  phase is Failed with reason DeadlineExceeded / Evicted.
- a terminal phase (Succeeded, Failed) is final: once the pod's status says so, nothing of it
  runs again (a container still running is stopped, the sandbox is not recreated) and the
  phase and the last container states stay, even when the runtime no longer has the containers
  (a Job counts its pods by phase; a pod must not come back to life after being counted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from skiff import conditions, qos
from skiff.clock import micro_timestamp
from skiff.retry import Backoff
from skiffpb.api.v1 import types_pb2 as t

ERR_IMAGE_PULL_SHOWN = 1.0  # seconds a failed pull shows as ErrImagePull before ImagePullBackOff

# ---------------------------------------------------------------- observed state (from CRI)


@dataclass(frozen=True)
class SandboxObs:
    id: str
    attempt: int
    ready: bool
    created_at: int  # ns
    ip: str = ""


@dataclass(frozen=True)
class ContainerObs:
    id: str
    name: str
    attempt: int
    sandbox_id: str
    state: str  # created, running, exited, unknown
    created_at: int = 0  # ns
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    image_ref: str = ""


@dataclass(frozen=True)
class Observed:
    sandboxes: tuple[SandboxObs, ...] = ()
    containers: tuple[ContainerObs, ...] = ()
    images: Mapping[str, bool] = field(default_factory=dict)  # image as in the spec -> present on the node


# ---------------------------------------------------------------- worker memory


@dataclass(frozen=True)
class ImageFailure:
    reason: str  # ErrImagePull, ErrImageNeverPull, InvalidImageName
    message: str
    failures: int
    at: float  # when it last failed
    retry_at: float


@dataclass(frozen=True)
class ProbeState:
    """Probe results for one container instance (by container id)."""

    ready: bool = False
    started: bool = False
    live: bool = True


@dataclass(frozen=True)
class PodFailure:
    """Why the node fails a pod that has not finished (pod status reason and message)."""

    reason: str  # DeadlineExceeded, Evicted
    message: str


@dataclass(frozen=True)
class SandboxWait:
    """A RunPodSandbox of `attempt` the runtime may still be working on: not asked again before `retry_at`."""

    attempt: int
    failures: int  # consecutive deadline / name-reserved answers for this attempt
    retry_at: float


@dataclass(frozen=True)
class Memory:
    backoff: Mapping[str, float] = field(default_factory=dict)  # container name -> delay before next restart
    image_failures: Mapping[str, ImageFailure] = field(default_factory=dict)  # container name -> last failure
    pulled: Mapping[str, int] = field(default_factory=dict)  # container name -> attempt pulled for (Always)
    probes: Mapping[str, ProbeState] = field(default_factory=dict)  # container id -> results
    eviction: PodFailure | None = None  # set by the worker when it evicts the pod (emptyDir over its sizeLimit)
    sandbox_wait: SandboxWait | None = None  # a sandbox creation that outlived its call (sandbox_wait())


@dataclass(frozen=True)
class PlanConfig:
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    reset_after: float = 600.0
    image_backoff_base: float = 10.0
    image_backoff_max: float = 300.0
    default_grace: int = 30
    sandbox_retry_base: float = 5.0  # after RunPodSandbox's deadline or "name is reserved" (SandboxWait)
    sandbox_retry_max: float = 60.0


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class RunSandbox:
    attempt: int


@dataclass(frozen=True)
class StopSandbox:
    sandbox_id: str


@dataclass(frozen=True)
class RemoveSandbox:
    sandbox_id: str


@dataclass(frozen=True)
class PullImage:
    container: str
    image: str
    attempt: int  # the container attempt this pull is for (imagePullPolicy Always pulls per start)


@dataclass(frozen=True)
class CreateContainer:
    container: str
    sandbox_id: str
    attempt: int
    next_backoff: float  # the delay to remember for the restart after this one


@dataclass(frozen=True)
class StartContainer:
    container_id: str
    container: str


@dataclass(frozen=True)
class StopContainer:
    container_id: str
    container: str
    grace: int
    reason: str  # Killing (deletion), Unhealthy (liveness), StartupFailed


@dataclass(frozen=True)
class RemoveContainer:
    container_id: str


@dataclass(frozen=True)
class DeletePod:
    """Remove the Pod object (grace 0): everything on the node is gone."""


Action = RunSandbox | StopSandbox | RemoveSandbox | PullImage | CreateContainer | StartContainer | \
    StopContainer | RemoveContainer | DeletePod


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    waiting: Mapping[str, Waiting] = field(default_factory=dict)  # container name -> why it is not running
    wake_at: float | None = None  # when the plan may change without any event (backoff expiry)
    done: bool = False  # nothing of the pod is left on the node and no Pod object needs deleting


# ---------------------------------------------------------------- helpers


def pull_policy(container: t.Container) -> str:
    if container.image_pull_policy:
        return container.image_pull_policy
    image = container.image.split("@")[0]
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") and "@" not in container.image else "IfNotPresent"


def grace_seconds(pod: t.Pod | None, config: PlanConfig) -> int:
    if pod is None:
        return config.default_grace
    if pod.metadata.HasField("deletion_grace_period_seconds"):
        return max(int(pod.metadata.deletion_grace_period_seconds), 0)
    if pod.spec.HasField("termination_grace_period_seconds"):
        return max(int(pod.spec.termination_grace_period_seconds), 0)
    return config.default_grace


def is_deleting(pod: t.Pod | None) -> bool:
    return pod is None or pod.metadata.HasField("deletion_timestamp")


def current_sandbox(obs: Observed) -> SandboxObs | None:
    if not obs.sandboxes:
        return None
    return max(obs.sandboxes, key=lambda s: (s.attempt, s.created_at))


def latest_instance(obs: Observed, name: str, sandbox_id: str | None = None) -> ContainerObs | None:
    found = [c for c in obs.containers if c.name == name and (sandbox_id is None or c.sandbox_id == sandbox_id)]
    return max(found, key=lambda c: (c.attempt, c.created_at)) if found else None


def should_restart(policy: str, exit_code: int) -> bool:
    if policy == "Never":
        return False
    if policy == "OnFailure":
        return exit_code != 0
    return True  # Always (the default)


def _ran_for(c: ContainerObs) -> float:
    if not c.started_at or not c.finished_at:
        return 0.0
    return max(c.finished_at - c.started_at, 0) / 1e9


def container_done(pod: t.Pod, obs: Observed, name: str) -> bool:
    """The container has terminated for good (its last run ended and the policy does not restart it)."""
    last = latest_instance(obs, name)
    return last is not None and last.state == "exited" and not should_restart(pod.spec.restart_policy,
                                                                              last.exit_code)


def is_sidecar(spec: t.Container) -> bool:
    """A native sidecar: an init container with restartPolicy Always."""
    return spec.HasField("restart_policy") and spec.restart_policy == "Always"


def container_spec(pod: t.Pod, name: str) -> t.Container | None:
    """The spec of a container or init container by name."""
    for c in (*pod.spec.init_containers, *pod.spec.containers):
        if c.name == name:
            return c
    return None


def init_policy(pod: t.Pod) -> str:
    """An init container (not a sidecar) restarts on failure unless the pod's policy is Never."""
    return "Never" if pod.spec.restart_policy == "Never" else "OnFailure"


def deadline_at(pod: t.Pod) -> float | None:
    """When the pod's activeDeadlineSeconds runs out (counted from status.startTime)."""
    if not pod.spec.HasField("active_deadline_seconds") or not pod.status.HasField("start_time"):
        return None
    start = pod.status.start_time.seconds + pod.status.start_time.nanos / 1e9
    return start + pod.spec.active_deadline_seconds


def pod_failure(pod: t.Pod, memory: Memory, now: float) -> PodFailure | None:
    """Why the node fails this pod now, if it does (eviction first, then the deadline)."""
    if memory.eviction is not None:
        return memory.eviction
    deadline = deadline_at(pod)
    if deadline is not None and now >= deadline:
        return PodFailure("DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    return None


def init_failed(pod: t.Pod, obs: Observed) -> bool:
    """An init container failed and the pod's policy (Never) does not retry it: the pod fails."""
    if init_policy(pod) != "Never":
        return False
    sandbox = current_sandbox(obs)
    for spec in pod.spec.init_containers:
        if is_sidecar(spec):
            continue
        last = latest_instance(obs, spec.name, sandbox.id if sandbox is not None else None)
        if last is not None and last.state == "exited" and last.exit_code != 0:
            return True
    return False


def initialized(pod: t.Pod, obs: Observed, memory: Memory) -> bool:
    """Every init container is done in the current sandbox (or an app container already exists there)."""
    sandbox = current_sandbox(obs)
    if sandbox is None:
        return not pod.spec.init_containers
    if any(latest_instance(obs, c.name, sandbox.id) is not None for c in pod.spec.containers):
        return True
    return all(_init_done(spec, obs, memory, sandbox) for spec in pod.spec.init_containers)


def _init_done(spec: t.Container, obs: Observed, memory: Memory, sandbox: SandboxObs) -> bool:
    latest = latest_instance(obs, spec.name, sandbox.id)
    if latest is None:
        return False
    if is_sidecar(spec):
        started = memory.probes.get(latest.id, ProbeState()).started or not spec.HasField("startup_probe")
        return latest.state == "running" and started
    return latest.state == "exited" and latest.exit_code == 0


def is_terminal(pod: t.Pod) -> bool:
    """The API already shows the pod finished (a phase that never changes again)."""
    return pod.status.phase in ("Succeeded", "Failed")


def pod_finished(pod: t.Pod, obs: Observed) -> bool:
    return bool(pod.spec.containers) and all(container_done(pod, obs, c.name) for c in pod.spec.containers)


# ---------------------------------------------------------------- the plan


def _teardown(pod: t.Pod | None, obs: Observed, config: PlanConfig) -> Plan:
    grace = grace_seconds(pod, config)
    actions: list[Action] = [StopContainer(c.id, c.name, grace, "Killing") for c in obs.containers
                             if c.state in ("running", "unknown")]
    actions += [StopSandbox(s.id) for s in obs.sandboxes if s.ready]
    actions += [RemoveSandbox(s.id) for s in obs.sandboxes]
    actions += [RemoveContainer(c.id) for c in obs.containers if c.sandbox_id not in {s.id for s in obs.sandboxes}]
    if actions:
        return Plan(tuple(actions))
    if pod is not None:
        return Plan((DeletePod(),))
    return Plan(done=True)


def compute_plan(pod: t.Pod | None, obs: Observed, memory: Memory, now: float,
                 config: PlanConfig = PlanConfig()) -> Plan:
    if is_deleting(pod):
        return _teardown(pod, obs, config)
    assert pod is not None
    actions: list[Action] = []
    cleanup: list[Action] = []
    waiting: dict[str, Waiting] = {}
    wake: list[float] = []
    policy = pod.spec.restart_policy or "Always"
    sandbox = current_sandbox(obs)

    # Older sandboxes (a sandbox that died and was replaced) are stopped and removed.
    for s in obs.sandboxes:
        if sandbox is not None and s.id != sandbox.id:
            cleanup += [StopSandbox(s.id)] if s.ready else []
            cleanup.append(RemoveSandbox(s.id))

    if is_terminal(pod):
        grace = grace_seconds(pod, config)
        actions += [StopContainer(c.id, c.name, grace, "Killing") for c in obs.containers if c.state == "running"]
        actions += [StopSandbox(s.id) for s in obs.sandboxes if s.ready]
        return Plan(tuple(actions + cleanup))

    if pod_finished(pod, obs):
        # A finished pod keeps its containers (exit codes, logs) but not its sandbox's processes.
        if sandbox is not None and sandbox.ready:
            actions.append(StopSandbox(sandbox.id))
        return Plan(tuple(actions + cleanup))

    if sandbox is None or not sandbox.ready:
        if sandbox is not None:
            actions += [StopContainer(c.id, c.name, grace_seconds(pod, config), "SandboxChanged")
                        for c in obs.containers if c.sandbox_id == sandbox.id and c.state == "running"]
        attempt = sandbox.attempt + 1 if sandbox is not None else 0
        first = "PodInitializing" if pod.spec.init_containers else "ContainerCreating"
        creating = {c.name: Waiting(first) for c in (*pod.spec.init_containers, *pod.spec.containers)}
        pending = memory.sandbox_wait
        if pending is not None and pending.attempt == attempt and now < pending.retry_at:
            # The runtime may still be creating this attempt (its name is reserved until it ends):
            # wait for it to be listed (adopted when Ready) rather than asking again.
            return Plan(tuple(actions + cleanup), waiting=creating, wake_at=pending.retry_at)
        actions.append(RunSandbox(attempt=attempt))
        return Plan(tuple(actions + cleanup), waiting=creating)

    failure = pod_failure(pod, memory, now)
    if failure is not None or init_failed(pod, obs):
        # The pod fails: stop what runs; compute_status reports Failed (and the reason).
        grace = grace_seconds(pod, config)
        reason = failure.reason if failure is not None else "Killing"
        actions += [StopContainer(c.id, c.name, grace, reason) for c in obs.containers if c.state == "running"]
        return Plan(tuple(actions + cleanup))
    deadline = deadline_at(pod)
    if deadline is not None:
        wake.append(deadline)

    complete = initialized(pod, obs, memory)
    for i, spec in enumerate(pod.spec.init_containers):
        done = complete or _init_done(spec, obs, memory, sandbox)
        if is_sidecar(spec) and done:
            _step(pod, spec, "Always", sandbox, obs, memory, now, config, actions, cleanup, waiting, wake)
            continue  # a started sidecar is kept running (restarted on exit)
        if done:
            continue
        _step(pod, spec, "Always" if is_sidecar(spec) else init_policy(pod), sandbox, obs, memory, now, config,
              actions, cleanup, waiting, wake)
        # Nothing after an init container that is not done yet may start.
        for later in (*pod.spec.init_containers[i + 1:], *pod.spec.containers):
            waiting.setdefault(later.name, Waiting("PodInitializing"))
        return Plan(tuple(actions + cleanup), waiting=waiting, wake_at=min(wake) if wake else None)

    for spec in pod.spec.containers:
        _step(pod, spec, policy, sandbox, obs, memory, now, config, actions, cleanup, waiting, wake)
    return Plan(tuple(actions + cleanup), waiting=waiting, wake_at=min(wake) if wake else None)


def _step(pod: t.Pod, spec: t.Container, policy: str, sandbox: SandboxObs, obs: Observed, memory: Memory,
          now: float, config: PlanConfig, actions: list[Action], cleanup: list[Action],
          waiting: dict[str, Waiting], wake: list[float]) -> None:
    """The next action for one container in the ready sandbox (appended to `actions`), or why it waits."""
    name = spec.name
    latest = latest_instance(obs, name, sandbox.id)
    any_latest = latest_instance(obs, name)
    # Older exited instances go; the latest and the last exited one stay (lastState, --previous logs).
    exited = sorted((c for c in obs.containers if c.name == name and c.state == "exited"
                     and (latest is None or c.id != latest.id)), key=lambda c: (c.attempt, c.created_at))
    cleanup.extend(RemoveContainer(c.id) for c in exited[:-1])
    if latest is not None and latest.state == "running":
        probe = memory.probes.get(latest.id, ProbeState())
        if not probe.live:
            actions.append(StopContainer(latest.id, name, grace_seconds(pod, config), "Unhealthy"))
        return
    if latest is not None and latest.state == "created":
        actions.append(StartContainer(latest.id, name))
        return
    # Nothing runs: first start, restart after an exit, or a new sandbox.
    next_attempt = any_latest.attempt + 1 if any_latest is not None else 0
    next_backoff = memory.backoff.get(name, 0.0)
    if any_latest is not None and any_latest.state in ("exited", "unknown"):
        if not should_restart(policy, any_latest.exit_code):
            return
        delay = memory.backoff.get(name, 0.0)
        if delay <= 0 or _ran_for(any_latest) >= config.reset_after:
            next_backoff = config.backoff_base
        else:
            eligible = any_latest.finished_at / 1e9 + delay
            if now < eligible:
                waiting[name] = Waiting("CrashLoopBackOff", f"back-off {_fmt(delay)} restarting failed container="
                                        f"{name} pod={pod.metadata.name}_{pod.metadata.namespace}"
                                        f"({pod.metadata.uid})")
                wake.append(eligible)
                return
            next_backoff = min(delay * 2, config.backoff_max)
    # The image, by imagePullPolicy.
    pull = pull_policy(spec)
    present = obs.images.get(spec.image, False)
    failure = memory.image_failures.get(name)
    need_pull = (pull == "Always" and memory.pulled.get(name, -1) != next_attempt) or \
                (pull == "IfNotPresent" and not present)
    if pull == "Never" and not present:
        waiting[name] = Waiting("ErrImageNeverPull", f'Container image "{spec.image}" is not present with pull '
                                "policy of Never")
        return
    if need_pull:
        if failure is not None and now < failure.retry_at:
            if now < failure.at + ERR_IMAGE_PULL_SHOWN:
                # Like the kubelet: the failed attempt is reported first, the backoff from the next sync.
                waiting[name] = Waiting(failure.reason, failure.message)
                wake.append(failure.at + ERR_IMAGE_PULL_SHOWN)
            else:
                waiting[name] = Waiting("ImagePullBackOff", f'Back-off pulling image "{spec.image}"')
                wake.append(failure.retry_at)
            return
        if failure is not None:
            waiting[name] = Waiting(failure.reason, failure.message)
        else:
            waiting[name] = Waiting("ContainerCreating")
        actions.append(PullImage(name, spec.image, next_attempt))
        return
    waiting[name] = Waiting("ContainerCreating")
    actions.append(CreateContainer(name, sandbox.id, next_attempt, next_backoff))


def image_failure(previous: ImageFailure | None, reason: str, message: str, now: float,
                  config: PlanConfig = PlanConfig()) -> ImageFailure:
    """The memory after a failed pull: backoff doubles from image_backoff_base up to its max."""
    failures = (previous.failures if previous is not None else 0) + 1
    delay = Backoff(initial=config.image_backoff_base, max=config.image_backoff_max).delay(failures)
    return ImageFailure(reason, message, failures, now, now + delay)


def sandbox_wait(previous: SandboxWait | None, attempt: int, now: float,
                 config: PlanConfig = PlanConfig()) -> SandboxWait:
    """The memory after a RunPodSandbox of `attempt` that the runtime may still be working on (the
    call's deadline passed, or the runtime said the attempt's name is reserved): the retry backs off
    from sandbox_retry_base, doubling while the same attempt keeps answering so, up to its max."""
    failures = (previous.failures if previous is not None and previous.attempt == attempt else 0) + 1
    delay = Backoff(initial=config.sandbox_retry_base, max=config.sandbox_retry_max).delay(failures)
    return SandboxWait(attempt, failures, now + delay)


def _fmt(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m0s"
    return f"{seconds:g}s"


# ---------------------------------------------------------------- status


def _ts(ns: int) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(ns))
    return out


def _terminated(c: ContainerObs) -> t.ContainerStateTerminated:
    reason = c.reason or ("Completed" if c.exit_code == 0 else "Error")
    out = t.ContainerStateTerminated(exit_code=c.exit_code, reason=reason, message=c.message,
                                     container_id=f"containerd://{c.id}")
    if c.started_at:
        out.started_at.CopyFrom(_ts(c.started_at))
    if c.finished_at:
        out.finished_at.CopyFrom(_ts(c.finished_at))
    return out


def container_status(pod: t.Pod, spec: t.Container, obs: Observed, memory: Memory,
                     waiting: Waiting | None) -> t.ContainerStatus:
    sandbox = current_sandbox(obs)
    latest = latest_instance(obs, spec.name)
    out = t.ContainerStatus(name=spec.name, image=spec.image)
    if latest is None:
        out.state.waiting.CopyFrom(t.ContainerStateWaiting(reason=(waiting or Waiting("ContainerCreating")).reason,
                                                           message=(waiting.message if waiting else "")))
        out.started = False
        return out
    out.restart_count = latest.attempt
    out.container_id = f"containerd://{latest.id}"
    out.image_id = latest.image_ref
    previous = [c for c in obs.containers if c.name == spec.name and c.id != latest.id and c.state == "exited"]
    if previous:
        prev = max(previous, key=lambda c: (c.attempt, c.created_at))
        out.last_state.terminated.CopyFrom(_terminated(prev))
    probe = memory.probes.get(latest.id, ProbeState())
    running_here = latest.state == "running" and sandbox is not None and latest.sandbox_id == sandbox.id \
        and sandbox.ready
    if running_here:
        out.state.running.started_at.CopyFrom(_ts(latest.started_at or latest.created_at))
        started = probe.started or not spec.HasField("startup_probe")
        out.started = started
        ready_by_probe = probe.ready if spec.HasField("readiness_probe") else True
        out.ready = started and ready_by_probe
    elif latest.state == "created":
        out.state.waiting.CopyFrom(t.ContainerStateWaiting(reason="ContainerCreating"))
        out.started = False
    elif waiting is not None and waiting.reason != "ContainerCreating":
        out.state.waiting.CopyFrom(t.ContainerStateWaiting(reason=waiting.reason, message=waiting.message))
        out.last_state.terminated.CopyFrom(_terminated(latest))
        out.started = False
    else:
        out.state.terminated.CopyFrom(_terminated(latest))
        out.started = False
    return out


def _phase(pod: t.Pod, statuses: Sequence[t.ContainerStatus], obs: Observed) -> str:
    if init_failed(pod, obs):
        return "Failed"
    if pod_finished(pod, obs):
        codes = [latest_instance(obs, c.name).exit_code for c in pod.spec.containers]  # type: ignore[union-attr]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"
    running = sum(1 for s in statuses if s.state.HasField("running"))
    restarting = sum(1 for s in statuses if s.last_state.HasField("terminated") or s.state.HasField("terminated"))
    waiting_fresh = sum(1 for s in statuses if s.state.HasField("waiting") and not s.last_state.HasField("terminated"))
    if waiting_fresh:
        return "Pending"
    if running or restarting:
        return "Running"
    return "Pending"


def _condition(previous: Sequence[t.PodCondition], ctype: str, status: bool, now: float, *,
               reason: str = "", message: str = "") -> t.PodCondition:
    value = conditions.TRUE if status else conditions.FALSE
    out = t.PodCondition(type=ctype, status=value, reason=reason if not status else "",
                         message=message if not status else "")
    out.last_transition_time.CopyFrom(conditions.transition_time(previous, ctype, value, now))
    return out


def compute_status(pod: t.Pod, obs: Observed, memory: Memory, plan: Plan, now: float, *,
                   host_ip: str = "") -> t.PodStatus:
    """The pod's status as the node sees it; timestamps of unchanged conditions are kept."""
    out = t.PodStatus()
    statuses = [container_status(pod, c, obs, memory, plan.waiting.get(c.name)) for c in pod.spec.containers]
    init_statuses = [container_status(pod, c, obs, memory, _init_waiting(plan.waiting.get(c.name), obs, c.name))
                     for c in pod.spec.init_containers]
    failure = None if is_terminal(pod) else pod_failure(pod, memory, now)
    if is_terminal(pod):
        # Final: the phase stays; a container the runtime no longer has keeps its last reported state.
        before = {cs.name: cs for cs in (*pod.status.container_statuses, *pod.status.init_container_statuses)}
        statuses = [before[s.name] if s.name in before and latest_instance(obs, s.name) is None else s
                    for s in statuses]
        init_statuses = [before[s.name] if s.name in before and latest_instance(obs, s.name) is None else s
                         for s in init_statuses]
        for s in (*statuses, *init_statuses):
            s.ready = False
        out.reason, out.message = pod.status.reason, pod.status.message
    elif failure is not None:
        out.reason, out.message = failure.reason, failure.message
    out.container_statuses.extend(statuses)
    out.init_container_statuses.extend(init_statuses)
    if is_terminal(pod):
        out.phase = pod.status.phase
    elif failure is not None:
        out.phase = "Failed"
        for s in (*out.container_statuses, *out.init_container_statuses):
            s.ready = False
    else:
        out.phase = _phase(pod, statuses, obs)
    out.qos_class = pod.status.qos_class or qos.qos_class(pod.spec)
    out.host_ip = host_ip
    sandbox = current_sandbox(obs)
    if sandbox is not None and sandbox.ready and sandbox.ip:
        out.pod_ip = sandbox.ip
        out.pod_ips.add(ip=sandbox.ip)
    if pod.status.HasField("start_time"):
        out.start_time.CopyFrom(pod.status.start_time)
    else:
        out.start_time.CopyFrom(micro_timestamp(now))
    prev = list(pod.status.conditions)
    sidecars = {c.name for c in pod.spec.init_containers if is_sidecar(c)}
    not_ready = [s.name for s in out.init_container_statuses if s.name in sidecars and not s.ready] + \
        [s.name for s in out.container_statuses if not s.ready]
    ready = not not_ready and out.phase == "Running"
    msg = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else ""
    reason = "PodCompleted" if out.phase in ("Succeeded", "Failed") else "ContainersNotReady"
    incomplete = [s.name for s in out.init_container_statuses if not _init_status_done(s, s.name in sidecars)]
    init_ok = not incomplete or (sandbox is not None and initialized(pod, obs, memory)) or out.phase == "Succeeded"
    init_reason = "PodCompleted" if out.phase in ("Succeeded", "Failed") else "ContainersNotInitialized"
    out.conditions.extend([
        _condition(prev, "PodScheduled", True, now),
        _condition(prev, "Initialized", init_ok, now, reason=init_reason,
                   message=f"containers with incomplete status: [{' '.join(incomplete)}]"),
        _condition(prev, "ContainersReady", ready, now, reason=reason, message=msg),
        _condition(prev, "Ready", ready, now, reason=reason, message=msg),
    ])
    return out


def _init_waiting(waiting: Waiting | None, obs: Observed, name: str) -> Waiting | None:
    """An init container not created yet waits PodInitializing (as the kubelet reports it), not ContainerCreating."""
    if (waiting is None and latest_instance(obs, name) is None) or (waiting is not None
                                                                   and waiting.reason == "ContainerCreating"):
        return Waiting("PodInitializing")
    return waiting


def _init_status_done(s: t.ContainerStatus, sidecar: bool) -> bool:
    if sidecar:
        return s.started
    return s.state.HasField("terminated") and s.state.terminated.exit_code == 0
