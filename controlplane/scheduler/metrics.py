"""The scheduler's Prometheus metrics, named and labelled as kube-scheduler's: attempts by result,
the duration of an attempt (decision and binding), and pods pending per queue.

What must hold: every attempt ends in exactly one `attempt()` call with its result
(scheduled, unschedulable, error); pending pods are read from the queue at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

PROFILE = "default-scheduler"  # the one profile Skiff's scheduler runs
RESULTS = ("scheduled", "unschedulable", "error")
QUEUES = ("active", "backoff", "unschedulable", "gated")
# kube-scheduler's buckets: 1 ms doubling, 15 of them.
BUCKETS = tuple(0.001 * 2 ** i for i in range(15))

ATTEMPTS = Counter("scheduler_schedule_attempts", "Number of attempts to schedule pods, by the result. "
                   "'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler "
                   "problem.", ["result", "profile"])
ATTEMPT_DURATION = Histogram("scheduler_scheduling_attempt_duration_seconds",
                             "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
                             ["result", "profile"], buckets=BUCKETS)
PENDING = Gauge("scheduler_pending_pods", "Number of pending pods, by the queue type. 'active' means number of "
                "pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of "
                "pods in unschedulablePods that the scheduler attempted to schedule and failed.", ["queue"])


def attempt(result: str, seconds: float) -> None:
    ATTEMPTS.labels(result, PROFILE).inc()
    ATTEMPT_DURATION.labels(result, PROFILE).observe(seconds)


def watch_queue(counts: Callable[[], dict[str, int]] | None) -> None:
    """Read scheduler_pending_pods from `counts()` (the running scheduler's queue); None: zero."""
    for queue in QUEUES:
        PENDING.labels(queue).set_function(
            (lambda q=queue: float(counts().get(q, 0))) if counts is not None else (lambda: 0.0))  # type: ignore[misc]
