"""Time as an injected dependency, so controllers, leader election and event recording are tested
without sleeping.

`now()` is wall-clock seconds since the epoch (what API timestamps hold). Only comparisons of
times read from the same clock are meaningful; remote timestamps are change markers, never
compared with our own clock (clocks of different hosts skew).
"""

from __future__ import annotations

import time
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp


class Clock(Protocol):
    def now(self) -> float: ...


class RealClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def to_seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def stamp(ts: Timestamp, seconds: float) -> None:
    """Set `ts` to `seconds` (whole microseconds, like Kubernetes' MicroTime)."""
    ts.FromMicroseconds(round(seconds * 1e6))


def micro_timestamp(seconds: float) -> Timestamp:
    """`seconds` rounded to whole microseconds (Kubernetes' MicroTime): statuses, conditions, leases."""
    ts = Timestamp()
    stamp(ts, seconds)
    return ts


def seconds_timestamp(seconds: float) -> Timestamp:
    """`seconds` truncated to whole seconds, as Kubernetes stores object metadata times
    (creationTimestamp, deletionTimestamp)."""
    return Timestamp(seconds=int(seconds))
