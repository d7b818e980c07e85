"""`python -m controlplane.scheduler` (skiff-scheduler): the scheduler daemon."""

from __future__ import annotations

import argparse
import sys

from controlplane.common.leaderelection import LeaderElector, add_leader_election_flags, leader_config
from controlplane.scheduler import scheduler
from skiff import tls
from skiff.client import Client
from skiff.daemon import add_verbose_flag, run_until_signalled, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-scheduler", description="Skiff scheduler.")
    p.add_argument("--api-servers", required=True, metavar="HOST:PORT[,...]",
                   help="api-server endpoints (failover in order of availability)")
    p.add_argument("--percentage-of-nodes-to-score", type=int, default=0,
                   help="stop searching after this share of nodes fit (0: adaptive, as kube-scheduler)")
    add_leader_election_flags(p, "skiff-scheduler")
    tls.add_daemon_client_flags(p)
    add_verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if not 0 <= args.percentage_of_nodes_to_score <= 100:
        print("error: --percentage-of-nodes-to-score must be between 0 and 100", file=sys.stderr)
        return 2
    try:
        election = leader_config(args) if args.leader_elect else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    credentials = tls.daemon_credentials(args, "scheduler")

    async def serve() -> None:
        client = Client(args.api_servers, credentials=credentials)

        async def lead() -> None:
            await scheduler.run(client, percentage_of_nodes_to_score=args.percentage_of_nodes_to_score)

        try:
            if election is None:
                await lead()
            else:
                await LeaderElector(client, election).run(lead)
        finally:
            await client.close()

    return run_until_signalled(serve())


if __name__ == "__main__":
    sys.exit(main())
