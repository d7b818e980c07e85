"""Kubernetes' protobuf encoding of request bodies (`application/vnd.kubernetes.protobuf`), read
into the JSON form every other body has, so one conversion (skiff.convert) follows.

Typed clients send it: kubectl's typed commands (`kubectl create deployment|configmap|secret|job|
cronjob|namespace|serviceaccount|clusterrole|rolebinding|...|token`), `kubectl run` and `expose`,
helm (its release Secrets), `kubectl drain` (Evictions), schedulers (Bindings), DeleteOptions,
`kubectl auth can-i` (accessreview.py).

The encoding: the 4 bytes `k8s\\0`, then a runtime.Unknown {1 typeMeta {1 apiVersion, 2 kind},
2 raw, 3 contentEncoding, 4 contentType}; `raw` is the object in the field numbers of
k8s.io/api's generated.proto. Nothing here lists a field by hand: the wire schema (for every
message of the groups Skiff serves and the apimachinery types they use, each field's number, JSON
name and type, as of k8s.io/api v0.35.0 — facts of the wire format) is the table
`k8s_wire_schema.json`, made by `python -m controlplane.apiserver.rest.k8sproto DIR...` from
checkouts of kubernetes/api and kubernetes/apimachinery at a tag (field numbers never change
across versions, so a newer table only adds fields); which fields a kind has is Skiff's own
definition (skiffpb, `proto/skiffpb/api/v1/types.proto`; json_names are Kubernetes' names).

What must hold:
- every kind in skiff.kinds (and the subresource bodies: Binding, Eviction, TokenRequest, Scale,
  DeleteOptions, the access reviews) can be read;
- a field Kubernetes defines and Skiff's message has is read as the same client would have sent
  it in JSON (bytes as base64, timestamps as RFC 3339, MicroTime with 6 digits, a zero metav1.Time
  as absent, Quantity and IntOrString as their values, RawExtension and FieldsV1 as JSON);
- a field Skiff's message lacks is skipped when it holds its zero value (typed encoders send every
  unset non-pointer field so); otherwise it is kept, so that the body's `fieldValidation` decides
  about it as for JSON (Strict: 422 naming the field) — never silently dropped;
- a field number Kubernetes' schema does not hold either is an error naming the message and the
  number (`UnknownField`, answered 415 with the JSON workaround) unless it is zero.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from skiff import kinds

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
SCHEMA_FILE = Path(__file__).with_name("k8s_wire_schema.json")

# Wire types.
VARINT, I64, LEN, I32 = 0, 1, 2, 5


class UnknownField(ValueError):
    """A field the schema does not hold: the body cannot be read without losing it."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("protobuf varint too long")


def records(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one message, in order: a varint's value,
    the bytes of a length-delimited field; fixed-size fields as their raw bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated protobuf field")
            yield number, wire, data[pos:pos + length]
            pos += length
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > len(data):
                raise ValueError("truncated protobuf field")
            yield number, wire, data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of one protobuf message (the last one of each number wins)."""
    return {n: v for n, w, v in records(data) if w == LEN and isinstance(v, bytes)}


def unwrap(body: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw object) of a `k8s\\0` + runtime.Unknown body."""
    if not body.startswith(MAGIC):
        raise ValueError("a Kubernetes protobuf body starts with k8s\\0")
    unknown = fields(body[len(MAGIC):])
    type_meta = fields(unknown.get(1, b""))
    return type_meta.get(1, b"").decode(), type_meta.get(2, b"").decode(), unknown.get(2, b"")


# ---------------------------------------------------------------- the wire schema

@dataclass(frozen=True)
class WireField:
    """One field of a Kubernetes message: its JSON name, its type (a scalar's name or a message's
    full name), whether repeated, and a map's value type (a map's `type` is "map")."""

    name: str
    type: str
    repeated: bool = False
    value: str = ""


Schemas = dict[str, dict[int, WireField]]  # message full name -> field number -> field
SCALARS = frozenset({"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"})
_PACKAGE = re.compile(r"^package\s+([\w.]+);", re.M)
_MESSAGE = re.compile(r"^message\s+(\w+)\s*\{(.*?)^\}", re.M | re.S)
_FIELD = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*\w+\s*,\s*([.\w]+)\s*>|[.\w]+)\s+(\w+)\s*=\s*(\d+)\s*;", re.M)


