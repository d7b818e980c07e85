"""Deployment arithmetic, pure: fenceposts, rolling steps, proportional scaling, history, hashing.

These follow Kubernetes' deployment util functions so that a Deployment rolls the same way here:
- maxSurge rounds up and maxUnavailable rounds down from a percentage of the desired count;
  when both resolve to 0, maxUnavailable becomes 1 (a rollout must be able to move);
- a rolling step never takes the total above desired + maxSurge, nor the available count
  below desired - maxUnavailable;
- scaling a Deployment in the middle of a rollout spreads the change over the active
  ReplicaSets in proportion to their size, leftovers going to the largest;
- the pod-template hash is a stable function of the template (and the collision count),
  written in an alphabet without vowels so it never spells words, as Kubernetes does.

Nothing here does I/O or reads a clock; the controller passes what it observed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from skiff.names import safe_encode
from skiffpb.api.v1 import types_pb2 as t

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Deployment annotations that describe the Deployment itself and are not copied to its ReplicaSets.
NOT_COPIED = frozenset({
    REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
    "kubectl.kubernetes.io/last-applied-configuration", "deprecated.deployment.rollback.to",
})

DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600

# ------------------------------------------------------------------ int-or-percent


def scaled_value(value: int | str, total: int, *, round_up: bool) -> int:
    """An int as is, or "N%" of `total` rounded up or down; ValueError for anything else."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be non-negative, got {value}")
        return value
    text = value.strip()
    if not text.endswith("%") or not text[:-1].isdigit():
        raise ValueError(f'invalid value "{value}": must be an integer or a percentage such as "25%"')
    percent = int(text[:-1])
    exact = percent * total / 100
    # Integer arithmetic decides exact multiples so that 10% of 30 is 3, not 3.0000000004 -> 4.
    if (percent * total) % 100 == 0:
        return percent * total // 100
    return math.ceil(exact) if round_up else math.floor(exact)


def int_or_string(ios: t.IntOrString | None, default: str) -> int | str:
    if ios is None or ios.WhichOneof("value") is None:
        return default
    return ios.int_val if ios.WhichOneof("value") == "int_val" else ios.str_val


