"""Validation of API objects, shared by the CLI (before sending) and the api-server (authoritative).

`validate(obj)` returns every problem found, each as a FieldError naming the JSON path, so a
user fixes a manifest in one pass. It checks shape and values only; defaults are applied by
the api-server before validation there, and validation never changes the object.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping

from google.protobuf.message import Message

from skiff import downward, kinds, labels, networkpolicy, podsecurity, quantity, serviceaccounts
from skiff.convert import FieldError
from skiffpb.api.v1 import types_pb2 as t

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
PERCENT = re.compile(r"^[0-9]+%$")
# sec-pod: what the node agent writes into an HTTP request line or header (nodeagent/probes.py):
# RFC 9110 token for names; paths and values without control characters (CR/LF would start a new
# header or request) or, for paths, spaces (they end the request target).
HTTP_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

PROTOCOLS = ("TCP", "UDP", "SCTP")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
SERVICE_TYPES = ("ClusterIP", "NodePort", "ExternalName")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
MAX_ANNOTATIONS_BYTES = 256 * 1024
KNOWN_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")
# config-volumes
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_CONFIG_BYTES = 1024 * 1024  # ConfigMap and Secret data, as Kubernetes limits them (1 MiB)
HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                   "BlockDevice")
EMPTY_DIR_MEDIA = ("", "Memory")
MOUNT_PROPAGATIONS = ("None", "HostToContainer", "Bidirectional")
# Keys a Secret of these types must have (Kubernetes' built-in types; any other type is free-form).
SECRET_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _quote_choices(choices: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in choices)


class _Errors:
    """Collects FieldErrors; each check appends and never raises."""

    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def add(self, path: str, problem: str) -> None:
        self.items.append(FieldError(path, problem))

    def enum(self, path: str, value: str, choices: tuple[str, ...], *, allow_empty: bool = True) -> None:
        if (value or not allow_empty) and value not in choices:
            shown = f'"{value}"' if value else "empty"
            self.add(path, f"unsupported value {shown}: supported values are {_quote_choices(choices)}")

    def non_negative(self, path: str, value: int) -> None:
        if value < 0:
            self.add(path, f"must be greater than or equal to 0, got {value}")

    def port(self, path: str, value: int, *, allow_zero: bool = False) -> None:
        low = 0 if allow_zero else 1
        if not low <= value <= 65535:
            self.add(path, f"must be between {low} and 65535 inclusive, got {value}")


def check_dns_label(value: str) -> str | None:
    if len(value) > 63:
        return f"must be no more than 63 characters, got {len(value)}"
    if not DNS1123_LABEL.match(value):
        return (f'"{value}" is not a valid DNS-1123 label: lower-case letters, digits and "-", '
                "starting and ending with a letter or digit")
    return None


def check_dns_subdomain(value: str) -> str | None:
    if len(value) > 253:
        return f"must be no more than 253 characters, got {len(value)}"
    if not DNS1123_SUBDOMAIN.match(value):
        return (f'"{value}" is not a valid DNS-1123 subdomain: lower-case letters, digits, "-" and ".", '
                "starting and ending with a letter or digit")
    return None


def check_dns1035_label(value: str) -> str | None:
    if len(value) > 63:
        return f"must be no more than 63 characters, got {len(value)}"
    if not DNS1035_LABEL.match(value):
        return (f'"{value}" is not a valid DNS-1035 label: lower-case letters, digits and "-", '
                "starting with a letter and ending with a letter or digit")
    return None


def check_path_segment(value: str) -> str | None:
    """A name that is one URL path segment (RBAC kinds): not "." or "..", no "/" or "%"."""
    if value in (".", ".."):
        return f'may not be "{value}"'
    for bad in ("/", "%"):
        if bad in value:
            return f'may not contain "{bad}"'
    return None


def check_label_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return f'label key "{key}" has an empty prefix'
    if prefix and check_dns_subdomain(prefix):
        return f'label key "{key}": prefix must be a DNS-1123 subdomain'
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        return (f'invalid label key "{key}": name part must be 63 characters or fewer, alphanumeric, '
                '"-", "_" or ".", starting and ending with an alphanumeric character')
    return None


def check_label_value(value: str) -> str | None:
    if len(value) > 63 or not LABEL_VALUE.match(value):
        return (f'invalid label value "{value}": must be 63 characters or fewer, alphanumeric, '
                '"-", "_" or ".", starting and ending with an alphanumeric character')
    return None


def check_port_name(value: str) -> str | None:
    if len(value) > 15:
        return f'port name "{value}" must be no more than 15 characters'
    if not IANA_SVC_NAME.match(value) or "--" in value or not re.search(r"[a-z]", value):
        return (f'port name "{value}" is not a valid IANA service name: lower-case letters, digits '
                'and "-", at least one letter, no "--"')
    return None


def _labels(errs: _Errors, path: str, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        problem = check_label_key(key)
        if problem:
            errs.add(f"{path}[{key}]", problem)
        problem = check_label_value(value)
        if problem:
            errs.add(f"{path}[{key}]", problem)


def _metadata(errs: _Errors, meta: t.ObjectMeta, kind: kinds.Kind, path: str = "metadata",
              *, name_check: Callable[[str], str | None] = check_dns_subdomain, need_name: bool = True) -> None:
    if meta.name:
        problem = name_check(meta.name)
        if problem:
            errs.add(f"{path}.name", problem)
    elif meta.generate_name:
        problem = name_check(meta.generate_name.rstrip("-") or "x")
        if problem:
            errs.add(f"{path}.generateName", problem)
    elif need_name:
        errs.add(f"{path}.name", "name or generateName is required")
    if meta.namespace:
        if not kind.namespaced:
            errs.add(f"{path}.namespace", f"{kind.kind} is not namespaced; remove the namespace")
        else:
            problem = check_dns_label(meta.namespace)
            if problem:
                errs.add(f"{path}.namespace", problem)
    _labels(errs, f"{path}.labels", meta.labels)
    size = 0
    for key, value in meta.annotations.items():
        problem = check_label_key(key)
        if problem:
            errs.add(f"{path}.annotations[{key}]", problem.replace("label key", "annotation key"))
        size += len(key) + len(value)
    if size > MAX_ANNOTATIONS_BYTES:
        errs.add(f"{path}.annotations", f"annotations total {size} bytes, more than the limit of 262144")
    for i, ref in enumerate(meta.owner_references):
        rp = f"{path}.ownerReferences[{i}]"
        for field in ("api_version", "kind", "name", "uid"):
            if not getattr(ref, field):
                errs.add(f"{rp}.{_json(field)}", "required")
    if sum(1 for ref in meta.owner_references if ref.controller) > 1:
        errs.add(f"{path}.ownerReferences", "only one reference can have controller set to true")


def _json(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _int_or_string_port(errs: _Errors, path: str, value: t.IntOrString, *, required: bool = True) -> None:
    which = value.WhichOneof("value")
    if which == "int_val":
        errs.port(path, value.int_val)
    elif which == "str_val":
        problem = check_port_name(value.str_val)
        if problem:
            errs.add(path, problem)
    elif required:
        errs.add(path, "required: a port number or a port name")


def _quantities(errs: _Errors, path: str, values: Mapping[str, str]) -> dict[str, int]:
    parsed: dict[str, int] = {}
    for name, text in values.items():
        if name not in KNOWN_RESOURCES and "/" not in name:
            errs.add(f"{path}.{name}", f'unknown resource "{name}": supported are {_quote_choices(KNOWN_RESOURCES)} '
                     "or a domain-prefixed extended resource")
            continue
        try:
            value = quantity.parse(text)
        except quantity.QuantityError as exc:
            errs.add(f"{path}.{name}", str(exc))
            continue
        if value < 0:
            errs.add(f"{path}.{name}", f'must be greater than or equal to 0, got "{text}"')
            continue
        parsed[name] = quantity.cpu_millis(text) if name == "cpu" else quantity.to_bytes(text)
    return parsed


def check_http_path(value: str) -> str | None:
    """A probe's or hook's httpGet.path: absolute, one request-line token (no space or control character)."""
    if value and not value.startswith("/"):
        return f"must start with \"/\", got {json.dumps(value)}"
    if _CONTROL.search(value) or " " in value:
        return f"must not contain spaces or control characters (CR, LF, ...), got {json.dumps(value)}"
    return None


def check_http_header(name: str, value: str) -> str | None:
    """One httpHeaders entry: a valid header name, a value without CR, LF or other control characters."""
    if not HTTP_TOKEN.match(name):
        return f"invalid HTTP header name {json.dumps(name)}: must be a token (letters, digits, !#$%&'*+-.^_`|~)"
    if _CONTROL.sub("", value.replace("\t", "")) != value.replace("\t", ""):
        return f"the value of header {json.dumps(name)} must not contain CR, LF or other control characters"
    return None


def check_http_host(value: str) -> str | None:
    if _CONTROL.search(value) or " " in value or "/" in value:
        return f"must be a host name or IP address, got {json.dumps(value)}"
    return None


def _http_get(errs: _Errors, path: str, action: t.HTTPGetAction) -> None:
    _int_or_string_port(errs, f"{path}.port", action.port)
    errs.enum(f"{path}.scheme", action.scheme, ("HTTP", "HTTPS"))
    for field, problem in (("path", check_http_path(action.path)),
                           ("host", check_http_host(action.host) if action.host else None)):
        if problem:
            errs.add(f"{path}.{field}", problem)
    for i, header in enumerate(action.http_headers):
        problem = check_http_header(header.name, header.value)
        if problem:
            errs.add(f"{path}.httpHeaders[{i}]", problem)


def _probe(errs: _Errors, path: str, probe: t.Probe) -> None:
    handlers = [name for name in ("exec", "http_get", "tcp_socket") if probe.HasField(name)]
    if len(handlers) != 1:
        errs.add(path, "must specify exactly one of exec, httpGet or tcpSocket"
                 + (f" (got {', '.join(_json(h) for h in handlers)})" if handlers else ""))
    if probe.HasField("exec") and not probe.exec.command:
        errs.add(f"{path}.exec.command", "required")
    if probe.HasField("http_get"):
        _http_get(errs, f"{path}.httpGet", probe.http_get)
    if probe.HasField("tcp_socket"):
        _int_or_string_port(errs, f"{path}.tcpSocket.port", probe.tcp_socket.port)
    for field in ("initial_delay_seconds", "timeout_seconds", "period_seconds", "success_threshold",
                  "failure_threshold"):
        errs.non_negative(f"{path}.{_json(field)}", getattr(probe, field))


def _container(errs: _Errors, path: str, c: t.Container, port_names: set[str]) -> None:
    if not c.name:
        errs.add(f"{path}.name", "required")
    else:
        problem = check_dns_label(c.name)
        if problem:
            errs.add(f"{path}.name", problem)
    if not c.image.strip():
        errs.add(f"{path}.image", "required")
    elif c.image != c.image.strip():
        errs.add(f"{path}.image", "must not have leading or trailing whitespace")
    errs.enum(f"{path}.imagePullPolicy", c.image_pull_policy, PULL_POLICIES)
    errs.enum(f"{path}.terminationMessagePolicy", c.termination_message_policy, ("File", "FallbackToLogsOnError"))
    if c.termination_message_path and not c.termination_message_path.startswith("/"):
        errs.add(f"{path}.terminationMessagePath", f'must be an absolute path, got "{c.termination_message_path}"')
    for j, port in enumerate(c.ports):
        pp = f"{path}.ports[{j}]"
        errs.port(f"{pp}.containerPort", port.container_port)
        errs.port(f"{pp}.hostPort", port.host_port, allow_zero=True)
        errs.enum(f"{pp}.protocol", port.protocol, PROTOCOLS)
        if port.name:
            problem = check_port_name(port.name)
            if problem:
                errs.add(f"{pp}.name", problem)
            elif port.name in port_names:
                errs.add(f"{pp}.name", f'duplicate port name "{port.name}" in this pod')
            port_names.add(port.name)
        if port.host_ip:
            _ip(errs, f"{pp}.hostIP", port.host_ip)
    seen_env: set[str] = set()
    for j, env in enumerate(c.env):
        if not env.name or not ENV_VAR_NAME.match(env.name):
            errs.add(f"{path}.env[{j}].name", f'invalid environment variable name "{env.name}"')
        seen_env.add(env.name)
        if env.HasField("value_from"):
            _env_source(errs, f"{path}.env[{j}].valueFrom", env)
    _env_from(errs, path, c)
    requests = _quantities(errs, f"{path}.resources.requests", c.resources.requests)
    limits = _quantities(errs, f"{path}.resources.limits", c.resources.limits)
    for name, req in requests.items():
        if name in limits and req > limits[name]:
            errs.add(f"{path}.resources.requests.{name}",
                     f'must be less than or equal to the {name} limit "{c.resources.limits[name]}"')
    if c.HasField("security_context"):
        _security_context(errs, f"{path}.securityContext", c.security_context)
    for field in ("liveness_probe", "readiness_probe", "startup_probe"):
        if c.HasField(field):
            _probe(errs, f"{path}.{_json(field)}", getattr(c, field))
    for field in ("post_start", "pre_stop"):
        if c.lifecycle.HasField(field):
            hp = f"{path}.lifecycle.{_json(field)}"
            handler = getattr(c.lifecycle, field)
            present = _one_of(errs, hp, handler, ("exec", "http_get", "tcp_socket"))
            if "exec" in present and not handler.exec.command:
                errs.add(f"{hp}.exec.command", "required")
            if "http_get" in present:
                _http_get(errs, f"{hp}.httpGet", handler.http_get)
            if "tcp_socket" in present:
                _int_or_string_port(errs, f"{hp}.tcpSocket.port", handler.tcp_socket.port)


# ---------------------------------------------------------------------- config-volumes: env, volumes, config

def check_config_key(key: str) -> str | None:
    """A ConfigMap/Secret key (also a file name in a volume), as Kubernetes' IsConfigMapKey."""
    if not key or len(key) > 253 or not CONFIG_KEY.match(key):
        return (f'"{key}": a valid config key must consist of alphanumeric characters, "-", "_" or ".", '
                "at most 253 characters")
    if key in (".", "..") or key.startswith(".."):
        return f'"{key}": must not be "." or ".." and must not start with ".."'
    return None


