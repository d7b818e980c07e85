"""Hypothesis strategies for Skiff's API objects: any message of any kind, built from the protobuf
descriptors (so a field added to the API is fuzzed without a change here), with values that are
mostly plausible (names that pass validation, small numbers, known enum-like words) and sometimes
hostile (control characters, quotes, huge and negative numbers, invalid UTF-8-free oddities)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from skiff import kinds, manifests

NAMES = st.sampled_from(["web", "a", "db-0", "x.y", "default", "kube-system", "n1", "app", "c"])
WORDS = st.sampled_from(["", "TCP", "UDP", "Always", "Never", "ClusterIP", "NodePort", "RuntimeDefault",
                         "Unconfined", "Localhost", "In", "Exists", "100m", "64Mi", "1", "10%", "/", "/healthz",
                         "True", "False", "Ready", "Running", "apps/v1", "v1", "RollingUpdate", "Recreate",
                         "*/5 * * * *", "10.96.0.10", "None", "Memory", "privileged", "restricted", "baseline"])
HOSTILE = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
STRINGS = st.one_of(WORDS, NAMES, HOSTILE, st.sampled_from(['"', "\n", "\r\n", "a\x00b", "x" * 300, "é", "../.."]))
INT32 = st.one_of(st.integers(-3, 100), st.sampled_from([0, 80, 8080, 30080, 65535, 65536, 2**31 - 1, -2**31]))
INT64 = st.one_of(INT32, st.sampled_from([2**63 - 1, -2**63, 2**40]))
UINT = st.one_of(st.integers(0, 100), st.sampled_from([2**32 - 1]))

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: STRINGS,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=40),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT,
    FieldDescriptor.TYPE_UINT64: UINT,
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=False, width=32),
    FieldDescriptor.TYPE_FLOAT: st.floats(allow_nan=False, width=32),
}


@functools.cache
def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message(field.message_type, depth - 1)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    return _SCALARS[field.type]


def _set(draw: st.DrawFn, msg: Message, f: FieldDescriptor, depth: int) -> None:
    """Give field `f` of `msg` a random value (maps and lists get a few entries)."""
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        key_f, val_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
        items = draw(st.dictionaries(_value(key_f, depth), _value(val_f, depth), max_size=2))
        target = getattr(msg, f.name)
        for k, v in items.items():
            if val_f.type == FieldDescriptor.TYPE_MESSAGE:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif f.is_repeated:
        values = draw(st.lists(_value(f, depth), max_size=2 if depth > 1 else 1))
        target = getattr(msg, f.name)
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            for v in values:
                target.add().CopyFrom(v)
        else:
            target.extend(values)
    elif f.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(msg, f.name).CopyFrom(draw(_value(f, depth)))
    elif f.full_name == "google.protobuf.Timestamp.seconds":
        setattr(msg, f.name, draw(st.integers(0, 2**33)))
    else:
        setattr(msg, f.name, draw(_value(f, depth)))


@functools.cache
def _fields(desc: Descriptor) -> list[FieldDescriptor]:
    return [f for f in desc.fields if desc.full_name != "google.protobuf.Timestamp" or f.name == "seconds"]


@st.composite
def _fill(draw: st.DrawFn, desc: Descriptor, depth: int) -> Message:
    msg = message_factory.GetMessageClass(desc)()
    if depth <= 0:
        return msg
    fields = _fields(desc)
    chosen = draw(st.lists(st.sampled_from(fields), max_size=min(len(fields), 4), unique=True)) if fields else []
    for f in chosen:
        _set(draw, msg, f, depth)
    return msg


@functools.cache
def message(desc: Descriptor, depth: int = 3) -> st.SearchStrategy[Message]:
    if desc.full_name == "skiff.api.v1.IntOrString":  # always one of the two, as in Kubernetes' JSON
        cls = message_factory.GetMessageClass(desc)
        return st.one_of(INT32.map(lambda v: cls(int_val=v)), STRINGS.map(lambda v: cls(str_val=v)))
    return _fill(desc, depth)


@st.composite
def api_object(draw: st.DrawFn, kind: kinds.Kind | None = None) -> Message:
    """An object of `kind` (any kind when None) with, most of the time, a valid name and namespace."""
    kind = kind or draw(st.sampled_from([k for k in kinds.KINDS if k is not kinds.BINDING]))
    obj = draw(message(kind.message.DESCRIPTOR, 4))
    meta = obj.metadata  # type: ignore[attr-defined]
    if draw(st.integers(0, 9)) < 8:
        meta.name = draw(NAMES)
        meta.ClearField("namespace")
        if kind.namespaced and draw(st.booleans()):
            meta.namespace = "default"
        meta.ClearField("resource_version")
        meta.ClearField("uid")
    if draw(st.booleans()):
        obj.ClearField("api_version")  # type: ignore[attr-defined]
        obj.ClearField("kind")  # type: ignore[attr-defined]
    return obj


GOOD_CORPUS = Path(__file__).resolve().parents[1] / "unit" / "skiff" / "corpus" / "good"


@functools.lru_cache(maxsize=1)
def good_objects() -> tuple[Message, ...]:
    """Every object of the good manifest corpus (valid, of every kind)."""
    return tuple(item.obj for item in manifests.load([str(GOOD_CORPUS)]) if item.kind is not kinds.BINDING)


@st.composite
def mutated_object(draw: st.DrawFn) -> Message:
    """A valid object from the corpus with up to three fields, anywhere in it, given random values:
    most get past validation, so the deeper parts (admission, allocation, storage) are reached."""
    obj = type(base := draw(st.sampled_from(good_objects())))()
    obj.CopyFrom(base)
    for _ in range(draw(st.integers(0, 3))):
        msg: Message = obj
        for _ in range(8):
            f = draw(st.sampled_from(_fields(msg.DESCRIPTOR)))
            nested = f.type == FieldDescriptor.TYPE_MESSAGE and not f.message_type.GetOptions().map_entry
            if nested and not f.is_repeated and msg.HasField(f.name) and draw(st.booleans()):
                msg = getattr(msg, f.name)
                continue
            if nested and f.is_repeated and len(getattr(msg, f.name)) and draw(st.booleans()):
                items = getattr(msg, f.name)
                msg = items[draw(st.integers(0, len(items) - 1))]
                continue
            msg.ClearField(f.name)
            _set(draw, msg, f, 2)
            break
    return obj
