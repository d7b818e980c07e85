"""Service-account token projection on the node: when a token is renewed (pure, an injected
clock), what the manager asks for, how it survives an agent restart, and the volume files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from controlplane.apiserver.admission import api_access_volume
from nodeagent.tokens import Token, TokenManager, needs_refresh, refresh_at, token_times
from nodeagent.volumes import VolumeManager, VolumeNotReady, plan_files, read_files
from skiff import errors
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t

HOUR, DAY = 3600, 24 * 3600
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwt_for(iat: int, exp: int, pod_uid: str = "uid-1") -> str:
    return jwt.encode({"iat": iat, "exp": exp, "sub": "system:serviceaccount:default:default",
                       "kubernetes.io": {"namespace": "default", "pod": {"name": "p", "uid": pod_uid}}},
                      KEY, algorithm="RS256")


# (issued, expires, now) -> renew? 80% of the life, or a day after issue, or expired.
@pytest.mark.parametrize(("issued", "expires", "now", "want"), [
    (0, 3607, 0, False),
    (0, 3607, 2885, False),
    (0, 3607, 2886, True),
    (0, 600, 479, False),
    (0, 600, 480, True),
    (0, 2 * DAY, DAY - 1, False),
    (0, 2 * DAY, DAY, True),
    (0, 3607, 3607, True),
    (0, 3607, 10 * DAY, True),
], ids=["fresh", "just-before-80%", "at-80%", "short-before", "short-at-80%", "long-before-a-day",
        "long-after-a-day", "expired", "long-expired"])
def test_needs_refresh(issued: int, expires: int, now: float, want: bool) -> None:
    assert needs_refresh(Token("x", issued, expires), now) is want


def test_refresh_at() -> None:
    assert refresh_at(100, 100 + HOUR) == 100 + 0.8 * HOUR
    assert refresh_at(0, 7 * DAY) == DAY


def test_token_times() -> None:
    assert token_times(jwt_for(10, 20, "u")) == (10, 20, "u")
    assert token_times("not a token") is None


@dataclass
class Issuer:
    """The api-server's side of CreateToken: a real signed JWT per call, or a failure."""

    now: list[float]
    fail: str = ""
    calls: list[tuple[str, str, tuple[str, ...], int, str, str]] = field(default_factory=list)

    async def create_token(self, namespace: str, name: str, *, audiences: Sequence[str] = (),
                           expiration_seconds: int = 0, bound_pod_name: str = "",
                           bound_pod_uid: str = "") -> api.CreateTokenResponse:
        self.calls.append((namespace, name, tuple(audiences), expiration_seconds, bound_pod_name, bound_pod_uid))
        if self.fail:
            raise errors.UnavailableError(self.fail)
        iat = int(self.now[0])
        return api.CreateTokenResponse(token=jwt_for(iat, iat + expiration_seconds, bound_pod_uid),
                                       expiration_timestamp=iat + expiration_seconds)


def pod_with_token(*, audience: str = "") -> t.Pod:
    p = t.Pod(metadata=t.ObjectMeta(name="p", namespace="default", uid="uid-1"))
    p.spec.service_account_name = "builder"
    p.spec.containers.add(name="c", image="img")
    v = api_access_volume("kube-api-access-abcde")
    v.projected.sources[0].service_account_token.audience = audience
    p.spec.volumes.append(v)
    return p


