"""README.md's performance table, generated from the result files under bench/results/.

    python -m bench.report            # rewrite the table between the markers in README.md
    python -m bench.report --check    # exit 1 if README.md differs from what the files give

What must hold: every figure in the table comes from one result file (bench/meta.py says what a
file holds), and each row names its file, date and load average; a benchmark without a file has
no rows. `render()` is pure (result documents in, Markdown out), and
tests/unit/test_bench_report.py checks that README.md holds exactly its output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.meta import RESULTS_DIR, ROOT

START = "<!-- bench-report:start (python -m bench.report writes this part from bench/results/*.json) -->"
END = "<!-- bench-report:end -->"
README = ROOT / "README.md"

Row = tuple[str, str, str, str]  # metric, target (issue), measured, met


def load(directory: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """Result documents by file name (e.g. "scheduler.json")."""
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def _n(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


# ------------------------------------------------------------------ one function per result file


def store_rows(r: dict[str, Any]) -> list[Row]:
    sk, et = r.get("skiff", {}), r.get("etcd", {})

    def pair(group: str, key: str, digits: int = 0) -> str:
        a, b = sk.get(group, {}).get(key), et.get(group, {}).get(key)
        if a is None:
            return "-"
        if not b:
            return _n(a, digits)
        return f"{_n(a, digits)} vs {_n(b, digits)} ({a / b:.2f}x etcd)"

    def ratio(group: str, key: str = "ops_per_s") -> float | None:
        a, b = sk.get(group, {}).get(key), et.get(group, {}).get(key)
        return a / b if a is not None and b else None

    def met(group: str, at_least: float) -> str:
        x = ratio(group)
        return "-" if x is None else _yes(x >= at_least)

    rows: list[Row] = [
        ("put throughput, 64 clients (ops/s)", ">= 0.8x etcd, goal 1.0x (#16)", pair("put_64", "ops_per_s"),
         met("put_64", 0.8)),
        ("put latency, 64 clients, p50 / p99 (ms)", "—",
         f"{pair('put_64', 'p50_ms', 1)} / {pair('put_64', 'p99_ms', 1)}", "—"),
        ("put, 1 client: ops/s; p99 (ms)", "—", f"{pair('put_1', 'ops_per_s')}; {pair('put_1', 'p99_ms', 1)}", "—"),
        ("linearizable range, 64 clients (ops/s)", ">= 1.0x etcd (#16)", pair("range_64", "ops_per_s"),
         met("range_64", 1.0)),
    ]
    if "serializable_range_64" in sk:
        rows.append(("serializable range, 64 clients (ops/s)", "—", pair("serializable_range_64", "ops_per_s"), "—"))
    if "cpu_us_per_op" in sk.get("put_64", {}):
        rows.append(("the 3 members' CPU per op, 64 clients: put; linearizable; serializable range (us)", "—",
                     "; ".join(pair(g, "cpu_us_per_op") for g in ("put_64", "range_64", "serializable_range_64")),
                     "—"))
    rows.append(("watch events/s delivered to 100 watchers", "—", pair("watch_100", "events_per_s"), "—"))
    for run in r.get("earlier_runs", []):  # the same bench run again: the spread between runs
        m, e = run["meta"], store_rows(run["results"])
        measured = {metric: value for metric, _target, value, _met in e}
        # An earlier run of other code says which ("before uvloop"), so its row is not read as spread.
        label = f"earlier run, {run['label']}" if run.get("label") else "earlier run"
        rows.append((f"{label} ({m['date'][:16].replace('T', ' ')}, load {m['load_before'][0]:.1f} → "
                     f"{m['load_after'][0]:.1f}): put; linearizable range, 64 clients (ops/s)", "—",
                     f"{measured['put throughput, 64 clients (ops/s)']}; "
                     f"{measured['linearizable range, 64 clients (ops/s)']}", "—"))
    if "leader_rss_mb" in sk:
        keys = r.get("params", {}).get("keys", 0)
        rows.append((f"leader RSS holding {keys:,} keys x 1 KiB (MB)", "—", pair_rss(sk, et), "—"))
    return rows


def store_hops_rows(r: dict[str, Any]) -> list[Row]:
    """Per put run: the client's latency, the proposer's own time, and the longest hops on any member."""
    rows: list[Row] = []
    runs = (("put_1_via_leader", "1 client via the leader"), ("put_1_via_follower", "1 client via a follower"),
            ("put_64", "64 clients"))
    for run, label in runs:
        if run not in r:
            continue
        res = r[run]
        hops = [(h["mean_ms"], hop, f"{name} {m['role']}") for name, m in sorted(res["members"].items())
                for hop, h in m["hops"].items() if hop not in ("total", "replicate", "fdatasync") and h["count"] > 5]
        totals = [m["hops"]["total"]["mean_ms"] for m in res["members"].values() if "total" in m["hops"]
                  and m["hops"]["total"]["count"] > 5]
        longest = ", ".join(f"{hop} {ms:.2f} ({who})" for ms, hop, who in sorted(hops, reverse=True)[:3])
        rows.append((f"put hops, {label}: client p50; the proposers' own time (mean); the longest hops (mean ms)",
                     "—", f"{res['client']['p50_ms']:.2f} ms ({_n(res['client']['ops_per_s'])} puts/s); "
                     f"{'-'.join(f'{t:.2f}' for t in sorted({min(totals), max(totals)}))} ms; {longest}", "—"))
    return rows


def pair_rss(sk: dict[str, Any], et: dict[str, Any]) -> str:
    a, b = sk["leader_rss_mb"], et.get("leader_rss_mb")
    return f"{a:.0f} vs {b:.0f} ({a / b:.2f}x etcd)" if b else f"{a:.0f}"


def apiserver_rows(r: dict[str, Any]) -> list[Row]:
    rate = r["create_at_rate"]
    target = r.get("setup", {}).get("target", {"rate": 200, "p99_ms": 50})
    creates = r["create"]
    fan = r["watch_fan_out"]
    return [
        (f"create latency at {rate['rate']:.0f} creates/s, p99", f"≤ {target['p99_ms']:.0f} ms (#4)",
         f"{rate['p99_ms']:.1f} ms (p50 {rate['p50_ms']:.1f}, max {rate['max_ms']:.1f})",
         _yes(rate["p99_ms"] <= target["p99_ms"])),
        ("create throughput with " + " / ".join(str(c["clients"]) for c in creates) + " clients (p99)", "—",
         " / ".join(_n(c["per_second"]) for c in creates) + " per s ("
         + " / ".join(f"{c['p99_ms']:.1f}" for c in creates) + " ms)", "—"),
        ("watch fan-out to " + " / ".join(_n(f["watchers"]) for f in fan) + " watchers", "—",
         " / ".join(f"{f['events_per_second'] / 1000:.1f}k" for f in fan) + " events/s", "—"),
        (f"RSS with {r['pods']:,} pods", "—",
         f"{r.get('rss_mib_at_pods', 0):.0f} MiB ({r.get('rss_mib_start', 0):.0f} at start); listing all "
         f"{r['pods']:,} pods: {r['list_all_pods_ms']:.0f} ms", "—"),
    ]


def scheduler_rows(r: dict[str, Any]) -> list[Row]:
    s, c = r["scheduler"], r["controllers"]
    b, d = r.get("scheduler_backlog"), r.get("decisions")
    parts = [f"pods streaming in: {_n(s['pods_per_second'])} pods/s (create → all bound "
             f"{s['create_to_all_bound_seconds']:.1f} s; creating took {s['create_seconds']:.1f} s)"]
    ok = s["pods_per_second"] >= 500
    if b:
        parts.append(f"all waiting at start: {_n(b['pods_per_second'])} pods/s")
        ok = ok and b["pods_per_second"] >= 500
    if d:
        parts.append(f"decisions alone: {_n(d['decisions_per_second'])} pods/s")
    return [
        (f"{s['pods']:,} pods onto {s['nodes']:,} simulated nodes", "≥ 500 pods/s (#6)", "; ".join(parts), _yes(ok)),
        (f"controllers: {c['replicas']:,}-replica Deployment → {c['replicas']:,} pods created", "—",
         f"{c['create_to_pods_created_seconds']:.2f} s ({_n(c['pods_per_second'])} pods/s)", "—"),
    ]


def scheduler_stream_rows(r: dict[str, Any]) -> list[Row]:
    """Per store: first bind -> all bound with every pod waiting, vs kube-scheduler's floor and the target."""
    floor, target = r.get("kube_scheduler_pods_per_second", 680), r.get("target_pods_per_second", 1000)
    stores = [s for s in ("skiff", "etcd") if s in r]
    first = r[stores[0]]

    def rate(s: str) -> str:
        x = r[s]
        v = x["pods_per_second_from_first_bind"]
        return (f"{s}: {_n(v)} pods/s ({x['first_bind_to_all_bound_seconds']:.1f} s; "
                f"{v / floor:.2f}x kube-scheduler, {v / target:.2f}x target)")

    def cpu(s: str) -> str:
        x = r[s]
        return f"{s}: " + ", ".join(f"{k} {v:.2f}" for k, v in x["cpu_ms_per_pod"].items())

    def cores(s: str) -> str:
        return f"{s}: " + ", ".join(f"{k} {v:.2f}" for k, v in r[s]["cores"].items())

    members = first.get("store_members", 1)
    rows: list[Row] = [
        (f"{first['pods']:,} pods waiting, {first['nodes']:,} nodes, then the scheduler starts: first bind → all "
         f"bound, 1 api-server on {members} store member(s)",
         f"≥ {_n(target)} pods/s (#16); kube-scheduler {_n(floor)}",
         "; ".join(rate(s) for s in stores),
         "; ".join(f"{s}: {_yes(r[s]['pods_per_second_from_first_bind'] >= target)}" for s in stores)),
        ("CPU per pod bound, per process (ms)", "—", "; ".join(cpu(s) for s in stores), "—"),
        ("cores each process got meanwhile", "—", "; ".join(cores(s) for s in stores), "—"),
        ("bind failures; Scheduled events written", "—",
         "; ".join(f"{s}: {r[s]['bind_failures']}; {_n(r[s]['events_written'])}" for s in stores), "—"),
    ]
    if "decisions" in r:
        rows.append(("decisions alone (no I/O), same run", "—", f"{_n(r['decisions']['decisions_per_second'])} pods/s",
                     "—"))
    before = r.get("before", {})
    if before:
        def then(s: str) -> str:
            b, x = before[s], r[s]
            v, was = x["pods_per_second_from_first_bind"], b["pods_per_second_from_first_bind"]
            ms, was_ms = sum(x["cpu_ms_per_pod"].values()), sum(b["cpu_ms_per_pod"].values())
            # Two decimals: all three processes together spend well under 1 ms per pod now.
            return f"{s}: {_n(was)} → {_n(v)} pods/s ({v / was:.2f}x), CPU {was_ms:.2f} → {ms:.2f} ms per pod"

        rows.append((f"the code before ({before.get('code', 'main')}), same lock hold: before → now", "—",
                     "; ".join(then(s) for s in stores if s in before), "—"))
    variants = r.get("variants", {})
    if variants:
        def variant(name: str) -> str:
            v = variants[name]
            return f"{name}: " + ", ".join(
                f"{s} {_n(v[s]['pods_per_second_from_first_bind'])} pods/s ({v[s]['pods_per_bind_call']:.0f} per call, "
                f"CPU {sum(v[s]['cpu_ms_per_pod'].values()):.1f} ms)" for s in stores if s in v)

        rows.append(("BindBatch calls: the variants, same lock hold (pods/s; pods per call; CPU per pod)", "—",
                     "; ".join(variant(name) for name in variants), "—"))
    if "code_measured" in r:
        rows.append(("code measured", "—", r["code_measured"], "—"))
    return rows


