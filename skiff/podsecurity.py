"""Pod Security Standards (Kubernetes' Pod Security Admission): the levels, the namespace labels
that choose them, and the checks of each level, as pure functions over a pod's metadata and spec.

What must hold, as in Kubernetes (k8s.io/pod-security-admission, the "latest" version of every
check):
- Three levels, each allowing less than the one before: `privileged` (no check), `baseline` (no
  host namespaces, hostPath volumes, hostPorts, privileged containers, capabilities added beyond
  the default set, hostProcess, unmasked /proc, Unconfined seccomp, unsafe sysctls, forbidden
  SELinux or AppArmor options, probe or lifecycle hosts), `restricted` (baseline, and in place of
  three of its checks stricter ones: only the restricted volume types, drop ALL and add at most
  NET_BIND_SERVICE, seccomp RuntimeDefault or Localhost; plus allowPrivilegeEscalation=false,
  runAsNonRoot=true, no runAsUser=0).
- A check names what is wrong in Kubernetes' words: `host namespaces (hostNetwork=true)`; a
  refusal reads `violates PodSecurity "baseline:latest": <reason> (<detail>), ...`, a warning
  `would violate PodSecurity "restricted:latest": ...`, so what users know from Kubernetes
  (and its documentation) applies as it is.
- A namespace chooses a level per mode with the labels `pod-security.kubernetes.io/<mode>`
  (`enforce`, `warn`, `audit`) and `.../<mode>-version` (`latest` or `v1.<minor>`; every
  version is evaluated with the latest checks, the version is only reported). An unlabelled
  mode gets the cluster default (`DEFAULT_LEVEL`, baseline) for `enforce`; `warn` and `audit`
  follow the namespace's enforce level unless labelled, so a namespace labelled privileged is
  quiet and an unlabelled one warns about what would be refused. The namespaces in
  `PRIVILEGED_NAMESPACES` (kube-system) run what the cluster needs: privileged whatever their
  labels say.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from skiffpb.api.v1 import types_pb2 as t

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)
MODES = ("enforce", "warn", "audit")
LABEL_PREFIX = "pod-security.kubernetes.io/"
LATEST = "latest"
DEFAULT_LEVEL = BASELINE
# Namespaces that run the cluster's own pods: never restricted (Kubernetes exempts them by configuration).
PRIVILEGED_NAMESPACES = ("kube-system",)

_VERSION = re.compile(r"^v1\.(0|[1-9][0-9]{0,3})$")

# The capabilities a container may add under baseline (the container runtime's default set).
BASELINE_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                   "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
# Namespaced sysctls isolated from other pods: the only ones baseline allows.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
# Volume sources restricted allows, by their JSON names (any other source is refused).
RESTRICTED_VOLUME_TYPES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                     "persistentVolumeClaim", "projected", "secret"})
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def label(mode: str, *, version: bool = False) -> str:
    return f"{LABEL_PREFIX}{mode}{'-version' if version else ''}"


def check_labels(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """(label key, problem) for every pod-security label with a value Kubernetes would refuse."""
    out = []
    for mode in MODES:
        level = labels.get(label(mode))
        if level is not None and level not in LEVELS:
            out.append((label(mode), f'unsupported value "{level}": supported values are '
                        + ", ".join(f'"{x}"' for x in LEVELS)))
        version = labels.get(label(mode, version=True))
        if version is not None and version != LATEST and not _VERSION.match(version):
            out.append((label(mode, version=True), f'invalid value "{version}": must be "latest" or "v1.<minor>"'))
    return out


@dataclass(frozen=True)
class LevelVersion:
    level: str
    version: str = LATEST

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion
    warn: LevelVersion
    audit: LevelVersion


def policy_for(namespace: str, labels: Mapping[str, str], *, default_level: str = DEFAULT_LEVEL) -> Policy:
    """The namespace's level per mode (see the module docstring for defaults); invalid labels count as unset."""
    if namespace in PRIVILEGED_NAMESPACES:
        p = LevelVersion(PRIVILEGED)
        return Policy(p, p, p)

    def get(mode: str, fallback: LevelVersion) -> LevelVersion:
        level = labels.get(label(mode))
        version = labels.get(label(mode, version=True), LATEST)
        if version != LATEST and not _VERSION.match(version):
            version = LATEST
        if level not in LEVELS:
            return fallback if mode != "enforce" or version == LATEST else LevelVersion(fallback.level, version)
        return LevelVersion(level, version)

    enforce = get("enforce", LevelVersion(default_level))
    return Policy(enforce, get("warn", enforce), get("audit", enforce))


