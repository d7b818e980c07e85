"""Manifest loading: the good corpus round-trips, every bad manifest gets its exact error.

Each file in corpus/bad/ starts with `# error: <text>`; loading it must fail with a problem
line that names the file and contains that text, and must return no objects at all.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from skiff import manifests
from skiff.convert import to_data
from skiffpb.api.v1 import types_pb2 as t

CORPUS = Path(__file__).parent / "corpus"
BAD = sorted((CORPUS / "bad").glob("*.yaml"))
GOOD = sorted((CORPUS / "good").glob("*.yaml"))
SEED = Path(__file__).resolve().parents[3] / "examples" / "seed"


def expected_error(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} must start with '# error: '"
    return first.removeprefix("# error: ")


def test_corpus_is_big_enough() -> None:
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_manifest_gets_its_error(path: Path) -> None:
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load([str(path)])
    problems = info.value.problems
    want = expected_error(path)
    assert any(want in line for line in problems), f"wanted {want!r} in {problems}"
    assert all(line.startswith(str(path)) for line in problems)


def documents(text: str) -> list[object]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_manifest_round_trips(path: Path) -> None:
    loaded = manifests.load([str(path)])
    assert loaded
    again = manifests.load_text(manifests.dump_yaml([item.obj for item in loaded]), "again.yaml")
    assert [to_data(a.obj) for a in again] == [to_data(item.obj) for item in loaded]


def test_seed_loads_as_typed_objects_and_prints_back_equivalent() -> None:
    loaded = manifests.load([str(SEED)])
    assert [(item.kind.kind, item.name) for item in loaded] == [
        ("Deployment", "nginx-demo"), ("Service", "nginx-service")]
    deployment, service = loaded[0].obj, loaded[1].obj
    assert isinstance(deployment, t.Deployment) and isinstance(service, t.Service)
    assert deployment.spec.replicas == 2
    assert deployment.spec.template.spec.containers[0].ports[0].container_port == 80
    assert service.spec.ports[0].target_port.int_val == 80
    original = documents((SEED / "nginx.yaml").read_text())
    printed = documents(manifests.dump_yaml([deployment, service]))
    assert printed == original


def test_one_bad_document_loads_nothing(tmp_path: Path) -> None:
    good = (SEED / "nginx.yaml").read_text()
    (tmp_path / "a.yaml").write_text(good)
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n")
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load([str(tmp_path)])
    assert info.value.problems == [f'{tmp_path / "b.yaml"}: document 1 (Service x): spec.portz: unknown field '
                                   '(did you mean "ports"?)']


def test_stdin_directory_and_missing_file(tmp_path: Path) -> None:
    text = (SEED / "nginx.yaml").read_text()
    assert len(manifests.load(["-"], stdin=io.StringIO(text))) == 2
    with pytest.raises(manifests.ManifestError, match=r"nope\.yaml: no such file or directory"):
        manifests.load([str(tmp_path / "nope.yaml")])
    with pytest.raises(manifests.ManifestError, match="no manifests"):
        manifests.load([str(tmp_path)])


def test_every_problem_is_reported_in_one_pass() -> None:
    text = """apiVersion: v1
kind: Pod
metadata: {name: Bad_Name}
spec:
  restartPolicy: Sometimes
  containers: [{name: app}]
"""
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load_text(text, "pod.yaml")
    joined = "\n".join(info.value.problems)
    for part in ("metadata.name", "spec.containers[0].image: required", "spec.restartPolicy"):
        assert part in joined


WORKLOAD_EXAMPLES = {"job": ["Job"], "cronjob": ["CronJob"], "daemonset": ["DaemonSet"],
                     "statefulset": ["Service", "StatefulSet"],
                     "storage": ["PersistentVolumeClaim", "Pod", "Service", "StatefulSet"],
                     "init-containers": ["Pod"]}


@pytest.mark.parametrize(("directory", "kinds_in_it"), sorted(WORKLOAD_EXAMPLES.items()),
                         ids=sorted(WORKLOAD_EXAMPLES))
def test_workload_examples_load(directory: str, kinds_in_it: list[str]) -> None:
    loaded = manifests.load([str(SEED.parent / directory)])
    assert [item.kind.kind for item in loaded] == kinds_in_it
