"""The kubeconfig entry of a Skiff cluster, merged into the user's kubeconfig the way kind does.

Location: the first path of `$KUBECONFIG` if set, else `~/.kube/config`. One cluster, one user
and one context, all named after the cluster (`skiff`), are added or replaced; everything else
in the file is kept as it was (other clusters, contexts, users, preferences). Removing takes out
exactly those three entries, and only if the cluster entry still points at the server we wrote
(another Skiff cluster may have replaced it since). The current context is set to ours on
merge, and cleared on removal only if it was ours.

The cluster entry carries the cluster CA (`certificate-authority`) and the user entry the
admin's client certificate and key (`client-certificate`, `client-key`), as paths, as kubeadm's
admin.conf does with data: `kubectl --kubeconfig` and helm then speak HTTPS as the admin.

`merge`/`remove` are pure functions of the parsed file; `write_entry`/`remove_entry` read and
write it (atomically, mode 0600).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from skiff.tls import Credentials

CONTEXT = "skiff"


def kubeconfig_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    first = env.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first) if first else Path(env.get("HOME", str(Path.home()))) / ".kube" / "config"


def _empty() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "contexts": [], "users": [],
            "current-context": ""}


def _replace(entries: list[Any], name: str, entry: dict[str, Any]) -> list[Any]:
    out = [e for e in entries if not (isinstance(e, dict) and e.get("name") == name)]
    out.append(entry)
    return out


def merge(config: Mapping[str, Any] | None, *, server: str, name: str = CONTEXT,
          namespace: str = "", credentials: Credentials | None = None) -> dict[str, Any]:
    out = copy.deepcopy(dict(config)) if config else _empty()
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    cluster: dict[str, Any] = {"server": server}
    user: dict[str, Any] = {}
    if credentials is not None:
        cluster["certificate-authority"] = credentials.ca_file
        if credentials.cert_file:
            user = {"client-certificate": credentials.cert_file, "client-key": credentials.key_file}
        if credentials.token:
            user["token"] = credentials.token
    out["clusters"] = _replace(list(out.get("clusters") or []), name, {"name": name, "cluster": cluster})
    out["users"] = _replace(list(out.get("users") or []), name, {"name": name, "user": user})
    out["contexts"] = _replace(list(out.get("contexts") or []), name, {"name": name, "context": context})
    out["current-context"] = name
    out.setdefault("apiVersion", "v1")
    out.setdefault("kind", "Config")
    return out


def remove(config: Mapping[str, Any] | None, *, server: str, name: str = CONTEXT) -> dict[str, Any] | None:
    """`config` without our entries; None when there is nothing of ours to remove."""
    if not config:
        return None
    ours = [c for c in config.get("clusters") or [] if isinstance(c, dict) and c.get("name") == name]
    if not ours or (ours[0].get("cluster") or {}).get("server") != server:
        return None
    out = copy.deepcopy(dict(config))
    for key in ("clusters", "users", "contexts"):
        out[key] = [e for e in out.get(key) or [] if not (isinstance(e, dict) and e.get("name") == name)]
    if out.get("current-context") == name:
        out["current-context"] = ""
    return out


def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text())
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: not a kubeconfig (expected a mapping)")
    return data


def _write(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.skiff-tmp")
    tmp.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def write_entry(server: str, *, name: str = CONTEXT, path: Path | None = None,
                credentials: Credentials | None = None) -> Path:
    path = path or kubeconfig_path()
    _write(path, merge(_read(path), server=server, name=name, credentials=credentials))
    return path


def remove_entry(server: str, *, name: str = CONTEXT, path: Path | None = None) -> bool:
    path = path or kubeconfig_path()
    out = remove(_read(path), server=server, name=name)
    if out is None:
        return False
    _write(path, out)
    return True
