"""WatchBatch's framing: several encoded WatchEvents as one WatchEventBatch message, and back.

What must hold:
- `frame_batch(events)` is exactly the encoding of a WatchEventBatch holding those events in
  that order (a repeated message field is its elements' encodings, each after its tag and
  length), so the api-server frames the watch cache's shared encodings without decoding them;
- `split_batch(frame_batch(events)) == events`: a client takes each event out as its own bytes
  and decodes it into its own message. Decoding the whole batch instead would make every
  object a part of the batch's message, and an informer caching one of them would keep the
  whole batch's memory alive.
"""

from __future__ import annotations

from collections.abc import Iterable

# WatchEventBatch.events is field 1, length-delimited: tag (1 << 3) | 2.
_EVENTS_TAG = 0x0A


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame_batch(events: Iterable[bytes]) -> bytes:
    """The encoded WatchEventBatch holding `events` (encoded WatchEvents)."""
    tag = bytes((_EVENTS_TAG,))
    return b"".join(tag + _varint(len(e)) + e for e in events)


def split_batch(data: bytes) -> list[bytes]:
    """The encoded WatchEvents of an encoded WatchEventBatch, in order (ValueError if it is not one)."""
    events = []
    pos, end = 0, len(data)
    view = memoryview(data)
    while pos < end:
        if data[pos] != _EVENTS_TAG:
            raise ValueError(f"WatchEventBatch: unexpected field tag {data[pos]:#x} at byte {pos}")
        pos += 1
        size = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("WatchEventBatch: truncated length")
            b = data[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if pos + size > end:
            raise ValueError(f"WatchEventBatch: an event of {size} bytes runs past the end ({end - pos} left)")
        events.append(bytes(view[pos:pos + size]))
        pos += size
    return events
