"""skiff.convert.ALWAYS_SHOWN: the scalar fields Kubernetes' JSON carries even when zero, checked
against the official Python client's models (which refuse an object lacking one), and shown by
to_data in field order."""

from __future__ import annotations

from typing import Any

import kubernetes.client.models as k8s_models  # type: ignore[import-untyped]
import pytest
from google.protobuf.message import Message

from skiff import convert
from skiffpb.api.v1 import types_pb2 as t


def required_by_the_python_client() -> set[str]:
    """Full names of Skiff's scalar fields whose Kubernetes counterpart the client's model requires."""
    out: set[str] = set()
    for name in dir(t):
        message = getattr(t, name)
        model = getattr(k8s_models, f"V1{name}", None)
        descriptor = getattr(message, "DESCRIPTOR", None)
        fields: dict[str, Any] | None = getattr(model, "model_fields", None)
        if fields is None or descriptor is None or not hasattr(descriptor, "fields"):
            continue
        by_json = {f.json_name: f for f in descriptor.fields}
        for attribute, info in fields.items():
            field = by_json.get(info.serialization_alias or attribute)
            if (info.is_required() and field is not None and field.message_type is None and not field.is_repeated
                    and not field.has_presence):
                out.add(field.full_name)
    return out


def test_the_table_is_what_the_python_client_requires() -> None:
    assert convert.ALWAYS_SHOWN == required_by_the_python_client()


@pytest.mark.parametrize(("msg", "expected"), [
    (t.ContainerStatus(name="web"),
     {"name": "web", "ready": False, "restartCount": 0, "image": "", "imageID": ""}),
    (t.ContainerStatus(name="web", ready=True, restart_count=2, image="i", image_id="sha"),
     {"name": "web", "ready": True, "restartCount": 2, "image": "i", "imageID": "sha"}),
    (t.ReplicaSetStatus(), {"replicas": 0}),
    (t.DeploymentStatus(), {}),  # all omitempty in Kubernetes
    (t.ContainerStateTerminated(reason="Completed"), {"exitCode": 0, "reason": "Completed"}),
], ids=["zero-status", "set-status", "replicaset-status", "deployment-status", "terminated"])
def test_to_data_shows_them(msg: Message, expected: dict[str, Any]) -> None:
    data = convert.to_data(msg)
    assert data == expected
    order = [f.json_name for f in msg.DESCRIPTOR.fields if f.json_name in data]
    assert list(data) == order
