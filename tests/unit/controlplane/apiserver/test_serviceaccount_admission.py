"""ServiceAccount admission's token volume: the pure table (opt-outs, existing mounts, init
containers), then the registry (in process) adding it on create when it issues tokens."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest

from controlplane.apiserver.admission import api_access_volume, mount_service_account_token
from controlplane.apiserver.inprocess import DEFAULT_OPTIONS, InProcessApi
from skiff import errors
from skiff.serviceaccounts import TOKEN_MOUNT_PATH
from skiffpb.api.v1 import types_pb2 as t

VOLUME = "kube-api-access-abcde"


def pod(*, automount: bool | None = None, init: bool = False, containers: int = 1) -> t.Pod:
    out = t.Pod(api_version="v1", kind="Pod", metadata=t.ObjectMeta(name="p", namespace="default"))
    for i in range(containers):
        out.spec.containers.add(name=f"c{i}", image="img")
    if init:
        out.spec.init_containers.add(name="init", image="img")
    if automount is not None:
        out.spec.automount_service_account_token = automount
    return out


def account(automount: bool | None) -> t.ServiceAccount:
    sa = t.ServiceAccount(metadata=t.ObjectMeta(name="default", namespace="default"))
    if automount is not None:
        sa.automount_service_account_token = automount
    return sa


def mounted_at(path: str, name: str = "mine") -> Callable[[t.Pod], None]:
    def change(p: t.Pod) -> None:
        p.spec.containers[0].volume_mounts.add(name=name, mount_path=path)
        p.spec.volumes.add(name=name).empty_dir.SetInParent()
    return change


def existing_volume(p: t.Pod) -> None:
    p.spec.volumes.append(api_access_volume("kube-api-access-zzzzz"))


def nothing(p: t.Pod) -> None:
    pass


# (pod, its ServiceAccount, a change to the pod first) -> the token volume's name ("" none),
# and which containers (init first) mount it at the token path.
@pytest.mark.parametrize(("the_pod", "sa", "change", "volume", "mounts"), [
    (pod(), None, nothing, VOLUME, ["c0"]),
    (pod(), account(None), nothing, VOLUME, ["c0"]),
    (pod(init=True, containers=2), account(None), nothing, VOLUME, ["init", "c0", "c1"]),
    (pod(automount=False), account(True), nothing, "", []),
    (pod(), account(False), nothing, "", []),
    (pod(automount=True), account(False), nothing, VOLUME, ["c0"]),
    (pod(), account(None), mounted_at(TOKEN_MOUNT_PATH), "", []),
    (pod(containers=2), account(None), mounted_at(TOKEN_MOUNT_PATH), VOLUME, ["c1"]),
    (pod(), account(None), mounted_at("/data"), VOLUME, ["c0"]),
    (pod(), account(None), existing_volume, "kube-api-access-zzzzz", ["c0"]),
], ids=["no-account-yet", "default", "init-and-all-containers", "pod-opts-out", "account-opts-out",
        "pod-overrides-account", "own-mount-at-path", "own-mount-in-one-container", "other-mount", "volume-reused"])
def test_mount_service_account_token(the_pod: t.Pod, sa: t.ServiceAccount | None, change: Callable[[t.Pod], None],
                                     volume: str, mounts: list[str]) -> None:
    change(the_pod)
    before = [v.name for v in the_pod.spec.volumes]
    mount_service_account_token(the_pod, sa, "abcde")
    added = [v.name for v in the_pod.spec.volumes if v.name not in before]
    assert added == ([volume] if volume and volume not in before else [])
    got = [c.name for c in (*the_pod.spec.init_containers, *the_pod.spec.containers)
           for m in c.volume_mounts if m.mount_path == TOKEN_MOUNT_PATH and m.name == volume]
    assert got == mounts
    for c in (*the_pod.spec.init_containers, *the_pod.spec.containers):
        for m in c.volume_mounts:
            if m.name == volume:
                assert m.read_only


def test_the_volume_is_upstreams() -> None:
    v = api_access_volume(VOLUME)
    token, ca, ns = v.projected.sources
    assert v.projected.default_mode == 0o644
    assert (token.service_account_token.path, token.service_account_token.expiration_seconds,
            token.service_account_token.audience) == ("token", 3607, "")
    assert token.service_account_token.HasField("expiration_seconds")
    assert (ca.config_map.name, [(i.key, i.path) for i in ca.config_map.items]) == (
        "kube-root-ca.crt", [("ca.crt", "ca.crt")])
    assert [(i.path, i.field_ref.api_version, i.field_ref.field_path) for i in ns.downward_api.items] == [
        ("namespace", "v1", "metadata.namespace")]


@pytest.mark.parametrize("enabled", [True, False], ids=["issues-tokens", "no-token-keys"])
async def test_registry_adds_the_volume_on_create(enabled: bool) -> None:
    api = InProcessApi(options=dataclasses.replace(DEFAULT_OPTIONS, mount_service_account_tokens=enabled))
    await api.start()
    try:
        created = await api.create(pod())
        volumes = [v.name for v in created.spec.volumes]
        if not enabled:
            assert volumes == [] and not created.spec.containers[0].volume_mounts
            return
        [name] = volumes
        assert name.startswith("kube-api-access-") and len(name) == len("kube-api-access-") + 5
        [m] = created.spec.containers[0].volume_mounts
        assert (m.name, m.mount_path, m.read_only) == (name, TOKEN_MOUNT_PATH, True)
        # The account's opt-out counts; the pod's own setting wins over it.
        sa = account(False)
        sa.metadata.name = "quiet"
        await api.create(sa)
        quiet = pod()
        quiet.metadata.name, quiet.spec.service_account_name = "q", "quiet"
        assert not (await api.create(quiet)).spec.volumes
        loud = pod(automount=True)
        loud.metadata.name, loud.spec.service_account_name = "l", "quiet"
        assert len((await api.create(loud)).spec.volumes) == 1
    finally:
        await api.close()


@pytest.mark.parametrize(("seconds", "problem"), [
    (599, "may not specify a duration less than 10 minutes"),
    (2 ** 32 + 1, "may not specify a duration larger than 2^32 seconds"),
], ids=["too-short", "too-long"])
async def test_token_projection_bounds(seconds: int, problem: str) -> None:
    api = InProcessApi()
    await api.start()
    try:
        p = pod()
        v = p.spec.volumes.add(name="tok")
        v.projected.sources.add().service_account_token.CopyFrom(
            t.ServiceAccountTokenProjection(path="token", expiration_seconds=seconds))
        with pytest.raises(errors.InvalidError, match=re.escape(problem)):
            await api.create(p)
        v.projected.sources[0].service_account_token.ClearField("expiration_seconds")
        created = await api.create(p)
        assert created.spec.volumes[0].projected.sources[0].service_account_token.expiration_seconds == 3600
    finally:
        await api.close()
