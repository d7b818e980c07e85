"""The deployment controller: Deployments roll out through one ReplicaSet per pod template.

What must hold (Kubernetes' deployment controller, which this follows step by step):
- one ReplicaSet per distinct pod template, named `<deployment>-<hash>` and labelled with
  `pod-template-hash=<hash>`; the newest template's set is "new", all others are "old";
- a template equal to an old ReplicaSet's (a rollback: `skiff rollout undo` copies an old
  template back) reuses that set and bumps its revision above every other;
- RollingUpdate never exceeds desired + maxSurge pods nor drops below desired - maxUnavailable
  available pods; Recreate scales every old set to 0 and waits for their pods to be gone
  before scaling the new one up;
- resizing during a rollout is proportional over the active sets; a paused Deployment is
  resized but does not roll;
- old sets beyond revisionHistoryLimit that have no pods are deleted;
- status and the Progressing/Available conditions use Kubernetes' reasons.
`sync(key)` re-reads the cache, writes, and raises to be retried; it may run any number of times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from controlplane.common import podutil
from controlplane.controllers import rollout
from controlplane.controllers.base import QueueController, claim, condition_states, live_controller
from controlplane.controllers.rollout import RSView
from skiff import conditions, defaults, errors, labels
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock, stamp, to_seconds
from skiff.events import NORMAL, WARNING, Recorder
from skiff.informer import InformerFactory, object_key, split_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.deployment")

# Condition reasons, as Kubernetes writes them.
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
FAILED_CREATE = "FailedRSCreate"
MAX_INT32 = 2**31 - 1


# ------------------------------------------------------------------ reading a Deployment


def desired_replicas(d: t.Deployment) -> int:
    return defaults.replicas(d.spec)


def is_rolling(d: t.Deployment) -> bool:
    return d.spec.strategy.type in ("", "RollingUpdate")


def fenceposts(d: t.Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods; (0, 0) for Recreate."""
    if not is_rolling(d):
        return 0, 0
    ru = d.spec.strategy.rolling_update
    surge = rollout.int_or_string(ru.max_surge if ru.HasField("max_surge") else None, rollout.DEFAULT_MAX_SURGE)
    unavailable = rollout.int_or_string(ru.max_unavailable if ru.HasField("max_unavailable") else None,
                                        rollout.DEFAULT_MAX_UNAVAILABLE)
    s, u = rollout.resolve_fenceposts(surge, unavailable, desired_replicas(d))
    return s, min(u, desired_replicas(d))


def max_surge(d: t.Deployment) -> int:
    return fenceposts(d)[0]


def max_unavailable(d: t.Deployment) -> int:
    if not is_rolling(d) or desired_replicas(d) == 0:
        return 0
    return fenceposts(d)[1]


def progress_deadline(d: t.Deployment) -> int | None:
    """Seconds, or None when the Deployment has no deadline."""
    value = (d.spec.progress_deadline_seconds if d.spec.HasField("progress_deadline_seconds")
             else rollout.DEFAULT_PROGRESS_DEADLINE_SECONDS)
    return None if value == MAX_INT32 else value


def history_limit(d: t.Deployment) -> int:
    if d.spec.HasField("revision_history_limit"):
        return d.spec.revision_history_limit
    return rollout.DEFAULT_REVISION_HISTORY_LIMIT


def rs_replicas(rs: t.ReplicaSet) -> int:
    return defaults.replicas(rs.spec)


def revision(obj: Any) -> int:
    try:
        return int(obj.metadata.annotations.get(rollout.REVISION, "0"))
    except ValueError:
        return 0


def view(rs: t.ReplicaSet) -> RSView:
    raw = rs.metadata.annotations.get(rollout.MAX_REPLICAS)
    max_replicas = int(raw) if raw is not None and raw.isdigit() else None
    return RSView(name=rs.metadata.name, replicas=rs_replicas(rs), available=rs.status.available_replicas,
                  created=podutil.created(rs), revision=revision(rs), max_replicas=max_replicas)


