"""Container logs as the CRI runtime writes them: streamed back for `logs`, and rotated.

containerd writes one line per record: `<RFC3339Nano time> <stdout|stderr> <P|F> <content>`,
where P marks a partial line (no newline follows) and F a full one. `decode_line` turns a
record back into the bytes the container wrote.

Reading (`stream`, `tail`): memory is bounded by a chunk, never by the file. `stream` sends the
file in chunks from the start (or from where its last `tail_lines` lines begin), and when
following, waits for more; when the file is rotated under it (renamed, and the runtime reopened
the path), it drains the old file and goes on with the new one, so a follower loses nothing to
a rotation. An unfinished record at the end is held back until its newline arrives.

Rotation (the kubelet's container log manager): `plan_rotation` is pure. Once the live file
reaches `max_size` bytes it is renamed to `<path>.<UTC time>`, and the runtime is asked to
reopen the path (ReopenContainerLog, `nodeagent/agent.py`); rotated files beyond `max_files - 1`
(the live file counts as one) are removed, oldest first. Rotated files are not compressed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 64 * 1024
ROTATED_FORMAT = "%Y%m%d-%H%M%S"  # the kubelet's suffix of a rotated log


def decode_line(line: bytes) -> bytes:
    """One CRI log record -> the container's bytes (a malformed record is passed through)."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return line if line.endswith(b"\n") else line + b"\n"
    content = parts[3] if len(parts) == 4 else b""
    return content if parts[2] == b"P" else content + b"\n"


def _ends_line(record: bytes) -> bool:
    """Whether a record ends a line of the container's output (an F record, or a malformed one)."""
    return decode_line(record).endswith(b"\n")


def _tail_start(f: BinaryIO, lines: int) -> int:
    """The offset where the last `lines` (>= 1) full lines of the open file begin; reads backwards
    in chunks until it has seen them, so memory is bounded by those lines, not the file."""
    end = os.fstat(f.fileno()).st_size
    pos, window = end, b""
    while True:
        start_pos = max(0, pos - CHUNK)
        f.seek(start_pos)
        window = f.read(pos - start_pos) + window
        pos = start_pos
        complete = window[:window.rfind(b"\n") + 1]  # an unfinished record is not a line yet
        records = complete.split(b"\n")[:-1]
        if pos > 0:
            records = records[1:]  # the first may be cut by the window
        ends = [i for i, r in enumerate(records) if _ends_line(r)]
        if len(ends) > lines or pos == 0:
            break
    if len(ends) <= lines:
        return pos
    # Start just after the record ending the line before the last `lines` lines.
    cut = ends[-lines - 1]
    offset = pos + (window.find(b"\n") + 1 if pos > 0 else 0)
    for r in records[:cut + 1]:
        offset += len(r) + 1
    return offset


def _decode(records: bytes) -> bytes:
    return b"".join(decode_line(r) for r in records.splitlines(keepends=True))


def tail(path: str, lines: int) -> bytes:
    """The container's last `lines` lines (for termination messages); b"" when there is no file."""
    try:
        with open(path, "rb") as f:
            if lines > 0:
                f.seek(_tail_start(f, lines))
            data = f.read()
    except FileNotFoundError:
        return b""
    return _decode(data[:data.rfind(b"\n") + 1])


async def stream(path: str, *, tail_lines: int = 0, follow: bool = False,
                 still_running: Callable[[], Awaitable[bool]] | None = None,
                 poll: float = 0.2) -> AsyncIterator[bytes]:
    """The decoded log in chunks (see the module docstring); following ends once the file is
    drained and `still_running()` says the container stopped."""
    try:
        f: BinaryIO = open(path, "rb")
    except FileNotFoundError:
        return
    try:
        if tail_lines > 0:
            f.seek(_tail_start(f, tail_lines))
        buf = b""
        while True:
            data = f.read(CHUNK)
            if data:
                buf += data
                end = buf.rfind(b"\n") + 1
                if end:
                    yield _decode(buf[:end])
                    buf = buf[end:]
                continue
            renewed = _reopened(f, path)
            if renewed is not None:  # rotated: the old file is drained, go on with the new one
                f.close()
                f = renewed
                continue
            if not follow or still_running is None or not await still_running():
                # One last look: the container may have written before it stopped.
                data = f.read()
                buf += data
                end = buf.rfind(b"\n") + 1
                if end:
                    yield _decode(buf[:end])
                return
            await asyncio.sleep(poll)
    finally:
        f.close()


def _reopened(f: BinaryIO, path: str) -> BinaryIO | None:
    """The file now at `path` when it is not the open one (a rotation), else None."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return None
    mine = os.fstat(f.fileno())
    if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
        return None
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def exists(path: str) -> bool:
    return os.path.exists(path)


# ---------------------------------------------------------------------- rotation


@dataclass(frozen=True)
class Rotation:
    """What to do with one container's log: remove these rotated files, then rename the live one."""

    remove: tuple[str, ...] = ()
    rename_to: str = ""  # "": the live file stays

    @property
    def empty(self) -> bool:
        return not self.remove and not self.rename_to


def rotated_name(path: str, now: float) -> str:
    return f"{path}.{time.strftime(ROTATED_FORMAT, time.gmtime(now))}"


def plan_rotation(path: str, size: int, rotated: list[str], *, max_size: int, max_files: int,
                  now: float) -> Rotation:
    """Rotate when the live file reached `max_size`; keep at most `max_files` files in all.

    `rotated` are the existing rotated files of `path` (any order). Without a rotation, only the
    excess rotated files (beyond `max_files - 1`) are removed; with one, room is made for it.
    """
    old = sorted(rotated)  # the time suffix sorts oldest first
    if size < max_size:
        keep = max(max_files - 1, 0)
        return Rotation(remove=tuple(old[:max(len(old) - keep, 0)]))
    target = rotated_name(path, now)
    keep = max(max_files - 2, 0)
    doomed = old[:max(len(old) - keep, 0)]
    if target in old and target not in doomed:  # a second rotation within the same second
        return Rotation(remove=tuple(doomed))
    return Rotation(remove=tuple(doomed), rename_to=target)


def rotated_files(path: str) -> list[str]:
    """The rotated files of the live log `path` (`<path>.<time>`), as found in its directory."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in names if n.startswith(base + ".") and n != base]
