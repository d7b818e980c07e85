"""The `skiff` command line: a kubectl-like client of the api-server, plus local tools.

Each subcommand lives in its own module under skiff/cli/ exposing `register(subparsers)`,
which adds its parser and sets `func(args) -> int`. Errors a user can act on are raised
as SkiffError (or ManifestError) and printed here as one line with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import NoReturn

from skiff import __version__
from skiff.errors import SkiffError
from skiff.manifests import ManifestError

# Modules that register subcommands, in the order `skiff --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "skiff.cli.get",
    "skiff.cli.describe",
    "skiff.cli.apply",
    "skiff.cli.create",
    "skiff.cli.delete",
    "skiff.cli.scale",
    "skiff.cli.rollout",
    "skiff.cli.logs",
    "skiff.cli.exec",
    "skiff.cli.version",
    "skiff.cli.auth",
    "skiff.cli.kubectl",
    "skiff.cli.clusterinfo",
    "skiff.cli.image",
    "skiff.cli.node",
    "skiff.cli.token",
    "skiff.cli.certs",
    "skiff.cli.lab",
)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skiff", description="Skiff: a small Kubernetes-style orchestrator.")
    parser.add_argument("--version", action="version", version=f"skiff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
    except BrokenPipeError:
        return closed_pipe()


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kubectl"]:  # everything after it is kubectl's, "--" and flags included
        from skiff.cli import kubectl

        try:
            return kubectl.run(argv[1:])
        except SkiffError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    parser = build_parser()
    # Everything after "--" is passed through untouched (exec's COMMAND), whatever it looks like.
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ManifestError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 1
    except SkiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def closed_pipe() -> int:
    """The reader of our output went away (`skiff get pods | head`): end quietly, as a command killed
    by SIGPIPE does (status 141), instead of a traceback. Python would report the failed flush of
    stdout at exit again, so stdout is pointed at /dev/null first."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
