#!/usr/bin/env bash
# A worker VM: `python -m deploy.install worker --join ... --token ...`, the same code path as
# bare metal. Provisioning always (re)joins from scratch (`remove` first, a no-op on a new VM),
# so a worker follows a control plane that was re-installed, e.g. in another proxy mode.
# The control plane may still be coming up (providers that boot VMs in parallel): retry.
# The VM lab (docs/vm.md) provisions its systemd guest with this very script: SKIFF_DIR is
# then the checkout the guest sees, and the extra arguments (a longer --timeout for emulated
# Python) go to `deploy.install worker`.
#
# Usage (as root): provision-worker.sh NAME IP CONTROL_PLANE_IP:PORT TOKEN [INSTALL ARGS...]
set -euo pipefail

NAME="${1:?usage: provision-worker.sh NAME IP CONTROL_PLANE_IP:PORT TOKEN}"
IP="${2:?missing IP}"
JOIN="${3:?missing CONTROL_PLANE_IP:PORT}"
TOKEN="${4:?missing TOKEN}"
shift 4
SKIFF_DIR="${SKIFF_DIR:-/opt/skiff}"
PY="$SKIFF_DIR/.venv/bin/python"
ATTEMPTS=60

cd "$SKIFF_DIR"
"$PY" -m deploy.install remove
for attempt in $(seq 1 "$ATTEMPTS"); do
  if "$PY" -m deploy.install worker --name "$NAME" --ip "$IP" --join "$JOIN" --token "$TOKEN" "$@"; then
    exit 0
  fi
  echo "join attempt $attempt/$ATTEMPTS failed; retrying in 10s"
  sleep 10
done
echo "could not join $JOIN after $ATTEMPTS attempts" >&2
exit 1
