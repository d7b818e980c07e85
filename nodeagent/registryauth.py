"""Registry credentials for an image pull, from the pod's imagePullSecrets. Pure.

`pull_auth(pod, image, source)` looks through the pod's `imagePullSecrets` in order, reads each
Secret of type `kubernetes.io/dockerconfigjson` (`{"auths": {registry: {...}}}`) or
`kubernetes.io/dockercfg` (`{registry: {...}}`), and returns the CRI AuthConfig of the first
entry whose registry is the image's. What must hold:
- the image's registry is its first path component when that has a "." or ":" or is
  "localhost", else docker.io; docker.io matches the entries `docker.io`,
  `index.docker.io`, `registry-1.docker.io` and `https://index.docker.io/v1/`;
- an entry's key may carry a scheme and a path (`https://r.example.com/v2/`); only the host
  (and port) is compared;
- `auth` (base64 "user:password") or `username`/`password` give the credentials; a missing or
  malformed Secret is skipped, never an error (the pull then runs without credentials, as the
  kubelet does).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from nodeagent.envs import ConfigSource
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def image_registry(image: str) -> str:
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _host(key: str) -> str:
    key = key.split("://", 1)[-1]
    return key.split("/", 1)[0]


def _same_registry(key: str, registry: str) -> bool:
    host = _host(key)
    if registry in DOCKER_HUB:
        return host in DOCKER_HUB
    return host == registry


def _entries(secret: t.Secret) -> dict[str, Any]:
    try:
        if secret.type == "kubernetes.io/dockerconfigjson":
            data = json.loads(secret.data.get(".dockerconfigjson", b"{}"))
            auths = data.get("auths", {}) if isinstance(data, dict) else {}
        elif secret.type == "kubernetes.io/dockercfg":
            auths = json.loads(secret.data.get(".dockercfg", b"{}"))
        else:
            return {}
    except ValueError:
        return {}
    return auths if isinstance(auths, dict) else {}


def _auth_config(key: str, entry: Any) -> cri.AuthConfig | None:
    if not isinstance(entry, dict):
        return None
    username, password = str(entry.get("username", "")), str(entry.get("password", ""))
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
    if not username and not entry.get("identitytoken") and not entry.get("registrytoken"):
        return None
    return cri.AuthConfig(username=username, password=password, server_address=_host(key),
                          identity_token=str(entry.get("identitytoken", "")),
                          registry_token=str(entry.get("registrytoken", "")))


def pull_auth(pod: t.Pod, image: str, source: ConfigSource) -> cri.AuthConfig | None:
    registry = image_registry(image)
    for ref in pod.spec.image_pull_secrets:
        secret = source.secret(pod.metadata.namespace, ref.name)
        if secret is None:
            continue
        for key, entry in _entries(secret).items():
            if _same_registry(key, registry):
                auth = _auth_config(key, entry)
                if auth is not None:
                    return auth
    return None
