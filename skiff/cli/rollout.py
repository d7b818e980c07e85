"""`skiff rollout status|history|undo deploy/NAME`.

status: watches the Deployment and prints kubectl's progress lines until every replica is
updated and available (or the progress deadline is exceeded: an error).
history/undo: the Deployment's ReplicaSets carry `deployment.kubernetes.io/revision`;
undo copies the pod template of the previous revision (or --to-revision) back into the
Deployment, and the deployment controller rolls it out.
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
    p = sub.add_parser("rollout", help="follow, list or undo deployment rollouts")
    verbs = p.add_subparsers(dest="verb", metavar="status|history|undo")
    verbs.required = True
    status = verbs.add_parser("status", help="wait for a rollout to finish, printing progress")
    status.add_argument("target", metavar="deploy/NAME")
    status.add_argument("-w", "--watch", default="true", choices=("true", "false"),
                        help="keep watching until done (default true)")
    status.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS", help="give up after this long")
    history = verbs.add_parser("history", help="list revisions")
    history.add_argument("target", metavar="deploy/NAME")
    history.add_argument("--revision", type=int, default=0, help="show the pod template of this revision")
    undo = verbs.add_parser("undo", help="roll back to the previous (or a given) revision")
    undo.add_argument("target", metavar="deploy/NAME")
    undo.add_argument("--to-revision", type=int, default=0, help="revision to go back to (default: previous)")
    for verb in (status, history, undo):
        common.add_connection_flags(verb)
        verb.set_defaults(func=main)


def deployment_name(target: str) -> str:
    (kind, name), *rest = common.targets([target] if "/" in target else ["deploy", target])
    if rest or kind.resource != "deployments":
        raise errors.InvalidError(f'rollout works on deployments: expected deploy/NAME, got "{target}"')
    return name


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


def main(args: argparse.Namespace) -> int:
    name = deployment_name(args.target)
    namespace = common.namespace(args)

    async def body(client: Client) -> int:
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

