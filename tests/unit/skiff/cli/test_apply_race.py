"""`skiff apply` losing races: created or changed by someone else meanwhile re-reads and tries again,
a bounded number of times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from google.protobuf.message import Message

from controlplane.apiserver.inprocess import InProcessApi
from skiff import errors, kinds
from skiff.cli.apply import apply_one
from skiff.retry import CONFLICT_ATTEMPTS
from skiffpb.api.v1 import types_pb2 as t

M = TypeVar("M", bound=Message)


def lease(name: str, holder: str) -> t.Lease:
    out = t.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
    out.metadata.name, out.metadata.namespace = name, "default"
    out.spec.holder_identity = holder
    return out


class RacingApi(InProcessApi):
    """An api-server where someone else writes the object just before each of our first `races` writes."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races
        self.writes = 0

    async def _race(self, obj: Message) -> None:
        if self.races <= 0:
            return
        self.races -= 1
        meta = obj.metadata  # type: ignore[attr-defined]
        try:
            theirs = await super().get(t.Lease, meta.name, meta.namespace)
        except errors.NotFoundError:
            await super().create(lease(meta.name, "theirs"))
            return
        theirs.spec.holder_identity = f"theirs-{self.races}"
        await super().update(theirs)

    async def create(self, obj: M, *, namespace: str = "") -> M:
        self.writes += 1
        await self._race(obj)
        return await super().create(obj, namespace=namespace)

    async def update(self, obj: M) -> M:
        self.writes += 1
        await self._race(obj)
        return await super().update(obj)


@dataclass(frozen=True)
class Case:
    id: str
    existing: bool
    races: int
    outcome: str | type[errors.SkiffError]
    writes: int


CASES = [
    Case("created", False, 0, "created", 1),
    Case("configured", True, 0, "configured", 1),
    Case("created-meanwhile", False, 1, "configured", 2),
    Case("changed-meanwhile", True, 2, "configured", 3),
    Case("always-changing", True, 100, errors.ConflictError, CONFLICT_ATTEMPTS),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_apply_one_retries_a_lost_race(case: Case) -> None:
    async with RacingApi(0) as api:
        await check(api, case)


async def check(api: RacingApi, case: Case) -> None:
    if case.existing:
        await api.create(lease("l", "old"))
    api.races, api.writes = case.races, 0
    kind = kinds.of_message(t.Lease())
    client: Any = api
    if isinstance(case.outcome, str):
        assert await apply_one(client, lease("l", "mine"), kind) == case.outcome
        assert (await api.get(t.Lease, "l", "default")).spec.holder_identity == "mine"
    else:
        with pytest.raises(case.outcome):
            await apply_one(client, lease("l", "mine"), kind)
    assert api.writes == case.writes
