"""Controller history: the ControllerRevisions a DaemonSet or StatefulSet keeps of its templates.

What must hold (Kubernetes' controller history):
- a revision is named `<owner>-<hash of the template>` and carries the template, the
  `controller-revision-hash` label and a controller ownerReference to its owner;
- the current template's revision has the highest `revision` number: a new template gets
  max + 1, and a rollback to an old template re-numbers that old revision to max + 1 instead of
  copying it;
- beyond revisionHistoryLimit, the oldest revisions that no pod uses (by hash) are deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.common import podutil
from skiff import errors
from skiff.client import ApiClient
from skiffpb.api.v1 import types_pb2 as t

REVISION_HASH = "controller-revision-hash"


def revision_name(owner: Any, hash_: str) -> str:
    return f"{owner.metadata.name[:52]}-{hash_}"


def plan_revisions(owner: Any, template: t.PodTemplateSpec, revisions: Sequence[t.ControllerRevision],
                   current_hash: str, in_use: set[str]
                   ) -> tuple[t.ControllerRevision | None, t.ControllerRevision | None, list[str]]:
    """(a revision to create, a revision to re-number, names of revisions to delete)."""
    name = revision_name(owner, current_hash)
    top = max((r.revision for r in revisions), default=0)
    mine = next((r for r in revisions if r.metadata.name == name), None)
    create = renumber = None
    if mine is None:
        create = t.ControllerRevision(api_version="apps/v1", kind="ControllerRevision", revision=top + 1)
        create.metadata.name = name
        create.metadata.namespace = owner.metadata.namespace
        create.metadata.labels.update(template.metadata.labels)
        create.metadata.labels[REVISION_HASH] = current_hash
        create.metadata.owner_references.append(podutil.owner_reference(owner))
        create.data.spec.template.CopyFrom(template)
    elif mine.revision != top:
        renumber = podutil.copy(mine)
        renumber.revision = top + 1
    limit = owner.spec.revision_history_limit if owner.spec.HasField("revision_history_limit") else 10
    old = sorted((r for r in revisions if r.metadata.name != name), key=lambda r: r.revision)
    deletable = [r.metadata.name for r in old if r.metadata.labels.get(REVISION_HASH) not in in_use]
    return create, renumber, deletable[:max(len(old) - limit, 0)]


async def apply(client: ApiClient, create: t.ControllerRevision | None, renumber: t.ControllerRevision | None,
                delete: Sequence[str], namespace: str) -> None:
    if create is not None:
        try:
            await client.create(create)
        except errors.AlreadyExistsError:
            pass
    if renumber is not None:
        await client.update(renumber)
    for name in delete:
        try:
            await client.delete(t.ControllerRevision, name, namespace)
        except errors.NotFoundError:
            pass
