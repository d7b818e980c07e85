"""Keeping the kernel's chains equal to successive rulesets, writing only what changed.

What must hold:
- nothing is run when the ruleset equals the one last applied (the rendered text would be
  identical);
- otherwise one `iptables-restore --noflush` carries every chain whose rules changed, every
  new chain, and the deletion of every stale one (declared, then `-X`ed); unchanged chains
  are left out, which `--noflush` keeps as they are — so an endpoint change in a cluster of
  thousands of Services writes a handful of chains, not the whole table;
- a full sync (the first, the periodic resync, and any sync after a failure) reads the
  tables, ensures the jumps from built-in chains (creating their target chains empty if
  missing; jumps certainly absent are inserted by that same restore), writes every chain,
  and deletes every owned chain it did not render (left by an earlier run or another mode);
- after a failed restore nothing is assumed about the kernel: the next sync is full.

With the nft backend a restore that declares very many chains is split bottom-up (see
`ruleset.restore_texts`); every piece leaves a consistent ruleset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from netproxy.iptables.command import (
    Iptables,
    absent_hooks,
    ensure_first,
    ensure_hooks,
    hook_lines,
    read_tables,
    user_chains,
)
from netproxy.iptables.layout import HOOKS, Hook
from netproxy.iptables.ruleset import (
    DYNAMIC_PREFIXES,
    ChainKey,
    Changes,
    Ruleset,
    restore_text,
    restore_texts,
    stale_chains,
)

log = logging.getLogger("netproxy.iptables")

# iptables-nft-restore 1.8.9 --noflush slows down worse than linearly with the chains in one
# transaction; pieces of about this many chains were fastest for 5,000 Services (bench/netproxy.py).
NFT_MAX_CHAINS = 1000


@dataclass
class WriteResult:
    changed: bool = False  # anything was written
    full: bool = False
    restores: int = 0  # iptables-restore runs
    chains_written: int = 0
    chains_deleted: int = 0
    hooks_added: int = 0


class RulesetWriter:
    def __init__(self, ipt: Iptables, *, max_chains: int | None = -1, hooks: tuple[Hook, ...] = HOOKS,
                 prefixes: tuple[str, ...] = DYNAMIC_PREFIXES, hooks_first: bool = False) -> None:
        """`hooks`: the jumps from built-in chains; `prefixes`: the dynamic chains owned (stale ones
        are deleted); `hooks_first`: keep each hook the first rule of its chain (NetworkPolicy)."""
        self.ipt = ipt
        self.hooks = hooks
        self.prefixes = prefixes
        self.hooks_first = hooks_first
        # -1: the backend's default (split only for nft); None: never split.
        self.max_chains = (NFT_MAX_CHAINS if ipt.backend == "nft" else None) if max_chains == -1 else max_chains
        self._applied: dict[ChainKey, tuple[str, ...]] | None = None  # None: unknown, sync fully

    @property
    def applied(self) -> dict[ChainKey, tuple[str, ...]] | None:
        """The chains last written in full (None: unknown, the next write is full)."""
        return self._applied

    def forget(self) -> None:
        """Assume nothing about the kernel: the next write is full."""
        self._applied = None

    async def write(self, rs: Ruleset, *, full: bool = False, since: Changes | None = None) -> WriteResult:
        """Make the kernel's chains `rs`'s. `since`: what may have changed since the ruleset whose
        chains are `since.base`; used when that is what was applied last, to diff those chains only."""
        desired = rs.frozen()
        result = WriteResult(full=full or self._applied is None)
        if result.full:
            tables = await read_tables(self.ipt)
            present = user_chains(tables)
            write = list(desired)
            stale = stale_chains(present, desired, prefixes=self.prefixes)
            # The jumps go in before the bulk of the rules, while the tables are small (legacy
            # copies a whole table per command); their targets must exist first, so missing
            # ones are created empty — existing ones are not touched, traffic keeps flowing.
            # Jumps certainly absent (no jump to their target at all) are inserted in that same
            # restore: one command instead of one per jump (on a fresh host, ten instead of one).
            missing = sorted({(h.table, h.target) for h in self.hooks} - present)
            absent = [] if self.hooks_first else absent_hooks(self.hooks, tables.chains)
            if missing or absent:
                self._applied = None
                await self.ipt.restore(restore_text({k: [] for k in missing}, missing,
                                                    insert=hook_lines(absent)))
                result.restores += 1
            if self.hooks_first:
                result.hooks_added = await ensure_first(self.ipt, self.hooks, known=tables.chains)
            else:
                rest = [h for h in self.hooks if h not in absent]
                result.hooks_added = len(absent) + await ensure_hooks(self.ipt, rest, known=tables.chains)
            if result.hooks_added:
                log.info("added %d jumps from built-in chains", result.hooks_added)
        else:
            assert self._applied is not None
            if desired == self._applied:
                return result
            applied = self._applied
            if since is not None and since.base is applied:
                candidates: Iterable[ChainKey] = since.keys
                gone: Iterable[ChainKey] = (k for k in since.keys if k in applied and k not in desired)
            else:
                candidates, gone = desired.keys(), applied.keys() - desired.keys()
            # Unchanged chains are mostly the very tuples applied last (cached fragments): the
            # identity test spares comparing thousands of them rule by rule on every sync.
            write = [k for k in candidates
                     if (rules := desired.get(k)) is not None and (a := applied.get(k)) is not rules and a != rules]
            stale = stale_chains(gone, desired, prefixes=self.prefixes)
        texts = restore_texts(desired, write, stale, max_chains=self.max_chains)
        self._applied = None
        for text in texts:
            await self.ipt.restore(text)
            result.restores += 1
        self._applied = desired
        result.changed = bool(texts) or bool(result.hooks_added)
        result.chains_written = len(write)
        result.chains_deleted = len(stale)
        return result
