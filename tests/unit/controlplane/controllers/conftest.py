"""Every controller test runs over informers shaped as the controller manager shapes them
(`INFORMER_TRANSFORMS`), so a transform that dropped something a controller reads or writes
back fails the controller's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane.controllers.manager import INFORMER_TRANSFORMS
from tests.unit.controlplane.harness import Cluster


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster(transforms=INFORMER_TRANSFORMS)
    yield c
    await c.stop()
