#!/usr/bin/env bash
# Run Skiff's e2e suite against the Vagrant cluster, as root on cp1 (make vagrant-e2e does
# `vagrant ssh cp1 -c "sudo /opt/skiff/deploy/vagrant/run-e2e.sh"`). Extra arguments go to pytest.
#
# The contract with the suite (tests/support/prereq.py, deploy/vagrant/README.md):
#   SKIFF_E2E_TARGET=vagrant  use the running cluster instead of building a netns lab; a
#                             missing IP_VS is a failure here, not a skip
#   SKIFF_SERVER              the api-servers, host:port,...
#   SKIFF_E2E_HOSTS           name=ip,... of every VM (cp1 first)
#   SKIFF_E2E_SSH             the command prefix that runs a command as root on a VM:
#                             $SKIFF_E2E_SSH <ip> <command...>
#   SKIFF_E2E_PROXY_MODE      iptables or ipvs, as installed
#   SKIFF_E2E_SEED            the seed manifests (nginx:latest, pulled through CRI)
set -euo pipefail

SKIFF_DIR=/opt/skiff
PY="$SKIFF_DIR/.venv/bin/python"
cd "$SKIFF_DIR"

servers=$("$PY" -c 'import json,sys
c = json.load(open(sys.argv[1]))
print(",".join("%s:%d" % (m["ip"], m["apiPort"]) for m in c["members"]))' /etc/skiff/cluster.json)
mode=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["proxyMode"])' /etc/skiff/cluster.json)

export SKIFF_E2E_TARGET=vagrant
export SKIFF_SERVER="$servers"
export SKIFF_CONFIG=/etc/skiff/skiff-config  # the admin's credentials (written by the control-plane install)
SKIFF_E2E_HOSTS=$(cat /etc/skiff/e2e-hosts)
export SKIFF_E2E_HOSTS
export SKIFF_E2E_SSH="ssh -i /root/.ssh/skiff-e2e -o BatchMode=yes -o StrictHostKeyChecking=accept-new -l root"
export SKIFF_E2E_PROXY_MODE="$mode"
export SKIFF_E2E_SEED="$SKIFF_DIR/examples/seed"
export CI=true  # every prerequisite is required: nothing may skip quietly

echo "e2e against $SKIFF_SERVER (proxy mode $mode), hosts $SKIFF_E2E_HOSTS"

# The seed manifests, unchanged: nginx:latest pulled through CRI, its ClusterIP requested from
# every worker (cp1 runs no netproxy; it comes first in SKIFF_E2E_HOSTS).
"$PY" -m deploy.seedcheck --server "$SKIFF_SERVER" --hosts "${SKIFF_E2E_HOSTS#*,}" \
  --run "$SKIFF_E2E_SSH {ip}" --delete "$SKIFF_E2E_SEED"

exec "$SKIFF_DIR/.venv/bin/pytest" tests/e2e "$@"
