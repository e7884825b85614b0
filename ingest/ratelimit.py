"""Token buckets.  Pure; a side module: the caller passes the time in.

Used today to rate-limit log lines about rejected requests, so that a flood
of bad requests cannot flood the log; a bucket per client is the seam for
per-client rate limits.
"""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float, tokens: float = 1.0) -> bool:
        """Spend `tokens` if there are enough; False (and nothing spent) otherwise."""
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._updated = now
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False

    def wait(self, tokens: float = 1.0) -> float:
        """Seconds until `tokens` are there (0 if they are)."""
        missing = tokens - self._tokens
        return max(0.0, missing / self.rate) if self.rate > 0 else float("inf")
