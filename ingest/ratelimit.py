"""Token buckets.  Pure; a side module: the caller passes the time in.

`TokenBucket` rate-limits log lines about rejected requests, so that a
flood of bad requests cannot flood the log; `ClientLimits` keeps one per
client for ``--rate-limit``.
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self.updated = now

    def change(self, rate: float, burst: float, now: float) -> None:
        """New `rate` and `burst` from `now` on; what is saved up by then is kept, up to the new `burst`."""
        self.take(now, 0.0)  # fill up to now at the old rate
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, burst)

    def take(self, now: float, tokens: float = 1.0) -> bool:
        """Spend `tokens` if there are enough; False (and nothing spent) otherwise."""
        elapsed = now - self.updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self.updated = now
        if self._tokens >= tokens - 1e-9:  # float rounding must not refuse an exact wait
            self._tokens -= tokens
            return True
        return False

    def wait(self, tokens: float = 1.0) -> float:
        """Seconds until `tokens` are there (0 if they are)."""
        missing = tokens - self._tokens
        return max(0.0, missing / self.rate) if self.rate > 0 else float("inf")


class ClientLimits:
    """One token bucket per client, in samples per second; memory bounded.

    Buckets live in least-recently-used order.  A bucket idle long enough
    to be full again is the same as no bucket, so idle ones are dropped as
    new clients come; and there are never more than `max_clients`, so a scan
    from many addresses cannot grow memory without bound (the least recently
    seen client then starts again with a full bucket).
    """

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._refill = burst / rate
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def change(self, rate: float, burst: float, now: float) -> None:
        """New limits for every client from `now` (a reload): each keeps what it saved up, up to `burst`.

        O(clients), once per change.
        """
        self.rate = rate
        self.burst = burst
        self._refill = burst / rate
        for bucket in self._buckets.values():
            bucket.change(rate, burst, now)

    def take(self, client: str, samples: int, now: float) -> float:
        """Spend `samples` tokens of `client`: 0.0 when allowed, else the seconds to wait.

        A request of more samples than the bucket holds costs a full bucket:
        it passes when the bucket is full, so a large batch is slowed, never
        refused for ever.
        """
        buckets = self._buckets
        bucket = buckets.get(client)
        if bucket is None:
            self._evict(now)
            bucket = buckets[client] = TokenBucket(self.rate, self.burst, now)
        else:
            buckets.move_to_end(client)
        cost = min(float(samples), self.burst)
        if bucket.take(now, cost):
            return 0.0
        return bucket.wait(cost)

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        for _ in range(2):  # drop idle buckets a couple at a time: amortized O(1)
            if not buckets:
                return
            oldest = next(iter(buckets.values()))
            if now - oldest.updated < self._refill:
                break
            buckets.popitem(last=False)
        while len(buckets) >= self.max_clients:
            buckets.popitem(last=False)