@dataclass(frozen=True)
class Violation:
    """One failed check: `reason (detail)` in messages."""

    check: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


# ---------------------------------------------------------------- helpers

def _plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


def _quoted(items: Iterable[str]) -> str:
    return ", ".join(f'"{x}"' for x in items)


def _containers(n: int, names: Sequence[str]) -> str:
    return f"{_plural('container', 'containers', n)} {_quoted(names)}"


def _sorted_unique(items: Iterable[str]) -> list[str]:
    return sorted(set(items))


def _pod_sc(spec: t.PodSpec) -> t.PodSecurityContext:
    return spec.security_context


def _handlers(c: t.Container) -> list[t.HTTPGetAction | t.TCPSocketAction]:
    out: list[t.HTTPGetAction | t.TCPSocketAction] = []
    for probe in (c.liveness_probe, c.readiness_probe, c.startup_probe):
        out += [probe.http_get, probe.tcp_socket]
    for hook in (c.lifecycle.post_start, c.lifecycle.pre_stop):
        out += [hook.http_get, hook.tcp_socket]
    return out


def volume_type(v: t.Volume) -> str:
    """The JSON name of the volume's source ("hostPath"), "" when none is set."""
    for fd, _ in v.ListFields():
        if fd.name != "name":
            return fd.json_name
    return ""


Check = Callable[[t.ObjectMeta, t.PodSpec], Violation | None]


# ---------------------------------------------------------------- baseline

