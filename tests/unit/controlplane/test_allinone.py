"""`python -m controlplane`: the children it plans, and supervision (restart, orderly stop)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from controlplane.__main__ import Child, Supervisor, build_parser, main, plan_children


def test_plans_store_apiserver_controllers_scheduler_in_order() -> None:
    args = build_parser().parse_args(["--name", "s2", "--data-dir", "/d", "--listen-client", "10.0.0.2:2379",
                                      "--listen-peer", "10.0.0.2:2380", "--initial-cluster",
                                      "s1=10.0.0.1:2380,s2=10.0.0.2:2380", "--insecure-no-password",
                                      "--listen", "10.0.0.2:6443", "--node-name", "cp2",
                                      "--api-servers", "10.0.0.2:6443,10.0.0.1:6443"])
    children = plan_children(args, python="py")
    assert [c.name for c in children] == ["store", "apiserver", "controllers", "scheduler"]
    store, api, cm, sched = (c.argv for c in children)
    assert store[:3] == ["py", "-m", "controlplane.store"] and "--insecure-no-password" in store
    assert store[store.index("--initial-cluster") + 1] == "s1=10.0.0.1:2380,s2=10.0.0.2:2380"
    assert api[api.index("--store-endpoints") + 1] == "10.0.0.2:2379"
    assert cm[cm.index("--api-servers") + 1] == "10.0.0.2:6443,10.0.0.1:6443"
    assert sched[sched.index("--identity") + 1] == "cp2"
    assert children[0].wait_for == "10.0.0.2:2379" and children[1].wait_for == "10.0.0.2:6443"


def test_external_store_skips_the_member() -> None:
    args = build_parser().parse_args(["--store-endpoints", "127.0.0.1:2379"])
    children = plan_children(args, python="py")
    assert [c.name for c in children] == ["apiserver", "controllers", "scheduler"]
    assert children[0].argv[children[0].argv.index("--api-servers") + 1 if "--api-servers" in children[0].argv
                            else children[0].argv.index("--store-endpoints") + 1] == "127.0.0.1:2379"


@pytest.mark.parametrize(("flags", "verbose"), [(["-v"], True), ([], False)], ids=["verbose", "quiet"])
def test_verbose_reaches_every_child(flags: list[str], verbose: bool) -> None:
    args = build_parser().parse_args(["--insecure-no-password", *flags])
    children = plan_children(args, python="py")
    assert [c.name for c in children] == ["store", "apiserver", "controllers", "scheduler"]
    assert all(("-v" in c.argv) == verbose for c in children)


def test_a_store_member_needs_a_password_decision() -> None:
    assert main(["--data-dir", "/nonexistent"]) == 2


async def test_supervisor_restarts_a_dead_child_and_stops_all() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    crasher = [sys.executable, "-c", "raise SystemExit(3)"]
    sup = Supervisor([Child("a", sleeper), Child("b", crasher)])
    task = asyncio.ensure_future(sup.run())
    for _ in range(100):
        await asyncio.sleep(0.05)
        if sup.children[1].restarts >= 1:
            break
    assert sup.children[1].restarts >= 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert all(c.proc is not None and c.proc.returncode is not None for c in sup.children)