def resolve_fenceposts(max_surge: int | str, max_unavailable: int | str, desired: int) -> tuple[int, int]:
    """(surge, unavailable) in pods; never both 0."""
    surge = scaled_value(max_surge, desired, round_up=True)
    unavailable = scaled_value(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


# ------------------------------------------------------------------ ReplicaSets as numbers


@dataclass(frozen=True)
class RSView:
    """What the arithmetic needs to know about one ReplicaSet."""

    name: str
    replicas: int  # spec.replicas
    available: int = 0  # status.availableReplicas
    created: float = 0.0
    revision: int = 0
    max_replicas: int | None = None  # the max-replicas annotation, when present


def total_replicas(rss: Iterable[RSView]) -> int:
    return sum(rs.replicas for rs in rss)


def total_available(rss: Iterable[RSView]) -> int:
    return sum(rs.available for rs in rss)


def by_creation(rss: Iterable[RSView]) -> list[RSView]:
    """Oldest first; equal times by name."""
    return sorted(rss, key=lambda rs: (rs.created, rs.name))


def new_rs_replicas_rolling(*, desired: int, max_surge: int, current_total: int, new_replicas: int) -> int:
    """How big the new ReplicaSet may be now, within desired + maxSurge pods in total."""
    max_total = desired + max_surge
    if current_total >= max_total:
        return new_replicas
    scale_up = min(max_total - current_total, desired - new_replicas)
    return new_replicas + max(scale_up, 0)


def max_scaled_down(*, desired: int, max_unavailable: int, all_total: int, new_replicas: int,
                    new_available: int) -> int:
    """How many old pods may go now without dropping below desired - maxUnavailable available.

    The new ReplicaSet's not-yet-available pods count against the budget: they may never become
    available, and scaling old ones down for them could leave the Deployment with nothing.
    """
    min_available = desired - max_unavailable
    new_unavailable = new_replicas - new_available
    return all_total - min_available - new_unavailable


def plan_cleanup_unhealthy(old: Sequence[RSView], max_cleanup: int) -> dict[str, int]:
    """Scale down old ReplicaSets' unavailable pods first (oldest sets first), up to `max_cleanup`.

    Returns new sizes for the sets that change.
    """
    out: dict[str, int] = {}
    cleaned = 0
    for rs in by_creation(old):
        if cleaned >= max_cleanup:
            break
        if rs.replicas == 0 or rs.replicas == rs.available:
            continue
        count = min(max_cleanup - cleaned, rs.replicas - rs.available)
        out[rs.name] = rs.replicas - count
        cleaned += count
    return out


def plan_scale_down_old(old: Sequence[RSView], *, desired: int, max_unavailable: int,
                        available_total: int) -> dict[str, int]:
    """Scale old ReplicaSets down (oldest first) while availability stays >= desired - maxUnavailable."""
    min_available = desired - max_unavailable
    if available_total <= min_available:
        return {}
    budget = available_total - min_available
    out: dict[str, int] = {}
    done = 0
    for rs in by_creation(old):
        if done >= budget:
            break
        if rs.replicas == 0:
            continue
        count = min(rs.replicas, budget - done)
        out[rs.name] = rs.replicas - count
        done += count
    return out


def _round_half_away(x: float) -> int:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def rs_fraction(rs: RSView, *, desired: int, max_surge: int, status_replicas: int) -> int:
    """How many pods `rs` should gain (or lose) when the Deployment is resized (Kubernetes' formula)."""
    if desired == 0:
        return -rs.replicas
    deployment_replicas = desired + max_surge
    annotated = rs.max_replicas if rs.max_replicas is not None else status_replicas
    if annotated <= 0:
        return 0
    return _round_half_away(rs.replicas * deployment_replicas / annotated) - rs.replicas


def plan_proportional_scale(rss: Sequence[RSView], *, desired: int, max_surge: int,
                            status_replicas: int) -> dict[str, int]:
    """New sizes for the active ReplicaSets when a Deployment is resized during a rollout.

    `rss` are the active sets (replicas > 0), new and old; `status_replicas` is the
    Deployment's status.replicas (used for sets without a max-replicas annotation).
    The returned sizes always add up to desired + maxSurge (or 0 when desired is 0).
    """
    active = [rs for rs in rss if rs.replicas > 0]
    allowed = desired + max_surge if desired > 0 else 0
    to_add = allowed - total_replicas(active)
    if to_add > 0:  # the biggest first; equal sizes newest first
        ordered = sorted(active, key=lambda rs: (-rs.replicas, -rs.created, rs.name))
    else:  # the biggest first; equal sizes oldest first
        ordered = sorted(active, key=lambda rs: (-rs.replicas, rs.created, rs.name))
    sizes: dict[str, int] = {}
    added = 0
    for rs in ordered:
        proportion = 0
        if to_add != 0 and to_add != added:
            fraction = rs_fraction(rs, desired=desired, max_surge=max_surge, status_replicas=status_replicas)
            allowed_left = to_add - added
            proportion = min(fraction, allowed_left) if to_add > 0 else max(fraction, allowed_left)
        sizes[rs.name] = rs.replicas + proportion
        added += proportion
    if ordered and to_add != 0:
        first = ordered[0].name
        sizes[first] = max(sizes[first] + to_add - added, 0)
    return sizes


def find_active_or_latest(new: RSView | None, old: Sequence[RSView]) -> RSView | None:
    """The one set to scale directly: the only active one, or (when none is) the newest."""
    if new is None and not old:
        return None
    old_newest_first = sorted(old, key=lambda rs: (rs.created, rs.name), reverse=True)
    active = [rs for rs in [*old_newest_first, *([new] if new else [])] if rs.replicas > 0]
    if not active:
        return new if new is not None else old_newest_first[0]
    if len(active) == 1:
        return active[0]
    return None


def plan_history_cleanup(old: Sequence[RSView], limit: int, *, deletable: Iterable[str]) -> list[str]:
    """Old ReplicaSets to delete so that at most `limit` remain, lowest revisions first.

    Only sets named in `deletable` (scaled to 0, no pods left, status up to date, not being
    deleted) are removed; others still count against the limit but are skipped.
    """
    can = set(deletable)
    excess = len(old) - limit
    if excess <= 0:
        return []
    ordered = sorted(old, key=lambda rs: (rs.revision, rs.created, rs.name))
    return [rs.name for rs in ordered[:excess] if rs.name in can]


def max_revision(rss: Iterable[RSView]) -> int:
    return max((rs.revision for rs in rss), default=0)


# ------------------------------------------------------------------ template hash

def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_without_hash(template: t.PodTemplateSpec) -> t.PodTemplateSpec:
    out = t.PodTemplateSpec()
    out.CopyFrom(template)
    out.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    return out


def pod_template_hash(template: t.PodTemplateSpec, collision_count: int | None = None) -> str:
    """A stable, DNS-safe hash of the template (its pod-template-hash label left out)."""
    data = template_without_hash(template).SerializeToString(deterministic=True)
    if collision_count is not None:
        data += collision_count.to_bytes(4, "little", signed=False)
    return safe_encode(str(_fnv32a(data)))


def equal_ignore_hash(a: t.PodTemplateSpec, b: t.PodTemplateSpec) -> bool:
    return template_without_hash(a) == template_without_hash(b)