def apiserver_ha_rows(r: dict[str, Any]) -> list[Row]:
    """Creates/s through 3 api-servers over 3 store members, Skiff's store vs etcd."""
    sk, et = r["skiff"], r["etcd"]

    def pair(group: str) -> str:
        a, b = sk[group], et[group]
        return (f"{_n(a['per_second'])} vs {_n(b['per_second'])} ({a['per_second'] / b['per_second']:.2f}x etcd); "
                f"p99 {a['p99_ms']:.0f} vs {b['p99_ms']:.0f} ms")

    clients = r.get("setup", {}).get("clients", 64)
    size = f", {sk['spread']['creates']:,} creates each" if "creates" in sk["spread"] else ""
    return [
        (f"creates/s, {clients} clients spread over 3 api-servers{size}", "— (#16: measured)", pair("spread"), "—"),
        (f"creates/s, the {clients} clients on 1 of the 3", "—", pair("one"), "—"),
    ]


def nodeagent_rows(r: dict[str, Any]) -> list[Row]:
    target = r.get("targets", {"p99_s": 1.0, "rss_mb": 80})
    seq_ok, burst_ok = r["sequential_p99_s"] <= target["p99_s"], r["burst_p99_s"] <= target["p99_s"]
    rows: list[Row] = [
        (f"pod startup, bound → Running and Ready, {r['pods']} pods on one node, p99", f"≤ {target['p99_s']:g} s (#5)",
         f"bound one at a time: p99 {r['sequential_p99_s']:.2f} s (p50 {r['sequential_p50_s']:.2f}); all "
         f"{r['pods']} bound at once: p99 {r['burst_p99_s']:.2f} s (p50 {r['burst_p50_s']:.2f})",
         f"one at a time: {_yes(seq_ok)}; burst: {_yes(burst_ok)}"),
    ]
    if "burst_over_floor_p99" in r:
        limit = target.get("burst_over_floor_p99", 1.3)
        runs = r.get("per_run", [])
        spread = ", ".join(f"{x['burst_over_floor_p99']:.2f}x" for x in runs)
        spread = f" (runs: {spread})" if len(runs) > 1 else ""
        rows.append((f"the burst against the raw CRI floor: the same {r['pods']} sandboxes + containers started "
                     "directly through CRI, all at once, same run", f"≤ {limit:g}x the floor (#16)",
                     f"burst p99 {r['burst_p99_s']:.2f} s vs floor p99 {r['cri_floor_p99_s']:.2f} s: "
                     f"{r['burst_over_floor_p99']:.2f}x{spread}" + (f"; median of {r['runs']} runs" if runs else ""),
                     _yes(r["burst_over_floor_p99"] <= limit)))
    rows += [
        ("RSS with 100 pods", f"≤ {target['rss_mb']} MB (#5)",
         f"{r['rss_mb_100_pods_fake_runtime']:.1f} MB (fake CRI, whole bench process)",
         _yes(r["rss_mb_100_pods_fake_runtime"] <= target["rss_mb"])),
    ]
    return rows


