"""The scale scenario's pure pieces: the pods-over-time timeline its picture is drawn from."""

from __future__ import annotations

import pytest

from bench import scale


@pytest.mark.parametrize(("events", "points", "expected"), [
    ({"running": [10.0, 11.0, 12.0]}, 3, {"t_s": [0.0, 1.0, 2.0], "running": [1.0, 2.0, 3.0]}),
    ({"bound": [10.5, 10.5], "running": [12.0]}, 5,
     {"t_s": [0.0, 0.5, 1.0, 1.5, 2.0], "bound": [0.0, 2.0, 2.0, 2.0, 2.0], "running": [0.0, 0.0, 0.0, 0.0, 1.0]}),
    ({"running": []}, 2, {"t_s": [0.0, 0.0], "running": [0.0, 0.0]}),
], ids=["one-per-step", "two-states-share-the-clock", "nothing-yet"])
def test_timeline_counts_pods_by_each_moment(events: dict[str, list[float]], points: int,
                                             expected: dict[str, list[float]]) -> None:
    assert scale.timeline(10.0, events, points) == expected


def test_timeline_is_small_for_many_pods() -> None:
    got = scale.timeline(0.0, {"running": [i / 100 for i in range(30_000)]})
    assert len(got["t_s"]) == len(got["running"]) == 200
    assert got["running"][-1] == 30_000.0
    assert got["running"] == sorted(got["running"])


@pytest.mark.parametrize(("failures", "budget", "outcome"), [
    ([], 60.0, "ok"),
    ([scale.errors.TimeoutError_("deadline")], 60.0, "ok"),
    ([scale.errors.UnavailableError("away"), scale.errors.TooManyRequestsError("busy")], 60.0, "ok"),
    ([scale.errors.AlreadyExistsError("there")], 60.0, "ok"),
    ([scale.errors.TimeoutError_("deadline")], 0.5, "TimeoutError_"),
    ([scale.errors.InvalidError("bad")], 60.0, "InvalidError"),
], ids=["first-try", "timeout-sent-again", "unavailable-and-overload-sent-again", "already-done",
        "past-the-deadline-raises", "not-transient-raises"])
async def test_persist_sends_transient_failures_again(failures: list[Exception], budget: float, outcome: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(scale.asyncio, "sleep", no_sleep)
    calls: list[int] = []

    async def call() -> None:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]

    deadline = scale.time.monotonic() + budget
    try:
        await scale.persist(call, deadline=deadline, done=(scale.errors.AlreadyExistsError,))
        got = "ok"
    except scale.errors.SkiffError as exc:
        got = type(exc).__name__
    assert got == outcome
    retried = outcome == "ok" and failures and not isinstance(failures[0], scale.errors.AlreadyExistsError)
    assert len(calls) == (len(failures) + 1 if retried else 1)


def _meta(date: str, load: float, commit: str) -> dict[str, object]:
    return {"date": date, "load_before": [load, 0.0, 0.0], "load_after": [load + 1, 0.0, 0.0],
            "versions": {"skiff": commit}}


PARAMS = {"nodes": 1000, "pods": 30000, "nodes_per_process": 250}


@pytest.mark.parametrize(("earlier", "now", "stamped"), [
    ({"params": PARAMS, "skiff": {"ok": False}}, {"params": PARAMS, "etcd": {"ok": True}},
     {"skiff": "2026-01-01T00:00:00Z", "etcd": "2026-01-02T00:00:00Z"}),
    ({"params": PARAMS, "skiff": {"ok": False}, "etcd": {"ok": False}}, {"params": PARAMS, "etcd": {"ok": True}},
     {"skiff": "2026-01-01T00:00:00Z", "etcd": "2026-01-02T00:00:00Z"}),
    ({"params": PARAMS, "skiff": {"ok": False, "run": _meta("2025-12-31T00:00:00Z", 1.0, "c0")}},
     {"params": {**PARAMS, "nodes_per_process": 100}, "etcd": {"ok": True}},
     {"skiff": "2025-12-31T00:00:00Z", "etcd": "2026-01-02T00:00:00Z"}),
    ({"params": PARAMS, "skiff": {"ok": False}}, {"params": {**PARAMS, "hollow_nice": 15}, "etcd": {"ok": True}},
     {"skiff": "2026-01-01T00:00:00Z", "etcd": "2026-01-02T00:00:00Z"}),
], ids=["other-store-kept", "rerun-store-replaced", "earliest-stamp-kept", "hollow-nice-differs"])
def test_add_to_earlier_keeps_the_other_stores_run(earlier: dict[str, object], now: dict[str, object],
                                                   stamped: dict[str, str]) -> None:
    merged = scale.add_to_earlier({"meta": _meta("2026-01-01T00:00:00Z", 2.0, "c1"), "results": earlier}, now,
                                  _meta("2026-01-02T00:00:00Z", 3.0, "c2"))
    assert {s: merged[s]["run"]["date"] for s in ("skiff", "etcd")} == stamped
    assert merged["etcd"]["ok"] is True and merged["params"] == now["params"]


