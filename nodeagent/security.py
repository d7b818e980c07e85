"""A container's security context: merged from the pod's and the container's as the kubelet
does, turned into CRI's Linux security contexts, and checked against the image's user (pure).

What must hold:
- Container-level fields win over pod-level ones (runAsUser, runAsGroup, runAsNonRoot,
  seccompProfile, seLinuxOptions); capabilities, privileged, readOnlyRootFilesystem,
  allowPrivilegeEscalation and procMount exist per container only.
- Seccomp is `RuntimeDefault` when neither the pod nor the container names a profile (the
  kubelet's `--seccomp-default`), sent as a present `SecurityProfile`: containerd runs a
  container without one unconfined. `Unconfined` is sent as such; `Localhost` names a file under
  the agent's seccomp directory. A privileged container has no seccomp filter whatever is asked
  (containerd ignores the profile then, as Kubernetes documents).
- no_new_privs is set exactly when allowPrivilegeEscalation is false (unset allows escalation,
  as in Kubernetes); supplemental groups are the pod's supplementalGroups plus its fsGroup.
- `run_as_non_root_problem` refuses what the kubelet refuses: runAsUser 0, or no runAsUser and
  an image whose user is root (numeric 0, or none given) or a name that cannot be checked. The
  worker reports it as CreateContainerConfigError and retries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

DEFAULT_SECCOMP = "RuntimeDefault"


@dataclass(frozen=True)
class Effective:
    """The fields of one container's effective security context that reach the runtime."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    seccomp_type: str = DEFAULT_SECCOMP
    seccomp_localhost: str = ""
    privileged: bool = False
    read_only_root_filesystem: bool = False
    no_new_privs: bool = False
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    supplemental_groups: tuple[int, ...] = ()


def _opt(container: t.SecurityContext, pod: t.PodSecurityContext, name: str) -> int | bool | None:
    if container.HasField(name):
        return getattr(container, name)  # type: ignore[no-any-return]
    if pod.HasField(name):
        return getattr(pod, name)  # type: ignore[no-any-return]
    return None


def effective(pod: t.Pod, container: t.Container) -> Effective:
    psc, csc = pod.spec.security_context, container.security_context
    seccomp = csc.seccomp_profile if csc.seccomp_profile.type else psc.seccomp_profile
    groups = list(psc.supplemental_groups)
    if psc.HasField("fs_group") and psc.fs_group not in groups:
        groups.append(psc.fs_group)
    run_as_user, run_as_group = _opt(csc, psc, "run_as_user"), _opt(csc, psc, "run_as_group")
    return Effective(
        run_as_user=None if run_as_user is None else int(run_as_user),
        run_as_group=None if run_as_group is None else int(run_as_group),
        run_as_non_root=bool(_opt(csc, psc, "run_as_non_root")),
        seccomp_type=seccomp.type or DEFAULT_SECCOMP,
        seccomp_localhost=seccomp.localhost_profile if seccomp.type == "Localhost" else "",
        privileged=csc.privileged,
        read_only_root_filesystem=csc.read_only_root_filesystem,
        no_new_privs=csc.HasField("allow_privilege_escalation") and not csc.allow_privilege_escalation,
        add_capabilities=tuple(csc.capabilities.add),
        drop_capabilities=tuple(csc.capabilities.drop),
        supplemental_groups=tuple(groups),
    )


def seccomp_profile(kind: str, localhost: str, seccomp_dir: str) -> cri.SecurityProfile:
    """CRI's profile for a Kubernetes seccompProfile type (the `localhostProfile` under `seccomp_dir`)."""
    if kind == "Unconfined":
        return cri.SecurityProfile(profile_type=cri.SecurityProfile.Unconfined)
    if kind == "Localhost":
        return cri.SecurityProfile(profile_type=cri.SecurityProfile.Localhost,
                                   localhost_ref=os.path.join(seccomp_dir, localhost))
    return cri.SecurityProfile(profile_type=cri.SecurityProfile.RuntimeDefault)


def container_security(eff: Effective, seccomp_dir: str) -> cri.LinuxContainerSecurityContext:
    """CRI's container security context (without namespace options, which podconfig adds)."""
    out = cri.LinuxContainerSecurityContext(
        privileged=eff.privileged,
        readonly_rootfs=eff.read_only_root_filesystem,
        no_new_privs=eff.no_new_privs,
        supplemental_groups=list(eff.supplemental_groups),
    )
    if eff.add_capabilities or eff.drop_capabilities:
        out.capabilities.add_capabilities.extend(eff.add_capabilities)
        out.capabilities.drop_capabilities.extend(eff.drop_capabilities)
    if eff.run_as_user is not None:
        out.run_as_user.value = eff.run_as_user
    if eff.run_as_group is not None:
        out.run_as_group.value = eff.run_as_group
    # CopyFrom marks the field present even for RuntimeDefault (0): an absent one means unconfined.
    out.seccomp.CopyFrom(seccomp_profile(eff.seccomp_type, eff.seccomp_localhost, seccomp_dir))
    return out


def sandbox_security(pod: t.Pod, seccomp_dir: str) -> cri.LinuxSandboxSecurityContext:
    """The pod-level part of CRI's sandbox security context (namespace options are podconfig's)."""
    psc = pod.spec.security_context
    out = cri.LinuxSandboxSecurityContext(
        privileged=any(c.security_context.privileged for c in pod.spec.containers),
    )
    groups = list(psc.supplemental_groups)
    if psc.HasField("fs_group") and psc.fs_group not in groups:
        groups.append(psc.fs_group)
    out.supplemental_groups.extend(groups)
    out.seccomp.CopyFrom(seccomp_profile(psc.seccomp_profile.type or DEFAULT_SECCOMP,
                                         psc.seccomp_profile.localhost_profile, seccomp_dir))
    return out


def run_as_non_root_problem(pod: t.Pod, container: t.Container, image: cri.Image | None) -> str:
    """Why the container may not start under runAsNonRoot (the kubelet's words), or ""."""
    eff = effective(pod, container)
    if not eff.run_as_non_root:
        return ""
    who = f'(pod: "{pod.metadata.namespace}/{pod.metadata.name}", container: {container.name})'
    if eff.run_as_user is not None:
        return f"container's runAsUser breaks non-root policy {who}" if eff.run_as_user == 0 else ""
    if image is not None and image.HasField("uid"):
        return f"container has runAsNonRoot and image will run as root {who}" if image.uid.value == 0 else ""
    if image is not None and image.username:
        return (f"container has runAsNonRoot and image has non-numeric user ({image.username}), "
                f"cannot verify user is non-root {who}")
    # No user in the image: it runs as root.
    return f"container has runAsNonRoot and image will run as root {who}"