def check_relative_path(value: str) -> str | None:
    """A path inside a volume: relative, without a ".." element (it must not leave the volume)."""
    if not value:
        return "required"
    if value.startswith("/"):
        return f'"{value}": must be a relative path'
    if ".." in value.split("/"):
        return f'"{value}": must not contain ".."'
    return None


def _one_of(errs: _Errors, path: str, msg: Message, fields: tuple[str, ...]) -> list[str]:
    present = [f for f in fields if msg.HasField(f)]
    if len(present) != 1:
        by_name = msg.DESCRIPTOR.fields_by_name
        names = ", ".join(by_name[f].json_name for f in fields)
        errs.add(path, f"must specify exactly one of {names}"
                 + (f" (got {', '.join(by_name[f].json_name for f in present)})" if present else ""))
    return present


def _env_source(errs: _Errors, path: str, env: t.EnvVar) -> None:
    if env.value:
        errs.add(path, "may not be specified when `value` is not empty")
    src = env.value_from
    present = _one_of(errs, path, src, ("field_ref", "resource_field_ref", "config_map_key_ref", "secret_key_ref"))
    if "field_ref" in present:
        problem = downward.check_field_path(src.field_ref.field_path, volume=False)
        if problem:
            errs.add(f"{path}.fieldRef.fieldPath", problem)
    if "resource_field_ref" in present:
        _resource_field(errs, f"{path}.resourceFieldRef", src.resource_field_ref)
    for field, label in (("config_map_key_ref", "configMapKeyRef"), ("secret_key_ref", "secretKeyRef")):
        if field in present:
            ref = getattr(src, field)
            if not ref.name:
                errs.add(f"{path}.{label}.name", "required")
            problem = check_config_key(ref.key)
            if problem:
                errs.add(f"{path}.{label}.key", problem)


