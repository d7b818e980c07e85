from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.controlplane.harness import Cluster


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    yield c
    await c.stop()
