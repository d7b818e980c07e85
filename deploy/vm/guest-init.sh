#!/usr/bin/env bash
# Skiff guest, stage 2: PID 1 on the host's root (read-only over 9p), started by the
# initramfs (deploy/vm/image.py). Runs $SHARE/command.sh once, writes its exit status to
# $SHARE/status (the host waits for that file), then powers the guest off. Never returns:
# PID 1 exiting would panic the kernel (with panic=-1 and -no-reboot QEMU then ends, and the
# host sees no status): that is what a failing step before the command does.
#
# With skiff.systemd=1 on the kernel command line (deploy/vm/guest.py, GuestSpec.systemd) it
# instead makes the writable overlays systemd and a Skiff install need, puts the runtime units
# from $SHARE/systemd/ into /run/systemd/system and execs Debian's systemd as PID 1; systemd then
# runs `guest-init.sh run` (the command, its status, the power-off) as skiff-guest.service.
set -euo pipefail
share=/run/skiff-vm/share
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

run_command() {
    local status=0
    /bin/sh "$share/command.sh" >"$share/output.log" 2>&1 </dev/null || status=$?
    echo "$status" >"$share/status.tmp" && mv "$share/status.tmp" "$share/status"
    echo "skiff-vm: command exited with status $status"
    sync || true
    # Straight off, also under systemd: the guest's state is all on tmpfs, nothing to save.
    echo o >/proc/sysrq-trigger
    sleep 30
}

if [ "${1:-}" = run ]; then  # skiff-guest.service, under systemd
    run_command
    exit 0
fi

if grep -qw 'skiff.systemd=1' /proc/cmdline; then
    # /etc and /var: the host's, read-only, under a tmpfs upper layer (units, /etc/skiff, the
    # journal, /var/lib/systemd). Plain tmpfs where an overlay cannot be used: containerd's
    # overlayfs snapshots (/var/lib/skiff) must not sit on an overlay, and /var/tmp was a tmpfs.
    modprobe overlay
    for d in etc var; do
        mkdir -p "/run/skiff-vm/overlay/$d/upper" "/run/skiff-vm/overlay/$d/work"
        mount -t overlay overlay \
            -o "lowerdir=/$d,upperdir=/run/skiff-vm/overlay/$d/upper,workdir=/run/skiff-vm/overlay/$d/work" "/$d"
    done
    for d in /var/tmp /var/lib/skiff /var/lib/cni; do
        mkdir -p "$d"
        mount -t tmpfs -o mode=0755 tmpfs "$d"
    done
    chmod 1777 /var/tmp
    if [ -s "$share/hostname" ]; then cp "$share/hostname" /etc/hostname; fi
    mkdir -p /run/systemd/system
    cp "$share"/systemd/* /run/systemd/system/
    # The host root has /.dockerenv: systemd would take the guest for a container and ignore the
    # kernel command line (systemd.unit=). An empty $container tells PID 1 it is in none, but
    # its generators still look at /.dockerenv, so the systemd.mask= words are applied here (as
    # `systemctl mask` would, in the /etc overlay) instead of by systemd-debug-generator.
    read -r cmdline </proc/cmdline
    for word in $cmdline; do
        case "$word" in systemd.mask=*) ln -sf /dev/null "/etc/systemd/system/${word#systemd.mask=}" ;; esac
    done
    export container=
    exec /lib/systemd/systemd
fi

mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
if [ -s "$share/hostname" ]; then hostname "$(cat "$share/hostname")"; fi
run_command
