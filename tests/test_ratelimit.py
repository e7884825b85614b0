"""Token buckets, per-client limits, and the 429 of the HTTP stack.

The rates and times in the unit tests are binary fractions (4 tokens/s, 0.25 s) so that the
arithmetic is exact and a boundary is tested on the boundary.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ingest.ratelimit import ClientLimits, TokenBucket
from tests.helpers import SAMPLE, Answer, Stack, get, parse_answers, post


def samples(count: int) -> bytes:
    """A JSON array of `count` samples."""
    return b"[" + b",".join([SAMPLE] * count) + b"]"


class TokenBucketTests(SynchronousTestCase):
    def test_starts_full(self) -> None:
        """A new bucket holds `burst` tokens: all of them can be spent at once, and no more."""
        bucket = TokenBucket(rate=4, burst=8, now=100)
        self.assertTrue(bucket.take(100, 8))
        self.assertFalse(bucket.take(100, 1))

    def test_refusal_spends_nothing(self) -> None:
        """A take that finds too few tokens spends none of them."""
        bucket = TokenBucket(rate=4, burst=8, now=100)
        self.assertFalse(bucket.take(100, 9))
        self.assertTrue(bucket.take(100, 5))
        self.assertFalse(bucket.take(100, 4))
        self.assertTrue(bucket.take(100, 3))

    def test_default_take_is_one(self) -> None:
        """`take` spends one token unless told otherwise."""
        bucket = TokenBucket(rate=4, burst=2, now=100)
        self.assertEqual([bucket.take(100) for _ in range(3)], [True, True, False])

    def test_refills_at_rate(self) -> None:
        """Tokens come back at `rate` per second of elapsed time."""
        bucket = TokenBucket(rate=4, burst=8, now=100)
        bucket.take(100, 8)
        self.assertFalse(bucket.take(100.125, 1))
        self.assertTrue(bucket.take(100.25, 1))
        self.assertFalse(bucket.take(100.25, 1))
        self.assertTrue(bucket.take(101, 3))
        self.assertFalse(bucket.take(101, 1))

    def test_capped_at_burst(self) -> None:
        """However long a bucket is idle it holds at most `burst` tokens."""
        bucket = TokenBucket(rate=4, burst=8, now=100)
        bucket.take(100, 8)
        self.assertFalse(bucket.take(1000, 9))
        self.assertTrue(bucket.take(1000, 8))
        self.assertFalse(bucket.take(1000, 1))

    def test_wait(self) -> None:
        """`wait` is the time until enough tokens are there; 0 when they are."""
        bucket = TokenBucket(rate=4, burst=8, now=100)
        self.assertTrue(bucket.take(100, 3))
        self.assertEqual(bucket.wait(5), 0.0)
        self.assertEqual(bucket.wait(6), 0.25)
        self.assertTrue(bucket.take(100, 5))
        self.assertEqual(bucket.wait(), 0.25)
        self.assertEqual(bucket.wait(8), 2.0)

    def test_wait_is_enough(self) -> None:
        """Tokens asked for are there after `wait` seconds, and not before."""
        bucket = TokenBucket(rate=4, burst=8, now=100)
        bucket.take(100, 8)
        wait = bucket.wait(6)
        self.assertEqual(wait, 1.5)
        self.assertFalse(bucket.take(100 + wait - 0.25, 6))
        self.assertTrue(bucket.take(100 + wait, 6))

    def test_no_rate(self) -> None:
        """A bucket with rate 0 never refills: the wait for a token it lacks is infinite."""
        bucket = TokenBucket(rate=0, burst=2, now=100)
        self.assertTrue(bucket.take(100, 2))
        self.assertFalse(bucket.take(10_000, 1))
        self.assertEqual(bucket.wait(1), float("inf"))

    def test_clock_stepping_back(self) -> None:
        """A time earlier than the last one refills nothing and does not count the same time twice."""
        bucket = TokenBucket(rate=4, burst=8, now=100)
        bucket.take(100, 8)
        self.assertFalse(bucket.take(50, 1))
        self.assertTrue(bucket.take(100.25, 1))
        self.assertFalse(bucket.take(100.25, 1))


class ClientLimitsTests(SynchronousTestCase):
    def test_within_burst(self) -> None:
        """Requests within a client's burst are allowed: `take` returns 0.0."""
        limits = ClientLimits(rate=4, burst=8)
        self.assertEqual(limits.take("a", 3, 0), 0.0)
        self.assertEqual(limits.take("a", 5, 0), 0.0)
        self.assertEqual(limits.take("a", 1, 0.25), 0.0)

    def test_over_limit_returns_wait(self) -> None:
        """Over the limit `take` returns the seconds until the request would pass, and spends nothing."""
        limits = ClientLimits(rate=4, burst=8)
        limits.take("a", 8, 0)
        self.assertEqual(limits.take("a", 1, 0), 0.25)
        self.assertEqual(limits.take("a", 6, 0), 1.5)
        self.assertEqual(limits.take("a", 6, 1), 0.5)
        self.assertEqual(limits.take("a", 6, 1.5), 0.0)
        self.assertEqual(limits.take("a", 1, 1.5), 0.25)

    def test_clients_are_separate(self) -> None:
        """Each client has its own bucket: one spent does not limit another."""
        limits = ClientLimits(rate=4, burst=8)
        limits.take("a", 8, 0)
        self.assertGreater(limits.take("a", 1, 0), 0.0)
        self.assertEqual(limits.take("b", 8, 0), 0.0)
        self.assertEqual(len(limits), 2)

    def test_bigger_than_burst(self) -> None:
        """A request of more samples than the burst costs a full bucket: it passes only when the bucket is
        full (never refused for ever), and then leaves it empty."""
        limits = ClientLimits(rate=4, burst=8)
        self.assertEqual(limits.take("a", 100, 0), 0.0)
        self.assertEqual(limits.take("a", 1, 0), 0.25)
        self.assertEqual(limits.take("a", 1, 0.25), 0.0)
        self.assertEqual(limits.take("a", 100, 0.25), 2.0)
        self.assertEqual(limits.take("a", 100, 2.0), 0.25)
        self.assertEqual(limits.take("a", 100, 2.25), 0.0)
        self.assertGreater(limits.take("a", 1, 2.25), 0.0)

    def test_idle_bucket_evicted_once_full_again(self) -> None:
        """A new client evicts buckets idle long enough to be full again (burst / rate), and only those."""
        limits = ClientLimits(rate=4, burst=8)
        limits.take("a", 8, 0)
        limits.take("b", 8, 1.75)
        self.assertEqual(len(limits), 2)  # a is not full again yet: kept
        limits.take("c", 1, 2.0)
        self.assertEqual(len(limits), 2)  # a is: dropped, b kept
        self.assertGreater(limits.take("b", 8, 2.0), 0.0)
        self.assertEqual(limits.take("a", 8, 2.0), 0.0)  # back, with the full bucket it would have had

    def test_use_keeps_bucket(self) -> None:
        """A client seen again is the most recently used: the idle ones before it go first."""
        limits = ClientLimits(rate=4, burst=8)
        limits.take("a", 8, 0)
        limits.take("b", 8, 1)
        self.assertEqual(limits.take("a", 6, 1.5), 0.0)
        limits.take("c", 8, 2.5)
        self.assertEqual(len(limits), 3)  # b, idle 1.5 s, is the oldest and not full again
        limits.take("d", 8, 3.0)
        self.assertEqual(len(limits), 3)  # b (idle 2 s) dropped; a (idle 1.5 s) and c kept
        self.assertEqual(limits.take("a", 8, 3.0), 0.5)
        self.assertEqual(limits.take("c", 8, 3.0), 1.5)

    def test_max_clients(self) -> None:
        """At `max_clients` buckets a new client evicts the least recently seen one, though not idle."""
        limits = ClientLimits(rate=4, burst=8, max_clients=3)
        for client in "abc":
            limits.take(client, 8, 0)
        self.assertEqual(len(limits), 3)
        limits.take("a", 1, 0)  # a is now the most recently seen; b the least
        limits.take("d", 8, 0)
        self.assertEqual(len(limits), 3)
        self.assertGreater(limits.take("a", 1, 0), 0.0)
        self.assertGreater(limits.take("c", 1, 0), 0.0)
        self.assertEqual(limits.take("b", 8, 0), 0.0)  # evicted: starts again full

    def test_many_clients_bounded(self) -> None:
        """10,000 distinct clients never hold more than `max_clients` buckets, at one instant or over time."""
        for step in [0.0, 0.001]:
            limits = ClientLimits(rate=4, burst=8, max_clients=100)
            largest = 0
            for number in range(10_000):
                limits.take(f"10.0.{number // 256}.{number % 256}", 8, number * step)
                largest = max(largest, len(limits))
            self.assertEqual(largest, 100, step)
            self.assertEqual(len(limits), 100)

    def test_idle_clients_drain(self) -> None:
        """Once clients are idle, new ones shrink the table: memory follows the active clients."""
        limits = ClientLimits(rate=4, burst=8, max_clients=1000)
        for number in range(1000):
            limits.take(f"old-{number}", 1, 0)
        for number in range(600):
            limits.take(f"new-{number}", 1, 10)
        self.assertEqual(len(limits), 600)