def test_add_to_earlier_refuses_another_size() -> None:
    with pytest.raises(SystemExit, match="another size"):
        scale.add_to_earlier({"meta": _meta("2026-01-01T00:00:00Z", 2.0, "c1"),
                              "results": {"params": {**PARAMS, "pods": 500}, "skiff": {}}},
                             {"params": PARAMS, "etcd": {}}, _meta("2026-01-02T00:00:00Z", 3.0, "c2"))


@pytest.mark.parametrize(("samples", "expected"), [
    ([], {"term_first": None, "term_last": None, "leader_changes_seen": 0, "samples": 0}),
    ([[(3, 7), (3, 7), (3, 7)], [(3, 7), (3, 7)], [(3, 7)]],
     {"term_first": 3, "term_last": 3, "leader_changes_seen": 0, "samples": 3}),
    ([[(3, 7), (3, 7), (3, 7)], [(4, 0), (3, 7)], [(4, 9), (4, 9), (4, 9)], [(5, 7), (4, 9)]],
     {"term_first": 3, "term_last": 5, "leader_changes_seen": 3, "samples": 4}),
    ([[(3, 7)], [], [(3, 7)]], {"term_first": 3, "term_last": 3, "leader_changes_seen": 0, "samples": 2}),
], ids=["no-member-answered", "steady-leader", "two-elections-one-without-leader", "silent-sample-skipped"])
def test_store_terms_count_leader_changes(samples: list[list[tuple[int, int]]], expected: dict[str, object]) -> None:
    terms = scale.StoreTerms([])
    for seen in samples:
        terms.observe(seen)
    assert terms.results() == expected


@pytest.mark.parametrize(("created", "expected"), [
    ({"a1": ("a", 10.0), "a2": ("a", 14.0), "b1": ("b", 12.0), "b2": ("b", 13.0), "c1": ("c", 20.0)},
     {"replicasets": 3, "span_p50_s": 1.0, "span_max_s": 4.0, "most_at_once": 2, "last_started_s": 10.0}),
    ({"a1": ("a", 10.0), "a2": ("a", 11.0), "b1": ("b", 11.0), "b2": ("b", 12.0)},
     {"replicasets": 2, "span_p50_s": 1.0, "span_max_s": 1.0, "most_at_once": 1, "last_started_s": 1.0}),
    ({}, {}),
], ids=["overlapping-sets", "one-after-another", "nothing-created"])
def test_creation_spans_say_how_long_and_how_many_at_once(created: dict[str, tuple[str, float]],
                                                          expected: dict[str, object]) -> None:
    assert scale.creation_spans(created, 10.0) == expected


def test_create_path_reads_pod_creates_and_replicaset_syncs() -> None:
    post = {"verb": "POST", "resource": "pods"}
    apiservers = [
        [("apiserver_request_total", {**post, "code": "201"}, 90.0),
         ("apiserver_request_total", {**post, "code": "429"}, 10.0),
         ("apiserver_request_total", {"verb": "PUT", "resource": "pods", "code": "200"}, 500.0),
         ("apiserver_request_duration_seconds_sum", post, 5.0),
         ("apiserver_request_duration_seconds_count", post, 100.0)],
        [("apiserver_request_total", {**post, "code": "201"}, 10.0),
         ("apiserver_request_duration_seconds_sum", post, 15.0),
         ("apiserver_request_duration_seconds_count", post, 100.0)],
    ]
    controllers = [("workqueue_work_duration_seconds_sum", {"name": "replicaset"}, 40.0),
                   ("workqueue_work_duration_seconds_count", {"name": "replicaset"}, 8.0),
                   ("workqueue_work_duration_seconds_count", {"name": "deployment"}, 99.0),
                   ("workqueue_retries_total", {"name": "replicaset"}, 3.0)]
    assert scale.create_path(apiservers, controllers) == {
        "pod_creates_by_code": {"201": 100, "429": 10}, "pod_create_mean_ms": 100.0, "replicaset_syncs": 8,
        "replicaset_sync_mean_s": 5.0, "replicaset_sync_s_total": 40.0, "replicaset_retries": 3}


def test_create_path_without_metrics_says_nothing_was_seen() -> None:
    assert scale.create_path([[]], []) == {
        "pod_creates_by_code": {}, "pod_create_mean_ms": None, "replicaset_syncs": 0,
        "replicaset_sync_mean_s": None, "replicaset_sync_s_total": 0.0, "replicaset_retries": 0}
