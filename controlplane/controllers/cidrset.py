"""Pod CIDR allocation: carve the cluster CIDR into equal subnets, one per node (pure).

What must hold:
- a subnet is never handed out twice while it is in use (allocate skips occupied ones;
  occupy marks subnets found on existing nodes, so a restarted controller rebuilds its map);
- allocation continues after the last one handed out (wrapping around) rather than from
  the start, so a just-released subnet is not immediately reused by another node;
- bad configuration is refused up front with a message naming the flag values.
"""

from __future__ import annotations

import ipaddress

# Kubernetes refuses more than 2^16 subnets per cluster CIDR.
MAX_SUBNET_BITS = 16


class CidrError(ValueError):
    pass


class CidrFullError(CidrError):
    pass


class CidrSet:
    def __init__(self, cluster_cidr: str, mask_size: int) -> None:
        try:
            self.network = ipaddress.ip_network(cluster_cidr, strict=True)
        except ValueError as exc:
            raise CidrError(f'invalid --cluster-cidr "{cluster_cidr}": {exc}') from exc
        bits = mask_size - self.network.prefixlen
        if mask_size > self.network.max_prefixlen or bits < 0:
            raise CidrError(f"--node-cidr-mask-size {mask_size} must be between the cluster CIDR's prefix "
                            f"length /{self.network.prefixlen} and {self.network.max_prefixlen}")
        if bits > MAX_SUBNET_BITS:
            raise CidrError(f"--node-cidr-mask-size {mask_size} splits {cluster_cidr} into 2^{bits} subnets; "
                            f"at most 2^{MAX_SUBNET_BITS} are allowed")
        self.mask_size = mask_size
        self.capacity = 1 << bits
        self._step = 1 << (self.network.max_prefixlen - mask_size)
        self._used: set[int] = set()
        self._next = 0

    @property
    def used(self) -> int:
        return len(self._used)

    def cidr_at(self, index: int) -> str:
        base = int(self.network.network_address) + index * self._step
        return f"{ipaddress.ip_address(base)}/{self.mask_size}"

    def _indexes(self, cidr: str) -> range:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise CidrError(f'invalid CIDR "{cidr}": {exc}') from exc
        if net.version != self.network.version or not net.subnet_of(self.network):  # type: ignore[arg-type]
            raise CidrError(f"CIDR {cidr} is not inside the cluster CIDR {self.network}")
        start = (int(net.network_address) - int(self.network.network_address)) // self._step
        if net.prefixlen >= self.mask_size:
            return range(start, start + 1)
        return range(start, start + (1 << (self.mask_size - net.prefixlen)))

    def allocate_next(self) -> str:
        if len(self._used) >= self.capacity:
            raise CidrFullError(f"no remaining pod CIDRs in {self.network}: all {self.capacity} "
                                f"/{self.mask_size} subnets are in use")
        for offset in range(self.capacity):
            index = (self._next + offset) % self.capacity
            if index not in self._used:
                self._used.add(index)
                self._next = (index + 1) % self.capacity
                return self.cidr_at(index)
        raise CidrFullError(f"no remaining pod CIDRs in {self.network}")  # unreachable

    def occupy(self, cidr: str) -> None:
        self._used.update(self._indexes(cidr))

    def release(self, cidr: str) -> None:
        self._used.difference_update(self._indexes(cidr))

    def is_used(self, cidr: str) -> bool:
        return any(i in self._used for i in self._indexes(cidr))
