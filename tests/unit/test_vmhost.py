"""The VM lab's host side before any guest boots: the rendering a guest host gets, its plan,
and the request channel over the share (served here by the guest's own code, in a thread)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from deploy import netplan, procs, vmhost
from deploy.lab import GUEST_STATE, PROVISION_WORKER, VM_INSTALLED, VM_PROXY_MODES, Lab, LabSpec


def vm_lab(tmp_path: Path) -> Lab:
    return Lab(LabSpec(prefix="vt", lan_cidr="10.201.0.0/24", vm_workers=True, proxy_modes=dict(VM_PROXY_MODES)),
               tmp_path)


def test_vm_lab_workers_are_guests_and_the_control_plane_a_namespace(tmp_path: Path) -> None:
    lab = vm_lab(tmp_path)
    assert [(h.name, h.guest) for h in lab.net.hosts] == [("cp", False), ("n1", True), ("n2", True)]
    up = netplan.plan_up(lab.net)
    assert [c[3] for c in up if c[:3] == ("ip", "netns", "add")] == ["vt-lan", "vt-cp"]
    assert not any("n1" in c or "n2" in c for c in up), "a guest host gets no veth or namespace"
    assert ("ip", "netns", "del", "vt-n1") not in netplan.plan_down(lab.net)
    assert [g.name for g in lab.guests] == ["n1", "n2"] and lab.guest("cp") is None


@pytest.mark.parametrize(("host", "mode", "state"), [
    ("cp", "iptables", None),  # the namespace host: the cluster's mode, state under the lab directory
    ("n1", "ipvs", GUEST_STATE / "n1"),
    ("n2", "iptables", GUEST_STATE / "n2"),
], ids=["cp-namespace", "n1-guest-ipvs", "n2-guest-iptables"])
def test_each_host_renders_its_proxy_mode_and_state(tmp_path: Path, host: str, mode: str, state: Path | None) -> None:
    lab = vm_lab(tmp_path)
    config = lab.host_config(host)
    assert config.state_dir == (state or lab.dir / host)
    proxy = next(s for s in lab._specs(host) if s.name == "netproxy")
    assert proxy.argv[proxy.argv.index("--mode") + 1] == mode


def test_guest_commands_put_the_guest_on_the_lan(tmp_path: Path) -> None:
    lab = vm_lab(tmp_path)
    cmds = netplan.guest_commands(lab.net, "n2")
    assert cmds[:3] == [("ip", "addr", "add", "10.201.0.12/24", "dev", "eth0"), ("ip", "link", "set", "eth0", "up"),
                        ("ip", "route", "add", lab.net.service_cidr, "dev", "eth0")]
    assert ("sysctl", "-qw", "net.ipv4.ip_forward=1") in cmds


@pytest.mark.parametrize(("node_base", "first", "error"), [
    ("/run/skiff-lab/n1/node", "containerd", ""),
    ("/var/lib/skiff/n1/node", "containerd", "must be on its tmpfs"),
    ("/run/skiff-lab/n1/node", "nodeagent", "starts containerd first"),
], ids=["ok", "state-on-read-only-root", "containerd-not-first"])
def test_plan_refuses_what_a_guest_cannot_run(node_base: str, first: str, error: str) -> None:
    daemons = [(first, ("x",), {}), ("netproxy", ("y",), {"A": "1"})]
    if error:
        with pytest.raises(ValueError, match=error):
            vmhost.plan(network=[], node_base=node_base, images=[], daemons=daemons)
        return
    p = vmhost.plan(network=[("ip", "link")], node_base=node_base, images=["/c/web.tar"], daemons=daemons)
    assert json.loads(json.dumps(p))["daemons"][1] == {"name": "netproxy", "argv": ["y"], "env": {"A": "1"}}
    assert "/var/lib/cni" in p["tmpfs"] and "ip_vs" in p["modules"]


@pytest.mark.parametrize(("request_", "rc", "stdout", "stderr"), [
    ({"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]}, 3, "out\n", "err\n"),
    ({"argv": ["/nonexistent/binary"]}, 255, "", "FileNotFoundError"),
    ({"argv": ["sleep", "5"], "timeout": 0.2}, 255, "", "TimeoutExpired"),
    ({"get": "http://127.0.0.1:1/"}, 255, "", "URLError"),
], ids=["exit-status-and-streams", "missing-binary", "timeout", "get-refused"])
def test_handle_answers_every_request(request_: dict[str, object], rc: int, stdout: str, stderr: str) -> None:
    answer = vmhost.handle(request_)
    assert answer["rc"] == rc and answer["stdout"] == stdout and stderr in answer["stderr"]


def test_requests_round_trip_through_the_share(tmp_path: Path) -> None:
    host = vmhost.VmHost("n1", tmp_path)
    host.share.mkdir(parents=True)
    server = threading.Thread(target=vmhost.serve_requests, args=(host.share,))
    server.start()
    try:
        # running() is what a lost guest fails on; a live process stands in for the guest's wrapper.
        host.record_dir.mkdir()
        procs.record(host.record_dir / "guest.pid", os.getpid())
        answers = [host.request({"argv": ["echo", str(i)]}, timeout=5) for i in range(3)]
        assert [a["stdout"] for a in answers] == ["0\n", "1\n", "2\n"]
        assert list((host.share / "req").iterdir()) == [], "requests and answers are removed"
    finally:
        (host.share / "stop").touch()
        server.join(5)
    assert not server.is_alive(), "the server stops when asked"


@pytest.mark.parametrize(("argv", "units", "error"), [
    (["/r/deploy/vagrant/provision-worker.sh", "n2"], ["skiff-nodeagent.service"], ""),
    ([], ["skiff-nodeagent.service"], "provisioning command"),
    (["/r/provision-worker.sh"], [], "units it starts"),
], ids=["ok", "no-command", "no-units"])
def test_provision_plan_needs_a_command_and_its_units(argv: list[str], units: list[str], error: str) -> None:
    if error:
        with pytest.raises(ValueError, match=error):
            vmhost.provision_plan(network=[], argv=argv, env={}, units=units)
        return
    p = vmhost.provision_plan(network=[("ip", "link")], argv=argv, env={"SKIFF_DIR": "/r"}, units=units)
    assert json.loads(json.dumps(p)) == {"network": [["ip", "link"]], "modules": list(vmhost.GUEST_MODULES),
                                         "provision": argv, "env": {"SKIFF_DIR": "/r"}, "units": units}


def test_an_installed_guest_joins_with_the_vagrant_script_and_gets_no_premade_certificate(tmp_path: Path) -> None:
    lab = Lab(LabSpec(prefix="vt", lan_cidr="10.201.0.0/24", vm_workers=True, proxy_modes=dict(VM_PROXY_MODES),
                      vm_installed=list(VM_INSTALLED)), tmp_path)
    assert [h for h in ("cp", "n1", "n2") if lab.installed(h)] == ["n2"]
    lab.dir.mkdir(parents=True)
    lab.join_token_file.write_text("abcdef.0123456789abcdef\n")
    p = lab._provision_plan("n2")
    # The Vagrantfile's own worker script, with the arguments the Vagrantfile passes (and a longer timeout).
    assert p["provision"][:5] == [str(PROVISION_WORKER), "n2", "10.201.0.12", "10.201.0.10:6443",
                                  "abcdef.0123456789abcdef"]
    assert p["provision"][5:] == ["--timeout", "900"] and p["env"] == {"SKIFF_DIR": str(vmhost.ROOT)}
    assert p["network"] == [list(c) for c in netplan.guest_commands(lab.net, "n2")]
    assert p["units"] == ["skiff-containerd.service", "skiff-nodeagent.service", "skiff-netproxy.service",
                          "skiff-clusterdns.service"]
    lab.ensure_pki()
    assert sorted(c.name for c in (lab.pki_dir / "nodes").glob("*.crt")) == ["cp.crt", "n1.crt"]
