# Skiff build, test and run targets. Everything a fresh Debian machine needs
# is installed by `make setup` (run as root): Debian packages, .venv with the
# project and its dev tools, and the generated protobuf/gRPC code in skiffpb/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE ?= /var/lib/skiff/local
DEB_PACKAGES := containerd runc containernetworking-plugins iptables iproute2 iputils-ping util-linux \
	busybox-static etcd-client etcd-server shellcheck procps kmod \
	qemu-system-x86 linux-image-amd64 ipvsadm ipset chromium chromium-driver
PROTOS := $(shell find proto -name '*.proto' | sort)
PYTEST_FLAGS ?=

.PHONY: setup deb gen test check lint unit integration e2e fuzz up down status lab lab-down \
	vm-image vm-ipvs vm-lab vm-lab-down vm-e2e bench bench-store bench-apiserver bench-scheduler bench-scheduler-stream bench-apiserver-ha bench-netproxy bench-nodeagent bench-e2e bench-dns bench-netpol bench-scale bench-scale-small bench-report bench-plots chaos clean \
	vagrant-up vagrant-e2e vagrant-e2e-ipvs vagrant-down

setup: deb $(VENV)/.installed skiffpb/.generated $(BIN)/kubectl

# Debian packages, installed only when one is missing.
deb:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# The repository root on sys.path: the generated skiffpb/ and every package import from the work tree.
	$(BIN)/python -c "import site; open(site.getsitepackages()[0] + '/skiff-root.pth', 'w').write('$(CURDIR)\\n')"
	touch $@

# kubectl 1.35 and helm 4 for the Kubernetes API tests: pinned, checksums in deploy/kubectl_bundle.py.
$(BIN)/kubectl: deploy/kubectl_bundle.py $(VENV)/.installed
	$(BIN)/python -m deploy.kubectl_bundle --bin-dir $(BIN)
	touch $@

# Generated code is built from proto/ and never edited or committed.
gen: skiffpb/.generated
skiffpb/.generated: $(PROTOS) $(VENV)/.installed
	rm -rf skiffpb
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	find skiffpb -type d -exec touch {}/__init__.py \;
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_FLAGS)

integration: setup
	$(BIN)/pytest tests/integration $(PYTEST_FLAGS)

e2e: setup
	$(BIN)/pytest tests/e2e $(PYTEST_FLAGS)

# Fuzzing (hypothesis, tests/fuzz/): `make test` runs a bounded, repeatable pass; this runs many
# more random examples (FUZZ_EXAMPLES per test) and keeps failures in .hypothesis/ to replay.
FUZZ_EXAMPLES ?= 2000
fuzz: setup
	SKIFF_FUZZ_PROFILE=fuzz SKIFF_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz $(PYTEST_FLAGS)

# The whole suite, lint included. CI runs this through .ci/run.
test: setup lint
	$(BIN)/pytest tests $(PYTEST_FLAGS)

# The embedded default: a one-host cluster serving examples/web/.
up: setup
	$(BIN)/python -m deploy.local up --state-dir $(STATE)

down: setup
	$(BIN)/python -m deploy.local down --state-dir $(STATE)

status: setup
	$(BIN)/python -m deploy.local status --state-dir $(STATE)

# The network-namespace lab: 1 control-plane host, 2 workers.
lab: setup
	$(BIN)/skiff lab up

lab-down: setup
	$(BIN)/skiff lab down

# QEMU guests (docs/vm.md): Debian's kernel (it has IP_VS) booted under software emulation with
# this machine's userspace. The image is also built on first use by the tests that need it.
vm-image: setup
	$(BIN)/python -m deploy.vm build

# netproxy's IPVS mode against a real kernel (in a guest when this kernel has no IP_VS); part of `make test`.
vm-ipvs: vm-image
	$(BIN)/pytest tests/e2e/netproxy/test_ipvs_kernel.py tests/e2e/test_vm.py $(PYTEST_FLAGS)

