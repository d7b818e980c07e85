"""`skiff rollout status|history|undo deploy/NAME|ds/NAME`.

status: watches the Deployment (or DaemonSet) and prints kubectl's progress lines until every
replica is updated and available (or a Deployment's progress deadline is exceeded: an error).
history/undo: the Deployment's ReplicaSets carry `deployment.kubernetes.io/revision`; a
DaemonSet's templates are its ControllerRevisions (`revision`). undo copies the pod template
of the previous revision (or --to-revision) back, and the controller rolls it out.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from skiff import errors
from skiff.cli import common
from skiff.client import Client
from skiff.manifests import dump_yaml
from skiff.retry import retry_on_conflict
from skiffpb.api.v1 import types_pb2 as t

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
TEMPLATE_HASH = "pod-template-hash"
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


def register(sub: Any) -> None:
    p = sub.add_parser("rollout", help="follow, list or undo deployment and daemon set rollouts")
    verbs = p.add_subparsers(dest="verb", metavar="status|history|undo")
    verbs.required = True
    status = verbs.add_parser("status", help="wait for a rollout to finish, printing progress")
    status.add_argument("target", metavar="deploy/NAME|ds/NAME")
    status.add_argument("-w", "--watch", default="true", choices=("true", "false"),
                        help="keep watching until done (default true)")
    status.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS", help="give up after this long")
    history = verbs.add_parser("history", help="list revisions")
    history.add_argument("target", metavar="deploy/NAME|ds/NAME")
    history.add_argument("--revision", type=int, default=0, help="show the pod template of this revision")
    undo = verbs.add_parser("undo", help="roll back to the previous (or a given) revision")
    undo.add_argument("target", metavar="deploy/NAME|ds/NAME")
    undo.add_argument("--to-revision", type=int, default=0, help="revision to go back to (default: previous)")
    for verb in (status, history, undo):
        common.add_connection_flags(verb)
        verb.set_defaults(func=main)


def rollout_target(target: str) -> tuple[str, str]:
    """(resource, name) of deploy/NAME or ds/NAME (a bare NAME is a Deployment)."""
    (kind, name), *rest = common.targets([target] if "/" in target else ["deploy", target])
    if rest or kind.resource not in ("deployments", "daemonsets"):
        raise errors.InvalidError(f'rollout works on deployments and daemonsets: expected deploy/NAME or ds/NAME, '
                                  f'got "{target}"')
    return kind.resource, name


def ds_status_message(ds: t.DaemonSet) -> tuple[str, bool]:
    """kubectl's rollout status line for a DaemonSet, and whether the rollout is complete."""
    name, s = ds.metadata.name, ds.status
    if ds.metadata.generation > s.observed_generation:
        return "Waiting for daemon set spec update to be observed...", False
    if s.updated_number_scheduled < s.desired_number_scheduled:
        return (f'Waiting for daemon set "{name}" rollout to finish: {s.updated_number_scheduled} out of '
                f"{s.desired_number_scheduled} new pods have been updated..."), False
    if s.number_available < s.desired_number_scheduled:
        return (f'Waiting for daemon set "{name}" rollout to finish: {s.number_available} of '
                f"{s.desired_number_scheduled} updated pods are available..."), False
    return f'daemon set "{name}" successfully rolled out', True


def ds_revisions(ds: t.DaemonSet, revisions: list[t.ControllerRevision]) -> list[t.ControllerRevision]:
    """The DaemonSet's ControllerRevisions (controller owner reference), oldest first."""
    mine = [r for r in revisions if any(ref.controller and ref.uid == ds.metadata.uid
                                        for ref in r.metadata.owner_references)]
    return sorted(mine, key=lambda r: r.revision)


def ds_history_lines(ds: t.DaemonSet, revisions: list[t.ControllerRevision]) -> list[str]:
    lines = [f"daemonset.apps/{ds.metadata.name}", "REVISION  CHANGE-CAUSE"]
    for r in ds_revisions(ds, revisions):
        lines.append(f"{r.revision:<10}{r.metadata.annotations.get(CHANGE_CAUSE) or '<none>'}")
    return lines


