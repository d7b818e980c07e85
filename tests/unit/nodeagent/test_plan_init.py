"""Table tests for init containers, native sidecars, activeDeadlineSeconds and eviction in the
pure pod plan and status (nodeagent.plan)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from nodeagent import plan as P
from skiffpb.api.v1 import types_pb2 as t

S = 1_000_000_000
CFG = P.PlanConfig(backoff_base=10, backoff_max=300, reset_after=600)
SB = P.SandboxObs("sb1", 0, True, 1 * S, "10.244.1.2")
IMAGE = "skiff/web:1.0"


def pod(*, policy: str = "Always", inits: tuple[str, ...] = ("init1", "init2"), sidecars: tuple[str, ...] = (),
        startup: tuple[str, ...] = (), deadline: int | None = None, start: float | None = None,
        phase: str = "") -> t.Pod:
    p = t.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "p", "default", "uid-1"
    p.spec.restart_policy = policy
    p.status.phase = phase
    for n in inits:
        c = p.spec.init_containers.add(name=n, image=IMAGE, image_pull_policy="IfNotPresent")
        if n in sidecars:
            c.restart_policy = "Always"
        if n in startup:
            c.startup_probe.CopyFrom(t.Probe(period_seconds=1))
    p.spec.containers.add(name="web", image=IMAGE, image_pull_policy="IfNotPresent")
    if deadline is not None:
        p.spec.active_deadline_seconds = deadline
    if start is not None:
        p.status.start_time.FromSeconds(int(start))
    return p


def ctr(cid: str, name: str, state: str, *, attempt: int = 0, sb: str = "sb1", started: float = 1,
        finished: float = 2, code: int = 0) -> P.ContainerObs:
    return P.ContainerObs(cid, name, attempt, sb, state, created_at=int(started * S), started_at=int(started * S),
                          finished_at=int(finished * S) if state == "exited" else 0, exit_code=code)


def obs(*containers: P.ContainerObs, sandboxes: tuple[P.SandboxObs, ...] = (SB,)) -> P.Observed:
    return P.Observed(sandboxes, containers, {IMAGE: True})


@dataclass
class Case:
    id: str
    pod: t.Pod
    obs: P.Observed
    want: list[P.Action]
    memory: P.Memory = field(default_factory=P.Memory)
    now: float = 1000.0
    waiting: dict[str, str] = field(default_factory=dict)  # container -> expected waiting reason
    wake_at: float | None = None


DONE1 = ctr("i1", "init1", "exited", code=0)
DONE2 = ctr("i2", "init2", "exited", code=0)
CASES = [
    Case("new sandbox: init containers and app wait PodInitializing", pod(), P.Observed(images={IMAGE: True}),
         [P.RunSandbox(0)], waiting={"init1": "PodInitializing", "web": "PodInitializing"}),
    Case("first init container created first, app waits", pod(), obs(),
         [P.CreateContainer("init1", "sb1", 0, 0.0)], waiting={"init1": "ContainerCreating",
                                                                "init2": "PodInitializing",
                                                                "web": "PodInitializing"}),
    Case("init1 running: nothing else starts", pod(), obs(ctr("i1", "init1", "running")), [],
         waiting={"init2": "PodInitializing", "web": "PodInitializing"}),
    Case("init1 done: init2 next", pod(), obs(DONE1), [P.CreateContainer("init2", "sb1", 0, 0.0)],
         waiting={"web": "PodInitializing"}),
    Case("all init done: app container created", pod(), obs(DONE1, DONE2),
         [P.CreateContainer("web", "sb1", 0, 0.0)]),
    Case("init1 failed, policy Always: restarted at once (as OnFailure)", pod(),
         obs(ctr("i1", "init1", "exited", started=900, finished=990, code=1)),
         [P.CreateContainer("init1", "sb1", 1, 10.0)], waiting={"web": "PodInitializing"}),
    Case("init1 failed again inside backoff: Init CrashLoopBackOff", pod(policy="OnFailure"),
         obs(ctr("i1", "init1", "exited", attempt=1, started=992, finished=995, code=1)), [],
         memory=P.Memory(backoff={"init1": 10.0}), waiting={"init1": "CrashLoopBackOff", "web": "PodInitializing"},
         wake_at=1005),
    Case("init1 failed, policy Never: the pod fails, nothing restarts", pod(policy="Never"),
         obs(ctr("i1", "init1", "exited", code=1)), []),
    Case("app running, init records removed: init containers not run again", pod(),
         obs(ctr("w", "web", "running")), []),
    Case("new sandbox after a crash: init containers run again", pod(),
         obs(DONE1, DONE2, ctr("w", "web", "exited", code=137),
             P.ContainerObs("i9", "init1", 1, "sb2", "created"),
             sandboxes=(SB, P.SandboxObs("sb2", 1, True, 5 * S, "10.244.1.3"))),
         [P.StartContainer("i9", "init1"), P.StopSandbox("sb1"), P.RemoveSandbox("sb1")],
         waiting={"web": "PodInitializing"}),
    Case("sidecar created, then the next init waits for it to run", pod(sidecars=("init1",)), obs(),
         [P.CreateContainer("init1", "sb1", 0, 0.0)], waiting={"web": "PodInitializing"}),
    Case("sidecar running (no startup probe): next init container starts", pod(sidecars=("init1",)),
         obs(ctr("i1", "init1", "running")), [P.CreateContainer("init2", "sb1", 0, 0.0)]),
    Case("sidecar running, startup probe not passed: waits", pod(sidecars=("init1",), startup=("init1",)),
         obs(ctr("i1", "init1", "running")), [], waiting={"init2": "PodInitializing", "web": "PodInitializing"}),
    Case("sidecar started by its probe: next starts", pod(sidecars=("init1",), startup=("init1",)),
         obs(ctr("i1", "init1", "running")), [P.CreateContainer("init2", "sb1", 0, 0.0)],
         memory=P.Memory(probes={"i1": P.ProbeState(started=True)})),
    Case("sidecar exited after init: restarted alongside the app", pod(sidecars=("init1",), policy="Never"),
         obs(ctr("i1", "init1", "exited", started=900, finished=990, code=0), DONE2, ctr("w", "web", "running")),
         [P.CreateContainer("init1", "sb1", 1, 10.0)]),
    Case("app done with policy Never, sidecar running: the pod finishes (sandbox stopped)",
         pod(sidecars=("init1",), policy="Never"),
         obs(ctr("i1", "init1", "running"), DONE2, ctr("w", "web", "exited", code=0)), [P.StopSandbox("sb1")]),
    Case("deadline passed: running containers stopped", pod(inits=(), deadline=60, start=900),
         obs(ctr("w", "web", "running")), [P.StopContainer("w", "web", 30, "DeadlineExceeded")]),
    Case("deadline ahead: woken at it", pod(inits=(), deadline=600, start=900), obs(ctr("w", "web", "running")),
         [], wake_at=1500),
    Case("evicted: running containers stopped", pod(inits=()), obs(ctr("w", "web", "running")),
         [P.StopContainer("w", "web", 30, "Evicted")],
         memory=P.Memory(eviction=P.PodFailure("Evicted", "Usage of EmptyDir volume..."))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    plan = P.compute_plan(case.pod, case.obs, case.memory, case.now, CFG)
    assert list(plan.actions) == case.want
    for name, reason in case.waiting.items():
        assert plan.waiting[name].reason == reason, name
    assert plan.wake_at == case.wake_at


@dataclass
class StatusCase:
    id: str
    pod: t.Pod
    obs: P.Observed
    phase: str
    initialized: str
    init_states: list[str]  # per init container: waiting:<reason>, running, terminated:<code>
    reason: str = ""
    memory: P.Memory = field(default_factory=P.Memory)
    now: float = 1000.0


def _state(cs: t.ContainerStatus) -> str:
    st = cs.state
    if st.HasField("waiting"):
        return f"waiting:{st.waiting.reason}"
    if st.HasField("running"):
        return "running"
    return f"terminated:{st.terminated.exit_code}"


STATUS_CASES = [
    StatusCase("nothing run yet: Pending, not Initialized", pod(), obs(), "Pending", "False",
               ["waiting:PodInitializing", "waiting:PodInitializing"]),
    StatusCase("init1 done, init2 running", pod(), obs(DONE1, ctr("i2", "init2", "running")), "Pending", "False",
               ["terminated:0", "running"]),
    StatusCase("init failed with Never: Failed", pod(policy="Never"), obs(ctr("i1", "init1", "exited", code=3)),
               "Failed", "False", ["terminated:3", "waiting:PodInitializing"]),
    StatusCase("all done, app running: Running and Initialized", pod(),
               obs(DONE1, DONE2, ctr("w", "web", "running")), "Running", "True", ["terminated:0", "terminated:0"]),
    StatusCase("sidecar started counts as initialized", pod(inits=("side",), sidecars=("side",)),
               obs(ctr("s", "side", "running"), ctr("w", "web", "running")), "Running", "True", ["running"]),
    StatusCase("past the deadline: Failed, DeadlineExceeded", pod(inits=(), deadline=10, start=900),
               obs(ctr("w", "web", "running")), "Failed", "True", [], reason="DeadlineExceeded"),
    StatusCase("evicted: Failed, Evicted", pod(inits=()), obs(ctr("w", "web", "running")), "Failed", "True", [],
               reason="Evicted", memory=P.Memory(eviction=P.PodFailure("Evicted", "over"))),
]


@pytest.mark.parametrize("case", STATUS_CASES, ids=[c.id for c in STATUS_CASES])
def test_status(case: StatusCase) -> None:
    plan = P.compute_plan(case.pod, case.obs, case.memory, case.now, CFG)
    status = P.compute_status(case.pod, case.obs, case.memory, plan, case.now)
    assert status.phase == case.phase
    assert status.reason == case.reason
    assert [_state(cs) for cs in status.init_container_statuses] == case.init_states
    cond = {c.type: c.status for c in status.conditions}
    assert cond["Initialized"] == case.initialized
    if case.phase != "Running":
        assert cond["Ready"] == "False"


def test_terminal_pod_keeps_its_reason() -> None:
    p = pod(inits=(), deadline=10, start=900, phase="Failed")
    p.status.reason, p.status.message = "DeadlineExceeded", "Pod was active on the node longer than the deadline"
    plan = P.compute_plan(p, obs(ctr("w", "web", "exited", code=137)), P.Memory(), 1000.0, CFG)
    status = P.compute_status(p, obs(ctr("w", "web", "exited", code=137)), P.Memory(), plan, 1000.0)
    assert (status.phase, status.reason) == ("Failed", "DeadlineExceeded")
