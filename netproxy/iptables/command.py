"""Talking to iptables: the `Iptables` protocol, the real command runner and an in-memory twin.

`IptablesCmd` runs the backend's own binaries (`iptables-nft-restore`, `iptables-legacy`,
...) so one netproxy never mixes backends, optionally inside a network namespace through
`nsenter --net=` (tests and benchmarks; the daemon itself is started inside its node's
namespace). `MemoryIptables` keeps tables in memory with the semantics netproxy relies on —
`--noflush` restores that are atomic per table, declared chains flushed, `-X` refused while a
chain is referenced or not empty, jumps only to existing chains — so the proxier's write
logic is tested without root. `choose_backend` is the pure part of backend auto-detection.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from netproxy.iptables.layout import HOOKS, Hook
from netproxy.iptables.ruleset import BUILTIN_CHAINS, TABLES, ChainKey, ParsedRules, parse

log = logging.getLogger("netproxy.iptables")

BACKENDS = ("nft", "legacy")


class IptablesError(Exception):
    """An iptables command failed; the message carries the command and its stderr."""


class Iptables(Protocol):
    backend: str

    async def restore(self, text: str) -> None: ...

    async def save(self, table: str) -> str: ...

    async def check(self, table: str, chain: str, args: Sequence[str]) -> bool: ...

    async def insert(self, table: str, chain: str, args: Sequence[str]) -> None: ...

    async def delete(self, table: str, chain: str, args: Sequence[str]) -> bool: ...


def netns_prefix(netns: str) -> list[str]:
    """argv prefix running a command in `netns` (a name under /run/netns or a path); [] for none."""
    if not netns:
        return []
    path = netns if "/" in netns else f"/run/netns/{netns}"
    return ["nsenter", f"--net={path}", "--"]


class IptablesCmd:
    """The real thing: iptables-<backend>[-restore|-save] as subprocesses."""

    def __init__(self, backend: str, *, netns: str = "", wait_seconds: int = 5) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"iptables backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.backend = backend
        self.prefix = netns_prefix(netns)
        self.wait = str(wait_seconds)
        self.restores = 0
        self.restore_seconds: list[float] = []  # wall time of each restore (benchmarks: the floor under a sync)

    async def _run(self, argv: list[str], *, stdin: str | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, *argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        return proc.returncode or 0, out.decode(), err.decode()

    async def restore(self, text: str) -> None:
        argv = [f"iptables-{self.backend}-restore", "--noflush", "-w", self.wait]
        start = time.perf_counter()
        rc, _, err = await self._run(argv, stdin=text)
        self.restore_seconds.append(time.perf_counter() - start)
        del self.restore_seconds[:-1000]
        self.restores += 1
        if rc != 0:
            raise IptablesError(f"{' '.join(argv)} failed (exit {rc}): {err.strip()}")

    async def save(self, table: str) -> str:
        argv = [f"iptables-{self.backend}-save", "-t", table]
        rc, out, err = await self._run(argv)
        if rc != 0:
            raise IptablesError(f"{' '.join(argv)} failed (exit {rc}): {err.strip()}")
        return out

    def _rule_argv(self, op: str, table: str, chain: str, args: Sequence[str]) -> list[str]:
        return [f"iptables-{self.backend}", "-w", self.wait, "-t", table, op, chain, *args]

    async def check(self, table: str, chain: str, args: Sequence[str]) -> bool:
        rc, _, err = await self._run(self._rule_argv("-C", table, chain, args))
        if rc not in (0, 1):  # 1: no such rule; anything else: the command itself failed
            raise IptablesError(f"iptables -C {chain} failed (exit {rc}): {err.strip()}")
        return rc == 0

    async def insert(self, table: str, chain: str, args: Sequence[str]) -> None:
        argv = self._rule_argv("-I", table, chain, args)
        rc, _, err = await self._run(argv)
        if rc != 0:
            raise IptablesError(f"{shlex.join(argv)} failed (exit {rc}): {err.strip()}")

    async def delete(self, table: str, chain: str, args: Sequence[str]) -> bool:
        rc, _, _ = await self._run(self._rule_argv("-D", table, chain, args))
        return rc == 0


def _target(line: str) -> str:
    args = shlex.split(line)
    return args[args.index("-j") + 1] if "-j" in args[:-1] else ""


def _rule_line(chain: str, args: Sequence[str]) -> str:
    return f"-A {chain} " + " ".join(shlex.quote(a) if " " in a else a for a in args)


@dataclass
class MemoryIptables:
    """In-memory tables with `iptables-restore --noflush` semantics (see the module docstring)."""

    backend: str = "memory"

    def __post_init__(self) -> None:
        self.chains: dict[ChainKey, list[str]] = {
            (table, chain): [] for table in TABLES for chain in BUILTIN_CHAINS[table]}
        self.restored: list[str] = []  # every restore text applied, in order
        self.fail_next_restore: str = ""  # when set, the next restore fails with this message

    def _builtin(self, key: ChainKey) -> bool:
        return key[1] in BUILTIN_CHAINS.get(key[0], ())

    async def restore(self, text: str) -> None:
        if self.fail_next_restore:
            message, self.fail_next_restore = self.fail_next_restore, ""
            raise IptablesError(message)
        work = {k: list(v) for k, v in self.chains.items()}
        table = ""
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue

            def fail(why: str, number: int = number, line: str = line) -> IptablesError:
                return IptablesError(f"iptables-restore: line {number} failed: {why}: {line}")

            if line.startswith("*"):
                table = line[1:]
                if table not in TABLES:
                    raise fail("unknown table")
            elif line == "COMMIT":
                table = ""
            elif not table:
                raise fail("outside a table")
            elif line.startswith(":"):
                key = (table, line[1:].split()[0])
                if not self._builtin(key):
                    work[key] = []  # created, or flushed and refilled
            elif line.startswith("-A "):
                key = (table, line.split()[1])
                if key not in work:
                    raise fail("no such chain")
                target = _target(line)
                if target.startswith("KUBE-") and (table, target) not in work:
                    raise fail(f"jump to missing chain {target}")
                work[key].append(line)
            elif line.startswith("-I "):
                args = shlex.split(line)
                key = (table, args[1])
                target = _target(line)
                if key not in work:
                    raise fail("no such chain")
                if target.startswith("KUBE-") and (table, target) not in work:
                    raise fail(f"jump to missing chain {target}")
                work[key].insert(int(args[2]) - 1, _rule_line(args[1], args[3:]))
            elif line.startswith("-X "):
                key = (table, line.split()[1])
                if key not in work or self._builtin(key):
                    raise fail("no such user chain")
                if work[key]:
                    raise fail("chain is not empty (Device or resource busy)")
                for k, rules in work.items():
                    if k[0] == table and any(f"-j {key[1]}" in r and _target(r) == key[1] for r in rules):
                        raise fail(f"chain {key[1]} is still referenced from {k[1]}")
                del work[key]
            else:
                raise fail("unsupported line")
        if table:
            raise IptablesError(f"iptables-restore: table {table} has no COMMIT")
        self.chains = work
        self.restored.append(text)

    async def save(self, table: str) -> str:
        out = [f"*{table}"]
        for chain in BUILTIN_CHAINS[table]:
            out.append(f":{chain} ACCEPT [0:0]")
        users = sorted(c for (t, c) in self.chains if t == table and c not in BUILTIN_CHAINS[table])
        out.extend(f":{c} - [0:0]" for c in users)
        for chain in (*BUILTIN_CHAINS[table], *users):
            out.extend(self.chains[(table, chain)])
        out.append("COMMIT")
        return "\n".join(out) + "\n"

    async def check(self, table: str, chain: str, args: Sequence[str]) -> bool:
        return _rule_line(chain, args) in self.chains.get((table, chain), [])

    async def insert(self, table: str, chain: str, args: Sequence[str]) -> None:
        target = args[-1]
        if target.startswith(("KUBE-", "SKIFF-")) and (table, target) not in self.chains:
            raise IptablesError(f"iptables -I {chain}: chain {target} does not exist")
        self.chains[(table, chain)].insert(0, _rule_line(chain, args))

    async def delete(self, table: str, chain: str, args: Sequence[str]) -> bool:
        rules = self.chains.get((table, chain), [])
        line = _rule_line(chain, args)
        if line in rules:
            rules.remove(line)
            return True
        return False

    def user_chains(self) -> set[ChainKey]:
        return {k for k in self.chains if not self._builtin(k)}


# ---------------------------------------------------------------------- hooks


def absent_hooks(hooks: Sequence[Hook], known: Mapping[ChainKey, Sequence[str]]) -> list[Hook]:
    """Hooks whose built-in chain (as iptables-save just showed it) has no jump to their target at all.

    Those are certainly missing and can be inserted without a `-C`, inside a restore
    (`hook_lines`), instead of one command each.
    """
    return [h for h in hooks if not any(f"-j {h.target}" in r for r in known.get((h.table, h.chain), ()))]


def hook_lines(hooks: Sequence[Hook]) -> dict[str, list[str]]:
    """Restore lines (per table) inserting `hooks` at the top of their chains, ending up in the order given."""
    out: dict[str, list[str]] = {}
    for hook in reversed(hooks):
        args = " ".join(f'"{a}"' if " " in a else a for a in hook.args)
        out.setdefault(hook.table, []).append(f"-I {hook.chain} 1 {args}")
    return out


async def ensure_hooks(ipt: Iptables, hooks: Sequence[Hook] = HOOKS, *,
                       known: Mapping[ChainKey, Sequence[str]] | None = None) -> int:
    """Make sure every jump from a built-in chain exists (`-C`, then `-I`); how many were added.

    `known`: the rules just read with iptables-save. A hook found there verbatim needs no
    `-C`, and neither does one whose built-in chain has no jump to its target at all; `-C`
    decides only when iptables-save printed a jump to the target differently (with
    iptables-legacy every `-C` copies the whole table out of the kernel).
    """
    added = 0
    # Inserted in reverse, so that on a clean host they end up in the order listed.
    for hook in reversed(hooks):
        if known is not None:
            rules = known.get((hook.table, hook.chain), ())
            if any(shlex.split(r)[2:] == list(hook.args) for r in rules):
                continue
            if not any(f"-j {hook.target}" in r for r in rules):
                await ipt.insert(hook.table, hook.chain, hook.args)
                added += 1
                continue
        if not await ipt.check(hook.table, hook.chain, hook.args):
            await ipt.insert(hook.table, hook.chain, hook.args)
            added += 1
    return added


async def ensure_first(ipt: Iptables, hooks: Sequence[Hook], *, known: Mapping[ChainKey, Sequence[str]]) -> int:
    """Make each hook the first rule of its built-in chain (moving it there); how many were (re)inserted.

    For jumps that must see a packet before anything can ACCEPT it (NetworkPolicy). `known`:
    the rules just read with iptables-save.
    """
    added = 0
    for hook in hooks:
        rules = known.get((hook.table, hook.chain), ())
        if rules and shlex.split(rules[0])[2:] == list(hook.args):
            continue
        while await ipt.delete(hook.table, hook.chain, hook.args):
            pass
        await ipt.insert(hook.table, hook.chain, hook.args)
        added += 1
    return added


async def remove_hooks(ipt: Iptables, hooks: Sequence[Hook] = HOOKS) -> int:
    removed = 0
    for hook in hooks:
        while await ipt.delete(hook.table, hook.chain, hook.args):
            removed += 1
    return removed


async def read_tables(ipt: Iptables) -> ParsedRules:
    """The nat and filter tables as iptables-save shows them."""
    parsed = ParsedRules()
    for table in TABLES:
        one = parse(await ipt.save(table))
        parsed.chains.update(one.chains)
        parsed.policies.update(one.policies)
    return parsed


def user_chains(parsed: ParsedRules) -> set[ChainKey]:
    return {k for k in parsed.chains if k[1] not in BUILTIN_CHAINS.get(k[0], ())}


async def present_chains(ipt: Iptables) -> set[ChainKey]:
    """User chains in the nat and filter tables, as iptables-save shows them."""
    return user_chains(await read_tables(ipt))


# ---------------------------------------------------------------------- backend detection


@dataclass(frozen=True)
class BackendRules:
    total: int  # rules (-A lines) in all tables
    kube: int  # rules in or jumping to KUBE-* chains


def count_rules(save_text: str) -> BackendRules:
    total = kube = 0
    for line in save_text.splitlines():
        if line.startswith("-A "):
            total += 1
            if "KUBE-" in line:
                kube += 1
    return BackendRules(total, kube)


def choose_backend(nft: BackendRules, legacy: BackendRules, version_text: str) -> str:
    """Pick the backend already in use: the one holding KUBE rules, else more rules, else `iptables -V`."""
    if nft.kube != legacy.kube:
        return "nft" if nft.kube > legacy.kube else "legacy"
    if nft.total != legacy.total:
        return "nft" if nft.total > legacy.total else "legacy"
    return "legacy" if "legacy" in version_text else "nft"


def detect_backend(*, netns: str = "") -> str:
    """The backend this host (or `netns`) uses; see `choose_backend`. Runs at startup only."""
    prefix = netns_prefix(netns)

    def run(argv: list[str]) -> str:
        try:
            return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60,
                                  check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    nft = count_rules(run(["iptables-nft-save"]))
    # Listing legacy tables would create them; /proc/net/ip_tables_names says whether any exist.
    legacy_tables = run(["cat", "/proc/net/ip_tables_names"]).split()
    legacy = count_rules(run(["iptables-legacy-save"])) if legacy_tables else BackendRules(0, 0)
    chosen = choose_backend(nft, legacy, run(["iptables", "-V"]))
    log.info("iptables backend: %s (nft: %d rules, %d KUBE; legacy: %d rules, %d KUBE)",
             chosen, nft.total, nft.kube, legacy.total, legacy.kube)
    return chosen
