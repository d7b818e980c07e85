"""Container logs as the CRI runtime writes them, read back for `skiff logs`.

containerd writes one line per record: `<RFC3339Nano time> <stdout|stderr> <P|F> <content>`,
where P marks a partial line (no newline follows) and F a full one. `decode_line` turns a
record back into the bytes the container wrote; `tail` keeps the last N lines; `follow` polls
the file for appended records while the container may still write.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Callable


def decode_line(line: bytes) -> bytes:
    """One CRI log record -> the container's bytes (a malformed record is passed through)."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return line if line.endswith(b"\n") else line + b"\n"
    content = parts[3] if len(parts) == 4 else b""
    return content if parts[2] == b"P" else content + b"\n"


def read(path: str, *, tail_lines: int = 0) -> tuple[bytes, int]:
    """The decoded log, or its last `tail_lines` full lines; also the offset read up to."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return b"", 0
    end = data.rfind(b"\n") + 1  # an unfinished record is left for the follower
    records = data[:end].splitlines(keepends=True)
    if tail_lines > 0:
        kept: deque[bytes] = deque(maxlen=tail_lines)
        pending = b""
        for rec in records:
            pending += decode_line(rec)
            if pending.endswith(b"\n"):
                kept.append(pending)
                pending = b""
        return b"".join(kept) + pending, end
    return b"".join(decode_line(r) for r in records), end


async def follow(path: str, offset: int, *, alive: Callable[[], bool], poll: float = 0.2) -> AsyncIterator[bytes]:
    """Yield records appended after `offset` until `alive()` is false and the file is drained."""
    buf = b""
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            buf += chunk
            end = buf.rfind(b"\n") + 1
            if end:
                yield b"".join(decode_line(r) for r in buf[:end].splitlines(keepends=True))
                buf = buf[end:]
            continue
        if not alive():
            return
        await asyncio.sleep(poll)


def exists(path: str) -> bool:
    return os.path.exists(path)
