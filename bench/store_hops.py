"""Benchmark: where a put's time goes, hop by hop, on a 3-member Skiff store.

    python -m bench.store_hops            (8 s per run)
    python -m bench.store_hops --quick    (3 s per run)

Runs bench/store.py's put load (the same client code) against a 3-member `StoreCluster`: one
client writing through the leader, one client writing through a follower (its puts are
forwarded), and 64 clients spread over the three members. Around each run it scrapes every
member's /metrics and reports, per member, the change of `skiff_store_proposal_hop_seconds`
(one histogram per hop; `Hop` in controlplane/store/metrics.py says what each one times) and of
the journal's fdatasync histogram: how many times each hop was taken, its mean, and the bucket
its 50th and 99th percentiles fall in. The client's own latency is printed beside them, so
what the members' hops leave over -- gRPC on both sides, messages in flight between members --
shows as the difference. Writes bench/results/store_hops.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench import meta
from bench.store import load_run
from controlplane.store.cluster import StoreCluster

HOP_METRIC = "skiff_store_proposal_hop_seconds"
FSYNC_METRIC = "etcd_disk_wal_fsync_duration_seconds"
# The hops in the order a put takes them (metrics.Hop), then the journal's fdatasync.
ORDER = ("queue", "to_tick", "forwarded_to_append", "append_to_send", "send_to_quorum", "follower_append_to_ack",
         "quorum_to_commit", "commit_to_apply", "replicate", "apply_to_answer", "total", "fdatasync")

Histograms = dict[str, dict[str, Any]]  # hop -> {"count", "sum", "buckets": {upper bound: cumulative count}}


def scrape(addr: str) -> Histograms:
    """Every hop histogram (and the fdatasync one) of the member whose /metrics is at `addr`."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Histograms = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (HOP_METRIC, FSYNC_METRIC):
            continue
        for sample in family.samples:
            hop = sample.labels.get("hop", "fdatasync") if family.name == HOP_METRIC else "fdatasync"
            h = out.setdefault(hop, {"count": 0.0, "sum": 0.0, "buckets": {}})
            if sample.name.endswith("_count"):
                h["count"] = sample.value
            elif sample.name.endswith("_sum"):
                h["sum"] = sample.value
            elif sample.name.endswith("_bucket"):
                h["buckets"][float(sample.labels["le"])] = sample.value
    return out


def hop_delta(before: Histograms, after: Histograms) -> dict[str, dict[str, float]]:
    """Per hop taken between the two scrapes: count, mean and the upper bounds of the buckets
    holding its 50th and 99th percentiles (milliseconds)."""
    out: dict[str, dict[str, float]] = {}
    for hop, h in after.items():
        b = before.get(hop, {"count": 0.0, "sum": 0.0, "buckets": {}})
        count = h["count"] - b["count"]
        if count <= 0:
            continue
        cum = sorted((le, v - b["buckets"].get(le, 0.0)) for le, v in h["buckets"].items())
        out[hop] = {"count": count, "mean_ms": 1000 * (h["sum"] - b["sum"]) / count,
                    "p50_le_ms": 1000 * bucket_at(cum, 0.5 * count), "p99_le_ms": 1000 * bucket_at(cum, 0.99 * count)}
    return out


def bucket_at(cumulative: list[tuple[float, float]], rank: float) -> float:
    """The upper bound of the first bucket whose cumulative count reaches `rank`."""
    for le, n in cumulative:
        if n >= rank:
            return le
    return float("inf")


def measured_run(c: StoreCluster, endpoints: list[str], clients: int, duration: float) -> dict[str, Any]:
    pids = {n: m.proc.pid for n, m in c.members.items() if m.proc}
    before = {n: scrape(m.metrics) for n, m in c.members.items()}
    client = load_run("put", endpoints, clients, duration, procs=1 if clients == 1 else 2, pids=pids)
    after = {n: scrape(m.metrics) for n, m in c.members.items()}
    leader = c.leader()
    return {"client": client, "leader": leader,
            "members": {n: {"role": "leader" if n == leader else "follower", "hops": hop_delta(before[n], after[n])}
                        for n in c.members}}


def print_run(name: str, run: dict[str, Any]) -> None:
    cl = run["client"]
    print(f"\n{name}: {cl['ops_per_s']:.0f} puts/s, client p50 {cl['p50_ms']:.2f} ms, p99 {cl['p99_ms']:.2f} ms")
    print(f"  {'member':14} {'hop':24} {'count':>7} {'mean ms':>8} {'p50 <= ms':>9} {'p99 <= ms':>9}")
    for member, m in sorted(run["members"].items()):
        for hop in ORDER:
            h = m["hops"].get(hop)
            if h:
                print(f"  {member + ' ' + m['role']:14} {hop:24} {h['count']:7.0f} {h['mean_ms']:8.3f} "
                      f"{h['p50_le_ms']:9.2f} {h['p99_le_ms']:9.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s per run")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    base = tempfile.mkdtemp(prefix="skiff-bench-store-hops-", dir="/var/tmp")
    run = meta.start("store_hops")
    results: dict[str, Any] = {"params": vars(args)}
    c = StoreCluster(3, base_dir=os.path.join(base, "skiff"))
    try:
        c.start()
        leader = c.leader()
        follower = next(n for n in c.members if n != leader)
        for name, eps, clients in (("put_1_via_leader", [c.client(leader)], 1),
                                   ("put_1_via_follower", [c.client(follower)], 1),
                                   ("put_64", c.endpoints, 64)):
            results[name] = measured_run(c, eps, clients, args.duration)
            print_run(name, results[name])
    finally:
        c.close()
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nresults in {run.write(results)}")


if __name__ == "__main__":
    main()
