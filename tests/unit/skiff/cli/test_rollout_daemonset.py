"""`skiff rollout status|history|undo ds/NAME`: kubectl's messages, history from ControllerRevisions."""

from __future__ import annotations

import pytest

from skiff import errors
from skiff.cli import rollout
from skiffpb.api.v1 import types_pb2 as t


def ds(*, generation: int = 2, observed: int = 2, desired: int = 3, updated: int = 3,
       available: int = 3) -> t.DaemonSet:
    d = t.DaemonSet()
    d.metadata.name, d.metadata.uid, d.metadata.generation = "agent", "ds-uid", generation
    d.spec.template.spec.containers.add(name="c", image="img:3")
    s = d.status
    s.observed_generation, s.desired_number_scheduled = observed, desired
    s.updated_number_scheduled, s.number_available = updated, available
    return d


@pytest.mark.parametrize(("d", "message", "done"), [
    (ds(generation=3), "Waiting for daemon set spec update to be observed...", False),
    (ds(updated=1), 'Waiting for daemon set "agent" rollout to finish: 1 out of 3 new pods have been updated...',
     False),
    (ds(available=2), 'Waiting for daemon set "agent" rollout to finish: 2 of 3 updated pods are available...', False),
    (ds(), 'daemon set "agent" successfully rolled out', True),
], ids=["not-observed", "updating", "becoming-available", "done"])
def test_status_message(d: t.DaemonSet, message: str, done: bool) -> None:
    assert rollout.ds_status_message(d) == (message, done)


def revision(number: int, image: str, *, owner: str = "ds-uid") -> t.ControllerRevision:
    r = t.ControllerRevision(revision=number)
    r.metadata.name = f"agent-{number}"
    r.metadata.owner_references.add(kind="DaemonSet", name="agent", uid=owner, controller=True)
    r.data.spec.template.spec.containers.add(name="c", image=image)
    return r


REVISIONS = [revision(3, "img:3"), revision(1, "img:1"), revision(2, "img:2"), revision(9, "other", owner="x")]


def test_history_is_the_sets_revisions_in_order() -> None:
    assert rollout.ds_history_lines(ds(), REVISIONS) == [
        "daemonset.apps/agent", "REVISION  CHANGE-CAUSE", "1         <none>", "2         <none>", "3         <none>"]


@pytest.mark.parametrize(("to", "image", "number"), [(0, "img:2", 2), (1, "img:1", 1)], ids=["previous", "given"])
def test_undo_template(to: int, image: str, number: int) -> None:
    template, got = rollout.ds_undo_template(ds(), REVISIONS, to)
    assert (template.spec.containers[0].image, got) == (image, number)


@pytest.mark.parametrize(("revisions", "to", "error"), [
    (REVISIONS, 7, "unable to find the specified revision 7"),
    ([revision(1, "img:1")], 0, "no previous revision"),
], ids=["missing", "only-one"])
def test_undo_errors(revisions: list[t.ControllerRevision], to: int, error: str) -> None:
    with pytest.raises(errors.NotFoundError, match=error):
        rollout.ds_undo_template(ds(), revisions, to)


@pytest.mark.parametrize(("target", "want"), [("ds/agent", ("daemonsets", "agent")),
                                              ("deploy/web", ("deployments", "web")), ("web", ("deployments", "web"))],
                         ids=["ds", "deploy", "bare"])
def test_rollout_target(target: str, want: tuple[str, str]) -> None:
    assert rollout.rollout_target(target) == want


def test_rollout_target_refuses_other_kinds() -> None:
    with pytest.raises(errors.InvalidError, match="deployments and daemonsets"):
        rollout.rollout_target("sts/db")
