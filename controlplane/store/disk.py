"""The store's contact with the disk: syncing files, and what happens when the disk fails.

What must hold:

- A failed fsync/fdatasync is never retried and never ignored. After a failed fsync, Linux may
  already have dropped the dirty pages and cleared the error, so a second fsync can succeed
  although the data is gone ("fsyncgate"). The member stops at once (`Fatal`), before any
  acknowledgement can leave, as etcd does (`lg.Fatal` on a WAL sync error). Restarting it
  reads what is really on disk and catches up from the others.
- A failed or short write to the journal stops the member the same way: a journal with a hole
  in it must not be acknowledged.
- Data on disk that fails its checksum is never used: `CorruptData` refuses to start the
  member, naming the file and the offset.

Syncing goes through the small `FileSync` protocol so tests can inject a failing disk into the
real code paths (the journal, the snapshot writer, the term/vote file).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn, Protocol

log = logging.getLogger("skiff.store.disk")

EXIT_STORAGE_FAILURE = 74  # EX_IOERR (sysexits.h): a supervisor sees a disk failure, not a crash


class FileSync(Protocol):
    """Makes a file's written data durable; raises OSError when the disk could not."""

    def fsync(self, fd: int) -> None: ...

    def fdatasync(self, fd: int) -> None: ...


class OsFileSync:
    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)


OS_SYNC: FileSync = OsFileSync()

Fatal = Callable[[str], NoReturn]


def stop_member(message: str) -> NoReturn:
    """Stop this process now: no cleanup, no flushing, no acknowledgement leaves after this.

    os._exit, not SystemExit: the caller is usually pysyncobj's tick thread, whose loop catches
    every exception and tries again — the one thing that must not happen after a failed fsync.
    """
    log.critical("%s", message)
    try:
        sys.stderr.write(f"skiff-store: fatal: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_STORAGE_FAILURE)


class CorruptData(Exception):
    """Data on disk failed its checksum or could not be parsed: the member must not start."""

    def __init__(self, path: str, offset: int, detail: str, remedy: str) -> None:
        super().__init__(f"{path}: {detail} at offset {offset}: refusing to start. {remedy}")
        self.path = path
        self.offset = offset
        self.detail = detail


def is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def fsync_dir(path: str, *, sync: FileSync = OS_SYNC) -> None:
    """fsync the directory holding `path`, so a rename or a new file in it survives a crash."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        sync.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes, *, sync: FileSync = OS_SYNC) -> None:
    """Replace `path` with `data` so that after a crash it is either the old or the new file.

    Raises OSError when the disk fails; callers that must not go on after that catch it and
    stop the member.
    """
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        sync.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path, sync=sync)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """os.pwrite until everything is written (a short write is not an error by itself)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view = view[n:]
        offset += n
