"""QEMU guests on a machine without hardware virtualization: real second kernels for tests and labs.

`image` builds what a guest boots (a decompressed Debian kernel and a small initramfs) from
Debian packages already installed on the host; `guest` boots one, running a command on the
host's own userspace (mounted read-only over 9p), and collects its results through a
writable share. See docs/vm.md.
"""
