"""A token bucket as client-go's flowcontrol one: pure, so callers decide with their own clock.

What must hold: a bucket starts full (`burst` tokens); it gains `rate` tokens per second up to
`burst`; `take` never goes below zero and never reads a clock (time is passed in); a rate of 0
gives no tokens. Users: the node lifecycle controller's eviction rate per zone, the event
recorder's write rate (kube-scheduler's event client: 50 writes/s, burst 100).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenBucket:
    rate: float
    tokens: float
    last: float
    burst: float = 1.0

    @classmethod
    def full(cls, rate: float, now: float, *, burst: float = 1.0) -> TokenBucket:
        return cls(rate, burst, now, burst)

    def take(self, now: float) -> tuple[bool, TokenBucket]:
        """Whether a token was taken, and the bucket after."""
        if self.rate <= 0:
            return False, self
        tokens = min(self.burst, self.tokens + max(now - self.last, 0.0) * self.rate)
        if tokens >= 1.0 - 1e-9:  # sums of 0.1 s drift below 1.0 by a rounding error
            return True, TokenBucket(self.rate, max(tokens - 1.0, 0.0), now, self.burst)
        return False, TokenBucket(self.rate, tokens, now, self.burst)

    def wait(self) -> float:
        """Seconds until the next token (0 when one is there), from this bucket's last update."""
        if self.rate <= 0:
            return float("inf")
        return max(1.0 - self.tokens, 0.0) / self.rate
