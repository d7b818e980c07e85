"""Where a running Skiff process spends its time: py-spy samples, summarised per function.

    python -m bench.profile --pid PID [--seconds 20] [--top 25] [--raw out.txt]
    python -m bench.profile --split out.txt     # a node agent process's time per activity
    python -m bench.profile --split out.txt --groups store   # a store member's (py-spy --gil)

Runs `py-spy record --format raw` (collapsed stacks: "frame;frame;frame COUNT" per line, the
leaf last) against the process, then prints, per function, the share of samples in which it
is the leaf (self) and in which it is anywhere on the stack (total). The scale and store
figures in docs/scale.md were found this way. `summarize` is pure (tested); the py-spy run
needs root (ptrace) and `pip install py-spy` (a dev dependency).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass(frozen=True)
class Row:
    function: str  # "func (path/file.py)"
    self_share: float
    total_share: float


def frame_name(frame: str) -> str:
    """"sync (nodeagent/worker.py:120)" -> "sync (nodeagent/worker.py)": lines merged per function;
    site-packages paths shortened to the package."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    path = m.group("file")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3" in path:
        path = "stdlib/" + path.rsplit("/", 1)[-1]
    return f"{m.group('func')} ({path})"


def stacks(lines: Iterable[str]) -> Iterator[tuple[list[str], int]]:
    """(frame names, root first; sample count) per collapsed-stack line; unreadable lines skipped."""
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [frame_name(f) for f in stack.split(";") if f]
        if frames:
            yield frames, count


def summarize(lines: Iterable[str], *, top: int = 25) -> tuple[int, list[Row]]:
    """(samples, the `top` functions by self share, then total share)."""
    self_count: Counter[str] = Counter()
    total_count: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks(lines):
        samples += count
        self_count[frames[-1]] += count
        for name in set(frames):
            total_count[name] += count
    if not samples:
        return 0, []
    ranked = sorted(total_count, key=lambda f: (-self_count[f], -total_count[f], f))[:top]
    return samples, [Row(f, self_count[f] / samples, total_count[f] / samples) for f in ranked]


# What a node agent process's time goes to (docs/scale.md, the hollow nodes' split): each
# sample counts in the first group one of whose functions is on its stack, so the shares are
# disjoint; gRPC frames count in the group of the agent function that made the call. The
# fake runtime's server side comes first (it is called by the others).
AGENT_SPLIT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fake CRI server", ("(nodeagent/fakecri.py)",)),
    ("Lease renewals", ("renew_lease (nodeagent/agent.py)", "_lease_loop (nodeagent/agent.py)")),
    ("node status", ("_node_status_loop (nodeagent/agent.py)", "write_node_status (nodeagent/agent.py)",
                     "register (nodeagent/agent.py)")),
    ("pod status writes", ("write_status (nodeagent/worker.py)",)),
    ("pod workers (CRI calls, plans)", ("(nodeagent/worker.py)",)),
    ("relist (CRI polling)", ("_relist_loop (nodeagent/agent.py)", "relist_once (nodeagent/agent.py)")),
    ("runtime status checks", ("check_runtime (nodeagent/agent.py)",)),
    ("usage stats sampling", ("_stats_loop (nodeagent/agent.py)", "(nodeagent/stats.py)")),
    ("informers (watch events)", ("(skiff/informer.py)",)),
)


# What a store member's GIL time goes to (docs/store.md, "Where a put and a linearizable read go"),
# from `py-spy record --gil` on the member. Same rule as AGENT_SPLIT: first group on the stack
# wins. The event loop comes last: a sample no other group claims, with the loop's `Runner.run`
# on its stack, is time in C or Cython under the loop (grpc.aio's per-call machinery and C core,
# uvloop, asyncio's C tasks and futures), where py-spy sees no Python frame.
STORE_SPLIT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("housekeeping (every 0.25 s)", ("Store._housekeeping (controlplane/store/server.py)",)),
    ("journal (append, CRC, fdatasync)", ("(controlplane/store/journal.py)", "(controlplane/store/disk.py)")),
    ("MVCC apply and watch publishing", ("(controlplane/store/mvcc.py)", "(controlplane/store/watch.py)",
                                         "RaftNode._apply ", "Store._on_applied ", "Store._after_apply ")),
    ("peer transport (pickle, deflate, Fernet, sockets)", (
        "(pysyncobj/tcp_connection.py)", "(pysyncobj/pickle.py)", "(pysyncobj/transport.py)", "_PeerZlib.",
        "_Transport.")),
    ("Raft bookkeeping (pysyncobj's tick and poll, ReadIndex)", (
        "(pysyncobj/syncobj.py)", "(pysyncobj/poller.py)", "(pysyncobj/serializer.py)", "_Raft.")),
    ("our handlers, pbconv, proposal and read batching", (
        "(controlplane/store/server.py)", "(controlplane/store/pbconv.py)", "RaftNode.", "_ReadBatch.")),
    ("grpc.aio's per-call asyncio helpers", (
        "tasks.py)", "coroutines.py)", "futures.py)", "events.py)", "inspect.py)", "weakref.py)",
        "_weakrefset.py)", "<frozen abc>)")),
    ("C under the event loop (grpc.aio, uvloop)", ("Runner.run (",)),
)
SPLITS = {"agent": AGENT_SPLIT, "store": STORE_SPLIT}


def split(lines: Iterable[str], groups: Iterable[tuple[str, tuple[str, ...]]] = AGENT_SPLIT) -> dict[str, float]:
    """Share of the samples per group (see AGENT_SPLIT), the rest as "other"; {} without samples.
    A group's pattern matches a frame name (`frame_name`) that ends with it or starts with it."""
    groups = list(groups)
    counts: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks(lines):
        samples += count
        label = next((name for name, patterns in groups
                      if any(f.endswith(p) or f.startswith(p) for f in frames for p in patterns)), "other")
        counts[label] += count
    if not samples:
        return {}
    return {name: counts[name] / samples for name in [*(g for g, _ in groups), "other"]}


def render(samples: int, rows: list[Row]) -> str:
    out = [f"{samples} samples", f"{'self':>6} {'total':>6}  function"]
    out += [f"{r.self_share:6.1%} {r.total_share:6.1%}  {r.function}" for r in rows]
    return "\n".join(out)


def record(pid: int, seconds: float, out: Path, *, rate: int = 100) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
                    "--format", "raw", "--output", str(out), "--nonblocking"], check=True,
                   capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--raw", type=Path, default=None, help="keep py-spy's collapsed stacks here")
    p.add_argument("--split", type=Path, default=None, metavar="RAW",
                   help="no recording: print the split (--groups) of collapsed stacks in RAW")
    p.add_argument("--groups", choices=sorted(SPLITS), default="agent",
                   help="the split: a node agent's (AGENT_SPLIT) or a store member's (STORE_SPLIT)")
    args = p.parse_args(argv)
    if args.split is not None:
        for name, share in split(args.split.read_text().splitlines(), SPLITS[args.groups]).items():
            print(f"{share:6.1%}  {name}")
        return 0
    if not args.pid:
        p.error("--pid is required (unless --split)")
    out = args.raw or Path(tempfile.mkstemp(suffix=".txt", prefix="skiff-profile-")[1])
    record(args.pid, args.seconds, out)
    samples, rows = summarize(out.read_text().splitlines(), top=args.top)
    print(render(samples, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
