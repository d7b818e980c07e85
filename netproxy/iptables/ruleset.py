"""A ruleset as data: chains per table, each an ordered list of `-A CHAIN ...` lines.

It is the common currency of the renderers (which build one), the writer (which turns the
chains that changed into iptables-restore text), the in-memory iptables and the packet
tracer (which parse text back into one). What must hold:
- text is deterministic: tables in iptables-save order (filter, nat), chain declarations
  sorted by name, rules in the order they were added;
- restore text is meant for `iptables-restore --noflush`: a declared chain is created or
  flushed and refilled; a chain not mentioned keeps its rules; a chain to delete is declared
  (flushing it, so it no longer references anything) and then `-X`ed in the same
  transaction, after every declaration, so that chains referencing each other can all go;
- split restore texts (`restore_texts` with `max_chains`) are ordered bottom-up: KUBE-MARK-MASQ
  and whole service ports (a service chain with its endpoint chains) first, the chains that
  jump to service chains (KUBE-SERVICES, KUBE-NODEPORTS, ...) and every deletion last, so each
  intermediate state is complete: every jump points at an existing, filled chain.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

TABLES = ("filter", "nat")
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
ChainKey = tuple[str, str]  # (table, chain)

# Chains netproxy creates per service port or endpoint: any such chain it did not render in
# this sync is stale and deleted.
DYNAMIC_PREFIXES = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-SVL-", "KUBE-EXT-")


class Ruleset:
    """Chains in insertion order; `add` appends `-A CHAIN <rule>`."""

    def __init__(self) -> None:
        # Lists while being built; renderers may store shared tuples (never mutate values).
        self.chains: dict[ChainKey, Sequence[str]] = {}
        self._frozen: dict[ChainKey, tuple[str, ...]] | None = None
        self._counts: dict[str, int] | None = None

    @classmethod
    def sealed(cls, chains: dict[ChainKey, tuple[str, ...]], counts: dict[str, int] | None = None) -> Ruleset:
        """A finished ruleset over `chains` (never mutated afterwards); `frozen()` is `chains` itself.

        `counts`: its rule_count(), when the caller already knows it."""
        rs = cls()
        rs.chains = chains  # type: ignore[assignment]
        rs._frozen = chains
        rs._counts = counts
        return rs

    def declare(self, table: str, chain: str) -> list[str]:
        rules = self.chains.setdefault((table, chain), [])
        assert isinstance(rules, list), f"{chain} is sealed"
        return rules

    def add(self, table: str, chain: str, rule: str) -> None:
        self.declare(table, chain).append(f"-A {chain} {rule}")

    def rule_count(self) -> dict[str, int]:
        if self._counts is not None:
            return dict(self._counts)
        return count_rules(self.chains)

    def frozen(self) -> dict[ChainKey, tuple[str, ...]]:
        if self._frozen is not None:
            return self._frozen
        return {k: v if isinstance(v, tuple) else tuple(v) for k, v in self.chains.items()}

    def restore_text(self, *, only: Collection[ChainKey] | None = None, delete: Iterable[ChainKey] = ()) -> str:
        """iptables-restore --noflush input writing `only` (default: all) chains and deleting `delete`."""
        return restore_text(self.chains, self.chains.keys() if only is None else only, delete)


@dataclass(frozen=True)
class Changes:
    """What may differ between two successive builds: every chain whose rules differ from
    `base`'s (the previous build's chains) or that only one of them has is in `keys`."""

    base: Mapping[ChainKey, tuple[str, ...]]
    keys: frozenset[ChainKey]


class ChainEdit:
    """The next build made from the previous one by replacing a few chains, with its Changes.

    What must hold: `seal()` gives a ruleset whose chains are the previous build's with every
    `put` applied (rule counts kept current without a walk over every chain), and — when there
    was a previous build — `Changes` whose keys name every chain put with rules different from
    the previous build's; chains put equal keep the previous build's very tuples, so the writer
    tells them unchanged by identity. Both incremental builders (the proxy's and NetworkPolicy's)
    make their rulesets this way: one concept, one place.
    """

    def __init__(self, previous: Ruleset | None) -> None:
        self.previous = previous
        self.base: Mapping[ChainKey, tuple[str, ...]] = previous.frozen() if previous is not None else {}
        self.chains: dict[ChainKey, tuple[str, ...]] = dict(self.base)
        self.counts = previous.rule_count() if previous is not None else dict.fromkeys(TABLES, 0)
        self.keys: set[ChainKey] = set()

    def put(self, key: ChainKey, rules: tuple[str, ...] | None) -> None:
        """Make chain `key` hold `rules` (None: no such chain)."""
        old = self.chains.get(key)
        if old is rules or (old is not None and rules is not None and old == rules):
            return
        if rules is None:
            del self.chains[key]
        else:
            self.chains[key] = rules
        self.counts[key[0]] = (self.counts.get(key[0], 0) + (len(rules) if rules is not None else 0)
                               - (len(old) if old is not None else 0))
        self.keys.add(key)

    def seal(self) -> tuple[Ruleset, Changes | None]:
        """The new ruleset, and what changed since the previous one (None: there was none)."""
        rs = Ruleset.sealed(self.chains, self.counts)
        return rs, (Changes(self.base, frozenset(self.keys)) if self.previous is not None else None)


def count_rules(chains: Mapping[ChainKey, Sequence[str]]) -> dict[str, int]:
    """Rules per table."""
    counts = dict.fromkeys(TABLES, 0)
    for (table, _), rules in chains.items():
        counts[table] = counts.get(table, 0) + len(rules)
    return counts


def _in_order(chains: Mapping[ChainKey, object], write: Iterable[ChainKey]) -> list[ChainKey]:
    """The chains of `write` present in `chains`, in a deterministic order: the ruleset's own
    order, or — for a few chains out of very many, where walking the whole ruleset would cost
    more than the change (one endpoint among thousands of Services) — sorted by table and name."""
    write_set = set(write)
    if len(write_set) <= SMALL_WRITE and len(write_set) * 16 < len(chains):
        return sorted(write_set.intersection(chains), key=lambda k: (TABLES.index(k[0]) if k[0] in TABLES else 9, k[1]))
    return [k for k in chains if k in write_set]


# At most this many chains are written in name order rather than the ruleset's (see _in_order);
# far below the pieces an nft restore is split into, which keep the ruleset's order.
SMALL_WRITE = 256


def stale_chains(previous: Iterable[ChainKey], current: Ruleset | Mapping[ChainKey, object], *,
                 prefixes: tuple[str, ...] = DYNAMIC_PREFIXES) -> list[ChainKey]:
    """Chains netproxy owns (per service port or endpoint; or `prefixes`) that were present and are not now."""
    now = current.chains if isinstance(current, Ruleset) else current
    return sorted(k for k in set(previous) if k[1].startswith(prefixes) and k not in now)


def _level(chain: str) -> int:
    """Split restores write level 0 (the mark chain), then 1 and 2 together, then 3."""
    if chain == "KUBE-MARK-MASQ":
        return 0
    if chain.startswith("KUBE-SEP-"):
        return 1
    if chain.startswith(("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-")):  # a service port's own chains
        return 2
    return 3


def restore_text(chains: Mapping[ChainKey, Sequence[str]], write: Iterable[ChainKey],
                 delete: Iterable[ChainKey] = (), *, insert: Mapping[str, Sequence[str]] | None = None) -> str:
    """One restore text: every chain in `write` (declared and refilled) and `delete` (dropped).

    `insert`: per table, `-I` lines (into built-in chains) run after the chains are written.
    """
    ordered = _in_order(chains, write)
    delete_set = set(delete) - set(ordered)
    insert = insert or {}
    out: list[str] = []
    for table in TABLES:
        writes = [k for k in ordered if k[0] == table]
        deletes = sorted(k[1] for k in delete_set if k[0] == table)
        if not writes and not deletes and not insert.get(table):
            continue
        out.append(f"*{table}")
        out.extend(f":{name} - [0:0]" for name in sorted({k[1] for k in writes} | set(deletes)))
        for key in writes:
            out.extend(chains[key])
        out.extend(insert.get(table, ()))
        out.extend(f"-X {name}" for name in deletes)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def restore_texts(chains: Mapping[ChainKey, Sequence[str]], write: Iterable[ChainKey],
                  delete: Iterable[ChainKey] = (), *, max_chains: int | None = None) -> list[str]:
    """The same change as `restore_text`, split bottom-up into texts of at most `max_chains` chains.

    iptables-nft-restore --noflush slows down worse than linearly with the number of chains
    in one transaction (1.8.9: 25,000 chains take about a minute, 1,000 a few tens of ms),
    so a large sync is cut into pieces that are each safe to apply on their own.
    """
    write_list = _in_order(chains, write)
    delete_list = list(delete)
    if max_chains is None or len(write_list) + len(delete_list) <= max_chains:
        text = restore_text(chains, write_list, delete_list)
        return [text] if text else []
    # KUBE-MARK-MASQ first; then whole service ports (a service chain and the endpoint chains
    # rendered after it), cut only before a service chain. Keeping a service's jumps and their
    # targets in one transaction also matters for speed: iptables-nft resolves a jump to a chain
    # created in the same transaction cheaply, to one already in the kernel slowly.
    lower = sorted((k for k in write_list if _level(k[1]) < 3), key=lambda k: _level(k[1]) != 0)
    pieces: list[list[ChainKey]] = [[]]
    for k in lower:
        if len(pieces[-1]) >= max_chains and k[1].startswith("KUBE-SVC-"):
            pieces.append([])
        pieces[-1].append(k)
    texts = [restore_text(chains, piece) for piece in pieces if piece]
    final = restore_text(chains, [k for k in write_list if _level(k[1]) == 3], delete_list)
    if final:
        texts.append(final)
    return texts


class ParsedRules:
    """Chains (with their rules) and built-in chain policies parsed from restore or save text."""

    def __init__(self) -> None:
        self.chains: dict[ChainKey, list[str]] = {}
        self.policies: dict[ChainKey, str] = {}

    def chain_names(self, table: str) -> list[str]:
        return [c for (t, c) in self.chains if t == table]

    def rules(self, table: str, chain: str) -> list[str]:
        return self.chains.get((table, chain), [])


def parse(text: str) -> ParsedRules:
    """Parse iptables-save output or restore text (`-A` lines only; `-X` removes a chain)."""
    parsed = ParsedRules()
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
        elif line == "COMMIT":
            table = ""
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            parsed.chains.setdefault((table, name), [])
            if policy != "-":
                parsed.policies[(table, name)] = policy
        elif line.startswith("-A "):
            chain = line.split()[1]
            parsed.chains.setdefault((table, chain), []).append(line)
        elif line.startswith("-X "):
            parsed.chains.pop((table, line.split()[1]), None)
    return parsed


def rule_args(line: str) -> list[str]:
    """The arguments of an `-A CHAIN ...` line after the chain name, shell-split."""
    return shlex.split(line)[2:]
