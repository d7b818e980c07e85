"""Pod spec -> CRI configs (pure): sandbox config, container config, Linux resources.

What holds: every sandbox and container carries the pod uid/name/namespace labels (adoption
after an agent restart and orphan removal depend on them); container log paths are
`<pod log dir>/<ns>_<name>_<uid>/<container>/<attempt>.log` so the previous instance's log is
found by its attempt; resources follow the kubelet's conversion (shares from requests,
CFS quota from limits, memory limit in bytes); the sandbox always carries a DNSConfig
(nodeagent/dns.py); the environment (Service variables from nodeagent/envvars.py, then
envFrom and env, resolved by nodeagent/envs.py), the expanded command line and the mounts
are given here, so this stays pure; a pod in its own network namespace gets the agent's
managed /etc/hosts mounted when one was written; the security context (seccomp RuntimeDefault
unless asked otherwise, capabilities, users, no_new_privs, read-only root) is nodeagent/security.py's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from nodeagent import cri as rt
from nodeagent.dns import DnsSettings, pod_dns_config, pod_hostname
from nodeagent.envs import command_line
from nodeagent.security import container_security, effective, sandbox_security
from skiff import quantity
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

MIN_SHARES = 2
SHARES_PER_CPU = 1024
QUOTA_PERIOD = 100_000  # us
MIN_QUOTA = 1000


@dataclass(frozen=True)
class PodConfigSettings:
    pod_log_dir: str
    cgroup_parent: str = ""
    dns: DnsSettings = field(default_factory=DnsSettings)
    pod_dir: str = ""  # per-pod files the agent writes (the managed /etc/hosts); empty: none
    seccomp_dir: str = "/var/lib/skiff/seccomp"  # where seccompProfile localhostProfile names live


def pod_labels(pod: t.Pod) -> dict[str, str]:
    return {rt.LABEL_POD_UID: pod.metadata.uid, rt.LABEL_POD_NAME: pod.metadata.name,
            rt.LABEL_POD_NAMESPACE: pod.metadata.namespace, rt.LABEL_MANAGED: "true"}


def pod_log_dir(pod_log_root: str, namespace: str, name: str, uid: str) -> str:
    return os.path.join(pod_log_root, f"{namespace}_{name}_{uid}")


def container_log_path(name: str, attempt: int) -> str:
    return f"{name}/{attempt}.log"


def sandbox_config(pod: t.Pod, attempt: int, settings: PodConfigSettings) -> cri.PodSandboxConfig:
    meta = pod.metadata
    cfg = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=meta.name, uid=meta.uid, namespace=meta.namespace, attempt=attempt),
        hostname=pod_hostname(pod),
        log_directory=pod_log_dir(settings.pod_log_dir, meta.namespace, meta.name, meta.uid),
        labels=pod_labels(pod),
        annotations=dict(meta.annotations),
    )
    cfg.dns_config.CopyFrom(pod_dns_config(pod, settings.dns))
    for c in (*pod.spec.init_containers, *pod.spec.containers):
        for p in c.ports:
            if p.host_port:
                cfg.port_mappings.add(protocol=cri.Protocol.Value(p.protocol or "TCP"), container_port=p.container_port,
                                      host_port=p.host_port, host_ip=p.host_ip)
    linux = cfg.linux
    if settings.cgroup_parent:
        linux.cgroup_parent = settings.cgroup_parent
    linux.security_context.CopyFrom(sandbox_security(pod, settings.seccomp_dir))
    _namespaces(pod, linux.security_context.namespace_options)
    return cfg


def _namespaces(pod: t.Pod, ns: cri.NamespaceOption) -> None:
    ns.network = cri.NODE if pod.spec.host_network else cri.POD
    ns.pid = cri.NODE if pod.spec.host_pid else cri.CONTAINER
    ns.ipc = cri.NODE if pod.spec.host_ipc else cri.POD


def linux_resources(container: t.Container) -> cri.LinuxContainerResources:
    limits, requests = container.resources.limits, container.resources.requests
    out = cri.LinuxContainerResources()
    cpu_request = requests.get("cpu") or limits.get("cpu")
    millis = quantity.cpu_millis(cpu_request) if cpu_request else 0
    out.cpu_shares = max(millis * SHARES_PER_CPU // 1000, MIN_SHARES)
    if limits.get("cpu"):
        out.cpu_period = QUOTA_PERIOD
        out.cpu_quota = max(quantity.cpu_millis(limits["cpu"]) * QUOTA_PERIOD // 1000, MIN_QUOTA)
    if limits.get("memory"):
        out.memory_limit_in_bytes = quantity.to_bytes(limits["memory"])
    return out


def hosts_path(pod_dir: str, uid: str) -> str:
    return os.path.join(pod_dir, uid, "etc-hosts")


def container_config(pod: t.Pod, container: t.Container, attempt: int, *,
                     env: Sequence[tuple[str, str]] | None = None,
                     mounts: Sequence[cri.Mount] = (), etc_hosts: str = "",
                     seccomp_dir: str = PodConfigSettings.seccomp_dir) -> cri.ContainerConfig:
    """`env`: the resolved environment (nodeagent.envs); None: the spec's literal values."""
    labels = pod_labels(pod)
    labels[rt.LABEL_CONTAINER_NAME] = container.name
    if env is None:
        env = [(e.name, e.value) for e in container.env if not e.HasField("value_from")]
    command, args = command_line(container, dict(env))
    cfg = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=container.name, attempt=attempt),
        image=cri.ImageSpec(image=container.image),
        command=command,
        args=args,
        working_dir=container.working_dir,
        envs=[cri.KeyValue(key=k, value=v) for k, v in env],
        mounts=list(mounts),
        labels=labels,
        log_path=container_log_path(container.name, attempt),
        # A stdin (and a terminal) for `kubectl attach`, as the kubelet passes them.
        stdin=container.stdin, stdin_once=container.stdin_once, tty=container.tty,
    )
    if etc_hosts and not pod.spec.host_network:
        cfg.mounts.add(container_path="/etc/hosts", host_path=etc_hosts)
    cfg.linux.resources.CopyFrom(linux_resources(container))
    cfg.linux.security_context.CopyFrom(container_security(effective(pod, container), seccomp_dir))
    _namespaces(pod, cfg.linux.security_context.namespace_options)
    return cfg