async def test_manager_requests_renews_and_keeps_a_valid_token() -> None:
    now = [1000.0]
    issuer = Issuer(now)
    tokens = TokenManager(issuer, clock=lambda: now[0])
    p = pod_with_token(audience="vault")
    projection = p.spec.volumes[0].projected.sources[0].service_account_token
    with pytest.raises(VolumeNotReady, match="not requested yet"):
        tokens.token(p, projection)
    await tokens.ensure(p)
    assert issuer.calls == [("default", "builder", ("vault",), 3607, "p", "uid-1")]
    first = tokens.token(p, projection)
    assert token_times(first) == (1000, 4607, "uid-1")
    assert tokens.next_refresh(p) == pytest.approx(1000 + 0.8 * 3607)

    now[0] = 1000 + 0.8 * 3607 - 1
    await tokens.ensure(p)
    assert len(issuer.calls) == 1, "not due yet"
    now[0] += 1
    await tokens.ensure(p)
    assert len(issuer.calls) == 2 and tokens.token(p, projection) != first

    # The api-server is away: the current token stays in use until it expires.
    renewed = tokens.token(p, projection)
    issuer.fail = "connection refused"
    now[0] += 0.8 * 3607
    await tokens.ensure(p)
    assert tokens.token(p, projection) == renewed
    calls = len(issuer.calls)
    assert tokens.next_refresh(p) == now[0] + 10, "the worker wakes for the retry, not at once"
    now[0] += 5
    await tokens.ensure(p)
    assert len(issuer.calls) == calls, "a failed request is not repeated at once"
    now[0] += 3607
    await tokens.ensure(p)
    assert len(issuer.calls) == calls + 1
    with pytest.raises(VolumeNotReady, match="connection refused"):
        tokens.token(p, projection)
    issuer.fail = ""
    now[0] += 10
    await tokens.ensure(p)
    assert tokens.token(p, projection) != renewed, "back once the api-server answers"

    tokens.forget("uid-1")
    assert tokens.tokens == {} and tokens.next_refresh(p) is None


async def test_restart_adopts_the_token_on_disk_for_this_pod() -> None:
    now = [5000.0]
    issuer = Issuer(now)
    p = pod_with_token()
    on_disk = {"kube-api-access-abcde/token": jwt_for(4000, 4000 + 3607).encode()}
    tokens = TokenManager(issuer, clock=lambda: now[0])
    await tokens.ensure(p, on_disk=lambda volume, path: on_disk.get(f"{volume}/{path}"))
    assert issuer.calls == [], "a valid token of this pod is used again"
    # ... unless it is due, or belongs to another pod of the same name.
    for stale in (jwt_for(0, 3607), jwt_for(4000, 4000 + 3607, pod_uid="uid-old")):
        tokens = TokenManager(issuer, clock=lambda: now[0])

        def old_file(volume: str, path: str, stale: str = stale) -> bytes:
            return stale.encode()

        await tokens.ensure(p, on_disk=old_file)
    assert len(issuer.calls) == 2


async def test_volume_files_and_atomic_renewal(tmp_path: Path) -> None:
    now = [1000.0]
    tokens = TokenManager(Issuer(now), clock=lambda: now[0])
    p = pod_with_token()
    volume = p.spec.volumes[0]

    class Config:
        def config_map(self, namespace: str, name: str) -> t.ConfigMap | None:
            return t.ConfigMap(data={"ca.crt": "CA"}) if name == "kube-root-ca.crt" else None

        def secret(self, namespace: str, name: str) -> t.Secret | None:
            return None

    with pytest.raises(VolumeNotReady):
        plan_files(p, volume, Config(), tokens=tokens)
    with pytest.raises(VolumeNotReady, match="requests no service-account tokens"):
        plan_files(p, volume, Config())
    await tokens.ensure(p)
    manager = VolumeManager(str(tmp_path))
    paths = manager.setup(p, Config(), tokens=tokens)
    files = read_files(paths[volume.name])
    assert files is not None and set(files) == {"token", "ca.crt", "namespace"}
    assert files["ca.crt"] == (b"CA", 0o644) and files["namespace"] == (b"default", 0o644)
    first = files["token"][0]
    assert manager.read_file("uid-1", volume.name, "token") == first
    data_before = (Path(paths[volume.name]) / "..data").resolve()

    now[0] += HOUR
    await tokens.ensure(p)
    manager.refresh(p, Config(), tokens=tokens)
    after = read_files(paths[volume.name])
    assert after is not None and after["token"][0] != first and after["ca.crt"] == (b"CA", 0o644)
    assert (Path(paths[volume.name]) / "..data").resolve() != data_before, "a new ..data, swapped in one step"
    assert (Path(paths[volume.name]) / "token").read_bytes() == after["token"][0]