def find_new(d: t.Deployment, rss: list[t.ReplicaSet]) -> t.ReplicaSet | None:
    """The ReplicaSet whose template is the Deployment's; the oldest one if several are."""
    for rs in sorted(rss, key=lambda r: (podutil.created(r), r.metadata.name)):
        if rollout.equal_ignore_hash(rs.spec.template, d.spec.template):
            return rs
    return None


# ------------------------------------------------------------------ status, pure


def new_condition(type_: str, status: str, reason: str, message: str, now: float) -> t.DeploymentCondition:
    cond = t.DeploymentCondition(type=type_, status=status, reason=reason, message=message)
    stamp(cond.last_update_time, now)
    stamp(cond.last_transition_time, now)
    return cond


def calculate_status(d: t.Deployment, all_rss: list[t.ReplicaSet], new_rs: t.ReplicaSet | None,
                     now: float) -> t.DeploymentStatus:
    """The status the ReplicaSets imply, with the Available condition; other conditions are kept."""
    available = sum(rs.status.available_replicas for rs in all_rss)
    total = sum(rs_replicas(rs) for rs in all_rss)
    status = t.DeploymentStatus(
        observed_generation=d.metadata.generation,
        replicas=sum(rs.status.replicas for rs in all_rss),
        updated_replicas=new_rs.status.replicas if new_rs is not None else 0,
        ready_replicas=sum(rs.status.ready_replicas for rs in all_rss),
        available_replicas=available,
        unavailable_replicas=max(total - available, 0),
        collision_count=d.status.collision_count,
    )
    status.conditions.extend(d.status.conditions)
    if available >= desired_replicas(d) - max_unavailable(d):
        conditions.set_condition(status.conditions, new_condition(
            "Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.", now))
    else:
        conditions.set_condition(status.conditions, new_condition(
            "Available", "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.", now))
    return status


def is_complete(d: t.Deployment, status: t.DeploymentStatus) -> bool:
    n = desired_replicas(d)
    return (status.updated_replicas == n and status.replicas == n and status.available_replicas == n
            and status.observed_generation >= d.metadata.generation)


def status_urgent(d: t.Deployment, status: t.DeploymentStatus) -> bool:
    """Whether a status change is written at once rather than batched: a new observedGeneration,
    a condition changing state (Available, Progressing's reason) or the rollout complete."""
    return (status.observed_generation != d.status.observed_generation
            or condition_states(status.conditions) != condition_states(d.status.conditions)
            or is_complete(d, status))


def is_progressing(d: t.Deployment, status: t.DeploymentStatus) -> bool:
    old = d.status
    return (status.updated_replicas > old.updated_replicas
            or status.replicas - status.updated_replicas < old.replicas - old.updated_replicas
            or status.ready_replicas > old.ready_replicas
            or status.available_replicas > old.available_replicas)


def is_timed_out(d: t.Deployment, status: t.DeploymentStatus, now: float) -> bool:
    deadline = progress_deadline(d)
    cond = conditions.find(status.conditions, "Progressing")
    if deadline is None or cond is None or cond.reason == NEW_RS_AVAILABLE:
        return False
    if cond.reason == TIMED_OUT:
        return True
    return bool(to_seconds(cond.last_update_time) + deadline < now)


def rollout_status(d: t.Deployment, all_rss: list[t.ReplicaSet], new_rs: t.ReplicaSet | None,
                   now: float) -> t.DeploymentStatus:
    """calculate_status plus the Progressing condition (complete, progressing or timed out)."""
    status = calculate_status(d, all_rss, new_rs, now)
    deadline = progress_deadline(d)
    if deadline is None:
        conditions.remove_condition(status.conditions, "Progressing")
        return status
    current = conditions.find(d.status.conditions, "Progressing")
    already_complete = (status.replicas == status.updated_replicas and current is not None
                        and current.reason == NEW_RS_AVAILABLE)
    if already_complete:
        return status
    subject = f'ReplicaSet "{new_rs.metadata.name}"' if new_rs is not None else f'Deployment "{d.metadata.name}"'
    if is_complete(d, status):
        conditions.set_condition(status.conditions, new_condition(
            "Progressing", "True", NEW_RS_AVAILABLE, f"{subject} has successfully progressed.", now))
    elif is_progressing(d, status):
        cond = new_condition("Progressing", "True", RS_UPDATED, f"{subject} is progressing.", now)
        # Progress moves lastUpdateTime even when the reason stays (so not set_condition, which
        # would leave it); the transition time stays while the status does.
        cond.last_transition_time.CopyFrom(conditions.transition_time(d.status.conditions, "Progressing", "True", now))
        conditions.replace_condition(status.conditions, cond)
    elif is_timed_out(d, status, now):
        conditions.set_condition(status.conditions, new_condition(
            "Progressing", "False", TIMED_OUT, f"{subject} has timed out progressing.", now))
    return status


