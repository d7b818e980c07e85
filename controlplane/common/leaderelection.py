"""Leader election through a coordination Lease, as client-go's leaderelection does.

What must hold:
- at most one candidate believes it leads at any time, given that a leader stops acting
  (cancels its work) once it has failed to renew for `renew_deadline` < `lease_duration`;
- a lease is taken over only after it has not changed for a whole `lease_duration`, measured
  on OUR clock from when we first saw its current value (never by comparing the holder's
  timestamps with our clock: hosts' clocks skew);
- every write is a compare-and-swap on resourceVersion, so two candidates racing for an
  expired lease cannot both win;
- a leader that stops cleanly releases the lease (empty holder) so a standby takes over at
  once instead of after the lease duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import Gauge

from skiff import errors
from skiff.client import ApiClient
from skiff.clock import Clock, RealClock, stamp
from skiff.daemon import duration
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.leaderelection")

# client-go's leader election metric: 1 while this process leads the lease `name`.
MASTER_STATUS = Gauge("leader_election_master_status",
                      "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
                      "1 indicates master. 'name' is the string used to identify the lease.", ["name"])


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@dataclass
class LeaderElectionConfig:
    name: str
    namespace: str = "kube-system"
    identity: str = field(default_factory=default_identity)
    # Shorter than Kubernetes' 15/10/2 so that a standby takes over within 15 s of a leader's
    # death: it sees the last renewal at most one retry period late, then waits the duration.
    lease_duration: float = 10.0
    renew_deadline: float = 7.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease duration "
                             f"(got {self.retry_period}, {self.renew_deadline}, {self.lease_duration})")


class LeaderElector:
    def __init__(self, client: ApiClient, config: LeaderElectionConfig, *, clock: Clock | None = None) -> None:
        self.client = client
        self.config = config
        self.clock = clock or RealClock()
        self._observed: t.LeaseSpec | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._leading = False
        self._status = MASTER_STATUS.labels(config.name)
        self._status.set(0)

    @property
    def leading(self) -> bool:
        return self._leading

    @leading.setter
    def leading(self, value: bool) -> None:
        self._leading = value
        self._status.set(1 if value else 0)

    @property
    def holder(self) -> str:
        return self._observed.holder_identity if self._observed is not None else ""

    def _observe(self, spec: t.LeaseSpec, now: float) -> None:
        if self._observed is None or spec != self._observed:
            self._observed = t.LeaseSpec()
            self._observed.CopyFrom(spec)
            self._observed_at = now

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when we hold the lease afterwards."""
        cfg = self.config
        now = self.clock.now()
        try:
            lease = await self.client.get(t.Lease, cfg.name, cfg.namespace)
        except errors.NotFoundError:
            lease = t.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name, lease.metadata.namespace = cfg.name, cfg.namespace
            self._fill(lease.spec, now, acquired=True)
            try:
                created = await self.client.create(lease)
            except (errors.AlreadyExistsError, errors.ConflictError):
                return False
            self._won(created.spec, now)
            return True
        spec = lease.spec
        self._observe(spec, now)
        duration = spec.lease_duration_seconds if spec.HasField("lease_duration_seconds") else cfg.lease_duration
        held_by_other = bool(spec.holder_identity) and spec.holder_identity != cfg.identity
        if held_by_other and self._observed_at + duration > now:
            return False
        ours = spec.holder_identity == cfg.identity
        self._fill(lease.spec, now, acquired=not ours)
        try:
            updated = await self.client.update(lease)
        except (errors.ConflictError, errors.NotFoundError):
            return False
        self._won(updated.spec, now)
        return True

    def _fill(self, spec: t.LeaseSpec, now: float, *, acquired: bool) -> None:
        cfg = self.config
        if acquired:
            if spec.holder_identity != cfg.identity and spec.HasField("acquire_time"):
                spec.lease_transitions += 1
            stamp(spec.acquire_time, now)
        spec.holder_identity = cfg.identity
        spec.lease_duration_seconds = max(1, math.ceil(cfg.lease_duration))
        stamp(spec.renew_time, now)

    def _won(self, spec: t.LeaseSpec, now: float) -> None:
        self._observe(spec, now)
        self._last_renew = now

    async def release(self) -> None:
        """Give the lease up (only if we still hold it) so a standby need not wait it out.

        Bounded by the retry period: on shutdown the api-servers may already be gone, and the
        lease then simply expires.
        """
        try:
            async with asyncio.timeout(self.config.retry_period):
                lease = await self.client.get(t.Lease, self.config.name, self.config.namespace)
                if lease.spec.holder_identity != self.config.identity:
                    return
                lease.spec.holder_identity = ""
                lease.spec.lease_duration_seconds = 1
                stamp(lease.spec.renew_time, self.clock.now())
                await self.client.update(lease)
        except (TimeoutError, errors.SkiffError) as exc:
            log.warning("could not release lease %s/%s: %s", self.config.namespace, self.config.name,
                        exc or "timed out")

    async def _attempt(self) -> bool:
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that arrives as the inner call completes, and the campaign would never stop.
            async with asyncio.timeout(self.config.retry_period * 2):
                return await self.try_acquire_or_renew()
        except (TimeoutError, errors.SkiffError) as exc:
            log.debug("lease %s: attempt failed: %s", self.config.name, exc)
            return False

    async def acquire(self) -> None:
        """Return once we lead."""
        announced = ""
        while not await self._attempt():
            if self.holder != announced:
                announced = self.holder
                log.info("lease %s/%s is held by %s; waiting", self.config.namespace, self.config.name, announced)
            await asyncio.sleep(self.config.retry_period)
        self.leading = True
        log.info("became leader (lease %s/%s, identity %s)", self.config.namespace, self.config.name,
                 self.config.identity)

    async def keep(self) -> None:
        """Renew until a renewal has failed for `renew_deadline`; then return (leadership lost)."""
        while True:
            await asyncio.sleep(self.config.retry_period)
            if await self._attempt():
                continue
            if self.clock.now() - self._last_renew >= self.config.renew_deadline:
                self.leading = False
                log.error("lost leadership of lease %s/%s (identity %s)", self.config.namespace, self.config.name,
                          self.config.identity)
                return

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Campaign forever; while leading, run `lead()`; cancel it when leadership is lost.

        If `lead()` itself ends (it should run until cancelled), the lease is released and the
        error, if any, propagates.
        """
        while True:
            await self.acquire()
            work = asyncio.ensure_future(lead())
            keeper = asyncio.ensure_future(self.keep())
            try:
                done, _ = await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                work.cancel()
                keeper.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(work, keeper, return_exceptions=True)
                await self.release()
                raise
            if work in done:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
                self.leading = False
                await self.release()
                work.result()
                return
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)


def add_leader_election_flags(p: argparse.ArgumentParser, default_name: str) -> None:
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="take a leadership Lease before acting (default on)")
    p.add_argument("--leader-elect-lease-duration", type=duration, default=10.0)
    p.add_argument("--leader-elect-renew-deadline", type=duration, default=7.0)
    p.add_argument("--leader-elect-retry-period", type=duration, default=2.0)
    p.add_argument("--leader-elect-resource-name", default=default_name)
    p.add_argument("--leader-elect-resource-namespace", default="kube-system")
    p.add_argument("--identity", default="", help="leader election identity (default host_pid_random)")


def leader_config(args: argparse.Namespace) -> LeaderElectionConfig:
    return LeaderElectionConfig(name=args.leader_elect_resource_name, namespace=args.leader_elect_resource_namespace,
                                identity=args.identity or default_identity(),
                                lease_duration=args.leader_elect_lease_duration,
                                renew_deadline=args.leader_elect_renew_deadline,
                                retry_period=args.leader_elect_retry_period)
