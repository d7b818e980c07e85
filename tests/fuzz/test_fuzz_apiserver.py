"""Fuzzing every api-server verb with random objects, through the real registry (InProcessApi:
defaults, admission, validation, allocation, the watch cache, over the in-memory store).

Each example is a short sequence of calls (create, update, update_status, get, list with random
selectors and limits, delete with random grace and preconditions, bind, watch with a random
resourceVersion) on random objects of every kind, and on valid objects (the good manifest corpus) with a few fields
changed at random, which reach further (admission, allocation, storage). What must hold: every call returns or raises a
skiff.errors error other than InternalError (a refusal the user can act on), within a few
seconds; afterwards the api-server still serves a consistent List.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from controlplane.apiserver.inprocess import InProcessApi, Options
from skiff import errors, kinds
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t
from tests.fuzz.strategies import NAMES, STRINGS, api_object, mutated_object

CALL_TIMEOUT = 10.0
KINDS = [k for k in kinds.KINDS if k is not kinds.BINDING]
SELECTORS = st.one_of(st.sampled_from(["", "app=web", "app in (a,b)", "!app", "a!=b", "metadata.name=web",
                                       "spec.nodeName=n1", "status.phase=Running", "a,b", "=", "app=="]), STRINGS)
RESOURCE_VERSIONS = st.one_of(st.sampled_from(["", "0", "1", "-1", "999999999", "abc"]), STRINGS)

Call = tuple[str, Any]
CALLS: st.SearchStrategy[Call] = st.one_of(
    st.tuples(st.just("create"), api_object()),
    st.tuples(st.just("create"), mutated_object()),
    st.tuples(st.just("update"), api_object()),
    st.tuples(st.just("update"), mutated_object()),
    st.tuples(st.just("update_status"), api_object()),
    st.tuples(st.just("get"), st.tuples(st.sampled_from(KINDS), NAMES | STRINGS, st.sampled_from(["", "default"]))),
    st.tuples(st.just("list"), st.tuples(st.sampled_from(KINDS), SELECTORS, SELECTORS, st.integers(-2, 3),
                                         st.sampled_from(["", "default", "other"]), STRINGS | st.just(""))),
    st.tuples(st.just("delete"), st.tuples(st.sampled_from(KINDS), NAMES, st.none() | st.integers(-5, 40),
                                           st.sampled_from(["", "Orphan", "Background", "Foreground", "Bogus"]),
                                           st.none() | st.sampled_from(["", "x", "1"]))),
    st.tuples(st.just("bind"), st.tuples(NAMES, NAMES | STRINGS)),
    st.tuples(st.just("watch"), st.tuples(st.sampled_from(KINDS), SELECTORS, RESOURCE_VERSIONS, st.booleans())),
)


async def call(inproc: InProcessApi, verb: str, arg: Any) -> None:
    if verb == "create":
        await inproc.create(arg)
    elif verb in ("update", "update_status"):
        obj: Message = arg
        if verb == "update" or kinds.of_message(obj).kind != "Namespace":
            await getattr(inproc, verb)(obj)
    elif verb == "get":
        kind, name, ns = arg
        await inproc.get(kind.message, name, ns)
    elif verb == "list":
        kind, labels, fields, limit, ns, token = arg
        await inproc.list(kind.message, namespace=ns, label_selector=labels, field_selector=fields, limit=limit,
                          continue_token=token)
    elif verb == "delete":
        kind, name, grace, policy, rv = arg
        pre = None if rv is None else api.Preconditions(resource_version=rv)
        if kind.kind == "Namespace" and name in ("default", "kube-system"):
            return
        await inproc.delete(kind.message, name, "default", grace_period_seconds=grace, propagation_policy=policy,
                            preconditions=pre)
    elif verb == "bind":
        await inproc.bind("default", arg[0], arg[1])
    elif verb == "watch":
        kind, selector, rv, initial = arg
        stream = inproc.watch(kind.message, label_selector=selector, resource_version=rv, send_initial_events=initial,
                              allow_bookmarks=True, timeout_seconds=1)
        try:
            async with asyncio.timeout(0.2):
                async for _ in stream:
                    break
        except TimeoutError:
            pass  # nothing to tell within 0.2 s: fine
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[asyncio.AbstractEventLoop, InProcessApi]]:
    loop = asyncio.new_event_loop()
    inproc = InProcessApi(options=Options(compaction_interval=0.0, watch_cache_size=256, bookmark_interval=0.5))
    loop.run_until_complete(inproc.start())
    try:
        yield loop, inproc
    finally:
        loop.run_until_complete(inproc.close())
        loop.close()


@given(st.lists(CALLS, min_size=1, max_size=4))
def test_every_verb_with_random_objects(world: tuple[asyncio.AbstractEventLoop, InProcessApi],
                                        calls: list[Call]) -> None:
    loop, inproc = world

    async def run() -> None:
        for verb, arg in calls:
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    await call(inproc, verb, arg)
            except errors.InternalError:
                raise
            except errors.SkiffError as exc:
                assert str(exc), f"{verb}: {type(exc).__name__} without a message"
        pods = await inproc.list(t.Pod)  # still serving, and what it lists decodes
        assert all(p.metadata.name for p in pods.items)

    loop.run_until_complete(run())