def parse_proto(text: str) -> Schemas:
    """PURE: the messages of one generated.proto (proto2, no nesting, as go-to-protobuf writes
    them), types resolved to full names."""
    package = _PACKAGE.search(text)
    if package is None:
        raise ValueError("a generated.proto names its package")
    pkg = package.group(1)

    def resolve(name: str) -> str:
        if name in SCALARS:
            return name
        return name[1:] if name.startswith(".") else f"{pkg}.{name}"

    out: Schemas = {}
    for message in _MESSAGE.finditer(text):
        table: dict[int, WireField] = {}
        for label, kind, map_value, name, number in _FIELD.findall(message.group(2)):
            if map_value:
                table[int(number)] = WireField(name, "map", False, resolve(map_value))
            else:
                table[int(number)] = WireField(name, resolve(kind), label == "repeated")
        out[f"{pkg}.{message.group(1)}"] = table
    return out


@functools.cache
def schemas() -> Schemas:
    """Every message of the wire schema table."""
    return schemas_from_table(json.loads(SCHEMA_FILE.read_text()))


def schemas_from_table(table: dict[str, dict[str, list[Any]]]) -> Schemas:
    """PURE: the table's rows ({message: {number: [name, type, repeated?, map value?]}}) as WireFields."""
    return {message: {int(number): WireField(*row) for number, row in fields.items()}
            for message, fields in table.items()}


