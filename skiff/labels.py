"""Label and field selectors: parsing the string forms and matching them.

String form, as kubectl takes it: `app=web,tier!=db,env in (a,b),env notin (c),release,!canary`.
A selector is a tuple of requirements that must all hold; the empty selector matches
everything (callers decide what "no selector" means for them, e.g. a Service without one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from skiffpb.api.v1 import types_pb2 as t


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match when the label is absent, as in Kubernetes.
        return not present or labels[self.key] not in self.values

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return "!" + self.key
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{next(iter(self.values))}"
        return f"{self.key} {self.op} ({','.join(sorted(self.values))})"


Selector = tuple[Requirement, ...]
EVERYTHING: Selector = ()

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<notexists>!\s*(?P<nk>[^\s,=!()]+))"
    r"|(?P<set>(?P<sk>[^\s,=!()]+)\s+(?P<sop>in|notin)\s*\((?P<svals>[^)]*)\))"
    r"|(?P<eq>(?P<ek>[^\s,=!()]+)\s*(?P<eop>==|=|!=)\s*(?P<ev>[^\s,=!()]*))"
    r"|(?P<exists>(?P<xk>[^\s,=!()]+))"
    r")\s*(?:,|$)"
)


def parse(text: str) -> Selector:
    """Parse a label selector string; raises SelectorError naming the bad part."""
    text = text.strip()
    if not text:
        return EVERYTHING
    reqs: list[Requirement] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SelectorError(f'invalid label selector "{text}": cannot parse near "{text[pos:]}"')
        if m.group("notexists"):
            reqs.append(Requirement(m.group("nk"), "!exists"))
        elif m.group("set"):
            values = frozenset(v.strip() for v in m.group("svals").split(",") if v.strip())
            reqs.append(Requirement(m.group("sk"), m.group("sop"), values))
        elif m.group("eq"):
            op = "=" if m.group("eop") in ("=", "==") else "!="
            reqs.append(Requirement(m.group("ek"), op, frozenset({m.group("ev")})))
        else:
            reqs.append(Requirement(m.group("xk"), "exists"))
        pos = m.end()
    return tuple(reqs)


def from_map(labels: Mapping[str, str]) -> Selector:
    """The selector `k1=v1,k2=v2` (a Service's or a nodeSelector's map)."""
    return tuple(Requirement(k, "=", frozenset({v})) for k, v in sorted(labels.items()))


_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}


def from_label_selector(sel: t.LabelSelector) -> Selector:
    """The selector of a LabelSelector message (matchLabels and matchExpressions, ANDed)."""
    reqs = list(from_map(sel.match_labels))
    for expr in sel.match_expressions:
        op = _OPERATORS.get(expr.operator)
        if op is None:
            raise SelectorError(f'unknown selector operator "{expr.operator}"')
        reqs.append(Requirement(expr.key, op, frozenset(expr.values)))
    return tuple(reqs)


def matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    return all(req.matches(labels) for req in selector)


def to_string(selector: Selector) -> str:
    return ",".join(str(r) for r in selector)


@dataclass(frozen=True)
class FieldRequirement:
    field: str  # "spec.nodeName", "metadata.name", ...
    value: str
    negate: bool = False


def parse_fields(text: str, *, allowed: frozenset[str] | None = None) -> tuple[FieldRequirement, ...]:
    """Parse `spec.nodeName=n1,metadata.name!=x`; `allowed` restricts the field names."""
    out: list[FieldRequirement] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise SelectorError(f'invalid field selector "{part}": expected FIELD=VALUE or FIELD!=VALUE')
        name, op, value = m.groups()
        if allowed is not None and name not in allowed:
            raise SelectorError(
                f'field selector "{name}" is not supported (supported: {", ".join(sorted(allowed))})'
            )
        out.append(FieldRequirement(name, value.strip(), negate=(op == "!=")))
    return tuple(out)


def field_value(obj: Message, path: str) -> str:
    """The value at a JSON field path (`spec.nodeName`) as a string; "" when unset or not a scalar."""
    current: object = obj
    for part in path.split("."):
        if not isinstance(current, Message):
            return ""
        field = current.DESCRIPTOR.fields_by_camelcase_name.get(part)
        if field is None or field.json_name != part:
            return ""
        current = getattr(current, field.name)
    if isinstance(current, Message):
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def fields_match(requirements: tuple[FieldRequirement, ...], obj: Message) -> bool:
    return all((field_value(obj, r.field) == r.value) != r.negate for r in requirements)