def ds_undo_template(ds: t.DaemonSet, revisions: list[t.ControllerRevision],
                     to_revision: int) -> tuple[t.PodTemplateSpec, int]:
    """The template to roll a DaemonSet back to and its revision; errors when there is none."""
    history = ds_revisions(ds, revisions)
    if to_revision:
        chosen = next((r for r in history if r.revision == to_revision), None)
        if chosen is None:
            raise errors.NotFoundError(f"unable to find the specified revision {to_revision} in history")
    else:
        if len(history) < 2:
            raise errors.NotFoundError(f'daemon set "{ds.metadata.name}" has no previous revision to roll back to')
        chosen = history[-2]
    template = t.PodTemplateSpec()
    template.CopyFrom(chosen.data.spec.template)
    return template, chosen.revision


def status_message(d: t.Deployment) -> tuple[str, bool]:
    """kubectl's rollout status line for `d`, and whether the rollout is complete."""
    name = d.metadata.name
    if d.metadata.generation > d.status.observed_generation:
        return "Waiting for deployment spec update to be observed...", False
    for cond in d.status.conditions:
        if cond.type == "Progressing" and cond.reason == DEADLINE_EXCEEDED:
            raise errors.FailedPreconditionError(f'deployment "{name}" exceeded its progress deadline')
    s = d.status
    if s.updated_replicas < d.spec.replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {s.updated_replicas} out of {d.spec.replicas} '
                "new replicas have been updated..."), False
    if s.replicas > s.updated_replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {s.replicas - s.updated_replicas} old replicas '
                "are pending termination..."), False
    if s.available_replicas < s.updated_replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {s.available_replicas} of {s.updated_replicas} '
                "updated replicas are available..."), False
    return f'deployment "{name}" successfully rolled out', True