def hollow_rows(r: dict[str, Any]) -> list[Row]:
    """bench/hollow.py: main's hollow process (baseline) and this tree's, side by side in one run."""
    p = r["params"]
    runs = [(label, r[label]) for label in ("baseline", "current") if label in r]
    names = {"baseline": "before", "current": "after"}

    def each(fn: Callable[[dict[str, Any]], str]) -> str:
        return "; ".join(f"{names[label]}: {fn(x)}" if len(runs) > 1 else fn(x) for label, x in runs)

    def running(x: dict[str, Any]) -> str:
        pods = x.get("pods", {})
        if pods.get("all_running"):
            return f"{pods['all_running_s']:.0f} s ({pods['pods_per_s']:.1f} pods/s)"
        timeout = pods.get("all_running_s", 0)
        return f"{pods.get('running', 0):,} of {p['pods']:,} Running at the {timeout:.0f} s timeout"

    def held(x: dict[str, Any]) -> str:
        pods = x.get("pods", {})
        return f"{pods['idle_millicores_per_agent']:.2f}" if "idle_millicores_per_agent" in pods else "not reached"

    return [
        (f"{p['nodes']} agents in one process ({p['runtime']} CRI): idle cores per agent, no pods (millicores)",
         "— (#16: 250 per process with room to start pods)",
         each(lambda x: f"{x['idle_millicores_per_agent']:.2f} ({x['idle_cores']:.2f} cores)"), "—"),
        (f"{p['pods']:,} pods bound at create (spec.nodeName) → all Running", "—", each(running), "—"),
        ("hollow process CPU per pod Running (ms); its cores meanwhile", "—",
         each(lambda x: f"{x['pods']['hollow_cpu_ms_per_pod']:.0f}; {x['pods']['hollow_cores']:.2f}"), "—"),
        ("idle with the pods on their nodes (millicores per agent)", "—", each(held), "—"),
        ("Deadline Exceeded lines in the hollow process's log", "—",
         each(lambda x: f"{x['log']['deadline_exceeded']:,}"), "—"),
    ]