def set_new_rs_annotations(d: t.Deployment, rs: t.ReplicaSet, new_revision: int, *, exists: bool) -> bool:
    """Copy the Deployment's annotations, raise the revision (keeping history); True if changed."""
    ann = rs.metadata.annotations
    changed = False
    for k, v in d.metadata.annotations.items():
        if k not in rollout.NOT_COPIED and ann.get(k) != v:
            ann[k] = v
            changed = True
    old_raw = ann.get(rollout.REVISION)
    try:
        old = int(old_raw) if old_raw else 0
    except ValueError:
        return changed
    if old < new_revision:
        ann[rollout.REVISION] = str(new_revision)
        changed = True
        if old_raw:
            history = ann.get(rollout.REVISION_HISTORY, "")
            ann[rollout.REVISION_HISTORY] = f"{history},{old_raw}" if history else old_raw
    if not exists:
        changed = set_replicas_annotations(rs, desired_replicas(d), desired_replicas(d) + max_surge(d)) or changed
    return changed


def set_replicas_annotations(rs: t.ReplicaSet, desired: int, maximum: int) -> bool:
    ann = rs.metadata.annotations
    if ann.get(rollout.DESIRED_REPLICAS) == str(desired) and ann.get(rollout.MAX_REPLICAS) == str(maximum):
        return False
    ann[rollout.DESIRED_REPLICAS] = str(desired)
    ann[rollout.MAX_REPLICAS] = str(maximum)
    return True


# ------------------------------------------------------------------ the controller


@dataclass
class _State:
    """One sync's view: the Deployment and its ReplicaSets as last written."""

    d: t.Deployment
    rss: dict[str, t.ReplicaSet]
    new: str | None = None

    @property
    def new_rs(self) -> t.ReplicaSet | None:
        return self.rss[self.new] if self.new else None

    @property
    def old(self) -> list[t.ReplicaSet]:
        return [rs for name, rs in self.rss.items() if name != self.new]

    @property
    def all(self) -> list[t.ReplicaSet]:
        return list(self.rss.values())


