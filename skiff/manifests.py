"""Loading Kubernetes-style manifests into typed API objects, all-or-nothing.

Sources are files (several YAML documents each), directories (their *.yaml, *.yml and
*.json files, sorted) and stdin ("-"). Loading is strict: an unknown field, a wrong type,
a duplicate key, a missing or unsupported apiVersion/kind each give an error naming the
file, the document (1-based), the object and the field path. If any document is bad,
`load` raises ManifestError listing every problem and returns nothing, so a caller never
applies half of a set.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from google.protobuf.message import Message

from skiff import kinds
from skiff.convert import FieldError, from_data, to_data
from skiff.validation import validate

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """One or more documents could not be loaded; `problems` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Loaded:
    obj: Message
    kind: kinds.Kind
    source: str  # file name, or "<stdin>"
    document: int  # 1-based

    @property
    def name(self) -> str:
        meta = self.obj.metadata  # type: ignore[attr-defined]
        return str(meta.name or meta.generate_name)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in out:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f'found duplicate key "{key}"', key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)  # type: ignore[no-untyped-call]
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"invalid YAML: {problem}"


def parse_documents(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(document number, data, error) for each non-empty document of a YAML stream.

    A syntax error ends the stream (nothing after it can be trusted) and is reported
    against the document where it happened.
    """
    number = 0
    try:
        # The reader checks the first characters at once: a control character fails here already.
        loader = _StrictLoader(io.StringIO(text))
    except yaml.YAMLError as exc:
        yield 1, None, _describe_yaml_error(exc)
        return
    try:
        while True:
            try:
                if not loader.check_node():  # type: ignore[no-untyped-call]
                    return
                number += 1
                data = loader.get_data()  # type: ignore[no-untyped-call]
            except yaml.YAMLError as exc:
                yield max(number, 1), None, _describe_yaml_error(exc)
                return
            if data is None:
                number -= 1  # an empty document ("---" twice) does not count
                continue
            yield number, data, None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def object_label(data: Any) -> str:
    """`(Deployment nginx-demo)` for an error line, from whatever the document holds."""
    if not isinstance(data, dict):
        return ""
    kind = data.get("kind") if isinstance(data.get("kind"), str) else ""
    meta = data.get("metadata")
    name = meta.get("name") or meta.get("generateName") if isinstance(meta, dict) else None
    words = [w for w in (kind, name if isinstance(name, str) else "") if w]
    return f" ({' '.join(words)})" if words else ""


def decode(data: Any) -> tuple[Message, kinds.Kind]:
    """One document's data as a typed object; raises FieldError (path "" for document-level problems)."""
    if not isinstance(data, dict):
        raise FieldError("", f"expected an object with apiVersion and kind, got {type(data).__name__}")
    api_version, kind_name = data.get("apiVersion"), data.get("kind")
    if not api_version:
        raise FieldError("apiVersion", "required")
    if not kind_name:
        raise FieldError("kind", "required")
    if not isinstance(api_version, str):
        raise FieldError("apiVersion", "expected a string")
    if not isinstance(kind_name, str):
        raise FieldError("kind", "expected a string")
    kind = kinds.by_kind(kind_name)
    if kind is None or kind is kinds.BINDING:
        supported = ", ".join(k.kind for k in kinds.KINDS)
        raise FieldError("kind", f'unsupported kind "{kind_name}" (supported: {supported})')
    if api_version != kind.api_version:
        raise FieldError("apiVersion", f'{kind.kind} is served as "{kind.api_version}", not "{api_version}"')
    return from_data(data, kind.message), kind


def _expand_lists(data: Any) -> list[Any]:
    """A `kind: List` document stands for its items, as kubectl treats it."""
    if isinstance(data, dict) and data.get("kind") == "List" and data.get("apiVersion") == "v1":
        items = data.get("items") or []
        return list(items) if isinstance(items, list) else [items]
    return [data]


def load_text(text: str, source: str, *, check: bool = True) -> list[Loaded]:
    """Every object in one YAML/JSON stream; raises ManifestError listing all problems."""
    out: list[Loaded] = []
    problems: list[str] = []
    for number, data, error in parse_documents(text):
        if error is not None:
            problems.append(f"{source}: document {number}: {error}")
            continue
        for item in _expand_lists(data):
            where = f"{source}: document {number}{object_label(item)}"
            try:
                obj, kind = decode(item)
            except FieldError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if check:
                errors = validate(obj)
                problems.extend(f"{where}: {err}" for err in errors)
                if errors:
                    continue
            out.append(Loaded(obj, kind, source, number))
    if problems:
        raise ManifestError(problems)
    return out


def _files(path: Path, *, recursive: bool) -> list[Path]:
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        return sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
    return [path]


def load(sources: Iterable[str], *, stdin: IO[str] | None = None, recursive: bool = False,
         check: bool = True) -> list[Loaded]:
    """Every object from files, directories and "-" (stdin), or ManifestError and nothing."""
    out: list[Loaded] = []
    problems: list[str] = []
    for source in sources:
        if source == "-":
            texts = [("<stdin>", (stdin or sys.stdin).read())]
        else:
            path = Path(source)
            if not path.exists():
                problems.append(f"{source}: no such file or directory")
                continue
            files = _files(path, recursive=recursive)
            if path.is_dir() and not files:
                problems.append(f"{source}: no manifests (*.yaml, *.yml, *.json) in this directory")
            texts = []
            for file in files:
                try:
                    texts.append((str(file), file.read_text()))
                except (OSError, UnicodeDecodeError) as exc:
                    problems.append(f"{file}: cannot read: {exc}")
        for name, text in texts:
            try:
                loaded = load_text(text, name, check=check)
            except ManifestError as exc:
                problems.extend(exc.problems)
                continue
            if not loaded:
                problems.append(f"{name}: no objects in this file")
            out.extend(loaded)
    if problems:
        raise ManifestError(problems)
    return out


def dump_yaml(objs: Iterable[Message]) -> str:
    """Objects as a multi-document YAML stream, fields in manifest order."""
    docs = [to_data(obj) for obj in objs]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, explicit_start=len(docs) > 1)