def check_host_namespaces(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    used = [name for name, on in (("hostIPC", spec.host_ipc), ("hostNetwork", spec.host_network),
                                  ("hostPID", spec.host_pid)) if on]
    if not used:
        return None
    return Violation("hostNamespaces", "host namespaces", ", ".join(f"{n}=true" for n in used))


def check_privileged(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad = [c.name for c in spec.containers if c.security_context.privileged]
    if not bad:
        return None
    return Violation("privileged", "privileged", f"{_containers(len(bad), bad)} must not set "
                     "securityContext.privileged=true")


def check_capabilities_baseline(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad, caps = [], set()
    for c in spec.containers:
        extra = [cap for cap in c.security_context.capabilities.add if cap not in BASELINE_CAPABILITIES]
        if extra:
            bad.append(c.name)
            caps.update(extra)
    if not bad:
        return None
    return Violation("capabilities_baseline", "non-default capabilities",
                     f"{_containers(len(bad), bad)} must not include {_quoted(sorted(caps))} in "
                     "securityContext.capabilities.add")


def check_host_path_volumes(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad = [v.name for v in spec.volumes if v.HasField("host_path")]
    if not bad:
        return None
    return Violation("hostPathVolumes", "hostPath volumes", f"{_plural('volume', 'volumes', len(bad))} {_quoted(bad)}")


def check_host_ports(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad, ports = [], []
    for c in spec.containers:
        used = [str(p.host_port) for p in c.ports if p.host_port]
        if used:
            bad.append(c.name)
            ports += used
    if not bad:
        return None
    return Violation("hostPorts", "hostPort", f"{_containers(len(bad), bad)} {_plural('uses', 'use', len(bad))} "
                     f"{_plural('hostPort', 'hostPorts', len(ports))} {', '.join(ports)}")


def check_host_process(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    pod = _pod_sc(spec).windows_options.host_process
    bad = [c.name for c in spec.containers if c.security_context.windows_options.host_process]
    if not pod and not bad:
        return None
    who = "pod" if pod and not bad else (f"pod and {_containers(len(bad), bad)}" if pod else _containers(len(bad), bad))
    return Violation("windowsHostProcess", "hostProcess",
                     f"{who} must not set securityContext.windowsOptions.hostProcess=true")


def check_proc_mount(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad, values = [], []
    for c in spec.containers:
        sc = c.security_context
        if sc.HasField("proc_mount") and sc.proc_mount not in ("", "Default"):
            bad.append(c.name)
            values.append(sc.proc_mount)
    if not bad:
        return None
    return Violation("procMount", "procMount", f"{_containers(len(bad), bad)} must not set securityContext.procMount "
                     f"to {_quoted(_sorted_unique(values))}")


def check_seccomp_baseline(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    details = []
    if _pod_sc(spec).seccomp_profile.type == "Unconfined":
        details.append('pod must not set securityContext.seccompProfile.type to "Unconfined"')
    bad = [c.name for c in spec.containers if c.security_context.seccomp_profile.type == "Unconfined"]
    if bad:
        details.append(f'{_containers(len(bad), bad)} must not set securityContext.seccompProfile.type to "Unconfined"')
    return Violation("seccompProfile_baseline", "seccompProfile", "; ".join(details)) if details else None


def check_sysctls(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad = [s.name for s in _pod_sc(spec).sysctls if s.name not in SAFE_SYSCTLS]
    return Violation("sysctls", "forbidden sysctls", ", ".join(bad)) if bad else None


def check_selinux(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    types: set[str] = set()
    users: set[str] = set()
    roles: set[str] = set()
    pod_bad = False
    bad: list[str] = []
    for owner, opts in [("", _pod_sc(spec).se_linux_options)] + [
            (c.name, c.security_context.se_linux_options) for c in spec.containers]:
        wrong = False
        if opts.type not in SELINUX_TYPES:
            types.add(opts.type)
            wrong = True
        if opts.user:
            users.add(opts.user)
            wrong = True
        if opts.role:
            roles.add(opts.role)
            wrong = True
        if wrong and not owner:
            pod_bad = True
        elif wrong:
            bad.append(owner)
    if not pod_bad and not bad:
        return None
    who = "pod" if pod_bad and not bad else (f"pod and {_containers(len(bad), bad)}" if pod_bad
                                             else _containers(len(bad), bad))
    parts = [f"{what} {_quoted(sorted(values))}" for what, values in (("type", types), ("user", users),
                                                                        ("role", roles)) if values]
    return Violation("seLinuxOptions", "seLinuxOptions",
                     f"{who} set forbidden securityContext.seLinuxOptions: {'; '.join(parts)}")


def check_apparmor(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad = [f'{key}="{value}"' for key, value in sorted(meta.annotations.items())
           if key.startswith(APPARMOR_ANNOTATION_PREFIX) and value != "runtime/default"
           and not value.startswith("localhost/")]
    return Violation("appArmorProfile", "forbidden AppArmor profiles", ", ".join(bad)) if bad else None


def check_probe_hosts(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad, hosts = [], set()
    for c in spec.containers:
        used = {h.host for h in _handlers(c) if h.host}
        if used:
            bad.append(c.name)
            hosts |= used
    if not bad:
        return None
    return Violation("hostProbesAndHostLifecycle", "probe or lifecycle host",
                     f"{_containers(len(bad), bad)} {_plural('uses', 'use', len(bad))} "
                     f"{_plural('host', 'hosts', len(hosts))} {_quoted(sorted(hosts))}")


# ---------------------------------------------------------------- restricted

def check_restricted_volumes(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad, types = [], set()
    for v in spec.volumes:
        kind = volume_type(v)
        if kind and kind not in RESTRICTED_VOLUME_TYPES:
            bad.append(v.name)
            types.add(kind)
    if not bad:
        return None
    return Violation("restrictedVolumes", "restricted volume types",
                     f"{_plural('volume', 'volumes', len(bad))} {_quoted(bad)} {_plural('uses', 'use', len(bad))} "
                     f"restricted volume {_plural('type', 'types', len(types))} {_quoted(sorted(types))}")


def check_allow_privilege_escalation(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    bad = [c.name for c in spec.containers
           if not c.security_context.HasField("allow_privilege_escalation")
           or c.security_context.allow_privilege_escalation]
    if not bad:
        return None
    return Violation("allowPrivilegeEscalation", "allowPrivilegeEscalation != false",
                     f"{_containers(len(bad), bad)} must set securityContext.allowPrivilegeEscalation=false")


def check_capabilities_restricted(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    no_drop = [c.name for c in spec.containers if "ALL" not in c.security_context.capabilities.drop]
    adding, caps = [], set()
    for c in spec.containers:
        extra = [cap for cap in c.security_context.capabilities.add if cap != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c.name)
            caps.update(extra)
    details = []
    if no_drop:
        details.append(f'{_containers(len(no_drop), no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_containers(len(adding), adding)} must not include {_quoted(sorted(caps))} in "
                       "securityContext.capabilities.add")
    return Violation("capabilities_restricted", "unrestricted capabilities", "; ".join(details)) if details else None


def check_run_as_non_root(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    pod = _pod_sc(spec)
    details = []
    pod_true = pod.HasField("run_as_non_root") and pod.run_as_non_root
    if pod.HasField("run_as_non_root") and not pod.run_as_non_root:
        details.append("pod must not set securityContext.runAsNonRoot=false")
    explicit_false = [c.name for c in spec.containers if c.security_context.HasField("run_as_non_root")
                      and not c.security_context.run_as_non_root]
    if explicit_false:
        details.append(f"{_containers(len(explicit_false), explicit_false)} must not set "
                       "securityContext.runAsNonRoot=false")
    if not pod_true:
        unset = [c.name for c in spec.containers if not c.security_context.HasField("run_as_non_root")]
        if unset:
            details.append(f"pod or {_containers(len(unset), unset)} must set securityContext.runAsNonRoot=true")
    return Violation("runAsNonRoot", "runAsNonRoot != true", "; ".join(details)) if details else None


def check_run_as_user(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    pod = _pod_sc(spec).HasField("run_as_user") and _pod_sc(spec).run_as_user == 0
    bad = [c.name for c in spec.containers
           if c.security_context.HasField("run_as_user") and c.security_context.run_as_user == 0]
    if not pod and not bad:
        return None
    who = "pod" if pod and not bad else (f"pod and {_containers(len(bad), bad)}" if pod else _containers(len(bad), bad))
    return Violation("runAsUser", "runAsUser=0", f"{who} must not set runAsUser=0")


def check_seccomp_restricted(meta: t.ObjectMeta, spec: t.PodSpec) -> Violation | None:
    allowed = ("RuntimeDefault", "Localhost")
    pod_type = _pod_sc(spec).seccomp_profile.type
    details = []
    if pod_type == "Unconfined" or (pod_type and pod_type not in allowed):
        details.append(f'pod must not set securityContext.seccompProfile.type to "{pod_type}"')
    wrong = [c.name for c in spec.containers
             if c.security_context.seccomp_profile.type and c.security_context.seccomp_profile.type not in allowed]
    if wrong:
        values = _sorted_unique(c.security_context.seccomp_profile.type for c in spec.containers if c.name in wrong)
        details.append(f"{_containers(len(wrong), wrong)} must not set securityContext.seccompProfile.type to "
                       f"{_quoted(values)}")
    if pod_type not in allowed:
        unset = [c.name for c in spec.containers if not c.security_context.seccomp_profile.type]
        if unset:
            details.append(f"pod or {_containers(len(unset), unset)} must set securityContext.seccompProfile.type "
                           'to "RuntimeDefault" or "Localhost"')
    return Violation("seccompProfile_restricted", "seccompProfile", "; ".join(details)) if details else None


# (id, level, check, the baseline check it replaces at restricted). Ordered by id, as Kubernetes reports them.
CHECKS: tuple[tuple[str, str, Check, str], ...] = tuple(sorted((
    ("allowPrivilegeEscalation", RESTRICTED, check_allow_privilege_escalation, ""),
    ("appArmorProfile", BASELINE, check_apparmor, ""),
    ("capabilities_baseline", BASELINE, check_capabilities_baseline, ""),
    ("capabilities_restricted", RESTRICTED, check_capabilities_restricted, "capabilities_baseline"),
    ("hostNamespaces", BASELINE, check_host_namespaces, ""),
    ("hostPathVolumes", BASELINE, check_host_path_volumes, ""),
    ("hostPorts", BASELINE, check_host_ports, ""),
    ("hostProbesAndHostLifecycle", BASELINE, check_probe_hosts, ""),
    ("privileged", BASELINE, check_privileged, ""),
    ("procMount", BASELINE, check_proc_mount, ""),
    ("restrictedVolumes", RESTRICTED, check_restricted_volumes, "hostPathVolumes"),
    ("runAsNonRoot", RESTRICTED, check_run_as_non_root, ""),
    ("runAsUser", RESTRICTED, check_run_as_user, ""),
    ("seLinuxOptions", BASELINE, check_selinux, ""),
    ("seccompProfile_baseline", BASELINE, check_seccomp_baseline, ""),
    ("seccompProfile_restricted", RESTRICTED, check_seccomp_restricted, "seccompProfile_baseline"),
    ("sysctls", BASELINE, check_sysctls, ""),
    ("windowsHostProcess", BASELINE, check_host_process, ""),
), key=lambda row: row[0].lower()))


def evaluate(level: str, meta: t.ObjectMeta, spec: t.PodSpec) -> list[Violation]:
    """Every check of `level` the pod fails, in Kubernetes' order; empty when it is allowed."""
    if level == PRIVILEGED:
        return []
    wanted = (BASELINE,) if level == BASELINE else (BASELINE, RESTRICTED)
    replaced = {row[3] for row in CHECKS if row[1] in wanted and row[3]}
    out = []
    for check_id, check_level, check, _ in CHECKS:
        if check_level in wanted and check_id not in replaced:
            found = check(meta, spec)
            if found is not None:
                out.append(found)
    return out


def violates(policy: LevelVersion, violations: Sequence[Violation]) -> str:
    """`violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), ...`"""
    return f'violates PodSecurity "{policy}": ' + ", ".join(str(v) for v in violations)


def would_violate(policy: LevelVersion, violations: Sequence[Violation]) -> str:
    """`would violate PodSecurity "restricted:latest": ...` (a warning)."""
    return f'would violate PodSecurity "{policy}": ' + ", ".join(str(v) for v in violations)


@dataclass(frozen=True)
class Decision:
    """What admission does with one pod (or pod template): refuse it, warn, note for the audit log."""

    forbidden: str = ""  # `violates PodSecurity ...`; empty: allowed
    warnings: tuple[str, ...] = ()
    audit: tuple[str, ...] = ()


def decide(policy: Policy, meta: t.ObjectMeta, spec: t.PodSpec, *, enforce: bool) -> Decision:
    """The pod's fate under `policy`. `enforce` is False for pod templates of workload kinds, which
    Kubernetes only warns about (the pods they make are refused when created)."""
    results: dict[str, list[Violation]] = {}

    def at(level: str) -> list[Violation]:
        if level not in results:
            results[level] = evaluate(level, meta, spec)
        return results[level]

    if enforce and at(policy.enforce.level):
        return Decision(forbidden=violates(policy.enforce, at(policy.enforce.level)))
    warnings = (would_violate(policy.warn, at(policy.warn.level)),) if at(policy.warn.level) else ()
    audit = (would_violate(policy.audit, at(policy.audit.level)),) if at(policy.audit.level) else ()
    return Decision(warnings=warnings, audit=audit)


def pod_specs(obj: object) -> list[tuple[t.ObjectMeta, t.PodSpec]]:
    """The pod (metadata, spec) that admission judges in `obj`: a Pod's own, a workload's template;
    empty for other kinds."""
    if isinstance(obj, t.Pod):
        return [(obj.metadata, obj.spec)]
    if isinstance(obj, t.CronJob):
        tmpl = obj.spec.job_template.spec.template
        return [(tmpl.metadata, tmpl.spec)]
    if isinstance(obj, (t.Deployment, t.ReplicaSet, t.DaemonSet, t.StatefulSet, t.Job)):
        return [(obj.spec.template.metadata, obj.spec.template.spec)]
    return []