def hollow_churn_rows(r: dict[str, Any]) -> list[Row]:
    """bench/hollow_churn.py: main's hollow process (baseline) and this tree's, side by side in one run."""
    p = r["params"]
    runs = [(label, r[label]) for label in ("baseline", "current") if label in r]
    names = {"baseline": "before", "current": "after"}

    def each(fn: Callable[[dict[str, Any]], str]) -> str:
        return "; ".join(f"{names[label]}: {fn(x)}" if len(runs) > 1 else fn(x) for label, x in runs)

    return [
        (f"{p['nodes']} agents in one process, {p['services']} Services in the namespace: RSS held per "
         "Running pod (KB)", "—", each(lambda x: f"{x['held_kb_per_running_pod']:,.0f}"), "—"),
        (f"left behind per pod created and deleted ({p['rounds']} rounds of {p['pods']:,} pods; KB)", "—",
         each(lambda x: f"{x['left_kb_per_churned_pod']:.1f}" if "left_kb_per_churned_pod" in x else "—"), "—"),
    ]


def netproxy_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    sizes = sorted({a["services"] for a in r["apply"]})
    if sizes:
        big = sizes[-1]
        first = {a["backend"]: a["first_apply_s"] for a in r["apply"] if a["services"] == big}
        others = "; ".join(
            f"{n:,} Services: " + ", ".join(f"{a['backend']} {a['first_apply_s']:.2f} s" for a in r["apply"]
                                            if a["services"] == n) for n in sizes[:-1])
        rows.append((f"apply {big:,} Services x 4 endpoints into an empty netns", "≤ 1 s (#7)",
                     ", ".join(f"{b} {s:.2f} s" for b, s in first.items()) + (f" ({others})" if others else ""),
                     "; ".join(f"{b}: {_yes(s <= 1.0)}" for b, s in first.items())))
        floors = [a for a in r["apply"] if a["services"] == big and "floor_restore_s" in a]
        if floors:
            rows.append((f"the floor: iptables-restore alone, the same {big:,}-Service restore texts, no Python",
                         "—", ", ".join(f"{a['backend']} {a['floor_restore_s']:.2f} s (Skiff's overhead "
                                        f"{a['overhead_over_floor_s']:+.2f} s; as one restore text "
                                        f"{a['floor_one_restore_s']:.2f} s)" for a in floors), "—"))
    for period, target in ((0.0, "≤ 100 ms (#7)"), (1.0, "—")):
        lat = [x for x in r["latency"] if x["min_sync_period_s"] == period]
        if lat:
            rows.append((f"programming latency of one endpoint change with 1,000 Services, min sync period "
                         f"{period:g} s, p99", target,
                         ", ".join(f"{x['backend']} {x['p99_ms']:.1f} ms (p50 {x['p50_ms']:.1f}"
                                   + (f"; iptables-restore p50 {x['restore_p50_ms']:.1f}" if "restore_p50_ms" in x
                                      else "") + ")" for x in lat),
                         "; ".join(f"{x['backend']}: {_yes(x['p99_ms'] <= 100)}" for x in lat) if period == 0 else "—"))
    return rows


