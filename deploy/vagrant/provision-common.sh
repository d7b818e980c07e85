#!/usr/bin/env bash
# Every Skiff VM: Debian packages, kernel modules and sysctls a node needs, the Skiff tree's
# virtualenv and generated code (`make setup` in /opt/skiff), and the e2e suite's SSH key.
# Idempotent: `vagrant provision` runs it again.
#
# Usage (as root): provision-common.sh "<ssh public key of the e2e suite>"
set -euo pipefail

E2E_PUBKEY="${1:?usage: provision-common.sh PUBKEY}"
SKIFF_DIR=/opt/skiff

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# make and venv to build the tree; curl for the e2e requests; ipvsadm to look at IPVS rules.
apt-get install -y -qq --no-install-recommends make python3 python3-venv ca-certificates curl ipvsadm ipset

# Modules: overlay (containerd snapshots), br_netfilter (Service rules see bridged pod
# traffic), IPVS with the schedulers netproxy offers, conntrack.
cat > /etc/modules-load.d/skiff.conf <<'MODULES'
overlay
br_netfilter
ip_vs
ip_vs_rr
ip_vs_wrr
ip_vs_sh
nf_conntrack
MODULES
while read -r module; do
  modprobe "$module"
done < /etc/modules-load.d/skiff.conf

cat > /etc/sysctl.d/90-skiff.conf <<'SYSCTL'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.ipv4.conf.all.rp_filter = 0
SYSCTL
sysctl -q --system

# The rest of the Debian packages (containerd, runc, CNI plugins, iptables, busybox-static,
# ...) come from the Makefile's own list, the same as on any Skiff machine.
make -C "$SKIFF_DIR" setup

install -d -m 0700 /root/.ssh
touch /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
grep -qxF "$E2E_PUBKEY" /root/.ssh/authorized_keys || echo "$E2E_PUBKEY" >> /root/.ssh/authorized_keys
