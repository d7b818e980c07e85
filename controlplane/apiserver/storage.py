"""The api-server's storage interface: a small MVCC key-value store, etcd v3 shaped.

The api-server stores every object through `Store` and nothing else, so that the embedded
Skiff store and a real etcd cluster are two backends of one contract (as Patroni's DCS
classes are). Backends: `etcd.EtcdStore` (any etcd v3 API server, over gRPC) and
`memstore.MemoryStore` (in-process, for unit tests).

What every backend must guarantee:
- One global, strictly increasing `revision`. Every successful write transaction creates
  exactly one new revision, shared by all its operations; reads never create one.
- `KV.mod_revision` is the revision of the key's last write; `create_revision` that of its
  creation. A key that does not exist has both equal to 0.
- `txn` is atomic and linearizable: if every `Compare` holds, all ops apply at one new
  revision; otherwise nothing changes and `current` holds the state of every compared key
  read in the same transaction (so a caller can tell which comparison failed).
- `watch(prefix, start_revision=R)` yields every change of the keys under `prefix` with
  revision >= R, in revision order, each exactly once, batched by revision (never splitting
  one transaction across batches), and never skips: if R is older than the oldest revision
  still kept, it raises CompactedError before yielding anything. A backend with several
  endpoints resumes a broken watch on another one from the next revision, invisibly.
  Empty batches are progress notifications: every change under `prefix` up to `revision`
  has been delivered. They must be ordered with the events (etcd's periodic
  progress_notify is; its answers to RequestProgress are not in etcd 3.4 before 3.4.25,
  so they are not used).
- `prefix_status` is one linearizable read: the revision R it observed, how many keys are
  under the prefix at R, and whether any of them was written after a given revision. It
  lets a cache prove it holds exactly the store's state without reading the values.
- Errors are StoreError subclasses: UnavailableStoreError when the store cannot answer
  (retrying may help), CompactedError for a compacted revision, ValueTooLargeError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol


class StoreError(Exception):
    """Base of storage failures; the api-server maps them to gRPC statuses."""


class UnavailableStoreError(StoreError):
    """No store endpoint answered (or the cluster has no leader); retrying may help."""


class CompactedError(StoreError):
    """The requested revision is older than the oldest one kept."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(f"revision {requested} has been compacted (oldest kept: {compact_revision})")
        self.requested = requested
        self.compact_revision = compact_revision


class ValueTooLargeError(StoreError):
    """The store refused a request as too large."""


class StoreOverloadedError(StoreError):
    """The store's queue of proposals is full ("too many requests"); nothing was written, retry later."""


class NoSpaceError(StoreError):
    """The store's NOSPACE alarm is raised: writes fail until an operator frees space and disarms it."""


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one key. `prev_value` is None when the key did not exist before."""

    type: Literal["PUT", "DELETE"]
    key: str
    value: bytes  # b"" for DELETE
    prev_value: bytes | None
    revision: int  # the revision of this change (a DELETE's own revision)


@dataclass(frozen=True, slots=True)
class Compare:
    """Holds when `key`'s mod_revision equals `mod_revision`; 0 means "the key does not exist"."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


Op = Put | Delete


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the new revision when succeeded with writes, else the current one
    current: dict[str, KV | None] = field(default_factory=dict)  # on failure: each compared key


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KV]
    revision: int  # the revision this read observed
    more: bool  # more keys after the last one returned (limit)


@dataclass(frozen=True, slots=True)
class WatchBatch:
    events: tuple[Event, ...]
    revision: int  # every change under the prefix up to here has been delivered


@dataclass(frozen=True, slots=True)
class PrefixStatus:
    revision: int  # the revision the read observed
    count: int  # keys under the prefix at that revision
    modified: bool  # some key under the prefix was written after the given revision


class StoreWatch(Protocol):
    """An open watch: iterate for batches; close to stop."""

    def __aiter__(self) -> AsyncIterator[WatchBatch]: ...

    async def close(self) -> None: ...


class Store(Protocol):
    async def get(self, key: str) -> KV | None:
        """The key's current value (a linearizable read), or None."""
        ...

    async def range(self, prefix: str, *, revision: int = 0, start: str = "", limit: int = 0) -> RangeResult:
        """Keys under `prefix` in key order, from `start` (inclusive) when given.

        `revision` > 0 reads the snapshot at that revision (CompactedError when compacted);
        `limit` > 0 returns at most that many keys and sets `more` when there are others.
        """
        ...

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """Apply `ops` atomically iff every compare holds (see the module docstring)."""
        ...

    async def revision(self) -> int:
        """The store's current revision (linearizable)."""
        ...

    async def prefix_status(self, prefix: str, *, modified_after: int) -> PrefixStatus:
        """Count the keys under `prefix`, and tell whether one was written after `modified_after`."""
        ...

    def watch(self, prefix: str, *, start_revision: int) -> StoreWatch:
        """Watch the keys under `prefix` from `start_revision` (inclusive)."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget history before `revision`; reads and watches below it get CompactedError."""
        ...

    async def grant_lease(self, ttl: int) -> int:
        """A lease that expires after `ttl` seconds; keys put with it are deleted then."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str:
        """What this stores into, for `skiff version`: "etcd3 127.0.0.1:2379"."""
        ...


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with `prefix` (etcd's range_end).

    Keys are ASCII (object names are DNS names), so incrementing the last character works.
    """
    if not prefix:
        return "\0"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