def e2e_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    s = r.get("startup")
    if s and "error" not in s:
        w = s["create_to_ready_watch"]
        rows.append((f"{s['replicas']}-replica web Deployment: create → each pod Ready, p50 / p99", "none set (#8)",
                     f"p50 {w['p50_s']:.2f} s, p99 {w['p99_s']:.2f} s; pods per node "
                     + ", ".join(f"{k} {v}" for k, v in s["pods_per_node"].items())
                     + f"; all bound {s['create_to_bound']['max_s']:.2f} s after the create", "—"))
    runs = [x for x in r.get("make_up") or [] if isinstance(x, dict) and "run" in x]
    if runs:
        rows.append(("`make up` until it returns, then `make down`", "none set (#8)",
                     "up " + " and ".join(f"{x['up_s']:.1f}" for x in runs) + " s; down "
                     + " / ".join(f"{x['down_s']:.1f}" for x in runs) + " s", "—"))
    idle = r.get("rss_idle")
    if idle and "error" not in idle:
        rows.append(("RSS at idle with examples/web, all components", "none set (#8)",
                     f"{idle['total_mb']:.0f} MB: " + ", ".join(f"{h} {v:.0f}" for h, v in idle["per_host_mb"].items()),
                     "—"))
    return rows


def dns_rows(r: dict[str, Any]) -> list[Row]:
    q = {x["kind"]: x for x in r.get("queries", [])}
    if not q:
        return []
    c = r["cluster"]
    shown = ", ".join(f"{k.split(' (')[0]} {x['p50_ms']:.2f} / {x['p99_ms']:.1f} ms" for k, x in q.items())
    ok = all(x["p50_ms"] < 1.0 for x in q.values())
    return [
        (f"answer from the cache, p50 / p99 ({c['services']:,} Services, {c['headless']} headless, "
         f"{c['pods']:,} pods)", "< 1 ms p50 (#14)", shown, _yes(ok)),
        ("zone rebuild after a change (whole zone, median)", "—",
         f"{r['zone_build_ms_median']:,.0f} ms for {c['names']:,} names", "—"),
    ]


def netpol_rows(r: dict[str, Any]) -> list[Row]:
    apply, latency = r.get("apply") or {}, r.get("latency") or {}
    if not apply:
        return []
    backends = sorted(apply)
    one = {b: apply[b]["one_of_20_nodes"] for b in backends}
    full = {b: apply[b]["all_pods_on_the_node"] for b in backends}
    first = next(iter(one.values()))
    big = next(iter(full.values()))
    rows: list[Row] = [
        (f"plan + apply {first['policies']:,} policies over {first['pods']:,} pods, one node of 20 "
         f"({first['local_pods']} local pods, {first['rules']:,} rules)", "none set (#14)",
         "; ".join(f"{b} {one[b]['plan_s']:.2f} + {one[b]['first_apply_s']:.2f} s" for b in backends), "—"),
        (f"the same with all {big['local_pods']:,} pods on the node ({big['rules']:,} rules, {big['chains']:,} chains)",
         "—", "; ".join(f"{b} {full[b]['plan_s']:.2f} + {full[b]['first_apply_s']:.2f} s" for b in backends), "—"),
    ]
    if latency:
        base = (r.get("baseline") or {}).get("latency") or {}
        before = ("; before (main, same run): " + "; ".join(
            f"{b} {x['p50_ms']:.0f} / {x['p99_ms']:.0f} ms" for b, x in sorted(base.items()))) if base else ""
        rows.append(("policy change -> rules in place, min sync period 0, p50 / p99", "—",
                     "; ".join(f"{b} {x['p50_ms']:.0f} / {x['p99_ms']:.0f} ms" for b, x in sorted(latency.items()))
                     + before, "—"))
    inc = r.get("incremental") or {}
    if inc:
        rows.append((f"planner per change, all {big['local_pods']:,} pods on the node ({inc['chains']:,} chains): "
                     "one policy's port / one pod's labels", "—",
                     f"{inc['policy_update_ms']:.1f} ms ({inc['chains_changed_per_policy_update']:.0f} chain written)"
                     f" / {inc['pod_relabel_ms']:.1f} ms; a fresh plan of everything {inc['full_plan_s']:.2f} s", "—"))
    return rows


def vm_e2e_rows(r: dict[str, Any]) -> list[Row]:
    tests = r.get("tests") or []
    ran = [x for x in tests if x["outcome"] != "skipped"]
    if not ran:
        return []
    detail = ", ".join(f"{x['test'].removeprefix('test_')} {x['seconds']:.0f} s" for x in ran)
    return [("`make vm-e2e`: the lab e2e flow with the workers as QEMU guests", "a few minutes, else not in CI (#17)",
             f"{r['seconds']:.0f} s, {r['passed']} of {len(ran)} passed ({detail})",
             _yes(r["failed"] == 0) + " (separate target)")]


