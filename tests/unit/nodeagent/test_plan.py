"""Table tests for the pure pod planning and status (nodeagent.plan)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from nodeagent import plan as P
from skiffpb.api.v1 import types_pb2 as t

S = 1_000_000_000  # ns per second
CFG = P.PlanConfig(backoff_base=10, backoff_max=300, reset_after=600, image_backoff_base=10)
SB = P.SandboxObs("sb1", 0, True, 1 * S, "10.244.1.2")


def pod(*, policy: str = "", deleting: bool = False, pull: str = "IfNotPresent", image: str = "skiff/web:1.0",
        names: tuple[str, ...] = ("web",), grace: int | None = None, readiness: bool = False,
        phase: str = "") -> t.Pod:
    p = t.Pod()
    p.status.phase = phase
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "p", "default", "uid-1"
    p.spec.restart_policy = policy
    if grace is not None:
        p.spec.termination_grace_period_seconds = grace
    for n in names:
        c = p.spec.containers.add(name=n, image=image, image_pull_policy=pull)
        if readiness:
            c.readiness_probe.CopyFrom(t.Probe(period_seconds=1))
    if deleting:
        p.metadata.deletion_timestamp.FromSeconds(100)
        p.metadata.deletion_grace_period_seconds = 7
    return p


def ctr(cid: str, state: str, *, name: str = "web", attempt: int = 0, sb: str = "sb1", started: float = 0,
        finished: float = 0, code: int = 0) -> P.ContainerObs:
    return P.ContainerObs(cid, name, attempt, sb, state, created_at=int(started * S), started_at=int(started * S),
                          finished_at=int(finished * S), exit_code=code)


def obs(*containers: P.ContainerObs, sandboxes: tuple[P.SandboxObs, ...] = (SB,), image: bool = True) -> P.Observed:
    return P.Observed(sandboxes, containers, {"skiff/web:1.0": image})


@dataclass
class Case:
    id: str
    pod: t.Pod | None
    obs: P.Observed
    want: list[P.Action]
    memory: P.Memory = field(default_factory=P.Memory)
    now: float = 1000.0
    waiting: str = ""  # expected waiting reason of container "web"
    wake_at: float | None = None
    done: bool = False


CASES = [
    Case("new pod: sandbox first", pod(), P.Observed(images={"skiff/web:1.0": True}), [P.RunSandbox(0)],
         waiting="ContainerCreating"),
    Case("sandbox ready: create container", pod(), obs(), [P.CreateContainer("web", "sb1", 0, 0.0)],
         waiting="ContainerCreating"),
    Case("created: start it", pod(), obs(ctr("c1", "created")), [P.StartContainer("c1", "web")]),
    Case("running: nothing to do", pod(), obs(ctr("c1", "running", started=5)), []),
    Case("IfNotPresent and missing: pull", pod(), obs(image=False), [P.PullImage("web", "skiff/web:1.0", 0)]),
    Case("Never and missing: ErrImageNeverPull", pod(pull="Never"), obs(image=False), [],
         waiting="ErrImageNeverPull"),
    Case("Always: pull once per attempt", pod(pull="Always"), obs(), [P.PullImage("web", "skiff/web:1.0", 0)]),
    Case("Always: pulled for this attempt: create", pod(pull="Always"), obs(),
         [P.CreateContainer("web", "sb1", 0, 0.0)], memory=P.Memory(pulled={"web": 0})),
    Case("pull failed just now: ErrImagePull shown", pod(), obs(image=False), [],
         memory=P.Memory(image_failures={"web": P.ImageFailure("ErrImagePull", "no", 1, 999.5, 1009.5)}),
         waiting="ErrImagePull", wake_at=1000.5),
    Case("pull failed earlier: ImagePullBackOff until retry", pod(), obs(image=False), [],
         memory=P.Memory(image_failures={"web": P.ImageFailure("ErrImagePull", "no", 1, 995, 1005)}),
         waiting="ImagePullBackOff", wake_at=1005),
    Case("pull backoff over: pull again", pod(), obs(image=False), [P.PullImage("web", "skiff/web:1.0", 0)],
         memory=P.Memory(image_failures={"web": P.ImageFailure("ErrImagePull", "no", 1, 980, 990)}),
         waiting="ErrImagePull"),
    Case("first crash: restart at once, backoff starts at base", pod(),
         obs(ctr("c1", "exited", started=900, finished=990, code=1)), [P.CreateContainer("web", "sb1", 1, 10.0)]),
    Case("second crash inside backoff: CrashLoopBackOff", pod(),
         obs(ctr("c2", "exited", attempt=1, started=992, finished=995, code=1)), [],
         memory=P.Memory(backoff={"web": 10.0}), waiting="CrashLoopBackOff", wake_at=1005),
    Case("backoff expired: restart, delay doubles", pod(),
         obs(ctr("c2", "exited", attempt=1, started=980, finished=985, code=1)),
         [P.CreateContainer("web", "sb1", 2, 20.0)], memory=P.Memory(backoff={"web": 10.0})),
    Case("backoff capped at max", pod(),
         obs(ctr("c9", "exited", attempt=9, started=100, finished=200, code=1)),
         [P.CreateContainer("web", "sb1", 10, 300.0)], memory=P.Memory(backoff={"web": 300.0})),
    Case("ran 10 minutes: backoff resets", pod(),
         obs(ctr("c3", "exited", attempt=3, started=100, finished=999, code=1)),
         [P.CreateContainer("web", "sb1", 4, 10.0)], memory=P.Memory(backoff={"web": 160.0})),
    Case("OnFailure, exit 0: stays terminated (pod done, sandbox stopped)", pod(policy="OnFailure"),
         obs(ctr("c1", "exited", started=1, finished=2, code=0)), [P.StopSandbox("sb1")]),
    Case("OnFailure, exit 1: restart", pod(policy="OnFailure"),
         obs(ctr("c1", "exited", started=1, finished=2, code=1)), [P.CreateContainer("web", "sb1", 1, 10.0)]),
    Case("Never: no restart", pod(policy="Never"), obs(ctr("c1", "exited", started=1, finished=2, code=1)),
         [P.StopSandbox("sb1")]),
    Case("Never, finished and sandbox already stopped: nothing", pod(policy="Never"),
         obs(ctr("c1", "exited", started=1, finished=2, code=1),
             sandboxes=(P.SandboxObs("sb1", 0, False, 1 * S, ""),)), []),
    Case("Succeeded in the API, sandbox gone: never recreated", pod(policy="OnFailure", phase="Succeeded"),
         P.Observed(images={"skiff/web:1.0": True}), []),
    Case("Failed in the API, container still running: stopped, not restarted",
         pod(policy="Never", phase="Failed", grace=4, names=("web", "side")),
         obs(ctr("c1", "exited", started=1, finished=2, code=1), ctr("c2", "running", name="side", started=1)),
         [P.StopContainer("c2", "side", 4, "Killing"), P.StopSandbox("sb1")]),
    Case("Succeeded in the API, Always policy, exited: no restart", pod(phase="Succeeded"),
         obs(ctr("c1", "exited", started=1, finished=2, code=0),
             sandboxes=(P.SandboxObs("sb1", 0, False, 1 * S, ""),)), []),
    Case("liveness failed: stop with grace", pod(grace=12), obs(ctr("c1", "running", started=5)),
         [P.StopContainer("c1", "web", 12, "Unhealthy")],
         memory=P.Memory(probes={"c1": P.ProbeState(live=False)})),
    Case("sandbox died: kill its containers, new sandbox attempt 1", pod(grace=3),
         obs(ctr("c1", "running", started=5), sandboxes=(P.SandboxObs("sb1", 0, False, 1 * S),)),
         [P.StopContainer("c1", "web", 3, "SandboxChanged"), P.RunSandbox(1)], waiting="ContainerCreating"),
    Case("old sandbox removed once a new one runs", pod(),
         obs(ctr("c2", "running", sb="sb2", attempt=1, started=5),
             sandboxes=(P.SandboxObs("sb1", 0, False, 1 * S), P.SandboxObs("sb2", 1, True, 2 * S, "10.244.1.3"))),
         [P.RemoveSandbox("sb1")]),
    Case("older exited instances removed, the last one kept", pod(),
         obs(ctr("c1", "exited", attempt=0, started=1, finished=2, code=1),
             ctr("c2", "exited", attempt=1, started=3, finished=4, code=1),
             ctr("c3", "running", attempt=2, started=5)),
         [P.RemoveContainer("c1")]),
    Case("deleting: stop running containers with the deletion grace", pod(deleting=True),
         obs(ctr("c1", "running", started=5)),
         [P.StopContainer("c1", "web", 7, "Killing"), P.StopSandbox("sb1"), P.RemoveSandbox("sb1")]),
    Case("deleting, all stopped: remove sandbox", pod(deleting=True),
         obs(ctr("c1", "exited", started=1, finished=2), sandboxes=(P.SandboxObs("sb1", 0, False, 1 * S),)),
         [P.RemoveSandbox("sb1")]),
    Case("deleting, nothing left: delete the Pod object", pod(deleting=True), P.Observed(), [P.DeletePod()]),
    Case("pod gone from the API: tear down", None, obs(ctr("c1", "running", started=5)),
         [P.StopContainer("c1", "web", 30, "Killing"), P.StopSandbox("sb1"), P.RemoveSandbox("sb1")]),
    Case("pod gone and nothing left: done", None, P.Observed(), [], done=True),
    Case("two containers: both progress in order", pod(names=("a", "b")),
         P.Observed((SB,), (ctr("ca", "running", name="a", started=5),), {"skiff/web:1.0": True}),
         [P.CreateContainer("b", "sb1", 0, 0.0)]),
    # A RunPodSandbox the runtime may still be working on (deadline passed, name reserved).
    Case("sandbox in the making: wait for it, not ask again", pod(), P.Observed(images={"skiff/web:1.0": True}),
         [], memory=P.Memory(sandbox_wait=P.SandboxWait(0, 1, 1005)), waiting="ContainerCreating", wake_at=1005),
    Case("sandbox wait over: ask again for the same attempt", pod(), P.Observed(images={"skiff/web:1.0": True}),
         [P.RunSandbox(0)], memory=P.Memory(sandbox_wait=P.SandboxWait(0, 1, 995)), waiting="ContainerCreating"),
    Case("waited-for sandbox appears Ready: adopted", pod(), obs(), [P.CreateContainer("web", "sb1", 0, 0.0)],
         memory=P.Memory(sandbox_wait=P.SandboxWait(0, 2, 1005)), waiting="ContainerCreating"),
    Case("waited-for sandbox left NotReady: next attempt at once", pod(),
         obs(sandboxes=(P.SandboxObs("sb1", 0, False, 1 * S),)), [P.RunSandbox(1)],
         memory=P.Memory(sandbox_wait=P.SandboxWait(0, 2, 1005)), waiting="ContainerCreating"),
    Case("a wait for an older attempt holds nothing back", pod(),
         obs(sandboxes=(P.SandboxObs("sb1", 3, False, 1 * S),)), [P.RunSandbox(4)],
         memory=P.Memory(sandbox_wait=P.SandboxWait(3, 1, 1005)), waiting="ContainerCreating"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_compute_plan(case: Case) -> None:
    plan = P.compute_plan(case.pod, case.obs, case.memory, case.now, CFG)
    assert list(plan.actions) == case.want
    assert plan.done == case.done
    if case.waiting:
        assert plan.waiting["web"].reason == case.waiting
    else:
        assert "web" not in plan.waiting or plan.waiting["web"].reason == "ContainerCreating"
    assert plan.wake_at == case.wake_at


@pytest.mark.parametrize(("policy", "image", "want"), [
    ("", "nginx", "Always"), ("", "nginx:latest", "Always"), ("", "nginx:1.25", "IfNotPresent"),
    ("", "localhost:5000/x:1", "IfNotPresent"), ("", "localhost:5000/x", "Always"), ("Never", "nginx", "Never"),
], ids=["no-tag", "latest", "tag", "registry-port-tag", "registry-port-no-tag", "explicit"])
def test_pull_policy_default(policy: str, image: str, want: str) -> None:
    assert P.pull_policy(t.Container(name="c", image=image, image_pull_policy=policy)) == want


def test_image_failure_backoff_doubles_and_caps() -> None:
    cfg = P.PlanConfig(image_backoff_base=10, image_backoff_max=30)
    f1 = P.image_failure(None, "ErrImagePull", "x", 100, cfg)
    f2 = P.image_failure(f1, "ErrImagePull", "x", 200, cfg)
    f3 = P.image_failure(f2, "ErrImagePull", "x", 300, cfg)
    assert [(f.failures, f.retry_at) for f in (f1, f2, f3)] == [(1, 110), (2, 220), (3, 330)]


@pytest.mark.parametrize(("attempts", "want"), [
    ((0,), [(1, 1005)]),
    ((0, 0, 0, 0), [(1, 1005), (2, 1010), (3, 1020), (4, 1030)]),
    ((0, 0, 1), [(1, 1005), (2, 1010), (1, 1005)]),
], ids=["first", "doubles-and-caps", "new-attempt-starts-over"])
def test_sandbox_wait_backoff(attempts: tuple[int, ...], want: list[tuple[int, float]]) -> None:
    cfg = P.PlanConfig(sandbox_retry_base=5, sandbox_retry_max=30)
    wait, got = None, []
    for attempt in attempts:
        wait = P.sandbox_wait(wait, attempt, 1000, cfg)
        got.append((wait.failures, wait.retry_at))
    assert got == want


# ---------------------------------------------------------------- status

@dataclass
class StatusCase:
    id: str
    pod: t.Pod
    obs: P.Observed
    phase: str
    ready: bool
    state: str  # running / waiting:<reason> / terminated:<reason>
    restarts: int = 0
    memory: P.Memory = field(default_factory=P.Memory)
    last_exit: int | None = None


STATUS = [
    StatusCase("no sandbox yet", pod(), P.Observed(), "Pending", False, "waiting:ContainerCreating"),
    StatusCase("running", pod(), obs(ctr("c1", "running", started=5)), "Running", True, "running"),
    StatusCase("running, readiness not yet passed", pod(readiness=True), obs(ctr("c1", "running", started=5)),
               "Running", False, "running"),
    StatusCase("running, readiness passed", pod(readiness=True), obs(ctr("c1", "running", started=5)),
               "Running", True, "running", memory=P.Memory(probes={"c1": P.ProbeState(ready=True)})),
    StatusCase("crash looping", pod(), obs(ctr("c2", "exited", attempt=1, started=992, finished=995, code=2)),
               "Running", False, "waiting:CrashLoopBackOff", restarts=1, memory=P.Memory(backoff={"web": 10.0}),
               last_exit=2),
    StatusCase("restarted once", pod(), obs(ctr("c1", "exited", started=1, finished=2, code=137),
                                           ctr("c2", "running", attempt=1, started=3)),
               "Running", True, "running", restarts=1, last_exit=137),
    StatusCase("Never, failed", pod(policy="Never"), obs(ctr("c1", "exited", started=1, finished=2, code=3)),
               "Failed", False, "terminated:Error"),
    StatusCase("OnFailure, completed", pod(policy="OnFailure"), obs(ctr("c1", "exited", started=1, finished=2)),
               "Succeeded", False, "terminated:Completed"),
    StatusCase("image never pulled", pod(pull="Never"), obs(image=False), "Pending", False,
               "waiting:ErrImageNeverPull"),
]


@pytest.mark.parametrize("case", STATUS, ids=[c.id for c in STATUS])
def test_compute_status(case: StatusCase) -> None:
    plan = P.compute_plan(case.pod, case.obs, case.memory, 1000.0, CFG)
    st = P.compute_status(case.pod, case.obs, case.memory, plan, 1000.0, host_ip="10.0.0.1")
    assert st.phase == case.phase
    conds = {c.type: c.status for c in st.conditions}
    assert conds == {"PodScheduled": "True", "Initialized": "True",
                     "ContainersReady": "True" if case.ready else "False", "Ready": "True" if case.ready else "False"}
    cs = st.container_statuses[0]
    if case.state == "running":
        assert cs.state.HasField("running")
    else:
        which, reason = case.state.split(":")
        assert getattr(cs.state, which).reason == reason
    assert cs.restart_count == case.restarts
    if case.last_exit is not None:
        assert cs.last_state.terminated.exit_code == case.last_exit
    assert st.host_ip == "10.0.0.1"
    if case.obs.sandboxes:
        assert st.pod_ip == "10.244.1.2"


@pytest.mark.parametrize(("phase", "code"), [("Succeeded", 0), ("Failed", 2)], ids=["succeeded", "failed"])
def test_terminal_phase_and_states_outlive_the_containers(phase: str, code: int) -> None:
    p = pod(policy="Never")
    o = obs(ctr("c1", "exited", started=1, finished=2, code=code))
    first = P.compute_status(p, o, P.Memory(), P.compute_plan(p, o, P.Memory(), 1000.0, CFG), 1000.0)
    assert first.phase == phase
    p.status.CopyFrom(first)
    gone = P.Observed(images={"skiff/web:1.0": True})  # containers and sandbox removed from the runtime
    plan = P.compute_plan(p, gone, P.Memory(), 2000.0, CFG)
    assert plan.actions == ()
    later = P.compute_status(p, gone, P.Memory(), plan, 2000.0)
    assert later.phase == phase
    assert later.container_statuses[0].state.terminated.exit_code == code
    assert {c.type: c.status for c in later.conditions}["Ready"] == "False"


def test_status_keeps_transition_times_when_unchanged() -> None:
    p = pod()
    o = obs(ctr("c1", "running", started=5))
    plan = P.compute_plan(p, o, P.Memory(), 1000.0, CFG)
    first = P.compute_status(p, o, P.Memory(), plan, 1000.0)
    p.status.CopyFrom(first)
    second = P.compute_status(p, o, P.Memory(), plan, 2000.0)
    assert second == first  # nothing changed: byte-identical, so no status write
    p.status.CopyFrom(second)
    o2 = obs(ctr("c1", "exited", started=5, finished=1500, code=1))
    plan2 = P.compute_plan(p, o2, P.Memory(backoff={"web": 10}), 1501.0, CFG)
    third = P.compute_status(p, o2, P.Memory(backoff={"web": 10}), plan2, 1501.0)
    ready = next(c for c in third.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.last_transition_time.seconds == 1501
    scheduled = next(c for c in third.conditions if c.type == "PodScheduled")
    assert scheduled.last_transition_time.seconds == 1000
    assert third.start_time == first.start_time
