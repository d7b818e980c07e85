"""The dashboard in a real browser: Debian's chromium, headless, driven through chromium-driver
by selenium, against a real one-host lab (`make up`'s shape).

The page is opened once: the seed's web pods (examples/web) must appear and become Ready, then
the Deployment is scaled with kubectl and the page must follow by itself (a marker set in the
page at the start proves there was no reload). A screenshot of the page is taken at the end
(into docs/images/ with SKIFF_UPDATE_SCREENSHOTS=1).

The lab serves HTTPS with authentication, as a real cluster: the browser trusts exactly the
api-server's key (chromium's --ignore-certificate-errors-spki-list, the pin of its certificate;
importing the lab CA into chromium's NSS store is not possible without certutil), and logs in as a
user would (docs/observability.md): the admin creates a bootstrap token, binds its user to the
dashboard-viewer ClusterRole, and the token is typed into the page's login form.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from deploy import netplan
from deploy.lab import Lab, LabSpec
from skiff import identity, kubeconfig, pki
from tests.support import labs
from tests.support.prereq import require

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
WEB = ROOT / "examples" / "web"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    require(KUBECTL.exists(), f"{KUBECTL} is missing: run `make setup`")
    require(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
            "the dashboard test needs Debian's chromium and chromium-driver (make setup)")
    prefix = f"d{os.getpid() % 10000}"
    spec = LabSpec(prefix=prefix, combined=True, store_members=1, workers=0,
                   lan_cidr=netplan.free_lan(range(190, 220)), min_sync_period="0s")
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def kubectl(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    config = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_entry(lab.http_servers[0], path=config, credentials=lab.admin)

    def run(*args: str) -> str:
        done = subprocess.run([str(KUBECTL), "--kubeconfig", str(config), *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    return run


BINDING = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: dashboard-e2e
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: dashboard-viewer
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: {user}
"""


@pytest.fixture(scope="module")
def token(lab: Lab, kubectl: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bearer token for the dashboard: a bootstrap token (the admin's `skiff token create`)
    whose user may read what the page shows (the dashboard-viewer ClusterRole)."""
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "skiff"), "token", "create", "--ttl", "1h",
                           "--description", "dashboard e2e"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SKIFF_CONFIG=str(lab.config_path)))
    assert done.returncode == 0, done.stderr
    value = done.stdout.strip()
    binding = tmp_path_factory.mktemp("token") / "binding.yaml"
    binding.write_text(BINDING.format(user=identity.BOOTSTRAP_PREFIX + value.split(".")[0]))
    kubectl("apply", "-f", str(binding))
    return value


def spki_pin(cert_file: Path) -> str:
    """Chromium's pin of a certificate: base64 of the SHA-256 of its SubjectPublicKeyInfo."""
    cert = pki.load_cert(cert_file)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def browser(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}",
                 f"--ignore-certificate-errors-spki-list={spki_pin(pki.PKIDir(lab.pki_dir).pair(pki.APISERVER).cert)}"):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers on the internet
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:.0f}s: {what}")
        time.sleep(0.3)


def rows(driver: Any, section: str) -> dict[str, dict[str, str]]:
    """{row key: {cell class: text}} of a section's table, read from the page."""
    data: dict[str, dict[str, str]] = driver.execute_script("""
        const out = {};
        for (const tr of document.querySelectorAll(`#${arguments[0]} tbody tr`)) {
          const cells = {};
          for (const td of tr.children) for (const c of td.classList) cells[c] = td.textContent;
          out[tr.dataset.key] = cells;
        }
        return out;""", section)
    return data


def web_pods(driver: Any) -> dict[str, dict[str, str]]:
    return {k: v for k, v in rows(driver, "pods").items() if k.startswith("default/web-")}


def ready_web_pods(driver: Any) -> int:
    return sum(1 for p in web_pods(driver).values() if p.get("ready") == "1/1" and p.get("status") == "Running")


def test_the_page_follows_the_cluster_without_reloading(lab: Lab, kubectl: Callable[..., str], browser: Any,
                                                        token: str, tmp_path: Path) -> None:
    browser.get(f"{lab.http_servers[0]}/dashboard/")
    browser.execute_script("window.skiffMarker = 'still the same page';")
    wait(lambda: browser.find_element("id", "login").is_displayed(), "the login form (HTTPS, no token yet)", 30)
    browser.find_element("id", "token").send_keys(token)
    browser.find_element("css selector", "#login button").click()
    wait(lambda: browser.find_element("id", "live").text == "live", "its watch streams live", 30)
    wait(lambda: any(r.get("ready") == "Ready" for r in rows(browser, "nodes").values()), "a Ready node")

    kubectl("apply", "-f", str(WEB))
    wait(lambda: ready_web_pods(browser) == 2, "the 2 web pods Ready")
    deploy = rows(browser, "workloads")["deployment/default/web"]
    wait(lambda: rows(browser, "workloads")["deployment/default/web"].get("ready") == "2/2", "the Deployment 2/2")
    assert deploy["name"] == "web"
    wait(lambda: rows(browser, "services").get("default/web-service", {}).get("endpoints", "<none>") != "<none>",
         "the Service's endpoints")
    assert all(p["node"] for p in web_pods(browser).values())

    kubectl("scale", "deploy/web", "--replicas", "3")
    wait(lambda: ready_web_pods(browser) == 3, "a third web pod Ready after the scale")
    wait(lambda: rows(browser, "workloads")["deployment/default/web"].get("ready") == "3/3", "the Deployment 3/3")
    wait(lambda: any(r.get("reason") == "ScalingReplicaSet" for r in rows(browser, "events").values()),
         "the scaling event")
    # Endpoints writes are batched per Service (at most one a second after the first), so the
    # third address may arrive after the Deployment reads 3/3: wait for it.
    wait(lambda: len(rows(browser, "services")["default/web-service"]["endpoints"].split(", ")) == 3,
         "the Service's 3 endpoints")

    kubectl("scale", "deploy/web", "--replicas", "1")
    wait(lambda: len(web_pods(browser)) == 1, "the scaled-down pods gone")
    assert browser.execute_script("return window.skiffMarker") == "still the same page"  # never reloaded
    assert "default/web-service" in rows(browser, "services")

    shot = tmp_path / "dashboard.png"
    kubectl("scale", "deploy/web", "--replicas", "3")
    wait(lambda: ready_web_pods(browser) == 3, "3 web pods Ready for the screenshot")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("SKIFF_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)


def test_kubectl_top_on_real_containerd(lab: Lab, kubectl: Callable[..., str]) -> None:
    """After the page test (3 web pods): `kubectl top` through the lab's api-server, from the node
    agent's CRI stats of real containers (two samples 10 s apart are needed first)."""

    def pods_measured() -> bool:
        try:
            out = kubectl("top", "pods", "-l", "app=web")
        except AssertionError:  # "metrics not available yet"
            return False
        return len(out.splitlines()) == 4

    wait(pods_measured, "kubectl top with the 3 web pods", 90)
    for line in kubectl("top", "pods", "-l", "app=web").splitlines()[1:]:
        name, cpu, memory = line.split()
        assert name.startswith("web-") and cpu.endswith("m") and memory.endswith("Mi") and int(memory[:-2]) >= 0
    node = kubectl("top", "nodes").splitlines()
    assert node[0].split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert len(node) == 2 and int(node[1].split()[3].removesuffix("Mi")) > 0