class DeploymentController(QueueController):
    name = "deployment"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 clock: Clock | None = None, status_batch_period: float = 0.0) -> None:
        super().__init__(batch_period=status_batch_period)
        self.client = client
        self.recorder = recorder
        self.clock = clock or RealClock()
        self.deployments = factory.informer(t.Deployment)
        self.replicasets = factory.informer(t.ReplicaSet)
        self.pods = factory.informer(t.Pod)
        self.replicasets.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.pods.add_indexer(podutil.CONTROLLER_UID_INDEX, podutil.index_controller_uid)
        self.deployments.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                     on_delete=self.enqueue)
        self.replicasets.add_handler(on_add=self._rs_changed, on_update=self._rs_updated,
                                     on_delete=self._rs_changed)
        self.pods.add_handler(on_delete=self._pod_deleted)

    # ------------------------------------------------------------------ handlers

    def _owner_of(self, obj: Any) -> t.Deployment | None:
        return live_controller(self.deployments, obj, "Deployment")

    def _rs_changed(self, rs: t.ReplicaSet) -> None:
        owner = self._owner_of(rs)
        if owner is not None:
            self.enqueue(owner)
        elif podutil.controller_ref(rs) is None:
            for d in self._matching(rs):
                self.enqueue(d)

    def _rs_updated(self, old: t.ReplicaSet, new: t.ReplicaSet) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            return
        before, after = podutil.controller_ref(old), podutil.controller_ref(new)
        if before is not None and (after is None or before.uid != after.uid):
            self._rs_changed(old)
        self._rs_changed(new)

    def _matching(self, rs: t.ReplicaSet) -> list[t.Deployment]:
        out = []
        for d in self.deployments.list(rs.metadata.namespace):
            sel = d.spec.selector
            if not sel.match_labels and not sel.match_expressions:
                continue
            try:
                if labels.matches(labels.from_label_selector(sel), rs.metadata.labels):
                    out.append(d)
            except labels.SelectorError:
                continue
        return out

    def _pod_deleted(self, pod: t.Pod) -> None:
        # Recreate waits for the old pods to be gone; each deletion may be the last one.
        ref = podutil.controller_ref(pod)
        if ref is None or ref.kind != "ReplicaSet":
            return
        rs = self.replicasets.get(ref.name, pod.metadata.namespace)
        if rs is None:
            return
        d = self._owner_of(rs)
        if d is not None and d.spec.strategy.type == "Recreate":
            self.enqueue(d)

    # ------------------------------------------------------------------ sync

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        cached = self.deployments.get(name, namespace)
        if cached is None:
            return
        d = podutil.copy(cached)
        sel = d.spec.selector
        if not sel.match_labels and not sel.match_expressions:
            self.recorder.event(d, WARNING, "SelectingAll",
                                "This deployment is selecting all pods. A non-empty selector is required.")
            if d.status.observed_generation < d.metadata.generation:
                d.status.observed_generation = d.metadata.generation
                await self.client.update_status(d)
            return
        selector = labels.from_label_selector(sel)
        candidates = [rs for rs in self.replicasets.list(namespace)
                      if podutil.controller_ref(rs) is None
                      or podutil.controller_ref(rs).uid == d.metadata.uid]  # type: ignore[union-attr]
        owned = await claim(self.client, d, candidates, selector)
        state = _State(d, {rs.metadata.name: rs for rs in owned})
        new = find_new(d, owned)
        state.new = new.metadata.name if new is not None else None

        if d.metadata.HasField("deletion_timestamp"):
            await self._sync_status(state)
            return
        await self._check_paused_conditions(state)
        if d.spec.paused or self._is_scaling_event(state):
            await self._sync_scale(state)
            return
        if d.spec.strategy.type == "Recreate":
            await self._rollout_recreate(state)
        else:
            await self._rollout_rolling(state)

    # ------------------------------------------------------------------ steps

    async def _check_paused_conditions(self, s: _State) -> None:
        if progress_deadline(s.d) is None:
            return
        cond = conditions.find(s.d.status.conditions, "Progressing")
        if cond is not None and cond.reason == TIMED_OUT:
            return
        paused_cond = cond is not None and cond.reason == PAUSED
        now = self.clock.now()
        if s.d.spec.paused and not paused_cond:
            new = new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused", now)
        elif not s.d.spec.paused and paused_cond:
            new = new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", now)
        else:
            return
        conditions.set_condition(s.d.status.conditions, new)
        s.d = await self.client.update_status(s.d)

    def _is_scaling_event(self, s: _State) -> bool:
        for rs in s.all:
            if rs_replicas(rs) == 0:
                continue
            raw = rs.metadata.annotations.get(rollout.DESIRED_REPLICAS)
            if raw is not None and raw.isdigit() and int(raw) != desired_replicas(s.d):
                return True
        return False

    async def _sync_new_rs(self, s: _State, *, create: bool) -> None:
        """Find or create the new ReplicaSet; keep its revision the highest (Kubernetes' getNewReplicaSet)."""
        d = s.d
        new_revision = rollout.max_revision(view(rs) for rs in s.old) + 1
        existing = s.new_rs
        if existing is not None:
            rs = podutil.copy(existing)
            changed = set_new_rs_annotations(d, rs, new_revision, exists=True)
            if rs.spec.min_ready_seconds != d.spec.min_ready_seconds:
                rs.spec.min_ready_seconds = d.spec.min_ready_seconds
                changed = True
            if changed:
                rs = await self.client.update(rs)
                s.rss[rs.metadata.name] = rs
            await self._set_deployment_revision(s, rs.metadata.annotations.get(rollout.REVISION, ""))
            if progress_deadline(s.d) is not None and conditions.find(s.d.status.conditions,
                                                                            "Progressing") is None:
                conditions.set_condition(s.d.status.conditions, new_condition(
                    "Progressing", "True", FOUND_NEW_RS, f'Found new replica set "{rs.metadata.name}"',
                    self.clock.now()))
                s.d = await self.client.update_status(s.d)
            return
        if not create:
            return
        rs = self._new_rs_object(d, new_revision, current_total=sum(rs_replicas(o) for o in s.all))
        try:
            created = await self.client.create(rs)
        except errors.AlreadyExistsError:
            other = await self.client.get(t.ReplicaSet, rs.metadata.name, d.metadata.namespace)
            ref = podutil.controller_ref(other)
            if ref is not None and ref.uid == d.metadata.uid and rollout.equal_ignore_hash(
                    other.spec.template, d.spec.template):
                # Our own set that the cache has not shown yet.
                s.rss[other.metadata.name] = other
                s.new = other.metadata.name
                return
            # A hash collision with a foreign set: change the hash input and try again.
            s.d.status.collision_count += 1
            s.d = await self.client.update_status(s.d)
            raise errors.ConflictError(f'replica set "{rs.metadata.name}" exists with another template; '
                                       f"collision count is now {s.d.status.collision_count}") from None
        except errors.SkiffError as exc:
            if progress_deadline(d) is not None:
                conditions.set_condition(s.d.status.conditions, new_condition(
                    "Progressing", "False", FAILED_CREATE, f'Failed to create new replica set: {exc}',
                    self.clock.now()))
                s.d = await self.client.update_status(s.d)
            self.recorder.event(d, WARNING, FAILED_CREATE, f"Failed to create new replica set: {exc}")
            raise
        s.rss[created.metadata.name] = created
        s.new = created.metadata.name
        replicas = rs_replicas(created)
        if replicas > 0:
            self.recorder.event(d, NORMAL, "ScalingReplicaSet",
                                f"Scaled up replica set {created.metadata.name} to {replicas}")
        await self._set_deployment_revision(s, str(new_revision))
        if progress_deadline(s.d) is not None:
            conditions.set_condition(s.d.status.conditions, new_condition(
                "Progressing", "True", NEW_RS_CREATED, f'Created new replica set "{created.metadata.name}"',
                self.clock.now()))
            s.d = await self.client.update_status(s.d)

    @staticmethod
    def _new_rs_object(d: t.Deployment, new_revision: int, *, current_total: int) -> t.ReplicaSet:
        collision = d.status.collision_count if d.status.collision_count else None
        h = rollout.pod_template_hash(d.spec.template, collision)
        rs = t.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
        rs.metadata.name = f"{d.metadata.name}-{h}"
        rs.metadata.namespace = d.metadata.namespace
        rs.metadata.labels.update(d.spec.template.metadata.labels)
        rs.metadata.labels[rollout.POD_TEMPLATE_HASH] = h
        rs.metadata.owner_references.append(podutil.owner_reference(d))
        rs.spec.template.CopyFrom(d.spec.template)
        rs.spec.template.metadata.labels[rollout.POD_TEMPLATE_HASH] = h
        rs.spec.selector.CopyFrom(d.spec.selector)
        rs.spec.selector.match_labels[rollout.POD_TEMPLATE_HASH] = h
        rs.spec.min_ready_seconds = d.spec.min_ready_seconds
        replicas = desired_replicas(d)
        if is_rolling(d):
            replicas = rollout.new_rs_replicas_rolling(
                desired=desired_replicas(d), max_surge=max_surge(d),
                current_total=current_total, new_replicas=0)
        rs.spec.replicas = replicas
        set_new_rs_annotations(d, rs, new_revision, exists=False)
        return rs

    async def _set_deployment_revision(self, s: _State, rev: str) -> None:
        if not rev or s.d.metadata.annotations.get(rollout.REVISION) == rev:
            return
        s.d.metadata.annotations[rollout.REVISION] = rev
        status = t.DeploymentStatus()
        status.CopyFrom(s.d.status)
        s.d = await self.client.update(s.d)
        # Our status edits so far (not yet written) must survive the metadata update.
        s.d.status.CopyFrom(status)

    async def _scale(self, s: _State, rs: t.ReplicaSet, size: int, *, operation: str = "") -> bool:
        """Set `rs` to `size` replicas (and the Deployment's size annotations); True if it changed size."""
        d = s.d
        size_changed = rs_replicas(rs) != size
        new = podutil.copy(rs)
        ann_changed = set_replicas_annotations(new, desired_replicas(d), desired_replicas(d) + max_surge(d))
        if not size_changed and not ann_changed:
            return False
        old_size = rs_replicas(rs)
        new.spec.replicas = size
        updated = await self.client.update(new)
        s.rss[updated.metadata.name] = updated
        if size_changed:
            op = operation or ("up" if size > old_size else "down")
            self.recorder.event(d, NORMAL, "ScalingReplicaSet",
                                f"Scaled {op} replica set {rs.metadata.name} to {size} from {old_size}")
        return size_changed

    async def _sync_scale(self, s: _State) -> None:
        """Resize without rolling (paused Deployments, and resizes during a rollout)."""
        await self._sync_new_rs(s, create=False)
        await self._scale_all(s)
        if s.d.spec.paused:
            await self._cleanup(s)
        await self._sync_status(s)

    async def _scale_all(self, s: _State) -> None:
        d = s.d
        desired = desired_replicas(d)
        new_view = view(s.new_rs) if s.new_rs is not None else None
        target = rollout.find_active_or_latest(new_view, [view(rs) for rs in s.old])
        if target is not None:
            await self._scale(s, s.rss[target.name], desired)
            return
        new_rs = s.new_rs
        if new_rs is not None and self._saturated(d, new_rs):
            for rs in s.old:
                if rs_replicas(rs) > 0:
                    await self._scale(s, rs, 0)
            return
        if not is_rolling(d):
            return
        active = [view(rs) for rs in s.all if rs_replicas(rs) > 0]
        sizes = rollout.plan_proportional_scale(active, desired=desired, max_surge=max_surge(d),
                                                status_replicas=d.status.replicas)
        total = sum(v.replicas for v in active)
        operation = "up" if sum(sizes.values()) > total else "down"
        for name, size in sizes.items():
            await self._scale(s, s.rss[name], size, operation=operation)

    @staticmethod
    def _saturated(d: t.Deployment, rs: t.ReplicaSet) -> bool:
        desired = desired_replicas(d)
        return (rs_replicas(rs) == desired
                and rs.metadata.annotations.get(rollout.DESIRED_REPLICAS) == str(desired)
                and rs.status.available_replicas == desired)

    async def _rollout_rolling(self, s: _State) -> None:
        await self._sync_new_rs(s, create=True)
        if await self._reconcile_new(s) or await self._reconcile_old(s):
            await self._sync_rollout_status(s)
            return
        if is_complete(s.d, s.d.status):
            await self._cleanup(s)
        await self._sync_rollout_status(s)

    async def _reconcile_new(self, s: _State) -> bool:
        d, new_rs = s.d, s.new_rs
        assert new_rs is not None
        desired, current = desired_replicas(d), rs_replicas(new_rs)
        if current == desired:
            return False
        if current > desired:
            return await self._scale(s, new_rs, desired, operation="down")
        size = rollout.new_rs_replicas_rolling(desired=desired, max_surge=max_surge(d),
                                               current_total=sum(rs_replicas(rs) for rs in s.all),
                                               new_replicas=current)
        return await self._scale(s, new_rs, size, operation="up")

    async def _reconcile_old(self, s: _State) -> bool:
        d, new_rs = s.d, s.new_rs
        assert new_rs is not None
        old = s.old
        if sum(rs_replicas(rs) for rs in old) == 0:
            return False
        budget = rollout.max_scaled_down(
            desired=desired_replicas(d), max_unavailable=max_unavailable(d),
            all_total=sum(rs_replicas(rs) for rs in s.all), new_replicas=rs_replicas(new_rs),
            new_available=new_rs.status.available_replicas)
        if budget <= 0:
            return False
        scaled = 0
        active_old = [view(rs) for rs in old if rs_replicas(rs) > 0]
        for name, size in rollout.plan_cleanup_unhealthy(active_old, budget).items():
            scaled += rs_replicas(s.rss[name]) - size
            await self._scale(s, s.rss[name], size, operation="down")
        active_old = [view(rs) for rs in s.old if rs_replicas(rs) > 0]
        plan = rollout.plan_scale_down_old(active_old, desired=desired_replicas(d), max_unavailable=max_unavailable(d),
                                           available_total=sum(rs.status.available_replicas for rs in s.all))
        for name, size in plan.items():
            scaled += rs_replicas(s.rss[name]) - size
            await self._scale(s, s.rss[name], size, operation="down")
        return scaled > 0

    async def _rollout_recreate(self, s: _State) -> None:
        await self._sync_new_rs(s, create=False)
        scaled = False
        for rs in s.old:
            if rs_replicas(rs) > 0:
                scaled = await self._scale(s, rs, 0, operation="down") or scaled
        if scaled or self._old_pods_running(s):
            await self._sync_rollout_status(s)
            return
        if s.new_rs is None:
            await self._sync_new_rs(s, create=True)
        new_rs = s.new_rs
        assert new_rs is not None
        await self._scale(s, new_rs, desired_replicas(s.d), operation="up")
        if is_complete(s.d, s.d.status):
            await self._cleanup(s)
        await self._sync_rollout_status(s)

    def _old_pods_running(self, s: _State) -> bool:
        if sum(rs.status.replicas for rs in s.old) > 0:
            return True
        for rs in s.old:
            for pod in self.pods.by_index(podutil.CONTROLLER_UID_INDEX, rs.metadata.uid):
                if not podutil.is_terminal(pod):
                    return True
        return False

    async def _cleanup(self, s: _State) -> None:
        """Delete old ReplicaSets beyond revisionHistoryLimit (only those with no pods)."""
        alive = [rs for rs in s.old if not rs.metadata.HasField("deletion_timestamp")]
        deletable = [rs.metadata.name for rs in alive
                     if rs.status.replicas == 0 and rs_replicas(rs) == 0
                     and rs.metadata.generation <= rs.status.observed_generation]
        for name in rollout.plan_history_cleanup([view(rs) for rs in alive], history_limit(s.d),
                                                 deletable=deletable):
            try:
                await self.client.delete(t.ReplicaSet, name, s.d.metadata.namespace)
            except errors.NotFoundError:
                pass
            s.rss.pop(name, None)
            log.info("deployment %s: deleted old replica set %s", object_key(s.d), name)

    async def _sync_status(self, s: _State) -> None:
        await self._write_status(s, calculate_status(s.d, s.all, s.new_rs, self.clock.now()))

    async def _sync_rollout_status(self, s: _State) -> None:
        now = self.clock.now()
        await self._write_status(s, rollout_status(s.d, s.all, s.new_rs, now))
        self._requeue_stuck(s.d, now)

    async def _write_status(self, s: _State, status: t.DeploymentStatus) -> None:
        """Write the counts' status once per batch period at most (the last counts win); what a
        reader waits on goes at once."""
        if status == s.d.status or self.hold_write(object_key(s.d), urgent=status_urgent(s.d, status)):
            return
        s.d.status.CopyFrom(status)
        s.d = await self.client.update_status(s.d)

    def _requeue_stuck(self, d: t.Deployment, now: float) -> None:
        """Come back when the progress deadline passes, so the timeout is noticed without events."""
        deadline = progress_deadline(d)
        cond = conditions.find(d.status.conditions, "Progressing")
        if deadline is None or cond is None or cond.reason in (NEW_RS_AVAILABLE, TIMED_OUT):
            return
        if is_complete(d, d.status):
            return
        after = to_seconds(cond.last_update_time) + deadline - now
        self.queue.add_after(object_key(d), max(after, 0.0) + 1.0)