def _resource_field(errs: _Errors, path: str, ref: t.ResourceFieldSelector) -> None:
    errs.enum(f"{path}.resource", ref.resource, tuple(sorted(downward.RESOURCES)), allow_empty=False)
    if ref.divisor:
        try:
            if quantity.parse(ref.divisor) <= 0:
                errs.add(f"{path}.divisor", f'must be greater than 0, got "{ref.divisor}"')
        except quantity.QuantityError as exc:
            errs.add(f"{path}.divisor", str(exc))


def _env_from(errs: _Errors, path: str, c: t.Container) -> None:
    for j, src in enumerate(c.env_from):
        ep = f"{path}.envFrom[{j}]"
        present = _one_of(errs, ep, src, ("config_map_ref", "secret_ref"))
        for field in present:
            if not getattr(src, field).name:
                errs.add(f"{ep}.{_json(field)}.name", "required")
        if src.prefix and not ENV_VAR_NAME.match(src.prefix):
            errs.add(f"{ep}.prefix", f'invalid environment variable prefix "{src.prefix}"')


def _volume_mounts(errs: _Errors, path: str, c: t.Container, volumes: set[str]) -> None:
    seen: set[str] = set()
    for j, m in enumerate(c.volume_mounts):
        mp = f"{path}.volumeMounts[{j}]"
        if m.name not in volumes:
            errs.add(f"{mp}.name", f'volume "{m.name}" not found in spec.volumes')
        if not m.mount_path.startswith("/"):
            errs.add(f"{mp}.mountPath", f'must be an absolute path, got "{m.mount_path}"')
        elif m.mount_path in seen:
            errs.add(f"{mp}.mountPath", f'"{m.mount_path}": must be unique')
        seen.add(m.mount_path)
        if m.sub_path:
            problem = check_relative_path(m.sub_path)
            if problem:
                errs.add(f"{mp}.subPath", problem)
        errs.enum(f"{mp}.mountPropagation", m.mount_propagation, MOUNT_PROPAGATIONS)


def _mode(errs: _Errors, path: str, msg: Message, field: str) -> None:
    if msg.HasField(field) and not 0 <= getattr(msg, field) <= 0o777:
        errs.add(path, f"must be a number between 0 and 0777 (octal), both inclusive, got {getattr(msg, field)}")


def _items(errs: _Errors, path: str, items: Iterable[t.KeyToPath]) -> None:
    for k, item in enumerate(items):
        problem = check_config_key(item.key)
        if problem:
            errs.add(f"{path}[{k}].key", problem)
        problem = check_relative_path(item.path)
        if problem:
            errs.add(f"{path}[{k}].path", problem)
        _mode(errs, f"{path}[{k}].mode", item, "mode")


def _downward_items(errs: _Errors, path: str, items: Iterable[t.DownwardAPIVolumeFile]) -> None:
    for k, item in enumerate(items):
        ip = f"{path}[{k}]"
        problem = check_relative_path(item.path)
        if problem:
            errs.add(f"{ip}.path", problem)
        present = _one_of(errs, ip, item, ("field_ref", "resource_field_ref"))
        if "field_ref" in present:
            problem = downward.check_field_path(item.field_ref.field_path, volume=True)
            if problem:
                errs.add(f"{ip}.fieldRef.fieldPath", problem)
        if "resource_field_ref" in present:
            if not item.resource_field_ref.container_name:
                errs.add(f"{ip}.resourceFieldRef.containerName", "required in a volume")
            _resource_field(errs, f"{ip}.resourceFieldRef", item.resource_field_ref)
        _mode(errs, f"{ip}.mode", item, "mode")


VOLUME_SOURCES = ("host_path", "empty_dir", "secret", "config_map", "downward_api", "projected",
                  "persistent_volume_claim")


def _volume_source(errs: _Errors, vp: str, v: t.Volume, source: str) -> None:
    if source == "host_path":
        if not v.host_path.path.startswith("/"):
            errs.add(f"{vp}.hostPath.path", f'must be an absolute path, got "{v.host_path.path}"')
        errs.enum(f"{vp}.hostPath.type", v.host_path.type, HOST_PATH_TYPES)
    elif source == "empty_dir":
        errs.enum(f"{vp}.emptyDir.medium", v.empty_dir.medium, EMPTY_DIR_MEDIA)
        if v.empty_dir.size_limit:
            try:
                quantity.parse(v.empty_dir.size_limit)
            except quantity.QuantityError as exc:
                errs.add(f"{vp}.emptyDir.sizeLimit", str(exc))
    elif source == "persistent_volume_claim":
        if not v.persistent_volume_claim.claim_name:
            errs.add(f"{vp}.persistentVolumeClaim.claimName", "required")
    elif source == "config_map":
        if not v.config_map.name:
            errs.add(f"{vp}.configMap.name", "required")
        _items(errs, f"{vp}.configMap.items", v.config_map.items)
        _mode(errs, f"{vp}.configMap.defaultMode", v.config_map, "default_mode")
    elif source == "secret":
        if not v.secret.secret_name:
            errs.add(f"{vp}.secret.secretName", "required")
        _items(errs, f"{vp}.secret.items", v.secret.items)
        _mode(errs, f"{vp}.secret.defaultMode", v.secret, "default_mode")
    elif source == "downward_api":
        _downward_items(errs, f"{vp}.downwardAPI.items", v.downward_api.items)
        _mode(errs, f"{vp}.downwardAPI.defaultMode", v.downward_api, "default_mode")
    elif source == "projected":
        _mode(errs, f"{vp}.projected.defaultMode", v.projected, "default_mode")
        for k, src in enumerate(v.projected.sources):
            sp = f"{vp}.projected.sources[{k}]"
            which = _one_of(errs, sp, src, ("secret", "downward_api", "config_map", "service_account_token"))
            if "downward_api" in which:
                _downward_items(errs, f"{sp}.downwardAPI.items", src.downward_api.items)
            if "service_account_token" in which:
                _token_projection(errs, f"{sp}.serviceAccountToken", src.service_account_token)
            for field in ("secret", "config_map"):
                if field in which:
                    if not getattr(src, field).name:
                        errs.add(f"{sp}.{_json(field)}.name", "required")
                    _items(errs, f"{sp}.{_json(field)}.items", getattr(src, field).items)


def _token_projection(errs: _Errors, path: str, p: t.ServiceAccountTokenProjection) -> None:
    """As Kubernetes: a relative path; at least 10 minutes, at most 2^32 seconds."""
    problem = check_relative_path(p.path) if p.path else "required"
    if problem:
        errs.add(f"{path}.path", problem)
    if p.HasField("expiration_seconds"):
        if p.expiration_seconds < serviceaccounts.MIN_TOKEN_EXPIRATION:
            errs.add(f"{path}.expirationSeconds", "may not specify a duration less than 10 minutes")
        elif p.expiration_seconds > 2 ** 32:
            errs.add(f"{path}.expirationSeconds", "may not specify a duration larger than 2^32 seconds")


def _volumes(errs: _Errors, path: str, spec: t.PodSpec) -> set[str]:
    names: set[str] = set()
    for i, v in enumerate(spec.volumes):
        vp = f"{path}.volumes[{i}]"
        problem = check_dns_label(v.name) if v.name else "required"
        if problem:
            errs.add(f"{vp}.name", problem)
        elif v.name in names:
            errs.add(f"{vp}.name", f'duplicate volume name "{v.name}"')
        names.add(v.name)
        present = _one_of(errs, vp, v, VOLUME_SOURCES)
        if len(present) == 1:
            _volume_source(errs, vp, v, present[0])
    return names


def config_size(obj: t.ConfigMap | t.Secret) -> int:
    """Bytes of keys and values, counted as Kubernetes counts them against the 1 MiB limit."""
    if isinstance(obj, t.ConfigMap):
        return (sum(len(k) + len(v.encode()) for k, v in obj.data.items())
                + sum(len(k) + len(v) for k, v in obj.binary_data.items()))
    return (sum(len(k) + len(v) for k, v in obj.data.items())
            + sum(len(k) + len(v.encode()) for k, v in obj.string_data.items() if k not in obj.data))