def chaos_rows(r: dict[str, Any]) -> list[Row]:
    ip, writes, dep = r.get("clusterip"), r.get("writes"), r.get("deployment")
    if not ip or not writes or not dep:
        return []
    faults = len(r.get("faults", []))
    held = not writes["lost_or_wrong"] and not ip["failed_outside_cut_windows"] and dep["ready"] == dep["replicas"] \
        and not r.get("leftovers") and not r.get("leaked_processes")
    return [
        (f"{faults} faults in {r['schedule_s']:.0f} s (kill -9 of each store member, api-server, leader, an agent, "
         "a proxy, a containerd; a worker cut off): lost writes, failed ClusterIP requests outside the cut, "
         "leaked processes", "none (#15)",
         f"{len(writes['lost_or_wrong'])} of {writes['acknowledged']:,} acknowledged writes lost; "
         f"{ip['failed_outside_cut_windows']} of {ip['requests']:,} requests failed outside the cut "
         f"({ip['failed_in_cut_windows']} inside); Deployment {dep['ready']}/{dep['replicas']} Ready; "
         f"{len(r.get('leaked_processes', []))} processes left", _yes(held)),
    ]


def readindex_rows(r: dict[str, Any]) -> list[Row]:
    def one(mode: str) -> str:
        m = r[mode]
        return (f"leader {_n(m['leader']['reads_per_s'])}/s (p50 {m['leader']['p50_ms']:.1f} ms), "
                f"follower {_n(m['follower']['reads_per_s'])}/s (p50 {m['follower']['p50_ms']:.1f} ms), "
                f"{max(m['leader']['log_entries_per_read'], m['follower']['log_entries_per_read']):.3f} log entries "
                "per read")

    return [("linearizable reads, 64 readers, Raft layer only (no gRPC): ReadIndex", "no log write (#16)",
             one("read_index"), _yes(r["read_index"]["leader"]["log_entries_per_read"] == 0
                                     and r["read_index"]["follower"]["log_entries_per_read"] == 0)),
            ("the same through the log barrier (before)", "—", one("log_barrier"), "—")]


def _profile_text(x: dict[str, Any], *, components: int = 4) -> str:
    """The busiest components of a run's profile: cores used, and the function most of its
    samples were in (bench/scale.py --profile)."""
    prof = x.get("profile")
    if not prof:
        return ""
    busiest = sorted(prof["components"].items(), key=lambda kv: -kv[1].get("cores", 0.0))[:components]
    parts = []
    for name, c in busiest:
        top = c.get("top") or []
        leaf = f": {top[0][0].split(' (')[0]} {top[0][1]:.0%}" if top else ""
        parts.append(f"{name} {c.get('cores', 0.0):.2f} cores{leaf}")
    text = f"over {prof['seconds']:.0f} s of the create phase: " + ", ".join(parts)
    w = x.get("store_writes")
    if w:
        text += f"; the store wrote {w['per_pod']:.1f} revisions per pod at {w['per_s']:,.0f}/s"
    return text


