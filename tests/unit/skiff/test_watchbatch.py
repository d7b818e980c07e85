"""WatchBatch's framing (skiff/watchbatch.py): exactly a WatchEventBatch's encoding, and back."""

from __future__ import annotations

import pytest

from skiff import kinds
from skiff.watchbatch import frame_batch, split_batch
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t


def event(name: str, *, pad: int = 0, type_: str = "MODIFIED") -> bytes:
    pod = t.Pod(metadata=t.ObjectMeta(name=name, namespace="default", resource_version="7"))
    pod.metadata.annotations["pad"] = "x" * pad
    return api.WatchEvent(type=type_, object=kinds.wrap(pod)).SerializeToString()


@pytest.mark.parametrize("events", [
    [],
    [event("a")],
    [event("a"), event("b", type_="ADDED"), event("c", type_="DELETED")],
    [event("short"), event("long", pad=200), event("longer", pad=20_000)],  # 1-, 2- and 3-byte lengths
    [b""],  # an empty event (the default WatchEvent) frames as a zero length
], ids=["none", "one", "three-types", "lengths-of-every-width", "empty-event"])
def test_frame_is_a_watch_event_batch_and_splits_back(events: list[bytes]) -> None:
    framed = frame_batch(events)
    decoded = api.WatchEventBatch.FromString(framed)
    assert [e.SerializeToString() for e in decoded.events] == events
    assert framed == api.WatchEventBatch(events=[api.WatchEvent.FromString(e) for e in events]).SerializeToString()
    assert split_batch(framed) == events


@pytest.mark.parametrize(("data", "error"), [
    (b"\x12\x01a", "unexpected field tag 0x12"),
    (b"\x0a", "truncated length"),
    (b"\x0a\x85", "truncated length"),
    (b"\x0a\x05abc", "runs past the end"),
], ids=["other-field", "no-length", "length-cut", "event-cut"])
def test_split_refuses_what_is_not_a_batch(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        split_batch(data)
