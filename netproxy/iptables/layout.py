"""The fixed part of the rule layout, shared by both proxy modes.

Fixed chains always exist while netproxy runs (so the jumps into them from built-in chains
are valid); `HOOKS` are those jumps, the only rules netproxy adds one by one (checked with
`-C`, inserted with `-I`). Everything else is written with iptables-restore.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netproxy.config import MASQ_MARK
from netproxy.iptables.ruleset import Ruleset

SERVICES = "KUBE-SERVICES"
NODEPORTS = "KUBE-NODEPORTS"
POSTROUTING = "KUBE-POSTROUTING"
MARK_MASQ = "KUBE-MARK-MASQ"
EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
FORWARD = "KUBE-FORWARD"

FIXED_CHAINS: dict[str, tuple[str, ...]] = {
    "filter": (SERVICES, EXTERNAL_SERVICES, FORWARD),
    "nat": (SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ),
}

MARK = f"{MASQ_MARK:#x}"


COMMENT_MAX = 255  # xt_comment keeps 256 bytes with the NUL; a longer one fails the whole restore
# What may stand inside the double quotes of an iptables-restore argument: printable ASCII but the
# quote (it would end the argument) and the backslash (iptables-restore's escape character).
_COMMENT_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def comment(text: str) -> str:
    """`-m comment --comment "<text>"`, safe in restore input whatever the text.

    The text names Services and ports, which can come from the store without passing
    validation: a quote, backslash, newline or other control character there could end the
    argument or start a rule of its own. Each becomes "?", and the text is cut to what the
    kernel keeps, so a comment is always one argument of one line.
    """
    safe = _COMMENT_UNSAFE.sub("?", text)[:COMMENT_MAX]
    return f'-m comment --comment "{safe}"'


@dataclass(frozen=True)
class Hook:
    table: str
    chain: str  # a built-in chain
    args: tuple[str, ...]  # the rule, as iptables arguments

    @property
    def target(self) -> str:
        return self.args[-1]

    def __str__(self) -> str:
        quoted = " ".join(f'"{a}"' if " " in a else a for a in self.args)
        return f"-t {self.table} -A {self.chain} {quoted}"


def _hook(table: str, chain: str, text: str, target: str, *, new_only: bool = False) -> Hook:
    state = ("-m", "conntrack", "--ctstate", "NEW") if new_only else ()
    return Hook(table, chain, (*state, "-m", "comment", "--comment", text, "-j", target))


HOOKS: tuple[Hook, ...] = (
    _hook("nat", "PREROUTING", "kubernetes service portals", SERVICES),
    _hook("nat", "OUTPUT", "kubernetes service portals", SERVICES),
    _hook("nat", "POSTROUTING", "kubernetes postrouting rules", POSTROUTING),
    _hook("filter", "INPUT", "kubernetes service portals", SERVICES, new_only=True),
    _hook("filter", "FORWARD", "kubernetes service portals", SERVICES, new_only=True),
    _hook("filter", "OUTPUT", "kubernetes service portals", SERVICES, new_only=True),
    _hook("filter", "INPUT", "kubernetes externally-visible service portals", EXTERNAL_SERVICES, new_only=True),
    _hook("filter", "FORWARD", "kubernetes externally-visible service portals", EXTERNAL_SERVICES, new_only=True),
    _hook("filter", "FORWARD", "kubernetes forwarding rules", FORWARD),
)


def base_ruleset() -> Ruleset:
    """The fixed chains, declared in layout order, with their mode-independent rules."""
    rs = Ruleset()
    for table in ("filter", "nat"):
        for chain in FIXED_CHAINS[table]:
            rs.declare(table, chain)
    # The mark is cleared before masquerading so that a packet looping back through the
    # node (hairpin) is not masqueraded twice on the strength of a stale mark.
    rs.add("nat", POSTROUTING, f'{comment("kubernetes service traffic not requiring SNAT")} '
                               f"-m mark ! --mark {MARK}/{MARK} -j RETURN")
    rs.add("nat", POSTROUTING, f'{comment("kubernetes service traffic requiring SNAT")} -j MARK --xor-mark {MARK}')
    rs.add("nat", POSTROUTING, f'{comment("kubernetes service traffic requiring SNAT")} -j MASQUERADE')
    rs.add("nat", MARK_MASQ, f'{comment("mark for masquerade")} -j MARK --or-mark {MARK}')
    # Accept forwarded service traffic even where the FORWARD policy is DROP (Docker hosts).
    rs.add("filter", FORWARD, f'{comment("kubernetes forwarding rules")} -m mark --mark {MARK}/{MARK} -j ACCEPT')
    rs.add("filter", FORWARD, f'{comment("kubernetes forwarding conntrack rule")} '
                              "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    return rs
