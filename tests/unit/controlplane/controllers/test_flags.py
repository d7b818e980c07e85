"""skiff-controllers flags: the eviction settings reach the node lifecycle controller, bad ones are refused."""

from __future__ import annotations

import pytest

from controlplane.controllers import __main__ as cm
from controlplane.controllers.nodelifecycle import EvictionOptions


@pytest.mark.parametrize(("argv", "want"), [
    ([], EvictionOptions(rate=0.1, secondary_rate=0.01, unhealthy_zone_threshold=0.55,
                         large_cluster_size_threshold=50)),
    (["--node-eviction-rate", "0.5", "--secondary-node-eviction-rate", "0", "--unhealthy-zone-threshold", "1",
      "--large-cluster-size-threshold", "10"],
     EvictionOptions(rate=0.5, secondary_rate=0.0, unhealthy_zone_threshold=1.0, large_cluster_size_threshold=10)),
], ids=["kubernetes-defaults", "given"])
def test_eviction_flags(argv: list[str], want: EvictionOptions) -> None:
    args = cm.build_parser().parse_args(["--api-servers", "127.0.0.1:1", *argv])
    assert cm.options_from(args).eviction == want


@pytest.mark.parametrize("argv", [
    ["--node-eviction-rate", "-1"],
    ["--unhealthy-zone-threshold", "0"],
    ["--unhealthy-zone-threshold", "1.5"],
], ids=["negative-rate", "zero-threshold", "threshold-above-one"])
def test_bad_eviction_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cm.main(["--api-servers", "127.0.0.1:1", "--no-leader-elect", *argv]) == 2
    assert "must" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "endpoints", "root_ca"), [
    (["--api-servers", "a:6443,b:6444"], (), ""),
    (["--api-servers", "a:6443,b:6444", "--kubernetes-service-endpoints", "a:8443, b:8444",
      "--root-ca-file", "/pki/ca.crt"], ("a:8443", "b:8444"), "/pki/ca.crt"),
], ids=["none", "given"])
def test_service_account_flags(argv: list[str], endpoints: tuple[str, ...], root_ca: str) -> None:
    options = cm.options_from(cm.build_parser().parse_args(argv))
    assert (tuple(options.kubernetes_service_endpoints), options.root_ca_file) == (endpoints, root_ca)


def test_one_https_endpoint_per_api_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert cm.main(["--api-servers", "a:6443,b:6444", "--kubernetes-service-endpoints", "a:8443",
                    "--no-leader-elect"]) == 2
    assert "one per --api-servers endpoint" in capsys.readouterr().err