def scale_rows(r: dict[str, Any]) -> list[Row]:
    """bench/scale.py: one column of figures per store it ran on (Skiff's store, etcd). A run
    stopped before its end (deadline, timeout, signal) shows the figures it reached, and where
    and why it stopped."""
    p = r["params"]
    runs = [(name, r[name]) for name in ("skiff", "etcd") if name in r]
    if not runs:
        return []

    def per_store(fn: Callable[[dict[str, Any]], str], missing: str) -> str:
        """`store: fn(its figures)` for each store; `missing` where a partial run lacks the figure."""
        out = []
        for name, x in runs:
            try:
                out.append(f"{name}: {fn(x)}")
            except (KeyError, ValueError, TypeError):
                out.append(f"{name}: {missing}")
        return "; ".join(out)

    def each(fn: Callable[[dict[str, Any]], str]) -> str:
        return per_store(fn, "not reached")

    def met(fn: Callable[[dict[str, Any]], bool]) -> str:
        return per_store(lambda x: _yes(fn(x)), "no (not reached)")

    def mutating_p99(x: dict[str, Any]) -> float:
        return max(x["api"]["verbs"][v]["p99_ms"] for v in ("create", "update", "delete"))

    def verbs(x: dict[str, Any]) -> str:
        return ", ".join(f"{v} {s['p50_ms']:.0f}/{s['p99_ms']:.0f}" for v, s in x["api"]["verbs"].items())

    def rss(x: dict[str, Any]) -> str:
        comps = x["components"]
        hollow = sum(c["peak_rss_mb"] for k, c in comps.items() if k.startswith("hollow"))
        return f"control plane {x['control_plane_rss_mb']:,.0f} MB, hollow nodes {hollow:,.0f} MB"

    def store_mb(x: dict[str, Any]) -> str:
        peak = max(x["store_size_mb_at_peak"].values()) if x.get("store_size_mb_at_peak") else None
        end = max(x["store_size_mb_at_end"].values()) if x.get("store_size_mb_at_end") else None
        if peak is None and end is None:
            return "store size not reached"
        return f"{'-' if peak is None else f'{peak:.0f}'} MB at peak, {'-' if end is None else f'{end:.0f}'} at end"

    def sched(x: dict[str, Any]) -> str:
        text = f"{x['scheduler_pods_per_s']:,.0f}"
        if "created_to_bound" in x:
            w = x["created_to_bound"]
            text += (f" (pods created at {x['pods_created_per_s']:,.0f}/s; created → bound p50 "
                     f"{w['p50_ms'] / 1000:.1f} s, p99 {w['p99_ms'] / 1000:.1f} s)")
        return text

    def stopped(x: dict[str, Any]) -> str:
        st = x.get("stopped")
        if not st:
            return "finished"
        got = ", ".join(f"{st[k]:,} {k.replace('_', ' ')}" for k in ("pods", "bound", "running") if k in st)
        return f"stopped in \"{st['phase']}\" at {st['at']} ({st['reason'][:100]}){': ' + got if got else ''}"

    def all_running(x: dict[str, Any]) -> tuple[float, str]:
        """Seconds to all Running, and how it was seen: by the run itself, or, when the run's
        own informer fell behind and never saw the end, by the stored pods' timestamps."""
        if "all_running_s" in x:
            return x["all_running_s"], ""
        v = x["informer_view"]
        if v["stored_running"] < p["pods"]:
            raise KeyError("not all Running")
        return v["first_created_to_last_ready_s"], " (the stored pods' timestamps: the run's informer fell behind)"

    full = p["nodes"] >= 1000 and p["pods"] >= 30000 and p["services"] >= 1000
    size = (f"{p['nodes']:,} hollow nodes, {p['deployments']} Deployments x {p['replicas']} "
            f"({p['pods']:,} pods), {p['services']:,} Services")
    rows: list[Row] = [
        (f"{size}: create → all Running", "≤ 5 min at full size (#16)",
         each(lambda x: f"{all_running(x)[0]:.0f} s{all_running(x)[1]}"),
         met(lambda x: all_running(x)[0] <= 300) if full else "— (not the full size)"),
        ("scheduler pods/s through the real api-server (first pod created → last bound)", "≥ 680 (kube-scheduler)",
         each(sched), met(lambda x: x["scheduler_pods_per_s"] >= 680)),
        ("API latency during the run, p50/p99 ms (probe)", "mutating p99 ≤ 1 s (SLO)", each(verbs),
         met(lambda x: mutating_p99(x) <= 1000)),
        ("watch lag p99 (written → seen by an informer)", "—",
         each(lambda x: f"{x['api']['watch_lag']['p99_ms']:,.0f} ms"), "—"),
        ("Services → Endpoints complete; rolling update; delete all", "—",
         each(lambda x: "; ".join(
             f"{x[k]:.0f} s{extra}" if k in x else "not reached"
             for k, extra in (("all_endpoints_s", ""), ("rolling_update_s", f" ({p['rollouts']} Deployments)"),
                              ("delete_all_s", "")))), "—"),
        ("store size; peak RSS", "control plane ≤ 2 GB (#16)", each(lambda x: f"{store_mb(x)}; {rss(x)}"),
         met(lambda x: x["control_plane_rss_mb"] <= 2048)),
    ]
    if any(x.get("run") for _, x in runs):  # the stores ran separately (bench/scale.py --add)
        rows.append(("when each store ran (separate runs: date UTC, load before → after, code)", "—",
                     each(lambda x: f"{x['run']['date'][:16].replace('T', ' ')}, load {x['run']['load_before'][0]:.1f}"
                                    f" → {x['run']['load_after'][0]:.1f}, skiff {x['run']['skiff'][:7]}"), "—"))
    if any(x.get("informer_view") for _, x in runs):
        def view(x: dict[str, Any]) -> str:
            v = x["informer_view"]
            return (f"stored {v['stored_pods']:,} ({v['stored_running']:,} Running), first created → last Ready "
                    f"{v['first_created_to_last_ready_s']:.0f} s by the pods' own timestamps; this process's "
                    f"informer held {v['informer_pods']:,} ({v['informer_running']:,} Running)")
        rows.append(("all Running: the pods as stored (one paged List) against this process's pod informer "
                     "(its figures above: created → bound)", "—", each(view), "—"))
    if any(x.get("stopped") for _, x in runs):
        rows.append(("how far the run got", "—", each(stopped), "—"))
    if any(x.get("profile") for _, x in runs):
        rows.append(("where the time went (py-spy and /proc, busiest components: cores, top function's share "
                     "of its samples)", "—", each(lambda x: _profile_text(x) or "not profiled"), "—"))
    return rows