class HttpRateLimitTests(SynchronousTestCase):
    """Through the HTTP stack with ``--rate-limit 10 --rate-burst 10``, no auth: the client is the address."""

    def setUp(self) -> None:
        self.limits = ClientLimits(rate=10, burst=10)
        self.stack = Stack(inline=True, client_limits=self.limits)

    def ask(self, request: bytes, transport: StringTransport | None = None) -> list[Answer]:
        channel = self.stack.factory.buildProtocol(None)
        transport = transport or StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(request)
        self.stack.settle()
        return parse_answers(transport.value())

    def assert_rate_limited(self, answer: Answer) -> int:
        """Check a 429 and return its Retry-After in seconds."""
        self.assertEqual(answer.status, 429)
        self.assertEqual(answer.json()["error"], "rate limited")
        retry_after = answer.headers[b"retry-after"]
        self.assertTrue(retry_after.isdigit(), retry_after)
        self.assertGreaterEqual(int(retry_after), 1)
        return int(retry_after)

    def test_over_limit(self) -> None:
        """10 samples pass; the next sample is 429 with an integer Retry-After, and none of it is stored."""
        [answer] = self.ask(post(b"/metrics", samples(10)))
        self.assertEqual((answer.status, answer.json()), (202, {"accepted": 10}))
        [answer] = self.ask(post(b"/metrics", samples(1)))
        self.assertEqual(self.assert_rate_limited(answer), 1)
        self.assertEqual(len(self.stack.stored()), 10)
        self.assertEqual(self.stack.stats.samples_rejected["rate_limited"], 1)
        self.assertEqual(self.stack.stats.samples_accepted, 10)

    def test_accepted_after_retry_after(self) -> None:
        """A client that waits the Retry-After it was given is accepted."""
        self.ask(post(b"/metrics", samples(10)))
        [answer] = self.ask(post(b"/metrics", samples(1)))
        self.stack.clock.advance(self.assert_rate_limited(answer))
        [answer] = self.ask(post(b"/metrics", samples(1)))
        self.assertEqual(answer.status, 202)
        self.assertEqual(len(self.stack.stored()), 11)

    def test_retry_after_from_bucket(self) -> None:
        """Retry-After is the bucket's wait rounded up to whole seconds, not a constant."""
        limits = ClientLimits(rate=2, burst=10)
        self.stack = Stack(inline=True, client_limits=limits)
        self.ask(post(b"/metrics", samples(10)))
        [answer] = self.ask(post(b"/metrics", samples(7)))
        self.assertEqual(self.assert_rate_limited(answer), 4)  # 7 samples at 2/s: 3.5 s
        self.stack.clock.advance(3)
        [answer] = self.ask(post(b"/metrics", samples(7)))
        self.assertEqual(self.assert_rate_limited(answer), 1)  # 6 there, 1 missing: 0.5 s
        self.stack.clock.advance(1)
        [answer] = self.ask(post(b"/metrics", samples(7)))
        self.assertEqual(answer.status, 202)
        self.assertEqual(len(self.stack.stored()), 17)

    def test_write_routes_limited(self) -> None:
        """The InfluxDB write routes count samples (one per field) against the same bucket."""
        lines = b"cpu a=1,b=2\n" * 4  # 8 samples
        [answer] = self.ask(post(b"/write", lines))
        self.assertEqual(answer.status, 204)
        [answer] = self.ask(post(b"/api/v2/write", b"cpu a=1,b=2,c=3"))
        self.assert_rate_limited(answer)
        [answer] = self.ask(post(b"/api/v2/write", b"cpu a=1,b=2"))
        self.assertEqual(answer.status, 204)
        self.assertEqual(len(self.stack.stored()), 10)

    def test_address_is_client(self) -> None:
        """Without auth the client is the peer address: its connections share a bucket, another address
        has its own."""
        here = IPv4Address("TCP", "10.0.0.1", 40000)
        there = IPv4Address("TCP", "10.0.0.2", 40000)
        [answer] = self.ask(post(b"/metrics", samples(10)), StringTransport(peerAddress=here))
        self.assertEqual(answer.status, 202)
        [answer] = self.ask(post(b"/metrics", samples(1)), StringTransport(peerAddress=here))
        self.assert_rate_limited(answer)
        [answer] = self.ask(post(b"/metrics", samples(1)), StringTransport(peerAddress=there))
        self.assertEqual(answer.status, 202)
        self.assertEqual(len(self.limits), 2)

    def test_reads_never_limited(self) -> None:
        """/health, /ping, /stats and GET /metrics spend no tokens and are answered over the limit too."""
        reads = (get(b"/health") + get(b"/ping") + get(b"/stats") + get(b"/metrics")) * 5
        statuses = [200, 204, 200, 200] * 5
        self.assertEqual([answer.status for answer in self.ask(reads)], statuses)
        self.assertEqual(len(self.limits), 0)
        answers = self.ask(post(b"/metrics", samples(10)) + post(b"/metrics", samples(1)) + reads)
        self.assertEqual([answer.status for answer in answers], [202, 429, *statuses])
