"""Strict conversion between plain data (parsed YAML/JSON) and API messages.

Kubernetes manifests map onto our protobuf messages by protobuf's JSON names, but
protobuf's own json_format reports errors in its terms ("Message type X has no field Y")
and without a path. This walker names the exact field path the way kubectl does:
`spec.template.spec.containers[0].ports[0].containerPort: expected an integer, got "eighty"`.

`bytes` fields (Secret.data, ConfigMap.binaryData) are base64 in manifests, as in Kubernetes'
JSON; a value that is not valid base64 is an error naming its path.

What must hold: `to_data(from_data(d))` equals `d` for any valid `d` in canonical form
(defaults are not added here; that is the api-server's job), and nothing in a manifest is
silently dropped: every key either lands in a field or raises FieldError (or, when the caller
passes `unknown`, an unknown key is reported there: the HTTP API's fieldValidation=Warn|Ignore).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import difflib
import functools
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

M = TypeVar("M", bound=Message)

INT_OR_STRING = "skiff.api.v1.IntOrString"
TIMESTAMP = "google.protobuf.Timestamp"

# Kubernetes MicroTime fields: always six fractional digits (Go clients parse them with a fixed layout).
MICRO_TIME_FIELDS = frozenset({"skiff.api.v1.LeaseSpec.acquire_time", "skiff.api.v1.LeaseSpec.renew_time"})

# string fields that hold a JSON value as text, shown as that value (managedFields' fieldsV1 is a free-form
# JSON object in Kubernetes; protobuf has no such type short of Struct, which would change the numbers).
JSON_TEXT_FIELDS = frozenset({"skiff.api.v1.ManagedFieldsEntry.fields_v1"})

# Scalar fields Kubernetes' JSON always carries, zero or not (Go fields without omitempty, `required`
# in its OpenAPI), which strict clients insist on: the official Python client's models refuse a
# ContainerStatus without restartCount or a NodeSystemInfo without kubeProxyVersion. to_data shows
# them even when unset; tests/unit/skiff/test_convert_always_shown.py checks this table against
# those models.
ALWAYS_SHOWN = frozenset(f"skiff.api.v1.{message}.{name}" for message, names in {
    "CertificateSigningRequestCondition": ("status", "type"),
    "CertificateSigningRequestSpec": ("request", "signer_name"),
    "ConfigMapKeySelector": ("key",),
    "Container": ("name",),
    "ContainerPort": ("container_port",),
    "ContainerStateTerminated": ("exit_code",),
    "ContainerStatus": ("image", "image_id", "name", "ready", "restart_count"),
    "CronJobSpec": ("schedule",),
    "DaemonEndpoint": ("port",),
    "DaemonSetStatus": ("current_number_scheduled", "desired_number_scheduled", "number_misscheduled", "number_ready"),
    "DownwardAPIVolumeFile": ("path",),
    "EndpointAddress": ("ip",),
    "EnvVar": ("name",),
    "HTTPHeader": ("name", "value"),
    "HostAlias": ("ip",),
    "HostPathVolumeSource": ("path",),
    "IPBlock": ("cidr",),
    "JobCondition": ("status", "type"),
    "KeyToPath": ("key", "path"),
    "LabelSelectorRequirement": ("key", "operator"),
    "LimitRangeItem": ("type",),
    "LocalVolumeSource": ("path",),
    "NodeAddress": ("address", "type"),
    "NodeCondition": ("status", "type"),
    "NodeSelectorRequirement": ("key", "operator"),
    "NodeSystemInfo": ("architecture", "boot_id", "container_runtime_version", "kernel_version",
                       "kube_proxy_version", "kubelet_version", "machine_id", "operating_system", "os_image",
                       "system_uuid"),
    "ObjectFieldSelector": ("field_path",),
    "OwnerReference": ("api_version", "kind", "name", "uid"),
    "PersistentVolumeClaimCondition": ("status", "type"),
    "PersistentVolumeClaimVolumeSource": ("claim_name",),
    "PodCondition": ("status", "type"),
    "PodIP": ("ip",),
    "ReplicaSetStatus": ("replicas",),
    "ResourceFieldSelector": ("resource",),
    "RoleRef": ("kind", "name"),
    "SeccompProfile": ("type",),
    "SecretKeySelector": ("key",),
    "ServiceAccountTokenProjection": ("path",),
    "ServicePort": ("port",),
    "StatefulSetStatus": ("replicas",),
    "StorageClass": ("provisioner",),
    "Sysctl": ("name", "value"),
    "Taint": ("effect", "key"),
    "Volume": ("name",),
    "VolumeMount": ("mount_path", "name"),
}.items() for name in names)

# map<string,string> fields that hold quantities: YAML numbers (cpu: 1, cpu: 0.5) are accepted there.
QUANTITY_MAPS = frozenset({"limits", "requests", "capacity", "allocatable", "max", "min", "default",
                           "default_request", "max_limit_request_ratio", "hard", "used"})

_INT_TYPES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


class FieldError(ValueError):
    """A value that does not fit its field. `path` is the JSON path (`spec.replicas`)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def describe_value(value: Any) -> str:
    """How a wrong value is shown in an error: strings quoted, containers by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'"{shown}"'
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def format_timestamp(ts: Timestamp) -> str:
    """RFC 3339 in UTC, with a fraction only when there is one (as Kubernetes prints)."""
    base = dt.datetime.fromtimestamp(ts.seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if ts.nanos:
        frac = f"{ts.nanos:09d}".rstrip("0")
        return f"{base}.{frac}Z"
    return base + "Z"


def format_micro_time(ts: Timestamp) -> str:
    """Kubernetes' MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    base = dt.datetime.fromtimestamp(ts.seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ts.nanos // 1000:06d}Z"


