"""A container's environment and command line, as the kubelet computes them. Pure.

`container_env(pod, container, source)` resolves `envFrom` then `env` (valueFrom: configMapKeyRef,
secretKeyRef, fieldRef, resourceFieldRef) against the ConfigMaps and Secrets that `source` holds;
`expand(text, env)` is Kubernetes' `$(VAR)` expansion; `command_line(...)` expands command and args.

Rules that must hold (as the kubelet's makeEnvironmentVariables):
- the Service variables (nodeagent/envvars.py) come first: `$(VAR)` may refer to them and the
  container's own envFrom and env replace them;
- envFrom sources apply next, in order, each key prefixed; keys that are not valid variable
  names are skipped; then `env` entries in order, a later name replacing an earlier one;
- `$(VAR)` in an env value refers to variables defined before it (envFrom and earlier env
  entries); in command and args to the final environment; an undefined `$(VAR)` is left as
  written; `$$` is a literal `$`, so `$$(VAR)` gives `$(VAR)`;
- a missing ConfigMap/Secret or key is an error (ContainerConfigError) unless the reference
  says `optional: true`, in which case it contributes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from skiff import downward
from skiffpb.api.v1 import types_pb2 as t

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ContainerConfigError(Exception):
    """The container cannot be configured yet (a referenced ConfigMap/Secret or key is missing)."""


class ConfigSource(Protocol):
    """Where the node agent finds the ConfigMaps and Secrets a pod refers to."""

    def config_map(self, namespace: str, name: str) -> t.ConfigMap | None: ...

    def secret(self, namespace: str, name: str) -> t.Secret | None: ...


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (third_party/forked/golang/expansion)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])  # unterminated: kept as written
                break
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _optional(ref: t.ConfigMapKeySelector | t.SecretKeySelector | t.ConfigMapEnvSource | t.SecretEnvSource) -> bool:
    return ref.HasField("optional") and ref.optional


def _config_map_values(cm: t.ConfigMap) -> dict[str, str]:
    return {**{k: v.decode(errors="replace") for k, v in cm.binary_data.items()}, **cm.data}


def _secret_values(secret: t.Secret) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in secret.data.items()}


def _key_ref(namespace: str, ref: t.ConfigMapKeySelector | t.SecretKeySelector, source: ConfigSource) -> str | None:
    is_cm = isinstance(ref, t.ConfigMapKeySelector)
    what = "configmap" if is_cm else "secret"
    obj = source.config_map(namespace, ref.name) if is_cm else source.secret(namespace, ref.name)
    if obj is None:
        if _optional(ref):
            return None
        raise ContainerConfigError(f'{what} "{ref.name}" not found')
    values = _config_map_values(obj) if isinstance(obj, t.ConfigMap) else _secret_values(obj)
    if ref.key not in values:
        if _optional(ref):
            return None
        raise ContainerConfigError(f"couldn't find key {ref.key} in {'ConfigMap' if is_cm else 'Secret'} "
                                   f"{namespace}/{ref.name}")
    return values[ref.key]


def container_env(pod: t.Pod, container: t.Container, source: ConfigSource, *,
                  node_allocatable: Mapping[str, str] | None = None,
                  service_env: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The container's environment, in order (see the module docstring)."""
    namespace = pod.metadata.namespace
    env: dict[str, str] = dict(service_env)
    for src in container.env_from:
        values: dict[str, str] = {}
        if src.HasField("config_map_ref"):
            cm = source.config_map(namespace, src.config_map_ref.name)
            if cm is None and not _optional(src.config_map_ref):
                raise ContainerConfigError(f'configmap "{src.config_map_ref.name}" not found')
            values = _config_map_values(cm) if cm is not None else {}
        elif src.HasField("secret_ref"):
            secret = source.secret(namespace, src.secret_ref.name)
            if secret is None and not _optional(src.secret_ref):
                raise ContainerConfigError(f'secret "{src.secret_ref.name}" not found')
            values = _secret_values(secret) if secret is not None else {}
        for key, text in sorted(values.items()):
            name = src.prefix + key
            if ENV_NAME.match(name):
                env[name] = text
    for var in container.env:
        if not var.HasField("value_from"):
            env[var.name] = expand(var.value, env)
            continue
        vf = var.value_from
        value: str | None
        if vf.HasField("config_map_key_ref"):
            value = _key_ref(namespace, vf.config_map_key_ref, source)
        elif vf.HasField("secret_key_ref"):
            value = _key_ref(namespace, vf.secret_key_ref, source)
        elif vf.HasField("field_ref"):
            value = downward.field_value(pod, vf.field_ref.field_path)
        elif vf.HasField("resource_field_ref"):
            ref = vf.resource_field_ref
            target = container
            if ref.container_name:
                target = next((c for c in pod.spec.containers if c.name == ref.container_name), container)
            value = downward.resource_value(target, ref.resource, ref.divisor, node_allocatable)
        else:
            value = None
        if value is not None:
            env[var.name] = value
    return list(env.items())


def command_line(container: t.Container, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(command, args) with `$(VAR)` expanded against the container's final environment."""
    return [expand(c, env) for c in container.command], [expand(a, env) for a in container.args]