def _config_data(errs: _Errors, obj: t.ConfigMap | t.Secret) -> None:
    if isinstance(obj, t.ConfigMap):
        fields = (("data", obj.data), ("binaryData", obj.binary_data))
    else:
        fields = (("data", obj.data), ("stringData", obj.string_data))  # type: ignore[assignment]
    for name, values in fields:
        for key in values:
            problem = check_config_key(key)
            if problem:
                errs.add(f"{name}[{key}]", problem)
    if isinstance(obj, t.ConfigMap):
        for key in obj.binary_data:
            if key in obj.data:
                errs.add(f"binaryData[{key}]", "duplicate of a key present in data")
    size = config_size(obj)
    if size > MAX_CONFIG_BYTES:
        errs.add("data", f"Too long: must have at most {MAX_CONFIG_BYTES} bytes, got {size}")


def _secret(errs: _Errors, s: t.Secret) -> None:
    _config_data(errs, s)
    keys = set(s.data) | set(s.string_data)
    for key in SECRET_REQUIRED_KEYS.get(s.type, ()):
        if key not in keys:
            errs.add(f"data[{key}]", f'required for a Secret of type "{s.type}"')
    if s.type == "kubernetes.io/dockerconfigjson" and ".dockerconfigjson" in s.data:
        try:
            json.loads(s.data[".dockerconfigjson"])
        except ValueError as exc:
            errs.add("data[.dockerconfigjson]", f"invalid JSON: {exc}")
    if (s.type == "kubernetes.io/service-account-token"
            and not s.metadata.annotations.get("kubernetes.io/service-account.name")):
        errs.add("metadata.annotations[kubernetes.io/service-account.name]",
                 'required for a Secret of type "kubernetes.io/service-account-token"')
    if len(s.type) > 253:
        errs.add("type", "must be no more than 253 characters")


def _quantity_map(errs: _Errors, path: str, values: Mapping[str, str]) -> None:
    for name, text in values.items():
        try:
            if quantity.parse(text) < 0:
                errs.add(f"{path}.{name}", f'must be greater than or equal to 0, got "{text}"')
        except quantity.QuantityError as exc:
            errs.add(f"{path}.{name}", str(exc))


def _limit_range(errs: _Errors, lr: t.LimitRange) -> None:
    for i, item in enumerate(lr.spec.limits):
        ip = f"spec.limits[{i}]"
        errs.enum(f"{ip}.type", item.type, ("Container", "Pod"))
        for field in ("max", "min", "default", "default_request", "max_limit_request_ratio"):
            _quantity_map(errs, f"{ip}.{_json(field)}", getattr(item, field))
        if item.type == "Pod" and (item.default or item.default_request):
            errs.add(f"{ip}.default", 'may not be set for type "Pod"')
        for name, low in item.min.items():
            high = item.max.get(name)
            try:
                if high is not None and quantity.parse(low) > quantity.parse(high):
                    errs.add(f"{ip}.min.{name}", f"min value {low} is greater than max value {high}")
            except quantity.QuantityError:
                pass


def _resource_quota(errs: _Errors, rq: t.ResourceQuota) -> None:
    _quantity_map(errs, "spec.hard", rq.spec.hard)