def parse_timestamp(value: Any, path: str) -> Timestamp:
    ts = Timestamp()
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        ts.FromDatetime(when.astimezone(dt.UTC))
        return ts
    if isinstance(value, str):
        try:
            ts.FromJsonString(value)
            return ts
        except ValueError:
            pass
    raise FieldError(path, f"expected an RFC 3339 time such as 2024-01-02T03:04:05Z, got {describe_value(value)}")


def from_data(data: Any, message_type: type[M], path: str = "", *, unknown: list[str] | None = None) -> M:
    """Build a `message_type` from parsed YAML/JSON data, strictly.

    `unknown`: a list to collect the paths of unknown fields in, which are then skipped instead
    of refused (Kubernetes' fieldValidation=Warn/Ignore over HTTP); every other problem still raises.
    """
    msg = message_type()
    _fill(msg, data, path, unknown)
    return msg


def _fill(msg: Message, data: Any, path: str, unknown: list[str] | None = None) -> None:
    desc = msg.DESCRIPTOR
    if not isinstance(data, Mapping):
        raise FieldError(path, f"expected an object, got {describe_value(data)}")
    by_json = desc.fields_by_camelcase_name
    for key, value in data.items():
        if not isinstance(key, str):
            raise FieldError(path, f"field names must be strings, got {describe_value(key)}")
        # Field names are ASCII; upb's lookup raises SystemError for some other keys (U+10000).
        field = by_json.get(key) if key.isascii() else None
        here = _join(path, key)
        if (field is None or field.json_name != key) and unknown is not None:
            unknown.append(here)
            continue
        if field is None or field.json_name != key:
            hint = difflib.get_close_matches(key, [f.json_name for f in desc.fields], n=1)
            suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
            raise FieldError(here, f"unknown field{suffix}")
        if value is None:
            continue  # explicit null: leave unset, as Kubernetes does
        _set_field(msg, field, value, here, unknown)


def _set_field(msg: Message, field: Any, value: Any, path: str, unknown: list[str] | None = None) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        _set_map(msg, field, value, path, unknown)
    elif field.is_repeated:
        if not isinstance(value, list):
            raise FieldError(path, f"expected a list, got {describe_value(value)}")
        target = getattr(msg, field.name)
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if item is None:
                raise FieldError(item_path, "expected a value, got null")
            if field.message_type is not None:
                _fill_message_value(target.add(), item, item_path, unknown)
            else:
                target.append(_scalar(field, item, item_path))
    elif field.message_type is not None:
        target = getattr(msg, field.name)
        target.SetInParent()  # `emptyDir: {}` is present, as in Kubernetes
        _fill_message_value(target, value, path, unknown)
    elif field.full_name in JSON_TEXT_FIELDS:
        if not isinstance(value, dict):
            raise FieldError(path, f"expected an object, got {describe_value(value)}")
        setattr(msg, field.name, json.dumps(value, sort_keys=True, separators=(",", ":")))
    else:
        setattr(msg, field.name, _scalar(field, value, path))


