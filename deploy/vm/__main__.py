"""`python -m deploy.vm build` builds the guest image; `... run [--timeout S] -- CMD...` runs CMD in a guest.

`run` prints the command's output, then its exit status and the time the guest took, and
exits with the command's status (125 when the guest reported none: it hung or failed to boot).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from deploy.vm import guest, image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.vm", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build build/vm/vmlinux and build/vm/initrd.gz")
    r = sub.add_parser("run", help="run a command in a fresh guest")
    r.add_argument("--timeout", type=float, default=300, help="seconds before the guest is killed")
    r.add_argument("--name", default="skiff-vm", help="the guest's hostname")
    r.add_argument("--keep", action="store_true", help="keep the run directory (console, share)")
    r.add_argument("--systemd", action="store_true", help="boot systemd as PID 1 and run CMD as a unit")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = p.parse_args(argv)
    if args.cmd == "build":
        img = image.build()
        print(f"kernel {img.version}: {img.vmlinux}, {img.initrd}")
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("run: no command given")
    run_dir = Path(tempfile.mkdtemp(prefix="skiff-vm-"))
    try:
        result = guest.run(command, name=args.name, timeout=args.timeout, cwd=Path.cwd(), run_dir=run_dir,
                           spec=guest.GuestSpec(args.name, systemd=args.systemd))
        sys.stdout.write(result.output)
        if result.status is None:
            sys.stdout.write(result.console[-3000:])
        print(f"skiff-vm: status {result.status} in {result.seconds:.1f}s", file=sys.stderr)
        return 125 if result.status is None else result.status
    finally:
        if args.keep:
            print(f"skiff-vm: run directory {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
