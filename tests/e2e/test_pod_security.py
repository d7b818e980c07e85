"""Pod security on real containerd and runc: what a container sees of its securityContext, read
from inside it (/proc/self/status, `id`, a write to its root), and Pod Security Admission
refusing what its namespace's level forbids. Same harness as test_nodeagent.py (a private
containerd in a network namespace, the agent and the registry in this process).

- seccomp: filter mode 2 (RuntimeDefault) when nothing is asked, 0 for Unconfined (allowed in a
  privileged namespace only);
- a dropped capability is gone from CapEff; runAsUser/runAsGroup are the process's ids;
  readOnlyRootFilesystem refuses a write; allowPrivilegeEscalation=false is NoNewPrivs 1;
- runAsNonRoot with an image that runs as root waits in CreateContainerConfigError;
- a baseline namespace refuses hostNetwork (and the agent never sees the pod).
"""

from __future__ import annotations

import pytest

from skiff import errors
from skiffpb.api.v1 import types_pb2 as t
from tests.e2e import test_nodeagent as na
from tests.e2e.test_nodeagent import WEB, Harness, cstatus, running_ready, wait_for

pytestmark = pytest.mark.e2e
node = na.node  # the module's own containerd
h = na.h
CAP_NET_RAW = 13  # bit in CapEff (linux/capability.h)


def pod(name: str, *, namespace: str = "default", pod_sc: t.PodSecurityContext | None = None,
        sc: t.SecurityContext | None = None) -> t.Pod:
    p = t.Pod(metadata=t.ObjectMeta(name=name, namespace=namespace))
    p.spec.termination_grace_period_seconds = 1
    c = p.spec.containers.add(name="app", image=WEB, image_pull_policy="IfNotPresent")
    c.command.extend(["sh", "-c", "exec sleep 3600"])
    if pod_sc is not None:
        p.spec.security_context.CopyFrom(pod_sc)
    if sc is not None:
        c.security_context.CopyFrom(sc)
    return p


async def start(h: Harness, p: t.Pod) -> t.Pod:
    created = await h.api.create(p)
    await h.api.bind(created.metadata.namespace, created.metadata.name, "n1")

    async def running() -> t.Pod | None:
        got = await h.api.get(t.Pod, created.metadata.name, created.metadata.namespace)
        return got if cstatus(got).state.HasField("running") else None

    return await wait_for(running, f"pod {created.metadata.name} running", 60)


async def run(h: Harness, p: t.Pod, script: str) -> tuple[int, str]:
    cid = cstatus(p).container_id.removeprefix("containerd://")
    out = await h.runtime.exec_sync(cid, ["sh", "-c", script], 5)
    return out.exit_code, (out.stdout + out.stderr).decode()


async def status_field(h: Harness, p: t.Pod, field: str) -> str:
    code, out = await run(h, p, f"grep '^{field}:' /proc/self/status")
    assert code == 0, out
    return out.split(":", 1)[1].strip()


async def test_seccomp_runtime_default_unless_unconfined_in_a_privileged_namespace(h: Harness) -> None:
    default = await start(h, pod("seccomp-default"))
    assert await status_field(h, default, "Seccomp") == "2"
    unconfined = t.SecurityContext(seccomp_profile=t.SeccompProfile(type="Unconfined"))
    with pytest.raises(errors.ForbiddenError, match='violates PodSecurity "baseline:latest": seccompProfile'):
        await h.api.create(pod("seccomp-off", sc=unconfined))
    await h.api.create(t.Namespace(metadata=t.ObjectMeta(
        name="system-tools", labels={"pod-security.kubernetes.io/enforce": "privileged"})))
    off = await start(h, pod("seccomp-off", namespace="system-tools", sc=unconfined))
    assert await status_field(h, off, "Seccomp") == "0"


async def test_capabilities_users_read_only_root_and_no_new_privs(h: Harness) -> None:
    plain = await start(h, pod("plain"))
    locked = await start(h, pod("locked", pod_sc=t.PodSecurityContext(run_as_user=1000, run_as_group=3000,
                                                                       supplemental_groups=[4000]),
                                sc=t.SecurityContext(capabilities=t.Capabilities(drop=["NET_RAW"]),
                                                     read_only_root_filesystem=True,
                                                     allow_privilege_escalation=False)))
    assert int(await status_field(h, plain, "CapEff"), 16) >> CAP_NET_RAW & 1 == 1, "containerd's default has NET_RAW"
    assert int(await status_field(h, locked, "CapEff"), 16) >> CAP_NET_RAW & 1 == 0
    assert await run(h, locked, "id -u; id -g; id -G") == (0, "1000\n3000\n3000 4000\n")
    assert await run(h, plain, "id -u") == (0, "0\n")
    code, out = await run(h, locked, "echo x > /written")
    assert code != 0 and "Read-only file system" in out
    assert (await run(h, plain, "echo x > /written && cat /written")) == (0, "x\n")
    assert await status_field(h, locked, "NoNewPrivs") == "1"
    assert await status_field(h, plain, "NoNewPrivs") == "0"


async def test_run_as_non_root_with_a_root_image_is_a_config_error(h: Harness) -> None:
    created = await h.api.create(pod("rootless", pod_sc=t.PodSecurityContext(run_as_non_root=True)))
    await h.api.bind("default", created.metadata.name, "n1")

    async def refused() -> t.ContainerStatus | None:
        st = cstatus(await h.pod("rootless"))
        return st if st.state.waiting.reason == "CreateContainerConfigError" else None

    st = await wait_for(refused, "CreateContainerConfigError", 30)
    assert st.state.waiting.message == ('container has runAsNonRoot and image will run as root '
                                        '(pod: "default/rootless", container: app)')
    # With a non-root user the same pod runs.
    ok = await start(h, pod("rootless-1000", pod_sc=t.PodSecurityContext(run_as_non_root=True, run_as_user=1000)))
    assert await run(h, ok, "id -u") == (0, "1000\n")
    await running_ready(h, "rootless-1000")


async def test_a_baseline_namespace_refuses_host_network(h: Harness) -> None:
    p = pod("hostnet")
    p.spec.host_network = True
    with pytest.raises(errors.ForbiddenError) as refused:
        await h.api.create(p)
    assert str(refused.value) == ('pods "hostnet" is forbidden: violates PodSecurity "baseline:latest": '
                                  "host namespaces (hostNetwork=true)")
    assert h.api.objects(t.Pod) == []