def table_text(schemas: Schemas) -> str:
    """PURE: the table file's text: one message per line, in name order, so a refresh diffs by message."""
    lines = []
    for message, fields in sorted(schemas.items()):
        row = {str(n): [f.name, f.type, *([f.repeated, f.value] if f.value else [True] if f.repeated else [])]
               for n, f in sorted(fields.items())}
        lines.append(f"  {json.dumps(message)}: {json.dumps(row, separators=(', ', ': '))}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    """Remake the table from the generated.proto files under the given directories: those of the
    groups Skiff serves (k8s.io/api's <group>/<version>/) and of apimachinery's pkg/apis/meta/v1,
    pkg/api/resource, pkg/util/intstr, pkg/runtime and pkg/runtime/schema."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m controlplane.apiserver.rest.k8sproto", description=main.__doc__)
    p.add_argument("dirs", nargs="+", type=Path, help="directories of a kubernetes/api and kubernetes/apimachinery "
                   "checkout at one tag")
    args = p.parse_args(argv)
    found: Schemas = {}
    for d in args.dirs:
        for path in sorted(d.rglob("generated.proto")):
            found.update(parse_proto(path.read_text()))
    SCHEMA_FILE.write_text(table_text(found))
    print(f"wrote {SCHEMA_FILE}: {len(found)} messages")
    return 0


META_V1 = "k8s.io.apimachinery.pkg.apis.meta.v1"


def message_name(api_version: str, kind: str) -> str:
    """The full name of a kind's message: `apps/v1` Deployment -> k8s.io.api.apps.v1.Deployment
    (the package is the group's first label; the core group's is `core`)."""
    if kind == "DeleteOptions":  # sent with the version of the object deleted
        return f"{META_V1}.DeleteOptions"
    group, _, version = api_version.rpartition("/")
    return f"k8s.io.api.{group.split('.')[0] or 'core'}.{version}.{kind}"


# Messages JSON shows as one value (the custom marshallers of apimachinery's types).
TIME, MICROTIME = f"{META_V1}.Time", f"{META_V1}.MicroTime"
QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
INTSTR = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
RAW = "k8s.io.apimachinery.pkg.runtime.RawExtension"
FIELDS_V1 = f"{META_V1}.FieldsV1"
DURATION = f"{META_V1}.Duration"
_ZERO_TIME = -62135596800  # Go's zero time.Time: metav1.Time's "unset"


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(value: bytes, *, micro: bool) -> str | None:
    seconds = nanos = 0
    for n, _, v in records(value):
        if n == 1 and isinstance(v, int):
            seconds = _signed(v)
        elif n == 2 and isinstance(v, int):
            nanos = v
    if seconds <= _ZERO_TIME or (seconds, nanos) == (0, 0):  # an empty message: the zero Time
        return None
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=nanos // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _duration(nanos: int) -> str:
    """Go's time.Duration.String() for whole units as metav1.Duration marshals it (1h2m3s, 0s)."""
    if nanos == 0:
        return "0s"
    sign, nanos = ("-" if nanos < 0 else ""), abs(nanos)
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = rest / 1e9
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{sign}{text}{seconds:g}s"


def _special(kind: str, value: bytes) -> Any:
    if kind in (TIME, MICROTIME):
        return _time(value, micro=kind == MICROTIME)
    if kind == QUANTITY:
        return fields(value).get(1, b"").decode()
    if kind == INTSTR:
        parts = {n: v for n, _, v in records(value)}
        if parts.get(1) == 1:
            s = parts.get(3, b"")
            return s.decode() if isinstance(s, bytes) else ""
        i = parts.get(2, 0)
        return _signed(i) if isinstance(i, int) else 0
    if kind in (RAW, FIELDS_V1):
        raw = fields(value).get(1, b"")
        return json.loads(raw) if raw.strip() else None
    if kind == DURATION:
        nanos = next((v for n, _, v in records(value) if n == 1 and isinstance(v, int)), 0)
        return _duration(_signed(nanos))
    if kind.endswith(".ExtraValue"):  # authentication's []string, sent as {1 items}
        return [v.decode() for n, _, v in records(value) if n == 1 and isinstance(v, bytes)]
    raise KeyError(kind)


SPECIAL = frozenset({TIME, MICROTIME, QUANTITY, INTSTR, RAW, FIELDS_V1, DURATION})


def _is_special(kind: str) -> bool:
    return kind in SPECIAL or kind.endswith(".ExtraValue")


def _scalar(kind: str, wire: int, value: int | bytes, where: str) -> Any:
    if kind == "string" and isinstance(value, bytes):
        return value.decode()
    if kind == "bytes" and isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if kind in ("int32", "int64") and isinstance(value, int):
        return _signed(value)  # a negative int32 is sent sign-extended to 64 bits, as an int64
    if kind in ("uint32", "uint64") and isinstance(value, int):
        return value
    if kind == "bool" and isinstance(value, int):
        return bool(value)
    if kind == "double" and isinstance(value, bytes) and wire == I64:
        return struct.unpack("<d", value)[0]
    if kind == "float" and isinstance(value, bytes) and wire == I32:
        return struct.unpack("<f", value)[0]
    if isinstance(value, bytes) and _is_special(kind):
        return _special(kind, value)
    if isinstance(value, bytes) and kind in schemas():
        return decode_message(value, kind)
    raise ValueError(f"{where}: wire type {wire} does not fit a {kind}")


def is_zero(wire: int, value: int | bytes) -> bool:
    """Whether a field holds its zero value: 0, empty, or a message whose every field is zero."""
    if wire == VARINT:
        return value == 0
    if not isinstance(value, bytes):
        return value == 0
    if wire != LEN:
        return not any(value)
    if not value:
        return True
    try:
        return all(is_zero(w, v) for _, w, v in records(value))
    except ValueError:
        return False


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _own_fields(own: Descriptor | None) -> dict[str, FieldDescriptor] | None:
    return None if own is None else {f.json_name: f for f in own.fields}


def inlined(name: str, own: Descriptor) -> frozenset[int]:
    """The fields of Kubernetes message `name` that are Go embedded structs, which JSON inlines and
    protobuf nests (ConfigMapKeySelector's LocalObjectReference, Volume's VolumeSource, Probe's
    ProbeHandler): Skiff's message has no field of that name but has fields of its message."""
    return _inlined(name, own.full_name, own)


@functools.cache
def _inlined(name: str, _key: str, own: Descriptor) -> frozenset[int]:
    mine = {f.json_name for f in own.fields}
    out = set()
    for number, field in schemas()[name].items():
        sub = schemas().get(field.type)
        if field.name not in mine and sub is not None and not _is_special(field.type) \
                and {f.name for f in sub.values()} & mine:
            out.add(number)
    return frozenset(out)


def decode_message(data: bytes, name: str, own: Descriptor | None = None) -> dict[str, Any]:
    """The JSON form of Kubernetes message `name`; `own` is Skiff's message of the same shape
    (None: take every field Kubernetes defines)."""
    schema = schemas()[name]
    mine = _own_fields(own)
    out: dict[str, Any] = {}
    for number, wire, value in records(data):
        field = schema.get(number)
        if field is None:
            if is_zero(wire, value):
                continue  # a field newer than the wire schema table, unset: nothing lost
            raise UnknownField(f"field {number} of {_short(name)} is not in Kubernetes' v1.35 schema")
        skiff_field = None if mine is None else mine.get(field.name)
        if (mine is not None and skiff_field is None and is_zero(wire, value)
                and not (own is not None and number in inlined(name, own))):
            continue  # Skiff has no such field and it is unset (typed encoders send every field)
        where = f"{_short(name)}.{field.name}"
        if own is not None and number in inlined(name, own) and isinstance(value, bytes):
            out.update(decode_message(value, field.type, own))
            continue
        if field.type == "map":  # each entry is a message {1 key, 2 value}
            if not isinstance(value, bytes):
                raise ValueError(f"{where}: a map entry must be length-delimited")
            entry = {n: (w, v) for n, w, v in records(value)}
            key_raw = entry.get(1, (LEN, b""))[1]
            key = key_raw.decode() if isinstance(key_raw, bytes) else str(key_raw)
            w, v = entry.get(2, (LEN, b""))
            out.setdefault(field.name, {})[key] = _scalar(field.value, w, v, where)
            continue
        sub = skiff_field.message_type if skiff_field is not None else None
        if field.repeated and wire == LEN and field.type in SCALARS - {"string", "bytes"} and isinstance(value, bytes):
            packed = [_scalar(field.type, VARINT, v, where) for _, _, v in _packed(value)]
            out.setdefault(field.name, []).extend(packed)
            continue
        if isinstance(value, bytes) and field.type in schemas() and not _is_special(field.type):
            decoded: Any = decode_message(value, field.type, sub)
        else:
            decoded = _scalar(field.type, wire, value, where)
        if field.repeated:
            out.setdefault(field.name, []).append(decoded)
        elif decoded is not None:
            out[field.name] = decoded
    return out


def _packed(data: bytes) -> Iterator[tuple[int, int, int]]:
    pos = 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        yield 0, VARINT, value


def own_message(api_version: str, kind: str) -> Descriptor | None:
    """Skiff's message for a kind it serves (None for request-only bodies: Eviction, DeleteOptions,
    TokenRequest, Scale, the access reviews, which are read whole)."""
    served = kinds.by_kind(kind)
    if served is None or served.api_version != api_version:
        return None
    return cast(Descriptor, served.message.DESCRIPTOR)


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf request body, `kind` and `apiVersion` set."""
    api_version, kind, raw = unwrap(body)
    name = message_name(api_version, kind)
    if not kind or name not in schemas():
        raise UnknownField(f"Skiff does not read {kind or 'this kind'} ({api_version}) in protobuf")
    return {"apiVersion": api_version, "kind": kind, **decode_message(raw, name, own_message(api_version, kind))}


if __name__ == "__main__":
    raise SystemExit(main())
