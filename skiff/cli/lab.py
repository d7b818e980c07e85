"""`skiff lab up|down|status`: network-namespace labs (several hosts on this machine).

The lab is deploy/lab.py, and so is this verb's parser: `skiff lab ARGS` runs
`python -m deploy.lab ARGS` in a subprocess with the same interpreter and returns its exit
status. The shared library never imports deploy/ (tests/unit/test_layering.py), and the rest of
the CLI never needs root or the deploy tree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any


def register(sub: Any) -> None:
    # Everything after `lab` belongs to deploy.lab's own parser, `--help` included: no argument
    # here may look like an option to this parser, hence a prefix character nobody types.
    parser = sub.add_parser("lab", help="run a multi-host cluster in network namespaces on this machine",
                            add_help=False, prefix_chars="\x00")
    parser.add_argument("lab_args", nargs=argparse.REMAINDER, metavar="ACTION ...",
                        help="up, down or status (`skiff lab --help` for the options)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return subprocess.call([sys.executable, "-m", "deploy.lab", *args.lab_args])