def _ip(errs: _Errors, path: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        errs.add(path, f'"{value}" is not a valid IP address')


def _pod_spec(errs: _Errors, path: str, spec: t.PodSpec) -> None:
    if not spec.containers:
        errs.add(f"{path}.containers", "at least one container is required")
    volumes = _volumes(errs, path, spec)
    for i, c in enumerate(spec.containers):
        _volume_mounts(errs, f"{path}.containers[{i}]", c, volumes)
    for i, c in enumerate(spec.init_containers):
        _volume_mounts(errs, f"{path}.initContainers[{i}]", c, volumes)
    for i, ref in enumerate(spec.image_pull_secrets):
        if not ref.name:
            errs.add(f"{path}.imagePullSecrets[{i}].name", "required")
    if spec.service_account_name:
        problem = check_dns_subdomain(spec.service_account_name)
        if problem:
            errs.add(f"{path}.serviceAccountName", problem)
    names: set[str] = set()
    port_names: set[str] = set()
    for i, c in enumerate(spec.containers):
        if c.name and c.name in names:
            errs.add(f"{path}.containers[{i}].name", f'duplicate container name "{c.name}"')
        names.add(c.name)
        _container(errs, f"{path}.containers[{i}]", c, port_names)
        if c.HasField("restart_policy"):
            errs.add(f"{path}.containers[{i}].restartPolicy", "may only be set on init containers")
    for i, c in enumerate(spec.init_containers):
        ip = f"{path}.initContainers[{i}]"
        if c.name and c.name in names:
            errs.add(f"{ip}.name", f'duplicate container name "{c.name}"')
        names.add(c.name)
        _container(errs, ip, c, port_names)
        sidecar = c.HasField("restart_policy") and c.restart_policy == "Always"
        if c.HasField("restart_policy") and not sidecar:
            errs.add(f"{ip}.restartPolicy", f'unsupported value "{c.restart_policy}": only "Always" is allowed')
        if not sidecar:
            # As Kubernetes: a run-to-completion init container has no probes or postStart/preStop.
            for field in ("liveness_probe", "readiness_probe", "startup_probe"):
                if c.HasField(field):
                    errs.add(f"{ip}.{_json(field)}", "may not be set for init containers without restartPolicy Always")
            if c.HasField("lifecycle"):
                errs.add(f"{ip}.lifecycle", "may not be set for init containers without restartPolicy Always")
    errs.enum(f"{path}.restartPolicy", spec.restart_policy, RESTART_POLICIES)
    if spec.HasField("active_deadline_seconds") and spec.active_deadline_seconds <= 0:
        errs.add(f"{path}.activeDeadlineSeconds", "must be greater than 0")
    if spec.HasField("termination_grace_period_seconds"):
        errs.non_negative(f"{path}.terminationGracePeriodSeconds", spec.termination_grace_period_seconds)
    if spec.node_name:
        problem = check_dns_subdomain(spec.node_name)
        if problem:
            errs.add(f"{path}.nodeName", problem)
    _labels(errs, f"{path}.nodeSelector", spec.node_selector)
    for i, tol in enumerate(spec.tolerations):
        tp = f"{path}.tolerations[{i}]"
        errs.enum(f"{tp}.operator", tol.operator, ("Equal", "Exists"))
        errs.enum(f"{tp}.effect", tol.effect, TAINT_EFFECTS)
        if tol.operator == "Exists" and tol.value:
            errs.add(f"{tp}.value", 'must be empty when operator is "Exists"')
        if not tol.key and tol.operator != "Exists":
            errs.add(f"{tp}.operator", 'must be "Exists" when key is empty')
    if spec.hostname:
        problem = check_dns_label(spec.hostname)
        if problem:
            errs.add(f"{path}.hostname", problem)
    if spec.subdomain:
        problem = check_dns_label(spec.subdomain)
        if problem:
            errs.add(f"{path}.subdomain", problem)
    errs.enum(f"{path}.dnsPolicy", spec.dns_policy, DNS_POLICIES)
    if spec.HasField("security_context"):
        _pod_security_context(errs, f"{path}.securityContext", spec.security_context)
    dns = spec.dns_config
    if spec.dns_policy == "None" and not dns.nameservers:
        errs.add(f"{path}.dnsConfig.nameservers", 'at least one nameserver is required when dnsPolicy is "None"')
    for i, ns in enumerate(dns.nameservers):
        try:
            ipaddress.ip_address(ns)
        except ValueError:
            errs.add(f"{path}.dnsConfig.nameservers[{i}]", f'"{ns}" is not a valid IP address')
    if len(dns.nameservers) > 3:
        errs.add(f"{path}.dnsConfig.nameservers", "may not have more than 3 nameservers")
    for i, alias in enumerate(spec.host_aliases):
        try:
            ipaddress.ip_address(alias.ip)
        except ValueError:
            errs.add(f"{path}.hostAliases[{i}].ip", f'"{alias.ip}" is not a valid IP address')
        for j, name in enumerate(alias.hostnames):
            problem = check_dns_subdomain(name)
            if problem:
                errs.add(f"{path}.hostAliases[{i}].hostnames[{j}]", problem)


SECCOMP_TYPES = ("RuntimeDefault", "Unconfined", "Localhost")
PROC_MOUNT_TYPES = ("Default", "Unmasked")
CAPABILITY = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _seccomp(errs: _Errors, path: str, profile: t.SeccompProfile) -> None:
    errs.enum(f"{path}.type", profile.type, SECCOMP_TYPES, allow_empty=False)
    if profile.type == "Localhost":
        if not profile.localhost_profile:
            errs.add(f"{path}.localhostProfile", 'required when type is "Localhost"')
        elif check_relative_path(profile.localhost_profile):
            errs.add(f"{path}.localhostProfile", check_relative_path(profile.localhost_profile) or "")
    elif profile.HasField("localhost_profile"):
        errs.add(f"{path}.localhostProfile", 'can only be set when type is "Localhost"')


def _ids(errs: _Errors, path: str, sc: t.SecurityContext | t.PodSecurityContext) -> None:
    for field in ("run_as_user", "run_as_group"):
        if sc.HasField(field):
            value = getattr(sc, field)
            if not 0 <= value <= 2**31 - 1:
                errs.add(f"{path}.{_json(field)}", f"must be between 0 and 2147483647 inclusive, got {value}")


def _security_context(errs: _Errors, path: str, sc: t.SecurityContext) -> None:
    """Kubernetes' checks of a container's securityContext, plus capability names that runc accepts."""
    _ids(errs, path, sc)
    for field in ("add", "drop"):
        for i, cap in enumerate(getattr(sc.capabilities, field)):
            name = cap.removeprefix("CAP_")
            if not CAPABILITY.match(name):
                errs.add(f"{path}.capabilities.{field}[{i}]", f"invalid capability {json.dumps(cap)}: "
                         "expected an upper-case name such as NET_ADMIN")
    if sc.HasField("seccomp_profile"):
        _seccomp(errs, f"{path}.seccompProfile", sc.seccomp_profile)
    if sc.HasField("proc_mount"):
        errs.enum(f"{path}.procMount", sc.proc_mount, PROC_MOUNT_TYPES, allow_empty=False)
    if sc.HasField("allow_privilege_escalation") and not sc.allow_privilege_escalation:
        if sc.privileged:
            errs.add(f"{path}", "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")
        if "SYS_ADMIN" in [c.removeprefix("CAP_") for c in sc.capabilities.add]:
            errs.add(f"{path}", "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN")


def _pod_security_context(errs: _Errors, path: str, sc: t.PodSecurityContext) -> None:
    _ids(errs, path, sc)
    for field in ("supplemental_groups",):
        for i, gid in enumerate(getattr(sc, field)):
            if not 0 <= gid <= 2**31 - 1:
                errs.add(f"{path}.supplementalGroups[{i}]", f"must be between 0 and 2147483647 inclusive, got {gid}")
    if sc.HasField("fs_group") and not 0 <= sc.fs_group <= 2**31 - 1:
        errs.add(f"{path}.fsGroup", f"must be between 0 and 2147483647 inclusive, got {sc.fs_group}")
    if sc.HasField("seccomp_profile"):
        _seccomp(errs, f"{path}.seccompProfile", sc.seccomp_profile)
    seen: set[str] = set()
    for i, sysctl in enumerate(sc.sysctls):
        if not re.match(r"^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$", sysctl.name):
            errs.add(f"{path}.sysctls[{i}].name", f"invalid sysctl name {json.dumps(sysctl.name)}")
        elif sysctl.name in seen:
            errs.add(f"{path}.sysctls[{i}].name", f'duplicate sysctl "{sysctl.name}"')
        seen.add(sysctl.name)
        if _CONTROL.search(sysctl.value):
            errs.add(f"{path}.sysctls[{i}].value", "must not contain control characters")


def _label_selector(errs: _Errors, path: str, sel: t.LabelSelector, *, required: bool) -> None:
    if required and not sel.match_labels and not sel.match_expressions:
        errs.add(path, "a non-empty selector is required")
    _labels(errs, f"{path}.matchLabels", sel.match_labels)
    for i, expr in enumerate(sel.match_expressions):
        ep = f"{path}.matchExpressions[{i}]"
        problem = check_label_key(expr.key)
        if problem:
            errs.add(f"{ep}.key", problem)
        errs.enum(f"{ep}.operator", expr.operator, SELECTOR_OPERATORS, allow_empty=False)
        if expr.operator in ("In", "NotIn") and not expr.values:
            errs.add(f"{ep}.values", f"must have at least one value for operator {expr.operator}")
        if expr.operator in ("Exists", "DoesNotExist") and expr.values:
            errs.add(f"{ep}.values", f"must be empty for operator {expr.operator}")


def _workload(errs: _Errors, spec: t.DeploymentSpec | t.ReplicaSetSpec | t.DaemonSetSpec | t.StatefulSetSpec,
              prefix: str = "spec") -> None:
    if not isinstance(spec, t.DaemonSetSpec) and spec.HasField("replicas"):
        errs.non_negative(f"{prefix}.replicas", spec.replicas)
    errs.non_negative(f"{prefix}.minReadySeconds", spec.min_ready_seconds)
    _template(errs, prefix, spec.selector, spec.template, allowed_restart=("Always",))


def _template(errs: _Errors, prefix: str, sel: t.LabelSelector, template: t.PodTemplateSpec, *,
              allowed_restart: tuple[str, ...], selector_required: bool = True) -> None:
    """A selector and the pod template it must select, whose restartPolicy is one of `allowed_restart`."""
    _label_selector(errs, f"{prefix}.selector", sel, required=selector_required)
    _metadata(errs, template.metadata, kinds.by_kind("Pod"), f"{prefix}.template.metadata",  # type: ignore[arg-type]
              need_name=False)
    if sel.match_labels or sel.match_expressions:
        try:
            selector = labels.from_label_selector(sel)
        except labels.SelectorError:
            selector = None
        if selector is not None and not labels.matches(selector, template.metadata.labels):
            errs.add(f"{prefix}.template.metadata.labels", "`selector` does not match template `labels`")
    _pod_spec(errs, f"{prefix}.template.spec", template.spec)
    policy = template.spec.restart_policy
    if not policy and "Always" not in allowed_restart:
        errs.add(f"{prefix}.template.spec.restartPolicy",
                 f'Required value: one of {", ".join(repr(p) for p in allowed_restart)}')
    elif policy and policy not in allowed_restart:
        only = " or ".join(f'"{p}"' for p in allowed_restart)
        errs.add(f"{prefix}.template.spec.restartPolicy", f'unsupported value "{policy}": only {only} is allowed here')


def _job_spec(errs: _Errors, spec: t.JobSpec, prefix: str = "spec") -> None:
    for name in ("parallelism", "completions", "backoff_limit"):
        if spec.HasField(name):
            errs.non_negative(f"{prefix}.{_json(name)}", getattr(spec, name))
    for name in ("active_deadline_seconds",):
        if spec.HasField(name) and getattr(spec, name) <= 0:
            errs.add(f"{prefix}.{_json(name)}", "must be greater than 0")
    if spec.HasField("ttl_seconds_after_finished"):
        errs.non_negative(f"{prefix}.ttlSecondsAfterFinished", spec.ttl_seconds_after_finished)
    errs.enum(f"{prefix}.completionMode", spec.completion_mode, ("NonIndexed", "Indexed"))
    if spec.completion_mode == "Indexed" and not spec.HasField("completions"):
        errs.add(f"{prefix}.completions", "when completionMode is Indexed, completions must be set")
    # Without manualSelector the api-server makes the selector (from the Job's uid) on create.
    _template(errs, prefix, spec.selector, spec.template, allowed_restart=("OnFailure", "Never"),
              selector_required=spec.manual_selector)


def _cron_job(errs: _Errors, cj: t.CronJob) -> None:
    from skiff import cron  # the parser is only needed here

    spec = cj.spec
    try:
        cron.parse(spec.schedule)
    except cron.CronError as exc:
        errs.add("spec.schedule", f'invalid schedule "{spec.schedule}": {exc}')
    if spec.HasField("time_zone"):
        try:
            cron.zone(spec.time_zone)
        except cron.CronError as exc:
            errs.add("spec.timeZone", str(exc))
    errs.enum("spec.concurrencyPolicy", spec.concurrency_policy, ("Allow", "Forbid", "Replace"))
    if spec.HasField("starting_deadline_seconds"):
        errs.non_negative("spec.startingDeadlineSeconds", spec.starting_deadline_seconds)
    for name in ("successful_jobs_history_limit", "failed_jobs_history_limit"):
        if spec.HasField(name):
            errs.non_negative(f"spec.{_json(name)}", getattr(spec, name))
    _job_spec(errs, spec.job_template.spec, "spec.jobTemplate.spec")


def _update_strategy(errs: _Errors, path: str, type_: str, types: tuple[str, ...]) -> None:
    errs.enum(f"{path}.type", type_, types)


def _percent_or_int(errs: _Errors, path: str, value: t.IntOrString) -> int | None:
    """The value as an int for integers, or None for a percent; records bad values."""
    which = value.WhichOneof("value")
    if which == "int_val":
        errs.non_negative(path, value.int_val)
        return value.int_val
    if which == "str_val":
        if not PERCENT.match(value.str_val):
            errs.add(path, f'must be an integer or a percentage like "25%", got "{value.str_val}"')
            return None
        if int(value.str_val[:-1]) > 100:
            errs.add(path, f'must not be greater than 100%, got "{value.str_val}"')
        return -1 if value.str_val == "0%" else None
    return None


def _is_zero(value: t.IntOrString) -> bool:
    which = value.WhichOneof("value")
    return (which == "int_val" and value.int_val == 0) or (which == "str_val" and value.str_val == "0%")


def _deployment(errs: _Errors, d: t.Deployment) -> None:
    _workload(errs, d.spec)
    strategy = d.spec.strategy
    errs.enum("spec.strategy.type", strategy.type, ("RollingUpdate", "Recreate"))
    if strategy.type == "Recreate" and strategy.HasField("rolling_update"):
        errs.add("spec.strategy.rollingUpdate", 'may not be specified when strategy type is "Recreate"')
    ru = strategy.rolling_update
    if strategy.HasField("rolling_update"):
        _percent_or_int(errs, "spec.strategy.rollingUpdate.maxSurge", ru.max_surge)
        _percent_or_int(errs, "spec.strategy.rollingUpdate.maxUnavailable", ru.max_unavailable)
        if (ru.HasField("max_surge") and ru.HasField("max_unavailable")
                and _is_zero(ru.max_surge) and _is_zero(ru.max_unavailable)):
            errs.add("spec.strategy.rollingUpdate.maxUnavailable", "may not be 0 when maxSurge is 0")
    if d.spec.HasField("revision_history_limit"):
        errs.non_negative("spec.revisionHistoryLimit", d.spec.revision_history_limit)
    if d.spec.HasField("progress_deadline_seconds") and d.spec.progress_deadline_seconds <= d.spec.min_ready_seconds:
        errs.add("spec.progressDeadlineSeconds", "must be greater than minReadySeconds")


def _service(errs: _Errors, s: t.Service) -> None:
    spec = s.spec
    errs.enum("spec.type", spec.type, SERVICE_TYPES)
    headless = spec.cluster_ip == "None"
    external = spec.type == "ExternalName"
    if not spec.ports and not headless and not external:
        errs.add("spec.ports", "at least one port is required")
    if external:
        if not spec.external_name:
            errs.add("spec.externalName", 'required when type is "ExternalName"')
        else:
            problem = check_dns_subdomain(spec.external_name.rstrip("."))
            if problem:
                errs.add("spec.externalName", problem)
        if spec.cluster_ip:
            errs.add("spec.clusterIP", 'must be empty when type is "ExternalName"')
    elif spec.external_name:
        errs.add("spec.externalName", 'may only be set when type is "ExternalName"')
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for i, port in enumerate(spec.ports):
        pp = f"spec.ports[{i}]"
        if len(spec.ports) > 1 and not port.name:
            errs.add(f"{pp}.name", "required when a Service has more than one port")
        if port.name:
            problem = check_dns_label(port.name)
            if problem:
                errs.add(f"{pp}.name", problem)
            elif port.name in names:
                errs.add(f"{pp}.name", f'duplicate port name "{port.name}"')
            names.add(port.name)
        errs.port(f"{pp}.port", port.port)
        errs.enum(f"{pp}.protocol", port.protocol, PROTOCOLS)
        key = (port.port, port.protocol or "TCP")
        if key in seen:
            errs.add(f"{pp}", f"duplicate port {port.port}/{key[1]}")
        seen.add(key)
        if port.HasField("target_port"):
            _int_or_string_port(errs, f"{pp}.targetPort", port.target_port, required=False)
        if port.node_port:
            if spec.type != "NodePort":
                errs.add(f"{pp}.nodePort", 'may only be set when type is "NodePort"')
            else:
                errs.port(f"{pp}.nodePort", port.node_port)
    if spec.cluster_ip and not headless:
        try:
            ipaddress.IPv4Address(spec.cluster_ip)
        except ValueError:
            errs.add("spec.clusterIP", f'"{spec.cluster_ip}" is not a valid IPv4 address (or "None" for headless)')
    if headless and spec.type == "NodePort":
        errs.add("spec.clusterIP", 'may not be "None" when type is "NodePort"')
    _labels(errs, "spec.selector", spec.selector)
    errs.enum("spec.sessionAffinity", spec.session_affinity, ("None", "ClientIP"))
    errs.enum("spec.externalTrafficPolicy", spec.external_traffic_policy, ("Cluster", "Local"))
    errs.enum("spec.internalTrafficPolicy", spec.internal_traffic_policy, ("Cluster", "Local"))
    timeout = spec.session_affinity_config.client_ip
    if timeout.HasField("timeout_seconds") and not 0 < timeout.timeout_seconds <= 86400:
        errs.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "must be between 1 and 86400")