def _fill_message_value(target: Message, value: Any, path: str, unknown: list[str] | None = None) -> None:
    name = target.DESCRIPTOR.full_name
    if name == INT_OR_STRING:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise FieldError(path, f"expected an integer or a string, got {describe_value(value)}")
        if isinstance(value, int):
            if not -(2**31) <= value < 2**31:
                raise FieldError(path, f"integer {value} is out of range")
            target.int_val = value  # type: ignore[attr-defined]
        else:
            target.str_val = value  # type: ignore[attr-defined]
    elif name == TIMESTAMP:
        target.CopyFrom(parse_timestamp(value, path))
    else:
        _fill(target, value, path, unknown)


def _set_map(msg: Message, field: Any, value: Any, path: str, unknown: list[str] | None = None) -> None:
    if not isinstance(value, Mapping):
        raise FieldError(path, f"expected an object (a map), got {describe_value(value)}")
    entry: Any = field.message_type  # map fields always have an entry type
    value_field = entry.fields_by_name["value"]
    target = getattr(msg, field.name)
    for key, item in value.items():
        here = _join(path, str(key))
        if not isinstance(key, str):
            raise FieldError(here, f"map keys must be strings, got {describe_value(key)}")
        if value_field.message_type is not None:
            _fill_message_value(target[key], item, here, unknown)
            continue
        if field.name in QUANTITY_MAPS and isinstance(item, int | float) and not isinstance(item, bool):
            item = _number_text(item)
        if item is None:
            item = ""
        target[key] = _scalar(value_field, item, here)


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _scalar(field: Any, value: Any, path: str) -> Any:
    ftype = field.type
    if ftype == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            hint = " (quote it in YAML)" if isinstance(value, int | float | bool) else ""
            raise FieldError(path, f"expected a string, got {describe_value(value)}{hint}")
        return value
    if ftype in _INT_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise FieldError(path, f"expected an integer, got {describe_value(value)}")
        low, high = _INT_TYPES[ftype]
        if not low <= value <= high:
            raise FieldError(path, f"integer {value} is out of range")
        return value
    if ftype == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise FieldError(path, f"expected true or false, got {describe_value(value)}")
        return value
    if ftype in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(path, f"expected a number, got {describe_value(value)}")
        return float(value)
    if ftype == FieldDescriptor.TYPE_BYTES:
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise FieldError(path, f"expected a base64 string, got {describe_value(value)}")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FieldError(path, f"illegal base64 data: {exc}") from exc
    raise FieldError(path, f"unsupported field type {ftype}")


def to_data(msg: Message) -> dict[str, Any]:
    """The manifest form of a message: JSON names, set fields (and ALWAYS_SHOWN ones), in field order."""
    out: dict[str, Any] = {}
    always = _always_shown(msg.DESCRIPTOR)
    listed = msg.ListFields()
    if always:
        present = {field.number for field, _ in listed}
        listed = sorted([*listed, *((f, f.default_value) for f in always if f.number not in present)],
                        key=lambda pair: pair[0].number)
    for field, value in listed:
        out[field.json_name] = _value_to_data(field, value)
    return out


@functools.cache
def _always_shown(descriptor: Any) -> tuple[Any, ...]:
    return tuple(f for f in descriptor.fields if f.full_name in ALWAYS_SHOWN)


def _value_to_data(field: Any, value: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        if value_field.message_type is not None:
            return {k: _message_to_data(v) for k, v in sorted(value.items())}
        if value_field.type == FieldDescriptor.TYPE_BYTES:
            return {k: base64.b64encode(v).decode() for k, v in sorted(value.items())}
        return dict(sorted(value.items()))
    if field.is_repeated:
        if field.message_type is not None:
            return [_message_to_data(v) for v in value]
        return list(value)
    if field.message_type is not None:
        if field.full_name in MICRO_TIME_FIELDS:
            return format_micro_time(value)
        return _message_to_data(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if field.full_name in JSON_TEXT_FIELDS:
        return json.loads(value) if value else {}
    return value


def _message_to_data(msg: Message) -> Any:
    name = msg.DESCRIPTOR.full_name
    if name == INT_OR_STRING:
        which = msg.WhichOneof("value")
        return getattr(msg, which) if which else 0
    if name == TIMESTAMP:
        return format_timestamp(msg)  # type: ignore[arg-type]
    return to_data(msg)
