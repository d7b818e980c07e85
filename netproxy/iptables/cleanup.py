"""Removing everything netproxy put into iptables: the jumps from built-in chains, then its chains.

What must hold: afterwards no KUBE-* chain netproxy owns is left in nat or filter, and no
rule in a built-in chain jumps to one; chains are dropped only once nothing references them
(flushed referencers first), so each restore succeeds on its own; running it twice is fine.
"""

from __future__ import annotations

from collections.abc import Iterable

from netproxy.iptables.command import Iptables, present_chains, remove_hooks
from netproxy.iptables.layout import FIXED_CHAINS
from netproxy.iptables.ruleset import DYNAMIC_PREFIXES, ChainKey, restore_text


def owned(chains: Iterable[ChainKey]) -> list[ChainKey]:
    return sorted(k for k in chains if k[1] in FIXED_CHAINS.get(k[0], ()) or k[1].startswith(DYNAMIC_PREFIXES))


def cleanup_texts(present: Iterable[ChainKey], *, max_chains: int | None = None) -> list[str]:
    """Restore texts deleting every owned chain in `present`, in pieces of at most `max_chains`."""
    mine = owned(present)
    if not mine:
        return []
    if max_chains is None or len(mine) <= max_chains:
        return [restore_text({}, [], mine)]
    fixed = [k for k in mine if not k[1].startswith(DYNAMIC_PREFIXES)]
    # Flush the fixed chains first: then only service chains reference endpoint chains.
    texts = [restore_text({k: [] for k in fixed}, fixed)] if fixed else []
    # Referencing chains go first: EXT jumps to SVC and SVL, which jump to SEP.
    for prefix in ("KUBE-EXT-", "KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-"):
        batch = [k for k in mine if k[1].startswith(prefix)]
        texts.extend(restore_text({}, [], batch[i:i + max_chains]) for i in range(0, len(batch), max_chains))
    if fixed:
        texts.append(restore_text({}, [], fixed))
    return texts


async def cleanup(ipt: Iptables, *, max_chains: int | None = None) -> int:
    """Remove netproxy's rules from `ipt`; the number of chains deleted."""
    await remove_hooks(ipt)
    present = await present_chains(ipt)
    for text in cleanup_texts(present, max_chains=max_chains):
        await ipt.restore(text)
    return len(owned(present))
