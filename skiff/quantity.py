"""Resource quantities as Kubernetes writes them: `250m`, `0.5`, `2`, `64Mi`, `1G`, `1e3`.

Values are kept exact (Fraction) so that `0.1` cpu is 100 millicores, not 99.999...
The scheduler and the node agent work in integers: millicores for cpu, bytes for memory.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_PATTERN = re.compile(
    r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)"  # number
    r"(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$"  # exponent or suffix
)


class QuantityError(ValueError):
    pass


def parse(text: str) -> Fraction:
    """The exact value of a quantity; raises QuantityError naming what is wrong."""
    if not isinstance(text, str):
        raise QuantityError(f"quantity must be a string, got {text!r}")
    return _parse(text)


# A cluster writes the same few quantities ("100m", "128Mi") on every pod, and the api-server,
# scheduler and node agent each parse every pod's: Fraction(str) was 6% of the scheduler's time
# binding a backlog. Values are immutable and errors are not cached, so the cache changes nothing.
@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Fraction:
    match = _PATTERN.match(text.strip())
    if not match or text != text.strip():
        raise QuantityError(
            f'invalid quantity "{text}": expected a number with an optional suffix '
            "(m, k, M, G, T, Ki, Mi, Gi, Ti), e.g. 250m, 0.5, 64Mi, 1G"
        )
    number, exponent, suffix = match.groups()
    value = Fraction(number)
    if exponent:
        exp = int(exponent[1:])
        if abs(exp) > 30:
            raise QuantityError(f'quantity "{text}" is out of range')
        value *= Fraction(10) ** exp
    elif suffix in _BINARY:
        value *= _BINARY[suffix]
    else:
        value *= _DECIMAL[suffix or ""]
    return value


def cpu_millis(text: str) -> int:
    """CPU in millicores, rounded up as Kubernetes does (0.0001 cpu -> 1m)."""
    if not isinstance(text, str):
        raise QuantityError(f"quantity must be a string, got {text!r}")
    return _cpu_millis(text)


# Cached as _parse is: the scheduler reads every pod's requests (PodInfo), and the Fraction
# arithmetic cost more than the parse (the pods of one workload share a handful of strings).
@functools.lru_cache(maxsize=4096)
def _cpu_millis(text: str) -> int:
    return math.ceil(_parse(text) * 1000)


def to_bytes(text: str) -> int:
    """Memory (or storage) in bytes, rounded up."""
    if not isinstance(text, str):
        raise QuantityError(f"quantity must be a string, got {text!r}")
    return _to_bytes(text)


@functools.lru_cache(maxsize=4096)
def _to_bytes(text: str) -> int:
    return math.ceil(_parse(text))


def format_millis(millis: int) -> str:
    """`1500` -> `1500m`, `2000` -> `2`."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(count: int) -> str:
    """The largest exact binary suffix: 67108864 -> 64Mi."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if count and count % unit == 0:
            return f"{count // unit}{suffix}"
    return str(count)
