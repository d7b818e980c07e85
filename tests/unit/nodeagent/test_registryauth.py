"""Registry credentials from imagePullSecrets (pure)."""

from __future__ import annotations

import base64
import json

import pytest

from nodeagent.registryauth import image_registry, pull_auth
from skiffpb.api.v1 import types_pb2 as t


class Secrets:
    def __init__(self, *secrets: t.Secret) -> None:
        self.by_name = {s.metadata.name: s for s in secrets}

    def config_map(self, namespace: str, name: str) -> t.ConfigMap | None:
        return None

    def secret(self, namespace: str, name: str) -> t.Secret | None:
        return self.by_name.get(name)


def docker_secret(name: str, auths: dict[str, dict[str, str]], *, legacy: bool = False) -> t.Secret:
    if legacy:
        return t.Secret(metadata=t.ObjectMeta(name=name), type="kubernetes.io/dockercfg",
                        data={".dockercfg": json.dumps(auths).encode()})
    return t.Secret(metadata=t.ObjectMeta(name=name), type="kubernetes.io/dockerconfigjson",
                    data={".dockerconfigjson": json.dumps({"auths": auths}).encode()})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SOURCE = Secrets(
    docker_secret("hub", {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")}}),
    docker_secret("private", {"registry.example.com:5000": {"username": "u", "password": "p"}}),
    docker_secret("legacy", {"https://old.example.com/v1/": {"auth": b64("o:q")}}, legacy=True),
    t.Secret(metadata=t.ObjectMeta(name="broken"), type="kubernetes.io/dockerconfigjson",
             data={".dockerconfigjson": b"{nope"}),
    t.Secret(metadata=t.ObjectMeta(name="opaque"), type="Opaque", data={"x": b"y"}),
)


@pytest.mark.parametrize(("image", "want"), [
    ("nginx", "docker.io"), ("library/nginx:1", "docker.io"), ("skiff/web:1.0", "docker.io"),
    ("registry.example.com:5000/a/b", "registry.example.com:5000"), ("localhost/x", "localhost"),
    ("ghcr.io/o/r@sha256:00", "ghcr.io"),
], ids=["bare", "library", "user", "port", "localhost", "digest"])
def test_image_registry(image: str, want: str) -> None:
    assert image_registry(image) == want


@pytest.mark.parametrize(("secrets", "image", "want"), [
    (["hub"], "nginx:1", ("hubuser", "hubpass", "index.docker.io")),
    (["broken", "opaque", "missing", "private"], "registry.example.com:5000/app",
     ("u", "p", "registry.example.com:5000")),
    (["private"], "nginx", None),
    (["legacy"], "old.example.com/app", ("o", "q", "old.example.com")),
    ([], "nginx", None),
], ids=["docker-hub", "skips-bad-ones", "other-registry", "dockercfg", "none"])
def test_pull_auth(secrets: list[str], image: str, want: tuple[str, str, str] | None) -> None:
    pod = t.Pod(metadata=t.ObjectMeta(name="p", namespace="default"))
    pod.spec.image_pull_secrets.extend(t.LocalObjectReference(name=n) for n in secrets)
    auth = pull_auth(pod, image, SOURCE)
    assert (None if auth is None else (auth.username, auth.password, auth.server_address)) == want
