"""Fixtures shared by unit tests: `api`, the real api-server registry in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane.apiserver.inprocess import InProcessApi


@pytest.fixture
async def api() -> AsyncIterator[InProcessApi]:
    async with InProcessApi() as server:
        yield server
