"""Quantities and selectors: the parsing tables."""

from __future__ import annotations

import pytest

from skiff import labels, quantity
from skiffpb.api.v1 import types_pb2 as t


@pytest.mark.parametrize(
    ("text", "millis"),
    [("250m", 250), ("0.5", 500), ("2", 2000), ("1.5", 1500), ("100u", 1), ("1e3", 1_000_000), ("0", 0)],
)
def test_cpu_millis(text: str, millis: int) -> None:
    assert quantity.cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "count"),
    [("64Mi", 64 * 2**20), ("1G", 10**9), ("1Gi", 2**30), ("128974848", 128974848), ("129e6", 129_000_000),
     ("1k", 1000), ("1Ki", 1024), ("0.5Gi", 2**29)],
)
def test_memory_bytes(text: str, count: int) -> None:
    assert quantity.to_bytes(text) == count


@pytest.mark.parametrize("text", ["", "64 MB", "1.2.3", "Mi", "1Q", " 1", "1e99", "--1"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(quantity.QuantityError):
        quantity.parse(text)


def test_formatting() -> None:
    assert quantity.format_millis(1500) == "1500m" and quantity.format_millis(2000) == "2"
    assert quantity.format_bytes(64 * 2**20) == "64Mi" and quantity.format_bytes(1000) == "1000"


LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("env in (prod,staging)", True),
        ("env notin (prod)", False),
        ("env", True),
        ("!env", False),
        ("!missing", True),
        ("app=web, env in (prod), !canary", True),
    ],
)
def test_selector_matching(selector: str, matches: bool) -> None:
    assert labels.matches(labels.parse(selector), LABELS) is matches


@pytest.mark.parametrize("selector", ["app=(", "=web", "app in prod", ",,"])
def test_bad_selectors(selector: str) -> None:
    with pytest.raises(labels.SelectorError):
        labels.parse(selector)


def test_label_selector_message() -> None:
    sel = t.LabelSelector(match_labels={"app": "web"})
    sel.match_expressions.add(key="env", operator="NotIn", values=["dev"])
    assert labels.matches(labels.from_label_selector(sel), LABELS)
    assert not labels.matches(labels.from_label_selector(sel), {"app": "web", "env": "dev"})


def test_field_selectors() -> None:
    pod = t.Pod(metadata=t.ObjectMeta(name="a", namespace="ns"), spec=t.PodSpec(node_name="n1"))
    assert labels.fields_match(labels.parse_fields("spec.nodeName=n1,metadata.name=a"), pod)
    assert not labels.fields_match(labels.parse_fields("spec.nodeName!=n1"), pod)
    assert labels.field_value(pod, "status.podIP") == ""
    with pytest.raises(labels.SelectorError, match="not supported"):
        labels.parse_fields("spec.foo=x", allowed=frozenset({"spec.nodeName"}))