def _endpoints(errs: _Errors, e: t.Endpoints) -> None:
    for i, subset in enumerate(e.subsets):
        sp = f"subsets[{i}]"
        for field in ("addresses", "not_ready_addresses"):
            for j, addr in enumerate(getattr(subset, field)):
                _ip(errs, f"{sp}.{_json(field)}[{j}].ip", addr.ip)
        for j, port in enumerate(subset.ports):
            errs.port(f"{sp}.ports[{j}].port", port.port)
            errs.enum(f"{sp}.ports[{j}].protocol", port.protocol, PROTOCOLS)


def _node(errs: _Errors, n: t.Node) -> None:
    for path, cidr in [("spec.podCIDR", n.spec.pod_cidr)] + [
        (f"spec.podCIDRs[{i}]", c) for i, c in enumerate(n.spec.pod_cidrs)
    ]:
        if cidr:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                errs.add(path, f'"{cidr}" is not a valid CIDR such as 10.244.1.0/24')
    for i, taint in enumerate(n.spec.taints):
        problem = check_label_key(taint.key) if taint.key else "required"
        if problem:
            errs.add(f"spec.taints[{i}].key", problem)
        errs.enum(f"spec.taints[{i}].effect", taint.effect, TAINT_EFFECTS, allow_empty=False)
    for i, addr in enumerate(n.status.addresses):
        if addr.type in ("InternalIP", "ExternalIP"):
            _ip(errs, f"status.addresses[{i}].address", addr.address)


def _lease(errs: _Errors, lease: t.Lease) -> None:
    if lease.spec.HasField("lease_duration_seconds") and lease.spec.lease_duration_seconds <= 0:
        errs.add("spec.leaseDurationSeconds", "must be greater than 0")