# File name prefix -> (component, rows). Order is the table's.
SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], list[Row]]]] = [
    ("store", "store (Skiff vs etcd, 3 members each)", store_rows),
    ("store_hops", "store: a put's hops through Raft (3 Skiff members; skiff_store_proposal_hop_seconds)",
     store_hops_rows),
    ("apiserver", "api-server (over 1 etcd member)", apiserver_rows),
    ("apiserver-ha", "api-server (3 api-servers, 3 store members: Skiff's store vs etcd)", apiserver_ha_rows),
    ("scheduler-stream", "scheduler streaming waiting pods (real api-server and store, Skiff's vs etcd)",
     scheduler_stream_rows),
    ("scheduler-apiserver", "scheduler and controllers (a real api-server)", scheduler_rows),
    ("scheduler", "scheduler and controllers (the api-server registry in the same process)", scheduler_rows),
    ("nodeagent", "node agent (real containerd)", nodeagent_rows),
    ("hollow", "hollow node agents (one process, a real api-server on 1 etcd member; before: an older tree's "
     "hollow process, same run)",
     hollow_rows),
    ("hollow_churn", "hollow node agents, pods created and deleted in rounds (one process, a real api-server on "
     "1 etcd member; before: an older tree's hollow process, same run)", hollow_churn_rows),
    ("netproxy", "netproxy (real iptables)", netproxy_rows),
    ("e2e", "end to end (lab: 1 control-plane host, 2 workers)", e2e_rows),
    ("dns", "cluster DNS (the server in a child process on loopback)", dns_rows),
    ("netpol", "NetworkPolicy in netproxy (real iptables)", netpol_rows),
    ("vm-e2e", "end to end on the VM lab (workers are QEMU guests: TCG, -smp 1)", vm_e2e_rows),
    ("chaos", "chaos suite (lab: 3 control-plane hosts, 2 workers; `make chaos`)", chaos_rows),
    ("readindex", "store reads (3 RaftNodes in one process)", readindex_rows),
    ("scale", "scale scenario (3 store members, 3 api-servers, hollow nodes)", scale_rows),
    ("scale-small", "scale scenario, small size (`--small`)", scale_rows),
]


def _section(name: str) -> tuple[str, Callable[[dict[str, Any]], list[Row]]] | None:
    stem = name.removesuffix(".json")
    for prefix, title, fn in SECTIONS:
        if stem == prefix:
            return title, fn
    return None


def _order(name: str) -> int:
    stem = name.removesuffix(".json")
    return next((i for i, (prefix, _, _) in enumerate(SECTIONS) if stem == prefix), len(SECTIONS))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(docs: dict[str, dict[str, Any]]) -> str:
    """The Markdown between the markers, from result documents keyed by file name."""
    lines = ["| component (result file, date, 1-min load before → after) | metric | target (issue) | measured | met |",
             "|---|---|---|---|---|"]
    unknown = []
    for name in sorted(docs, key=lambda n: (_order(n), n)):
        section = _section(name)
        if section is None:
            unknown.append(name)
            continue
        title, fn = section
        doc = docs[name]
        m = doc["meta"]
        where = (f"{title} (`bench/results/{name}`, {m['date'][:10]}, load {m['load_before'][0]:.1f} → "
                 f"{m['load_after'][0]:.1f})")
        for i, (metric, target, measured, met) in enumerate(fn(doc["results"])):
            lines.append("| " + " | ".join(_cell(c) for c in ((where if i == 0 else ""), metric, target, measured, met))
                         + " |")
    lines += ["", "Machines and versions, per result file:", ""]
    for name in sorted(docs, key=lambda n: (_order(n), n)):
        m = docs[name]["meta"]
        mach, ver = m["machine"], m["versions"]
        lines.append(f"- `bench/results/{name}`: {m['date']}, {mach['cpus']} CPUs, {mach['memory_mib']:,} MiB, "
                     f"{mach['os']}, kernel {mach['kernel']}; load {_loads(m['load_before'])} → "
                     f"{_loads(m['load_after'])}; " + ", ".join(f"{k} {_short(v)}" for k, v in ver.items()))
    if unknown:
        lines += ["", "Result files without table rows: " + ", ".join(f"`bench/results/{n}`" for n in unknown) + "."]
    return "\n".join(lines) + "\n"


def _short(version: str) -> str:
    """"containerd github.com/containerd/containerd 1.6.20~ds1 ..." -> "1.6.20~ds1"; keeps a
    "(...)" note such as iptables' backend."""
    m = re.search(r"v?(\d+\.\d+[\w.~+-]*)", version)
    if m is None:
        return version
    note = re.search(r"\([^)]*\)", version[m.end():])
    return m.group(1) + (f" {note.group(0)}" if note else "")


def _loads(values: Iterable[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def splice(readme: str, table: str) -> str:
    """README text with the part between the markers replaced by `table`."""
    head, sep, rest = readme.partition(START)
    if not sep or END not in rest:
        raise ValueError(f"README.md lacks the markers {START!r} ... {END!r}")
    return head + START + "\n" + table + END + rest.split(END, 1)[1]


def between_markers(readme: str) -> str:
    return readme.split(START, 1)[1].split(END, 1)[0].removeprefix("\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = p.parse_args(argv)
    text = README.read_text()
    new = splice(text, render(load()))
    if args.check:
        if new != text:
            print("README.md's performance table is not what bench/results/ gives: run python -m bench.report",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        README.write_text(new)
        print("README.md: performance table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
