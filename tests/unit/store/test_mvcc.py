"""Scripted scenarios for the store's state machine (tests/unit/store/testdata/*.txt).

Each script is a sequence of commands with the expected state, results and events; see
scripts.py for the format. SKIFF_REWRITE=1 rewrites the expectations from the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.store import mvcc
from tests.unit.store.scripts import run_script

SCRIPTS = sorted((Path(__file__).parent / "testdata").glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path) -> None:
    expected, actual = run_script(path)
    assert actual == expected


def _replay(cmds: list[tuple]) -> mvcc.KVState:
    st = mvcc.KVState()
    for c in cmds:
        st.apply([c], want_results=False)
    return st


def test_apply_is_deterministic_and_results_are_optional() -> None:
    """Two members applying the same log end equal, whether or not they build results."""
    cmds = [
        mvcc.cmd_lease_grant(5, 30),
        mvcc.cmd_put(mvcc.PutReq(b"a", b"1", lease=5)),
        mvcc.cmd_put(mvcc.PutReq(b"b", b"1")),
        mvcc.cmd_txn(mvcc.TxnReq((mvcc.Compare(mvcc.CMP_EQUAL, mvcc.CMPT_MOD, b"a", 2),),
                                 (mvcc.PutReq(b"c", b"x"), mvcc.RangeReq(b"a", b"z")), ())),
        mvcc.cmd_lease_expire([5]),
        mvcc.cmd_compact(4),
    ]
    a = _replay(cmds)
    b = mvcc.KVState()
    applied = b.apply(cmds, want_results=True)
    assert len(applied.results) == len(cmds)
    assert a.snapshot() == b.snapshot()
    assert a.revision == 5 and a.get(b"a") is None and a.get(b"c") is not None
