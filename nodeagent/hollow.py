"""Hollow nodes: many real node agents in one process, each over its own in-memory CRI server.

    python -m nodeagent.hollow --api-servers 127.0.0.1:6443 --nodes 250 --first 0 \\
        --socket-dir /tmp/hollow --start-latency 0.05 --fail-rate 0.01

Like Kubernetes' kubemark: a machine runs hundreds of simulated nodes against a real control
plane. What must hold:

- Every hollow node is a `NodeAgent` running the same code as `skiff-nodeagent`: it registers
  its own Node, renews its own Lease, has its own pod informer (spec.nodeName=<node>), its own
  pod workers, and writes its own pod and node status. Only the runtime differs: each agent
  talks CRI over gRPC (`GrpcRuntime`, the production client) to its own FakeRuntime served on
  a unix socket in `--socket-dir` (`--runtime inprocess` skips the socket for a cheaper run).
- What is shared per process does not change what an agent sees: the cluster-wide node,
  service informers and the per-object ConfigMap/Secret/claim/volume watches
  (`ClusterInformers`, one set instead of one per agent) and the api-server connections (one
  `Client` per `AGENTS_PER_CLIENT` agents; gRPC multiplexes the agents' calls and watches over it).
- Nothing touches the host: no CNI, routes, sysctls, volumes or host pressure; pods get IPs
  from the node's own /24 of `HOLLOW_POD_NET` (node i: 10.128.0.0/9's i-th /24), unique in
  the cluster so Endpoints are realistic. Hollow agents serve no logs/exec port (published 0).
- CRI calls wait for one of the process's `cri_inflight` slots (`AdmittedRuntime`) before they
  are sent, so their deadlines count from the send: one process's event loop carries every
  agent's calls, client and server, and without a bound a burst of pod starts (2,500 pods on
  250 agents) put thousands of calls in flight at once, each loop pass got slower than a call's
  10 s deadline, and the timed-out calls' retries were the load (bench/hollow.py; docs/scale.md).
  A real node's runtime queues calls in containerd, not in the agent's loop. The agent's code
  is the same; only the runtime it holds differs.
- The agents' periodic loops wake on a grid of `--tick` (1 s): the ones falling due within one
  tick send their calls in one loop pass, sharing gRPC's wake-ups (a real node's one agent has
  no one to share them with; its tick is 0).
- Periods default slower than a real agent's (`--relist-period` 10 s, `--status-check-period`
  10 s): at 1,000 nodes the real 1 s would be 3,000 CRI calls/s of pure polling; pods are
  still started by watch events, so startup latency does not depend on them.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, cast

import grpc

from nodeagent.agent import AgentConfig, ClusterInformers, NodeAgent
from nodeagent.cri import GrpcRuntime, Runtime
from nodeagent.fakecri import FakeRuntime, Faults, serve
from nodeagent.plan import PlanConfig
from skiff import eventloop
from skiff.client import Client
from skiff.daemon import add_verbose_flag, duration, run_until_signalled, setup_logging
from skiff.guard import guard

log = logging.getLogger("nodeagent.hollow")

HOLLOW_POD_NET = ipaddress.ip_network("10.128.0.0/9")
AGENTS_PER_CLIENT = 50
CRI_INFLIGHT = 32  # CRI calls in flight per process (all agents), see AdmittedRuntime
# The agents' periodic loops (relist, runtime status, Lease, usage) end their waits on a grid of
# this step: those falling due within one tick send their calls in one loop pass, which halved
# the CPU of the same polls (250 agents; docs/scale.md). 1 s delays none by more than a second.
TICK = 1.0
START_CONCURRENCY = 20  # agents registering at once: a burst of 1,000 registrations is a thundering herd


def hollow_pod_cidr(index: int) -> str:
    """The index-th /24 of HOLLOW_POD_NET (32,768 of them)."""
    subnets = 1 << (24 - HOLLOW_POD_NET.prefixlen)
    if not 0 <= index < subnets:
        raise ValueError(f"hollow node index {index}: expected 0..{subnets - 1}")
    base = int(HOLLOW_POD_NET.network_address) + (index << 8)
    return f"{ipaddress.ip_address(base)}/24"


def hollow_node_name(prefix: str, index: int) -> str:
    return f"{prefix}{index:05d}"


@dataclass
class HollowConfig:
    api_servers: str
    nodes: int
    first: int = 0
    prefix: str = "hollow-"
    capacity: dict[str, str] = field(default_factory=lambda: {"cpu": "32", "memory": "64Gi", "pods": "110"})
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str = "grpc"  # grpc: a CRI gRPC server per node; inprocess: the FakeRuntime called directly
    socket_dir: str = ""
    faults: Faults = field(default_factory=Faults)
    relist_period: float = 10.0
    status_check_period: float = 10.0
    lease_period: float = 10.0
    # The kubelet's nodeStatusReportFrequency (5 min while its Lease is renewed): an unchanged
    # status is re-written that often; a change is written at once (status_check_period).
    node_status_period: float = 300.0
    # Between two usage samples (the agent's --housekeeping-interval, 10 s on a real node): the
    # fake runtime's usage is made up, and at 1,000 nodes 10 s is 100 CRI stats calls/s.
    stats_period: float = 60.0
    cri_inflight: int = CRI_INFLIGHT  # 0: no bound
    tick: float = TICK  # the agents' periodic loops wake on a grid of this step (AgentConfig.tick)


class AdmittedRuntime:
    """`inner`'s Runtime calls, each sent only once it holds one of `slots` (shared by the process's
    agents): a queued call waits here, where no deadline runs and nothing is half done."""

    def __init__(self, inner: Runtime, slots: asyncio.Semaphore) -> None:
        self._inner = inner
        self._slots = slots

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)
        if name == "close" or not asyncio.iscoroutinefunction(method):
            return method
        slots = self._slots

        async def admitted(*args: Any, **kwargs: Any) -> Any:
            async with slots:
                return await method(*args, **kwargs)

        setattr(self, name, admitted)  # made once per method and agent
        return admitted


@dataclass
class HollowNode:
    agent: NodeAgent
    fake: FakeRuntime
    runtime: Runtime
    server: grpc.aio.Server | None = None


class HollowNodes:
    """Start, run and stop `config.nodes` hollow agents in this process's event loop."""

    def __init__(self, config: HollowConfig) -> None:
        self.config = config
        count = max(1, -(-config.nodes // AGENTS_PER_CLIENT))
        self.clients = [Client(config.api_servers) for _ in range(count)]
        self.informers = ClusterInformers.create(self.clients[0])
        self.nodes: list[HollowNode] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._own_socket_dir = not config.socket_dir
        self.socket_dir = config.socket_dir or tempfile.mkdtemp(prefix="skiff-hollow-")
        self._cri_slots = asyncio.Semaphore(config.cri_inflight) if config.cri_inflight > 0 else None

    def _agent_config(self, name: str, index: int) -> AgentConfig:
        c = self.config
        return AgentConfig(
            node_name=name, node_ip="127.0.0.1", pod_cidr=hollow_pod_cidr(index), manage_network=False,
            manage_sysctls=False, host_pressure=False, pod_log_dir=os.path.join(self.socket_dir, "logs"),
            capacity=dict(c.capacity), labels={"skiff.io/hollow": "true", **c.labels},
            relist_period=c.relist_period, status_check_period=c.status_check_period,
            lease_period=c.lease_period, node_status_period=c.node_status_period, stats_period=c.stats_period,
            tick=c.tick, plan=PlanConfig())

    async def _make(self, index: int) -> HollowNode:
        c = self.config
        name = hollow_node_name(c.prefix, index)
        fake = FakeRuntime(pod_cidr=hollow_pod_cidr(index), pullable=lambda image: True, faults=c.faults,
                           record_calls=False, keep_configs=False)
        server: grpc.aio.Server | None = None
        runtime: Runtime = fake
        if c.runtime == "grpc":
            sock = os.path.join(self.socket_dir, f"{name}.sock")
            server = await serve(fake, f"unix://{sock}")
            runtime = GrpcRuntime(f"unix://{sock}")
        client = self.clients[(index - c.first) // AGENTS_PER_CLIENT]
        held = runtime if self._cri_slots is None else cast(Runtime, AdmittedRuntime(runtime, self._cri_slots))
        agent = NodeAgent(client, held, self._agent_config(name, index), shared=self.informers)
        return HollowNode(agent, fake, runtime, server)

    async def start(self) -> None:
        """Returns once every agent registered its Node and synced its pods."""
        os.makedirs(self.socket_dir, exist_ok=True)
        for informer in self.informers.all():
            self._tasks.append(guard(informer.run(), f"hollow-{informer.kind.resource}-informer"))
        await asyncio.gather(*(i.wait_synced() for i in self.informers.all()))
        limit = asyncio.Semaphore(START_CONCURRENCY)

        async def one(index: int) -> HollowNode:
            async with limit:
                node = await self._make(index)
                await node.agent.start()
                return node

        started = time.monotonic()
        self.nodes = list(await asyncio.gather(*(one(i) for i in range(self.config.first,
                                                                       self.config.first + self.config.nodes))))
        log.info("%d hollow nodes started in %.1f s", len(self.nodes), time.monotonic() - started)

    async def stop(self) -> None:
        await asyncio.gather(*(n.agent.stop() for n in self.nodes), return_exceptions=True)
        for n in self.nodes:
            await n.runtime.close()
            if n.server is not None:
                await n.server.stop(0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            await client.close()
        if self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def injected_failures(self) -> int:
        return sum(n.fake.injected for n in self.nodes)


def _kv(text: str, flag: str) -> dict[str, str]:
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        k, sep, v = part.partition("=")
        if not sep:
            raise SystemExit(f"{flag}: expected key=value[,key=value], got {part!r}")
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nodeagent.hollow", description="Run many simulated node agents.")
    p.add_argument("--api-servers", required=True)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--first", type=int, default=0, help="index of the first node (names and pod CIDRs follow it)")
    p.add_argument("--prefix", default="hollow-", help="node names are PREFIX + 5-digit index")
    p.add_argument("--capacity", default="cpu=32,memory=64Gi,pods=110")
    p.add_argument("--node-labels", default="")
    p.add_argument("--runtime", choices=("grpc", "inprocess"), default="grpc")
    p.add_argument("--socket-dir", default="", help="where the CRI sockets go (default: a temporary directory)")
    p.add_argument("--start-latency", type=duration, default=0.0,
                   help="how long RunPodSandbox and StartContainer each take")
    p.add_argument("--fail-rate", type=float, default=0.0,
                   help="fraction of RunPodSandbox/CreateContainer/StartContainer calls that fail")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--relist-period", type=duration, default=10.0)
    p.add_argument("--status-check-period", type=duration, default=10.0)
    p.add_argument("--lease-period", type=duration, default=10.0)
    p.add_argument("--node-status-period", type=duration, default=300.0,
                   help="re-write an unchanged node status this often (the kubelet's 5 min)")
    p.add_argument("--housekeeping-interval", type=duration, default=60.0, help="between two usage samples")
    p.add_argument("--cri-inflight", type=int, default=CRI_INFLIGHT,
                   help="CRI calls in flight at once across the process's agents (0: no bound)")
    p.add_argument("--tick", type=duration, default=TICK,
                   help="the agents' periodic loops wake on a grid of this step, so their calls go out "
                        "together (0: anywhere in time)")
    add_verbose_flag(p)
    return p


def config_from_args(args: argparse.Namespace) -> HollowConfig:
    return HollowConfig(api_servers=args.api_servers, nodes=args.nodes, first=args.first, prefix=args.prefix,
                        capacity=_kv(args.capacity, "--capacity"), labels=_kv(args.node_labels, "--node-labels"),
                        runtime=args.runtime, socket_dir=args.socket_dir,
                        faults=Faults(start_latency=args.start_latency, fail_rate=args.fail_rate, seed=args.seed),
                        relist_period=args.relist_period, status_check_period=args.status_check_period,
                        lease_period=args.lease_period, node_status_period=args.node_status_period,
                        stats_period=args.housekeeping_interval, cri_inflight=args.cri_inflight, tick=args.tick)


async def run(config: HollowConfig) -> int:
    nodes = HollowNodes(config)
    try:
        await nodes.start()
        print(f"hollow nodes ready: {len(nodes.nodes)}", flush=True)
        await asyncio.get_running_loop().create_future()
    finally:
        await nodes.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    # uvloop: every CRI and api-server call is a handful of loop callbacks, and a process of
    # 250 agents spends most of its time in them (docs/scale.md).
    return run_until_signalled(run(config_from_args(args)), loop_factory=eventloop.new_event_loop)


if __name__ == "__main__":
    sys.exit(main())
