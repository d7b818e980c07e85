#!/usr/bin/env bash
# The control-plane VM: `python -m deploy.install control-plane`, the same code path as bare
# metal (one machine: three store members on it). Re-provisioning with another proxy mode
# removes the old cluster first (this is a throwaway lab; bare metal never does that).
#
# Usage (as root): provision-control-plane.sh NAME IP TOKEN PROXY_MODE HOSTS
#   HOSTS: name=ip,... of every VM (written to /etc/skiff/e2e-hosts for run-e2e.sh)
set -euo pipefail

NAME="${1:?usage: provision-control-plane.sh NAME IP TOKEN PROXY_MODE HOSTS}"
IP="${2:?missing IP}"
TOKEN="${3:?missing TOKEN}"
PROXY_MODE="${4:?missing PROXY_MODE}"
HOSTS="${5:?missing HOSTS}"
SKIFF_DIR=/opt/skiff
PY="$SKIFF_DIR/.venv/bin/python"

cd "$SKIFF_DIR"
if [ -f /etc/skiff/cluster.json ]; then
  installed=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["proxyMode"])' /etc/skiff/cluster.json)
  if [ "$installed" != "$PROXY_MODE" ]; then
    echo "switching the lab from $installed to $PROXY_MODE: removing the old cluster"
    "$PY" -m deploy.install remove
  fi
fi

"$PY" -m deploy.install control-plane --name "$NAME" --ip "$IP" --token "$TOKEN" --proxy-mode "$PROXY_MODE"

# What run-e2e.sh needs: every VM's address, and the key to reach them.
echo "$HOSTS" > /etc/skiff/e2e-hosts
if [ -f /tmp/skiff-e2e-key ]; then
  install -m 0600 /tmp/skiff-e2e-key /root/.ssh/skiff-e2e
  rm -f /tmp/skiff-e2e-key
fi
