"""controlplane.apiserver.caller: one request's caller is never another's."""

import asyncio

from controlplane.apiserver import caller
from skiff import identity


def test_unauthenticated_work_is_anonymous_not_admin() -> None:
    assert caller.current().name == identity.ANONYMOUS
    assert not caller.current().in_group(identity.MASTERS)


async def test_concurrent_requests_keep_their_own_caller() -> None:
    seen: dict[str, str] = {}

    async def serve(user: identity.UserInfo) -> None:
        with caller.acting_as(user):
            await asyncio.sleep(0.01)  # the other request runs meanwhile
            seen[user.name] = caller.current().name

    await asyncio.gather(serve(identity.node_user("a")), serve(identity.node_user("b")))
    assert seen == {"system:node:a": "system:node:a", "system:node:b": "system:node:b"}
    assert caller.current().name == identity.ANONYMOUS
