"""Pod Security Standards (skiff/podsecurity.py): one case per rule of each level, with the
exact `reason (detail)` Kubernetes reports, the namespace labels that choose the levels, and the
decision (refuse, warn, audit) for pods and for workload templates."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from skiff import podsecurity as ps
from skiff.convert import from_data
from skiffpb.api.v1 import types_pb2 as t

# A pod that passes restricted: every rule below breaks exactly one thing of it.
RESTRICTED_OK = {
    "metadata": {"name": "p"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "i",
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "tmp", "emptyDir": {}}],
    },
}


def pod(edit: Callable[[t.Pod], None] | None = None) -> t.Pod:
    p = from_data(RESTRICTED_OK, t.Pod)
    if edit is not None:
        edit(p)
    return p


def c0(p: t.Pod) -> t.Container:
    return p.spec.containers[0]


def second(p: t.Pod) -> t.Container:
    c = p.spec.containers.add()
    c.CopyFrom(c0(p))
    c.name = "side"
    return c


# (id, edit, level whose check fails, "reason (detail)")
RULES: list[tuple[str, Callable[[t.Pod], None], str, str]] = [
    ("hostNetwork", lambda p: setattr(p.spec, "host_network", True), ps.BASELINE,
     "host namespaces (hostNetwork=true)"),
    ("hostPID-and-hostIPC", lambda p: (setattr(p.spec, "host_pid", True), setattr(p.spec, "host_ipc", True)),
     ps.BASELINE, "host namespaces (hostIPC=true, hostPID=true)"),
    ("privileged", lambda p: setattr(c0(p).security_context, "privileged", True), ps.BASELINE,
     'privileged (container "app" must not set securityContext.privileged=true)'),
    ("capabilities-beyond-baseline", lambda p: c0(p).security_context.capabilities.add.extend(["NET_ADMIN", "KILL"]),
     ps.BASELINE, 'non-default capabilities (container "app" must not include "NET_ADMIN" in '
     "securityContext.capabilities.add)"),
    ("hostPath", lambda p: p.spec.volumes.add(name="h", host_path=t.HostPathVolumeSource(path="/etc")), ps.BASELINE,
     'hostPath volumes (volume "h")'),
    ("hostPort", lambda p: c0(p).ports.add(container_port=80, host_port=8080), ps.BASELINE,
     'hostPort (container "app" uses hostPort 8080)'),
    ("hostPorts-two-containers", lambda p: (c0(p).ports.add(container_port=80, host_port=80),
                                            second(p).ports[0].__setattr__("host_port", 81)), ps.BASELINE,
     'hostPort (containers "app", "side" use hostPorts 80, 81)'),
    ("hostProcess", lambda p: setattr(p.spec.security_context.windows_options, "host_process", True), ps.BASELINE,
     "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)"),
    ("procMount-Unmasked", lambda p: setattr(c0(p).security_context, "proc_mount", "Unmasked"), ps.BASELINE,
     'procMount (container "app" must not set securityContext.procMount to "Unmasked")'),
    ("seccomp-pod-Unconfined", lambda p: setattr(p.spec.security_context.seccomp_profile, "type", "Unconfined"),
     ps.BASELINE, 'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")'),
    ("seccomp-container-Unconfined",
     lambda p: setattr(c0(p).security_context.seccomp_profile, "type", "Unconfined"), ps.BASELINE,
     'seccompProfile (container "app" must not set securityContext.seccompProfile.type to "Unconfined")'),
    ("unsafe-sysctl", lambda p: p.spec.security_context.sysctls.add(name="kernel.msgmax", value="1"), ps.BASELINE,
     "forbidden sysctls (kernel.msgmax)"),
    ("selinux-type", lambda p: setattr(c0(p).security_context.se_linux_options, "type", "spc_t"), ps.BASELINE,
     'seLinuxOptions (container "app" set forbidden securityContext.seLinuxOptions: type "spc_t")'),
    ("apparmor-unconfined",
     lambda p: p.metadata.annotations.update({"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
     ps.BASELINE, 'forbidden AppArmor profiles (container.apparmor.security.beta.kubernetes.io/app="unconfined")'),
    ("probe-host", lambda p: setattr(c0(p).readiness_probe.http_get, "host", "169.254.169.254"), ps.BASELINE,
     'probe or lifecycle host (container "app" uses host "169.254.169.254")'),
    ("allowPrivilegeEscalation-unset", lambda p: c0(p).security_context.ClearField("allow_privilege_escalation"),
     ps.RESTRICTED, 'allowPrivilegeEscalation != false (container "app" must set '
     "securityContext.allowPrivilegeEscalation=false)"),
    ("drop-ALL-missing", lambda p: c0(p).security_context.capabilities.ClearField("drop"), ps.RESTRICTED,
     'unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"])'),
    ("add-beyond-NET_BIND_SERVICE", lambda p: c0(p).security_context.capabilities.add.append("CHOWN"),
     ps.RESTRICTED, 'unrestricted capabilities (container "app" must not include "CHOWN" in '
     "securityContext.capabilities.add)"),
    ("runAsNonRoot-unset", lambda p: p.spec.security_context.ClearField("run_as_non_root"), ps.RESTRICTED,
     'runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)'),
    ("runAsNonRoot-false-container", lambda p: setattr(c0(p).security_context, "run_as_non_root", False),
     ps.RESTRICTED, 'runAsNonRoot != true (container "app" must not set securityContext.runAsNonRoot=false)'),
    ("runAsUser-0", lambda p: setattr(p.spec.security_context, "run_as_user", 0), ps.RESTRICTED,
     "runAsUser=0 (pod must not set runAsUser=0)"),
    ("seccomp-unset", lambda p: p.spec.security_context.ClearField("seccomp_profile"), ps.RESTRICTED,
     'seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to '
     '"RuntimeDefault" or "Localhost")'),
    ("restricted-volume-type", lambda p: p.spec.volumes.add(name="h", host_path=t.HostPathVolumeSource(path="/x")),
     ps.RESTRICTED, 'restricted volume types (volume "h" uses restricted volume type "hostPath")'),
]


def test_the_base_pod_passes_every_level() -> None:
    assert [ps.evaluate(level, pod().metadata, pod().spec) for level in ps.LEVELS] == [[], [], []]


@pytest.mark.parametrize(("edit", "level", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule(edit: Callable[[t.Pod], None], level: str, expected: str) -> None:
    p = pod(edit)
    found = [str(v) for v in ps.evaluate(level, p.metadata, p.spec)]
    assert found == [expected]
    assert ps.evaluate(ps.PRIVILEGED, p.metadata, p.spec) == []
    if level == ps.RESTRICTED and "hostPath" not in expected:  # hostPath is the one non-restricted type we have
        assert ps.evaluate(ps.BASELINE, p.metadata, p.spec) == [], "restricted-only rules pass baseline"


@pytest.mark.parametrize(("edit", "ok"), [
    (lambda p: c0(p).security_context.capabilities.add.append("NET_BIND_SERVICE"), True),
    (lambda p: setattr(c0(p).security_context.seccomp_profile, "type", "Localhost"), True),
    (lambda p: (p.spec.security_context.ClearField("run_as_non_root"),
                setattr(c0(p).security_context, "run_as_non_root", True)), True),
    (lambda p: p.spec.security_context.sysctls.add(name="net.ipv4.ip_local_port_range", value="1024 65000"), True),
    (lambda p: setattr(p.spec.security_context, "run_as_user", 1000), True),
    (lambda p: setattr(c0(p).security_context, "allow_privilege_escalation", True), False),
], ids=["NET_BIND_SERVICE-added", "Localhost-seccomp", "runAsNonRoot-per-container", "safe-sysctl",
        "non-root-uid", "allowPrivilegeEscalation-true"])
def test_what_restricted_allows(edit: Callable[[t.Pod], None], ok: bool) -> None:
    p = pod(edit)
    assert (ps.evaluate(ps.RESTRICTED, p.metadata, p.spec) == []) is ok


def test_baseline_reports_every_failed_rule_in_order() -> None:
    def many(p: t.Pod) -> None:
        p.spec.host_network = True
        c0(p).security_context.privileged = True
        p.spec.volumes.add(name="h", host_path=t.HostPathVolumeSource(path="/"))

    p = pod(many)
    assert ps.violates(ps.LevelVersion(ps.BASELINE), ps.evaluate(ps.BASELINE, p.metadata, p.spec)) == (
        'violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), hostPath volumes '
        '(volume "h"), privileged (container "app" must not set securityContext.privileged=true)')


@pytest.mark.parametrize(("namespace", "labels", "expected"), [
    ("team", {}, ("baseline:latest", "baseline:latest", "baseline:latest")),
    ("team", {"pod-security.kubernetes.io/enforce": "privileged"},
     ("privileged:latest", "privileged:latest", "privileged:latest")),
    ("team", {"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/warn": "restricted",
              "pod-security.kubernetes.io/warn-version": "v1.30"},
     ("baseline:latest", "restricted:v1.30", "baseline:latest")),
    ("team", {"pod-security.kubernetes.io/enforce": "nonsense"}, ("baseline:latest",) * 3),
    ("kube-system", {"pod-security.kubernetes.io/enforce": "restricted"}, ("privileged:latest",) * 3),
    ("default", {}, ("baseline:latest",) * 3),
], ids=["unlabelled-default-baseline", "privileged", "warn-restricted-versioned", "invalid-is-default",
        "kube-system-privileged", "default-namespace-is-baseline"])
def test_policy_from_labels(namespace: str, labels: dict[str, str], expected: tuple[str, str, str]) -> None:
    policy = ps.policy_for(namespace, labels)
    assert (str(policy.enforce), str(policy.warn), str(policy.audit)) == expected


@pytest.mark.parametrize(("labels", "problems"), [
    ({"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "v1.29"}, []),
    ({"pod-security.kubernetes.io/warn": "strict"}, ["pod-security.kubernetes.io/warn"]),
    ({"pod-security.kubernetes.io/audit-version": "1.29"}, ["pod-security.kubernetes.io/audit-version"]),
], ids=["valid", "bad-level", "bad-version"])
def test_label_values_are_checked(labels: dict[str, str], problems: list[str]) -> None:
    assert [key for key, _ in ps.check_labels(labels)] == problems


def test_decide_refuses_pods_and_only_warns_for_templates() -> None:
    p = pod(lambda p: setattr(p.spec, "host_network", True))
    policy = ps.policy_for("team", {"pod-security.kubernetes.io/warn": "restricted"})
    refused = ps.decide(policy, p.metadata, p.spec, enforce=True)
    assert refused.forbidden == 'violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)'
    template = ps.decide(policy, p.metadata, p.spec, enforce=False)
    assert (template.forbidden, template.warnings) == ("", (
        'would violate PodSecurity "restricted:latest": host namespaces (hostNetwork=true)',))
    assert template.audit == ('would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)',)
    fine = ps.decide(ps.policy_for("team", {}), pod().metadata, pod().spec, enforce=True)
    assert fine == ps.Decision()


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "CronJob", "Pod"])
def test_pod_specs_of_workloads(kind: str) -> None:
    spec = {"containers": [{"name": "x", "image": "i"}], "hostNetwork": True}
    template = {"metadata": {"labels": {"a": "b"}}, "spec": spec}
    data: dict[str, object] = {"metadata": {"name": "w"}}
    if kind == "Pod":
        data["spec"] = spec
    elif kind == "CronJob":
        data["spec"] = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        data["spec"] = {"template": template}
    obj = from_data(data, getattr(t, kind))
    [(_, found)] = ps.pod_specs(obj)
    assert found.host_network
    assert ps.pod_specs(t.Service()) == []
