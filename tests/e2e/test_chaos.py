"""The chaos suite's short version (bench/chaos.py, `make chaos` for the long one): a lab with 3
store members, 3 api-servers and 2 workers under a fault schedule that kills -9 and restarts
each store member (leader included), each api-server, the controller manager's and scheduler's
leaders, a node agent, a netproxy and a containerd, and cuts a worker off from the control plane.

Every acknowledged write survives with its value; the Deployment converges; no request through
the ClusterIP fails outside the cut window; nothing of the lab is left afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import chaos
from deploy import containerd
from tests.support.prereq import require, require_root

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_chaos_quick(tmp_path: Path) -> None:
    require_root()
    missing = containerd.missing_prereqs()
    require(not missing, f"missing {', '.join(missing)}")
    report = tmp_path / "chaos.json"
    results = chaos.run(quick=True, report=report, lab_root=tmp_path / "labs")
    print(json.dumps({k: results[k] for k in ("clusterip", "writes", "deployment", "schedule_s")}, indent=2))
    assert json.loads(report.read_text())["results"]["mode"] == "quick"
    assert len(results["faults"]) == 12, [f["name"] for f in results["faults"]]
    assert results["writes"]["acknowledged"] > 50, "the writer kept writing through the faults"
    assert results["writes"]["lost_or_wrong"] == []
    assert results["deployment"]["ready"] == chaos.REPLICAS
    assert results["clusterip"]["requests"] > 300
    assert chaos.problems(results) == []
