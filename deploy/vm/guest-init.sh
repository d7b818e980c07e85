#!/usr/bin/env bash
# Skiff guest, stage 2: PID 1 on the host's root (read-only over 9p), started by the
# initramfs (deploy/vm/image.py). Runs $SHARE/command.sh once, writes its exit status to
# $SHARE/status (the host waits for that file), then powers the guest off. Never returns:
# PID 1 exiting would panic the kernel (with panic=-1 and -no-reboot QEMU then ends, and the
# host sees no status): that is what a failing step before the command does.
set -euo pipefail
share=/run/skiff-vm/share
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
if [ -s "$share/hostname" ]; then hostname "$(cat "$share/hostname")"; fi

status=0
/bin/sh "$share/command.sh" >"$share/output.log" 2>&1 </dev/null || status=$?
echo "$status" >"$share/status.tmp" && mv "$share/status.tmp" "$share/status"
echo "skiff-vm: command exited with status $status"
sync || true
echo o >/proc/sysrq-trigger
sleep 30
