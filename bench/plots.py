"""`python -m bench.plots` (run by `make bench` after the report): the benchmarks as pictures,
PNG files next to their JSON results in bench/results/.

What must hold:
- every picture is drawn from a committed result file and names it, its date and the load in
  its title; nothing is drawn that the file does not hold;
- distributions (latency histograms, pods Ready over time, programming latency) are drawn from
  the raw samples a benchmark writes (`samples_ms`, `samples_s`, `*_samples_s`); a result file
  written before the benchmarks kept their samples gets the summary figures it has instead
  (percentile bars), never an invented distribution;
- `charts()` is pure (results in, chart descriptions out, table-tested); `draw()` is the one
  place matplotlib is called (its Agg backend: no display needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Chart:
    """One picture: `kind` is "hist" (series of samples), "steps" (sorted samples against their
    count: things done over time), "lines" (each series' values against the shared `xs`: counts
    sampled over time) or "bars" (labelled values, grouped by series)."""

    name: str  # file stem: bench/results/<name>.png
    title: str
    kind: str
    xlabel: str
    ylabel: str
    series: tuple[tuple[str, tuple[float, ...]], ...] = ()
    groups: tuple[str, ...] = ()  # bars: the x labels (one value per group in each series)
    marks: tuple[tuple[str, float], ...] = field(default=())  # vertical lines: (label, x), e.g. a target
    xs: tuple[float, ...] = ()  # lines: the x of every value


def _caption(bench: str, data: dict[str, Any]) -> str:
    meta = data.get("meta", {})
    when = str(meta.get("date", ""))[:10]
    before, after = meta.get("load_before", [None])[0], meta.get("load_after", [None])[0]
    load = f", load {before:.1f} -> {after:.1f}" if isinstance(before, int | float) and isinstance(
        after, int | float) else ""
    return f"bench/results/{bench}.json, {when}{load}"


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values) if isinstance(values, list) else ()


def charts(results: dict[str, dict[str, Any]]) -> list[Chart]:
    """The pictures the result files can give (see the module docstring)."""
    out: list[Chart] = []
    for bench, data in sorted(results.items()):
        r = data.get("results", {})
        cap = _caption(bench, data)
        if bench == "store" and "skiff" in r and "etcd" in r:
            groups = ("put, 1 client", "put, 64 clients", "range, 64 clients")
            keys = ("put_1", "put_64", "range_64")
            out.append(Chart("store-throughput", f"store vs etcd, 3 members each: ops/s\n{cap}", "bars", "",
                             "operations per second", groups=groups, series=tuple(
                                 (who, tuple(float(r[who][k]["ops_per_s"]) for k in keys))
                                 for who in ("skiff", "etcd"))))
            out.append(Chart("store-latency", f"store vs etcd: put latency, 64 clients (ms)\n{cap}", "bars", "",
                             "milliseconds", groups=("p50", "p99"), series=tuple(
                                 (who, (float(r[who]["put_64"]["p50_ms"]), float(r[who]["put_64"]["p99_ms"])))
                                 for who in ("skiff", "etcd"))))
        if bench == "apiserver":
            rate = r.get("create_at_rate", {})
            samples = _floats(rate.get("samples_ms"))
            if samples:
                out.append(Chart("apiserver-create-latency", f"api-server: create latency at {rate['rate']:g} "
                                 f"creates/s\n{cap}", "hist", "milliseconds", "creates",
                                 series=(("create", samples),), marks=(("target p99 50 ms", 50.0),)))
            elif rate:
                out.append(Chart("apiserver-create-latency", f"api-server: create latency at {rate['rate']:g} "
                                 f"creates/s\n{cap}", "bars", "", "milliseconds", groups=("p50", "p99", "max"),
                                 series=(("create", (float(rate["p50_ms"]), float(rate["p99_ms"]),
                                                     float(rate["max_ms"]))),)))
            closed = r.get("create", [])
            if closed:
                out.append(Chart("apiserver-create-throughput", f"api-server: creates/s by concurrent clients\n{cap}",
                                 "bars", "clients", "creates per second",
                                 groups=tuple(str(c["clients"]) for c in closed),
                                 series=(("creates/s", tuple(float(c["per_second"]) for c in closed)),)))
        if bench == "netproxy":
            latency = r.get("latency", [])
            with_samples = [x for x in latency if x.get("samples_ms")]
            if with_samples:
                out.append(Chart("netproxy-programming-latency", f"netproxy: programming latency of one endpoint "
                                 f"change, 1,000 Services\n{cap}", "hist", "milliseconds", "changes",
                                 series=tuple((f"{x['backend']}, min sync {x['min_sync_period_s']:g} s",
                                               _floats(x["samples_ms"])) for x in with_samples),
                                 marks=(("target p99 100 ms", 100.0),)))
            elif latency:
                out.append(Chart("netproxy-programming-latency", f"netproxy: programming latency, 1,000 Services "
                                 f"(ms)\n{cap}", "bars", "", "milliseconds", groups=("p50", "p90", "p99"),
                                 series=tuple((f"{x['backend']}, min sync {x['min_sync_period_s']:g} s",
                                               (float(x["p50_ms"]), float(x["p90_ms"]), float(x["p99_ms"])))
                                              for x in latency)))
            applies = r.get("apply", [])
            if applies:
                sizes = sorted({int(a["services"]) for a in applies})
                backends = sorted({str(a["backend"]) for a in applies})
                first = {(a["backend"], int(a["services"])): float(a["first_apply_s"]) for a in applies}
                out.append(Chart("netproxy-apply", f"netproxy: apply every Service x 4 endpoints into an empty "
                                 f"netns (s)\n{cap}", "bars", "Services", "seconds",
                                 groups=tuple(f"{n:,}" for n in sizes),
                                 series=tuple((b, tuple(first.get((b, n), 0.0) for n in sizes)) for b in backends)))
        if bench == "nodeagent":
            seq, burst = _floats(r.get("sequential_samples_s")), _floats(r.get("burst_samples_s"))
            if seq and burst:
                out.append(Chart("nodeagent-pod-startup", f"node agent: pod startup, bound -> Running and Ready, "
                                 f"{r.get('pods')} pods\n{cap}", "hist", "seconds", "pods",
                                 series=(("bound one at a time", seq), ("all bound at once", burst)),
                                 marks=(("target p99 1 s", 1.0),)))
            elif "sequential_p50_s" in r:
                seq_p = (float(r["sequential_p50_s"]), float(r["sequential_p99_s"]))
                burst_p = (float(r["burst_p50_s"]), float(r["burst_p99_s"]))
                out.append(Chart("nodeagent-pod-startup", f"node agent: pod startup, {r.get('pods')} pods (s)\n{cap}",
                                 "bars", "", "seconds", groups=("p50", "p99"),
                                 series=(("bound one at a time", seq_p), ("all bound at once", burst_p))))
        if bench in ("scale", "scale-small"):
            for store in ("skiff", "etcd"):
                timeline = r.get(store, {}).get("timeline", {})
                xs = _floats(timeline.get("t_s"))
                if xs:
                    params = r.get("params", {})
                    out.append(Chart(f"{bench}-{store}-pods", f"scale scenario on the {store} store: "
                                     f"{params.get('pods', '?'):,} pods on {params.get('nodes', '?'):,} simulated "
                                     f"nodes\n{cap}", "lines", "seconds after the Deployments were created",
                                     "pods", xs=xs, series=tuple(
                                         (what, _floats(timeline.get(what))) for what in ("bound", "running")
                                         if timeline.get(what))))
        if bench == "e2e":
            startup = r.get("startup", {})
            ready = _floats(startup.get("create_to_ready_watch", {}).get("samples_s"))
            if ready:
                out.append(Chart("e2e-pods-ready", f"end to end: {startup.get('replicas')}-replica Deployment, "
                                 f"pods Ready over time\n{cap}", "steps", "seconds after the create", "pods Ready",
                                 series=(("Ready (watch)", ready),
                                         ("bound", _floats(startup.get("create_to_bound", {}).get("samples_s"))))))
            elif startup:
                keys = ("create_to_pod_created", "create_to_bound", "create_to_ready_watch")
                out.append(Chart("e2e-pods-ready", f"end to end: {startup.get('replicas')}-replica Deployment, time "
                                 f"after the create (s)\n{cap}", "bars", "", "seconds",
                                 groups=("pod created", "bound", "Ready"), series=tuple(
                                     (q, tuple(float(startup[k][f"{q}_s"]) for k in keys)) for q in ("p50", "p99"))))
    return out


def draw(chart: Chart, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=100)
    if chart.kind == "hist":
        ax.hist([list(v) for _, v in chart.series], bins=30, label=[name for name, _ in chart.series],
                histtype="stepfilled" if len(chart.series) == 1 else "step", linewidth=1.5)
    elif chart.kind == "steps":
        for name, values in chart.series:
            if values:
                xs = sorted(values)
                ax.step([0.0, *xs], range(len(xs) + 1), where="post", label=name)
    elif chart.kind == "lines":
        for name, values in chart.series:
            ax.plot(chart.xs[:len(values)], values, label=name)
    else:
        width = 0.8 / max(1, len(chart.series))
        for i, (name, values) in enumerate(chart.series):
            xs = [g + i * width - 0.4 + width / 2 for g in range(len(chart.groups))]
            bars = ax.bar(xs, values, width, label=name)
            ax.bar_label(bars, fmt="%.4g", fontsize=8)
        ax.set_xticks(range(len(chart.groups)), chart.groups)
    for label, x in chart.marks:
        ax.axvline(x, color="grey", linestyle="--", linewidth=1, label=label)
    ax.set_title(chart.title, fontsize=10)
    ax.set_xlabel(chart.xlabel)
    ax.set_ylabel(chart.ylabel)
    if len(chart.series) > 1 or chart.marks:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def load(directory: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="the result files' directory (default %(default)s)")
    args = p.parse_args(argv)
    for chart in charts(load(args.results)):
        path = args.results / f"{chart.name}.png"
        draw(chart, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