def revision_of(rs: t.ReplicaSet) -> int:
    try:
        return int(rs.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def owned(d: t.Deployment, rsets: list[t.ReplicaSet]) -> list[t.ReplicaSet]:
    """The Deployment's ReplicaSets (controller owner reference), oldest revision first."""
    mine = [rs for rs in rsets if any(ref.controller and ref.uid == d.metadata.uid
                                      for ref in rs.metadata.owner_references)]
    return sorted(mine, key=revision_of)


def history_lines(d: t.Deployment, rsets: list[t.ReplicaSet]) -> list[str]:
    lines = [f"deployment.apps/{d.metadata.name}", "REVISION  CHANGE-CAUSE"]
    for rs in owned(d, rsets):
        lines.append(f"{revision_of(rs):<10}{rs.metadata.annotations.get(CHANGE_CAUSE) or '<none>'}")
    return lines


def undo_template(d: t.Deployment, rsets: list[t.ReplicaSet], to_revision: int) -> tuple[t.PodTemplateSpec, int]:
    """The template to roll back to and its revision; errors when there is none."""
    history = owned(d, rsets)
    if not history:
        raise errors.NotFoundError(f'no rollout history found for deployment "{d.metadata.name}"')
    if to_revision:
        chosen = next((rs for rs in history if revision_of(rs) == to_revision), None)
        if chosen is None:
            raise errors.NotFoundError(f"unable to find the specified revision {to_revision} in history")
    else:
        if len(history) < 2:
            raise errors.NotFoundError(f'deployment "{d.metadata.name}" has no previous revision to roll back to')
        chosen = history[-2]
    template = t.PodTemplateSpec()
    template.CopyFrom(chosen.spec.template)
    template.metadata.labels.pop(TEMPLATE_HASH, None)
    return template, revision_of(chosen)


async def _status(client: Client, namespace: str, name: str, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    last = ""
    while True:
        d = await client.get(t.Deployment, name, namespace)
        message, done = status_message(d)
        if message != last:
            print(message, flush=True)
            last = message
        if done:
            return 0
        if args.watch == "false":
            return 1
        remaining = int(deadline - time.monotonic()) if deadline is not None else 60
        if remaining <= 0:
            raise errors.TimeoutError_(f'timed out waiting for the rollout of deployment "{name}"')
        try:
            async for event in client.watch(t.Deployment, namespace=namespace,
                                            field_selector=f"metadata.name={name}",
                                            resource_version=d.metadata.resource_version,
                                            timeout_seconds=max(1, min(remaining, 60))):
                if event.type == "DELETED":
                    raise errors.NotFoundError(f'deployment "{name}" was deleted during the rollout')
                if event.type == "BOOKMARK":
                    continue
                assert isinstance(event.obj, t.Deployment)
                message, done = status_message(event.obj)
                if message != last:
                    print(message, flush=True)
                    last = message
                if done:
                    return 0
        except errors.GoneError:
            pass
        except errors.UnavailableError:
            await asyncio.sleep(1)


async def _ds(client: Client, namespace: str, name: str, args: argparse.Namespace) -> int:
    """status, history and undo of a DaemonSet (status polls: a DaemonSet rolls node by node)."""
    if args.verb == "status":
        deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
        last = ""
        while True:
            message, done = ds_status_message(await client.get(t.DaemonSet, name, namespace))
            if message != last:
                print(message, flush=True)
                last = message
            if done:
                return 0
            if args.watch == "false":
                return 1
            if deadline is not None and time.monotonic() > deadline:
                raise errors.TimeoutError_(f'timed out waiting for the rollout of daemon set "{name}"')
            await asyncio.sleep(1)
    ds = await client.get(t.DaemonSet, name, namespace)
    revisions = list((await client.list(t.ControllerRevision, namespace=namespace)).items)
    if args.verb == "history":
        if args.revision:
            template, revision = ds_undo_template(ds, revisions, args.revision)
            print(f"daemonset.apps/{name} with revision #{revision}")
            print(dump_yaml([template]), end="")
            return 0
        print("\n".join(ds_history_lines(ds, revisions)))
        return 0
    template, revision = ds_undo_template(ds, revisions, args.to_revision)
    for attempt in range(5):
        if ds.spec.template == template:
            print(f"daemonset.apps/{name} skipped rollback (current template already matches revision {revision})")
            return 0
        ds.spec.template.CopyFrom(template)
        try:
            await client.update(ds)
            break
        except errors.ConflictError:
            if attempt == 4:
                raise
            ds = await client.get(t.DaemonSet, name, namespace)
    print(f"daemonset.apps/{name} rolled back")
    return 0


def main(args: argparse.Namespace) -> int:
    resource, name = rollout_target(args.target)
    namespace = common.namespace(args)

    async def body(client: Client) -> int:
        if resource == "daemonsets":
            return await _ds(client, namespace, name, args)
        if args.verb == "status":
            return await _status(client, namespace, name, args)
        d = await client.get(t.Deployment, name, namespace)
        rsets = list((await client.list(t.ReplicaSet, namespace=namespace)).items)
        if args.verb == "history":
            if args.revision:
                template, revision = undo_template(d, rsets, args.revision)
                print(f"deployment.apps/{name} with revision #{revision}")
                print(dump_yaml([template]), end="")
                return 0
            print("\n".join(history_lines(d, rsets)))
            return 0
        template, revision = undo_template(d, rsets, args.to_revision)

        async def undo() -> bool:
            """Write the old template; False when the Deployment already has it."""
            current = await client.get(t.Deployment, name, namespace)
            if template_without_hash(current.spec.template) == template:
                return False
            current.spec.template.CopyFrom(template)
            await client.update(current)
            return True

        if not await retry_on_conflict(undo):
            print(f"deployment.apps/{name} skipped rollback (current template already matches revision "
                  f"{revision})")
            return 0
        print(f"deployment.apps/{name} rolled back")
        return 0

    return common.run(args, body)


def template_without_hash(template: t.PodTemplateSpec) -> t.PodTemplateSpec:
    out = t.PodTemplateSpec()
    out.CopyFrom(template)
    out.metadata.labels.pop(TEMPLATE_HASH, None)
    return out