# The VM lab (docs/vm.md): the control plane in a network namespace, workers n1 (IPVS) and n2
# (iptables) as QEMU guests on its LAN. Slow (emulated Python): not part of `make test`.
# Run them under the shared lock: flock /tmp/skiff-e2e.lock make vm-lab (and vm-lab-down, vm-e2e).
VM_LAB_LAN ?= 10.201.0.0/24
vm-lab: vm-image
	$(BIN)/python -m deploy.lab up --prefix vmlab --vm-workers --lan $(VM_LAB_LAN)

vm-lab-down: setup
	$(BIN)/python -m deploy.lab down --prefix vmlab

# The lab e2e flow on the VM lab, timed; writes bench/results/vm-e2e.json.
vm-e2e: vm-image
	$(BIN)/python -m bench.vm_e2e $(PYTEST_FLAGS)

# The Vagrant lab (deploy/vagrant/README.md): 1 control plane + 2 workers, provisioned by
# deploy/install.py; run on a machine with Vagrant and VirtualBox or libvirt, not as root.
VAGRANT := cd deploy/vagrant && SKIFF_PROXY_MODE=$(PROXY_MODE) vagrant
PROXY_MODE ?= iptables

# Boot (or create), copy this tree to /opt/skiff, provision every VM once (idempotent).
vagrant-up:
	$(VAGRANT) up --no-parallel --no-provision
	$(VAGRANT) rsync
	$(VAGRANT) provision

# The seed check (examples/seed/, nginx:latest) and the e2e suite, run on cp1 against the VMs.
vagrant-e2e: vagrant-up
	$(VAGRANT) ssh cp1 -c 'sudo /opt/skiff/deploy/vagrant/run-e2e.sh'

vagrant-e2e-ipvs:
	$(MAKE) vagrant-e2e PROXY_MODE=ipvs

vagrant-down:
	cd deploy/vagrant && vagrant destroy -f

# The chaos suite, full schedule (docs/reliability.md): a lab under kill -9 of every part and a cut
# worker; writes bench/results/chaos.json and fails when a write was lost or a request failed
# outside the cut. Its short version runs in `make test` (tests/e2e/test_chaos.py).
chaos: setup
	flock /tmp/skiff-e2e.lock $(BIN)/python -m bench.chaos

# Each writes bench/results/<name>.json; bench-report then rewrites README.md's performance table.
bench: bench-store bench-apiserver bench-scheduler bench-netproxy bench-nodeagent bench-e2e bench-dns bench-netpol
	$(MAKE) bench-report
	$(MAKE) bench-plots

bench-store: setup
	$(BIN)/python -m bench.store
bench-apiserver: setup
	$(BIN)/python -m bench.apiserver
bench-scheduler: setup
	$(BIN)/python -m bench.scheduler
# Not in `make bench` (each starts its own store and api-servers, on both stores): issue 16's figures.
bench-scheduler-stream: setup
	$(BIN)/python -m bench.scheduler --stream
bench-apiserver-ha: setup
	$(BIN)/python -m bench.apiserver --ha
bench-netproxy: setup
	$(BIN)/python -m bench.netproxy
bench-nodeagent: setup
	$(BIN)/python -m bench.nodeagent
bench-e2e: setup
	$(BIN)/python -m bench.e2e
bench-dns: setup
	$(BIN)/python -m bench.dns
bench-netpol: setup
	$(BIN)/python -m bench.netpol
# Not part of `make bench`: the full scale scenario (bench/scale.py) takes the machine for a long time.
bench-scale: setup
	$(BIN)/python -m bench.scale $(SCALE_ARGS)
bench-scale-small: setup
	$(BIN)/python -m bench.scale --small $(SCALE_ARGS)
bench-report: setup
	$(BIN)/python -m bench.report
# The pictures (PNG next to each JSON result): latency histograms, pods Ready over time, ...
bench-plots: setup
	$(BIN)/python -m bench.plots

clean:
	rm -rf $(VENV) skiffpb build .pytest_cache .mypy_cache .ruff_cache
