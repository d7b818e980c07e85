"""`skiff-store-repair` / `python -m controlplane.store.repair`: cut a damaged journal so a member can start.

    skiff-store-repair --data-dir /var/lib/skiff/s1

A member whose journal fails its checksum in the middle refuses to start (journal.py) rather
than silently dropping entries it acknowledged. This command is the explicit way on: it keeps
a copy of the whole journal (`raft.journal.damaged-at-OFFSET`), cuts it at the first damaged
record and says how many entries remain. What must hold:

- Never while the member runs (it takes the data dir's lock, as the member does).
- Never silently: it prints what it cut; with nothing damaged it changes nothing.
- What it cuts is gone from this member only: started again in a cluster, the member gets
  the entries from the leader. Alone (a 1-member store) they are lost; and a member that
  voted for those entries no longer has them, so repair one member at a time and only while
  the others are healthy.
"""

from __future__ import annotations

import argparse
import os
import sys

from controlplane.store.__main__ import lock_data_dir
from controlplane.store.disk import CorruptData
from controlplane.store.journal import repair_journal


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="skiff-store-repair",
                                description="Cut a store member's damaged Raft journal at its first bad record.")
    p.add_argument("--data-dir", required=True, help="the member's data dir (the member must be stopped)")
    args = p.parse_args(argv)
    path = os.path.join(args.data_dir, "raft.journal")
    if not os.path.exists(path):
        print(f"no journal at {path}", file=sys.stderr)
        return 2
    lock_data_dir(args.data_dir)
    try:
        report = repair_journal(path)
    except CorruptData as e:
        print(str(e), file=sys.stderr)
        return 1
    if report.offset < 0:
        print(f"{path}: no damage found ({report.kept} entries); nothing changed")
        return 0
    print(f"{path}: cut at offset {report.offset}: {report.dropped_bytes} bytes removed, {report.kept} entries kept "
          f"(copy of the whole journal: {report.backup}). Start the member; it catches up from the leader.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
