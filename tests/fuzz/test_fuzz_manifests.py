"""Fuzzing the manifest loader (skiff/manifests.py, skiff/convert.py, skiff/validation.py): random
text, random YAML documents, and random API objects written out and read back. Whatever comes in,
the loader returns objects or raises ManifestError naming the problems; it never crashes with
anything else and never hangs. An object written with `to_data` reads back as the same object."""

from __future__ import annotations

import json
from typing import Any

import yaml
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from skiff import kinds, manifests
from skiff.convert import to_data
from tests.fuzz.strategies import STRINGS, api_object

JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), STRINGS),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(STRINGS, inner, max_size=3)), max_leaves=12)


def load(text: str, *, check: bool = True) -> list[manifests.Loaded]:
    try:
        return manifests.load_text(text, "fuzz.yaml", check=check)
    except manifests.ManifestError as exc:
        assert exc.problems and all(p.startswith("fuzz.yaml: ") for p in exc.problems), exc.problems
        return []


@given(st.text(max_size=300))
def test_any_text(text: str) -> None:
    load(text)


@given(st.sampled_from(["apiVersion: v1\nkind: Pod\n", "apiVersion: apps/v1\nkind: Deployment\n", "---\n",
                        "kind: List\napiVersion: v1\nitems:\n", "{", "- ", "&a [*a]\n", "!!python/object:os.system\n",
                        "metadata: {name: x}\n", "spec:\n  containers:\n  - name: c\n"]).flatmap(
    lambda head: st.text(max_size=100).map(lambda tail: head + tail)))
def test_yaml_like_text(text: str) -> None:
    load(text)


@given(st.sampled_from([k for k in kinds.KINDS if k is not kinds.BINDING]), JSON, JSON)
def test_random_documents_of_every_kind(kind: kinds.Kind, metadata: Any, spec: Any) -> None:
    doc = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata, "spec": spec}
    load(yaml.safe_dump(doc))
    load(json.dumps(doc))


@given(api_object())
def test_objects_read_back_as_written(obj: Message) -> None:
    kind = kinds.of_message(obj)
    data = to_data(obj)
    data["apiVersion"], data["kind"] = kind.api_version, kind.kind
    loaded = load(yaml.safe_dump(data, allow_unicode=True), check=False)
    assert len(loaded) == 1
    expected = type(obj)()
    expected.CopyFrom(obj)
    expected.api_version, expected.kind = kind.api_version, kind.kind  # type: ignore[attr-defined]
    assert loaded[0].obj == expected
    load(yaml.safe_dump(data))  # validated: objects or problems, nothing else