def _event(errs: _Errors, ev: t.Event) -> None:
    if not ev.involved_object.name and not ev.involved_object.kind:
        errs.add("involvedObject", "required")
    errs.enum("type", ev.type, ("Normal", "Warning"))


RBAC_GROUP = "rbac.authorization.k8s.io"


def _policy_rules(errs: _Errors, rules: Iterable[t.PolicyRule], *, namespaced: bool) -> None:
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        if not rule.verbs:
            errs.add(f"{path}.verbs", "at least one verb must be specified")
        if rule.non_resource_urls:
            if namespaced:
                errs.add(f"{path}.nonResourceURLs", "namespaced rules cannot apply to non-resource URLs")
            if rule.api_groups or rule.resources:
                errs.add(f"{path}.nonResourceURLs", "rules cannot apply to both regular resources and "
                                                    "non-resource URLs")
            for j, url in enumerate(rule.non_resource_urls):
                if not (url == "*" or url.startswith("/")):
                    errs.add(f"{path}.nonResourceURLs[{j}]", 'must start with "/" or be "*"')
            continue
        if not rule.resources:
            errs.add(f"{path}.resources", "resource rules must supply at least one resource")
        if not rule.api_groups:
            errs.add(f"{path}.apiGroups", 'resource rules must supply at least one api group ("" for the core group)')


def _binding(errs: _Errors, subjects: Iterable[t.Subject], ref: t.RoleRef, *, namespaced: bool) -> None:
    allowed = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    errs.enum("roleRef.kind", ref.kind, allowed, allow_empty=False)
    if ref.api_group != RBAC_GROUP:
        errs.add("roleRef.apiGroup", f'supported values: "{RBAC_GROUP}"')
    if not ref.name:
        errs.add("roleRef.name", "required")
    for i, s in enumerate(subjects):
        path = f"subjects[{i}]"
        errs.enum(f"{path}.kind", s.kind, ("User", "Group", "ServiceAccount"), allow_empty=False)
        if not s.name:
            errs.add(f"{path}.name", "required")
        if s.kind == "ServiceAccount":
            if s.api_group:
                errs.add(f"{path}.apiGroup", 'supported values: ""')
            if not s.namespace and not namespaced:
                errs.add(f"{path}.namespace", "required")
        elif s.kind in ("User", "Group") and s.api_group != RBAC_GROUP:
            errs.add(f"{path}.apiGroup", f'supported values: "{RBAC_GROUP}"')
def _ip_block(errs: _Errors, path: str, block: t.IPBlock) -> None:
    try:
        net = ipaddress.ip_network(block.cidr, strict=False)
    except ValueError:
        errs.add(f"{path}.cidr", f'"{block.cidr}" is not a valid CIDR such as 10.0.0.0/8')
        return
    for i, text in enumerate(block.except_):
        try:
            sub = ipaddress.ip_network(text, strict=False)
        except ValueError:
            errs.add(f"{path}.except[{i}]", f'"{text}" is not a valid CIDR such as 10.0.1.0/24')
            continue
        if sub.version != net.version or not sub.subnet_of(net) or sub == net:  # type: ignore[arg-type]
            errs.add(f"{path}.except[{i}]", f'must be a strict subset of "{block.cidr}"')


def _policy_peers(errs: _Errors, path: str, peers: Iterable[t.NetworkPolicyPeer]) -> None:
    for i, peer in enumerate(peers):
        pp = f"{path}[{i}]"
        present = [f for f in ("pod_selector", "namespace_selector", "ip_block") if peer.HasField(f)]
        if not present:
            errs.add(pp, "must specify a podSelector, a namespaceSelector or an ipBlock")
        elif "ip_block" in present and len(present) > 1:
            errs.add(pp, "may not specify an ipBlock together with a podSelector or a namespaceSelector")
        if peer.HasField("pod_selector"):
            _label_selector(errs, f"{pp}.podSelector", peer.pod_selector, required=False)
        if peer.HasField("namespace_selector"):
            _label_selector(errs, f"{pp}.namespaceSelector", peer.namespace_selector, required=False)
        if peer.HasField("ip_block"):
            _ip_block(errs, f"{pp}.ipBlock", peer.ip_block)


def _policy_ports(errs: _Errors, path: str, ports: Iterable[t.NetworkPolicyPort]) -> None:
    for i, port in enumerate(ports):
        pp = f"{path}[{i}]"
        if port.HasField("protocol"):
            errs.enum(f"{pp}.protocol", port.protocol, PROTOCOLS, allow_empty=False)
        if port.HasField("port"):
            _int_or_string_port(errs, f"{pp}.port", port.port)
        if port.HasField("end_port"):
            if port.port.WhichOneof("value") != "int_val":
                errs.add(f"{pp}.endPort", "may only be set when port is a number")
            elif port.end_port < port.port.int_val:
                errs.add(f"{pp}.endPort", f"must be greater than or equal to port ({port.port.int_val})")
            else:
                errs.port(f"{pp}.endPort", port.end_port)


def _network_policy(errs: _Errors, np: t.NetworkPolicy) -> None:
    spec = np.spec
    _label_selector(errs, "spec.podSelector", spec.pod_selector, required=False)
    for i, ingress in enumerate(spec.ingress):
        _policy_ports(errs, f"spec.ingress[{i}].ports", ingress.ports)
        _policy_peers(errs, f"spec.ingress[{i}].from", ingress.from_)
    for i, egress in enumerate(spec.egress):
        _policy_ports(errs, f"spec.egress[{i}].ports", egress.ports)
        _policy_peers(errs, f"spec.egress[{i}].to", egress.to)
    seen: set[str] = set()
    for i, kind in enumerate(spec.policy_types):
        errs.enum(f"spec.policyTypes[{i}]", kind, networkpolicy.POLICY_TYPES, allow_empty=False)
        if kind in seen:
            errs.add(f"spec.policyTypes[{i}]", f'duplicate value "{kind}"')
        seen.add(kind)
# ---------------------------------------------------------------------- storage

ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
RECLAIM_POLICIES = ("Retain", "Delete")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")
NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


def _access_modes(errs: _Errors, path: str, modes: Iterable[str]) -> None:
    modes = list(modes)
    if not modes:
        errs.add(path, "at least 1 access mode is required")
    for j, mode in enumerate(modes):
        errs.enum(f"{path}[{j}]", mode, ACCESS_MODES, allow_empty=False)
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        errs.add(path, "may not use ReadWriteOncePod with other access modes")


def _storage_quantity(errs: _Errors, path: str, values: Mapping[str, str]) -> None:
    if "storage" not in values:
        errs.add(path, "storage is required")
    for name, value in values.items():
        if name != "storage":
            errs.add(f"{path}.{name}", 'unsupported resource: only "storage"')
            continue
        try:
            if quantity.to_bytes(value) <= 0:
                errs.add(f"{path}.{name}", "must be greater than zero")
        except quantity.QuantityError as exc:
            errs.add(f"{path}.{name}", str(exc))


def _node_selector(errs: _Errors, path: str, sel: t.NodeSelector) -> None:
    if not sel.node_selector_terms:
        errs.add(f"{path}.nodeSelectorTerms", "must have at least one node selector term")
    for i, term in enumerate(sel.node_selector_terms):
        for field in ("match_expressions", "match_fields"):
            for j, req in enumerate(getattr(term, field)):
                rp = f"{path}.nodeSelectorTerms[{i}].{_json(field)}[{j}]"
                if not req.key:
                    errs.add(f"{rp}.key", "required")
                errs.enum(f"{rp}.operator", req.operator, NODE_SELECTOR_OPERATORS, allow_empty=False)
                if req.operator in ("In", "NotIn") and not req.values:
                    errs.add(f"{rp}.values", f"must have at least one value for operator {req.operator}")
                if req.operator in ("Exists", "DoesNotExist") and req.values:
                    errs.add(f"{rp}.values", f"must be empty for operator {req.operator}")


