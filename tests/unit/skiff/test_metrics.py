"""skiff/metrics.py: the health checks' verdicts and bodies (Kubernetes' format), addresses, and
the served app (real HTTP on loopback), including an address already in use."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from skiff import metrics
from skiff.metrics import Health, body, ok_when, parse_address


def boom() -> str:
    raise RuntimeError("state unreadable")


@pytest.mark.parametrize(("health", "endpoint", "healthy", "lines"), [
    (Health(), "livez", True, ["[+]ping ok"]),
    (Health(ready={"sync": lambda: "not yet"}), "livez", True, ["[+]ping ok"]),  # readiness is not liveness
    (Health(ready={"sync": lambda: "not yet"}), "readyz", False, ["[+]ping ok", "[-]sync failed: not yet"]),
    (Health(live={"loop": lambda: ""}, ready={"sync": lambda: ""}), "readyz", True,
     ["[+]ping ok", "[+]loop ok", "[+]sync ok"]),
    (Health(live={"state": boom}), "healthz", False, ["[+]ping ok", "[-]state failed: RuntimeError: state unreadable"]),
    (Health(ready={"leader": ok_when(lambda: False, "no leader")}), "readyz", False,
     ["[+]ping ok", "[-]leader failed: no leader"]),
], ids=["ping-only", "ready-check-not-in-livez", "failing-ready", "all-pass", "check-raises", "ok-when"])
def test_health_runs_the_endpoints_checks(health: Health, endpoint: str, healthy: bool, lines: list[str]) -> None:
    assert health.run(endpoint) == (healthy, lines)


@pytest.mark.parametrize(("healthy", "verbose", "text"), [
    (True, False, "ok"),
    (True, True, "[+]ping ok\nreadyz check passed\n"),
    (False, False, "[+]ping ok\nreadyz check failed\n"),
], ids=["ok", "verbose", "failed"])
def test_body_is_kubernetes_form(healthy: bool, verbose: bool, text: str) -> None:
    assert body("readyz", healthy, ["[+]ping ok"], verbose=verbose) == text


@pytest.mark.parametrize(("address", "parsed"), [
    ("127.0.0.1:10249", ("127.0.0.1", 10249)),
    ("[::1]:9153", ("::1", 9153)),
    (":8080", ("127.0.0.1", 8080)),
    ("127.0.0.1", None),
    ("127.0.0.1:http", None),
    ("127.0.0.1:70000", None),
], ids=["v4", "v6", "no-host", "no-port", "named-port", "too-big"])
def test_parse_address(address: str, parsed: tuple[str, int] | None) -> None:
    if parsed is None:
        with pytest.raises(ValueError, match="not host:port"):
            parse_address(address)
    else:
        assert parse_address(address) == parsed


async def test_served_app_and_an_address_in_use() -> None:
    registry = CollectorRegistry()
    hits = Counter("skiff_test_hits", "hits", registry=registry)
    hits.inc(3)
    waiting = {"ready": False}
    health = Health(ready={"cache": ok_when(lambda: waiting["ready"], "cache empty")})
    served = await metrics.serve("127.0.0.1:0", health, registry=registry)
    assert served is not None
    try:
        base = f"http://127.0.0.1:{served.port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/metrics") as r:
                assert r.status == 200 and "skiff_test_hits_total 3.0" in await r.text()
            async with s.get(base + "/readyz") as r:
                assert (r.status, await r.text()) == (
                    500, "[+]ping ok\n[-]cache failed: cache empty\nreadyz check failed\n")
            async with s.get(base + "/livez") as r:
                assert (r.status, await r.text()) == (200, "ok")
            waiting["ready"] = True
            async with s.get(base + "/readyz?verbose") as r:
                assert (r.status, await r.text()) == (200, "[+]ping ok\n[+]cache ok\nreadyz check passed\n")
        # The same address again: logged, not fatal.
        assert await metrics.serve(f"127.0.0.1:{served.port}", registry=registry) is None
        assert await metrics.serve("", registry=registry) is None
    finally:
        await served.close()