def _persistent_volume(errs: _Errors, pv: t.PersistentVolume) -> None:
    spec = pv.spec
    _access_modes(errs, "spec.accessModes", spec.access_modes)
    _storage_quantity(errs, "spec.capacity", spec.capacity)
    errs.enum("spec.persistentVolumeReclaimPolicy", spec.persistent_volume_reclaim_policy, RECLAIM_POLICIES)
    errs.enum("spec.volumeMode", spec.volume_mode, ("Filesystem",))
    present = _one_of(errs, "spec", spec, ("host_path", "local"))
    if "host_path" in present:
        if not spec.host_path.path.startswith("/"):
            errs.add("spec.hostPath.path", f'must be an absolute path, got "{spec.host_path.path}"')
        errs.enum("spec.hostPath.type", spec.host_path.type, HOST_PATH_TYPES)
    if "local" in present:
        if not spec.local.path.startswith("/"):
            errs.add("spec.local.path", f'must be an absolute path, got "{spec.local.path}"')
        if not spec.node_affinity.HasField("required"):
            errs.add("spec.nodeAffinity", "local volume requires node affinity")
    if spec.node_affinity.HasField("required"):
        _node_selector(errs, "spec.nodeAffinity.required", spec.node_affinity.required)


def _persistent_volume_claim_spec(errs: _Errors, path: str, spec: t.PersistentVolumeClaimSpec) -> None:
    _access_modes(errs, f"{path}.accessModes", spec.access_modes)
    _storage_quantity(errs, f"{path}.resources.requests", spec.resources.requests)
    _label_selector(errs, f"{path}.selector", spec.selector, required=False)
    errs.enum(f"{path}.volumeMode", spec.volume_mode, ("Filesystem",))
    if spec.HasField("storage_class_name") and spec.storage_class_name:
        problem = check_dns_subdomain(spec.storage_class_name)
        if problem:
            errs.add(f"{path}.storageClassName", problem)


def _storage_class(errs: _Errors, sc: t.StorageClass) -> None:
    if not sc.provisioner:
        errs.add("provisioner", "required")
    if sc.HasField("reclaim_policy"):
        errs.enum("reclaimPolicy", sc.reclaim_policy, RECLAIM_POLICIES, allow_empty=False)
    if sc.HasField("volume_binding_mode"):
        errs.enum("volumeBindingMode", sc.volume_binding_mode, BINDING_MODES, allow_empty=False)


def _claim_templates(errs: _Errors, sts: t.StatefulSet) -> None:
    seen: set[str] = set()
    for i, claim in enumerate(sts.spec.volume_claim_templates):
        cp = f"spec.volumeClaimTemplates[{i}]"
        problem = check_dns_label(claim.metadata.name) if claim.metadata.name else "required"
        if problem:
            errs.add(f"{cp}.metadata.name", problem)
        elif claim.metadata.name in seen:
            errs.add(f"{cp}.metadata.name", f'duplicate claim template "{claim.metadata.name}"')
        seen.add(claim.metadata.name)
        _persistent_volume_claim_spec(errs, f"{cp}.spec", claim.spec)
    policy = sts.spec.persistent_volume_claim_retention_policy
    # Retain (the default) or Delete: the statefulset controller's claim_owner_references.
    errs.enum("spec.persistentVolumeClaimRetentionPolicy.whenDeleted", policy.when_deleted, ("Retain", "Delete"))
    errs.enum("spec.persistentVolumeClaimRetentionPolicy.whenScaled", policy.when_scaled, ("Retain", "Delete"))


def validate(obj: Message) -> list[FieldError]:
    """Every problem with `obj`, in field order; empty when it is valid."""
    kind = kinds.of_message(obj)
    errs = _Errors()
    meta: t.ObjectMeta = obj.metadata  # type: ignore[attr-defined]
    name_check = {
        "Namespace": check_dns_label,
        "Service": check_dns1035_label,
        # RBAC names are path segments, as in Kubernetes ("system:kube-scheduler").
        "Role": check_path_segment,
        "ClusterRole": check_path_segment,
        "RoleBinding": check_path_segment,
        "ClusterRoleBinding": check_path_segment,
    }.get(kind.kind, check_dns_subdomain)
    _metadata(errs, meta, kind, name_check=name_check)
    if isinstance(obj, t.Namespace):
        for key, problem in podsecurity.check_labels(meta.labels):
            errs.add(f"metadata.labels[{key}]", problem)
    if isinstance(obj, t.Pod):
        _pod_spec(errs, "spec", obj.spec)
    elif isinstance(obj, t.Deployment):
        _deployment(errs, obj)
    elif isinstance(obj, t.ReplicaSet):
        _workload(errs, obj.spec)
    elif isinstance(obj, t.Service):
        _service(errs, obj)
    elif isinstance(obj, t.Endpoints):
        _endpoints(errs, obj)
    elif isinstance(obj, t.Node):
        _node(errs, obj)
    elif isinstance(obj, t.Lease):
        _lease(errs, obj)
    elif isinstance(obj, t.Event):
        _event(errs, obj)
    elif isinstance(obj, t.ConfigMap):
        _config_data(errs, obj)
    elif isinstance(obj, t.Secret):
        _secret(errs, obj)
    elif isinstance(obj, t.LimitRange):
        _limit_range(errs, obj)
    elif isinstance(obj, t.ResourceQuota):
        _resource_quota(errs, obj)
    elif isinstance(obj, t.NetworkPolicy):
        _network_policy(errs, obj)
    elif isinstance(obj, t.Job):
        _job_spec(errs, obj.spec)
    elif isinstance(obj, t.CronJob):
        _cron_job(errs, obj)
    elif isinstance(obj, t.DaemonSet):
        _workload(errs, obj.spec)
        _update_strategy(errs, "spec.updateStrategy", obj.spec.update_strategy.type, ("RollingUpdate", "OnDelete"))
        ru = obj.spec.update_strategy.rolling_update
        _percent_or_int(errs, "spec.updateStrategy.rollingUpdate.maxSurge", ru.max_surge)
        _percent_or_int(errs, "spec.updateStrategy.rollingUpdate.maxUnavailable", ru.max_unavailable)
        if (obj.spec.update_strategy.HasField("rolling_update") and _is_zero(ru.max_surge)
                and _is_zero(ru.max_unavailable)):
            errs.add("spec.updateStrategy.rollingUpdate.maxUnavailable", "may not be 0 when maxSurge is 0")
    elif isinstance(obj, t.Role | t.ClusterRole):
        _policy_rules(errs, obj.rules, namespaced=isinstance(obj, t.Role))
    elif isinstance(obj, t.RoleBinding | t.ClusterRoleBinding):
        _binding(errs, obj.subjects, obj.role_ref, namespaced=isinstance(obj, t.RoleBinding))
    elif isinstance(obj, t.StatefulSet):
        # The template may mount the claim templates by name: each becomes a pod volume.
        spec = obj.spec
        if spec.volume_claim_templates:
            spec = t.StatefulSetSpec()
            spec.CopyFrom(obj.spec)
            have = {v.name for v in spec.template.spec.volumes}
            for claim in spec.volume_claim_templates:
                if claim.metadata.name and claim.metadata.name not in have:
                    spec.template.spec.volumes.add(name=claim.metadata.name).persistent_volume_claim.claim_name = \
                        claim.metadata.name
        _workload(errs, spec)
        _update_strategy(errs, "spec.updateStrategy", obj.spec.update_strategy.type, ("RollingUpdate", "OnDelete"))
        errs.enum("spec.podManagementPolicy", obj.spec.pod_management_policy, ("OrderedReady", "Parallel"))
        if obj.spec.update_strategy.rolling_update.HasField("partition"):
            errs.non_negative("spec.updateStrategy.rollingUpdate.partition",
                              obj.spec.update_strategy.rolling_update.partition)
        _claim_templates(errs, obj)
    elif isinstance(obj, t.PersistentVolume):
        _persistent_volume(errs, obj)
    elif isinstance(obj, t.PersistentVolumeClaim):
        _persistent_volume_claim_spec(errs, "spec", obj.spec)
    elif isinstance(obj, t.StorageClass):
        _storage_class(errs, obj)
    return errs.items
