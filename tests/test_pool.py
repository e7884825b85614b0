"""The parse queue: batching per reactor turn, bounded jobs, ordered outcomes."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ingest.bodies import JSON, REMOTE_WRITE, Decoded, Job
from ingest.errors import IngestError, InternalError
from ingest.pool import ParseQueue
from tests.test_bodies import ExplodingBody

BODY = b'{"name":"a","value":1}'


def ignore(outcome: object) -> None:
    """A callback for bodies whose outcome the test does not look at."""


class ManualPool:
    """Runs nothing until the test finishes a job by hand, in any order."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], Any, Deferred[Any]]] = []

    def run(self, function: Callable[..., Any], jobs: Any) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.jobs.append((function, jobs, done))
        return done

    def finish(self, index: int) -> None:
        function, jobs, done = self.jobs[index]
        done.callback(function(jobs))


class ParseQueueTests(SynchronousTestCase):
    def test_one_job_per_turn(self) -> None:
        """Bodies submitted in one turn go to the pool together, at the next turn."""
        clock, pool = Clock(), ManualPool()
        queue = ParseQueue(clock, pool.run, max_jobs=4)
        outcomes: list[object] = []
        for _ in range(3):
            queue.submit(Job(JSON, BODY, 1), outcomes.append)
        self.assertEqual(pool.jobs, [])
        clock.advance(0)
        self.assertEqual(len(pool.jobs), 1)
        self.assertEqual(len(pool.jobs[0][1]), 3)
        self.assertEqual(queue.queued, 3)
        self.assertEqual(outcomes, [])
        pool.finish(0)
        self.assertEqual(len(outcomes), 3)
        for outcome in outcomes:
            self.assertIsInstance(outcome, Decoded)
        self.assertEqual(queue.queued, 0)

    def test_jobs_in_flight_are_bounded(self) -> None:
        """No more than max_jobs are in the pool; later bodies gather into one job that follows."""
        clock, pool = Clock(), ManualPool()
        queue = ParseQueue(clock, pool.run, max_jobs=1)
        queue.submit(Job(JSON, BODY, 1), ignore)
        clock.advance(0)
        for _ in range(5):
            queue.submit(Job(JSON, BODY, 1), ignore)
            clock.advance(0)
        self.assertEqual(len(pool.jobs), 1)
        pool.finish(0)
        self.assertEqual(len(pool.jobs), 2)
        self.assertEqual(len(pool.jobs[1][1]), 5)

    def test_outcomes_in_submission_order(self) -> None:
        """A job that finishes early waits for the jobs submitted before it."""
        clock, pool = Clock(), ManualPool()
        queue = ParseQueue(clock, pool.run, max_jobs=4)
        order: list[int] = []
        queue.submit(Job(JSON, BODY, 1), lambda _: order.append(1))
        clock.advance(0)
        queue.submit(Job(JSON, BODY, 1), lambda _: order.append(2))
        clock.advance(0)
        pool.finish(1)
        self.assertEqual(order, [])
        pool.finish(0)
        self.assertEqual(order, [1, 2])

    def test_a_failing_delivery_does_not_strand_the_others(self) -> None:
        """A callback that raises is logged; the bodies after it in the job still get their outcomes."""
        from twisted.logger import capturedLogs

        clock, pool = Clock(), ManualPool()
        queue = ParseQueue(clock, pool.run, max_jobs=4)
        outcomes: list[object] = []

        def broken(outcome: object) -> None:
            raise RuntimeError("a bug in a callback")

        queue.submit(Job(JSON, BODY, 1), broken)
        queue.submit(Job(JSON, BODY, 1), outcomes.append)
        clock.advance(0)
        with capturedLogs() as events:
            pool.finish(0)
        self.assertEqual(len(outcomes), 1)
        self.assertEqual(len([e for e in events if "log_failure" in e]), 1)
        self.assertEqual(queue.queued, 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_inline(self) -> None:
        """Without a pool, bodies are decoded at once."""
        queue = ParseQueue(Clock(), None, max_jobs=1)
        outcomes: list[object] = []
        queue.submit(Job(JSON, b"{", 1), outcomes.append)
        [outcome] = outcomes
        assert isinstance(outcome, IngestError)
        self.assertEqual(outcome.status, 400)

    def test_idle_pool_small_body_now(self) -> None:
        """With the pool idle, the first small body of a reactor turn is decoded at once; the others of
        that turn wait for the pool, and so does the first of the next turn while they are in it."""
        clock, pool = Clock(), ManualPool()
        queue = ParseQueue(clock, pool.run, max_jobs=4, inline_bytes=len(BODY))
        self.assertIsInstance(queue.decode_now(Job(JSON, BODY, 1)), Decoded)
        self.assertIsNone(queue.decode_now(Job(JSON, BODY, 1)))  # same turn
        clock.advance(0)
        self.assertIsInstance(queue.decode_now(Job(JSON, b"{", 1)), IngestError)  # next turn, pool idle
        clock.advance(0)
        outcomes: list[object] = []
        queue.submit(Job(JSON, BODY, 1), outcomes.append)
        self.assertIsNone(queue.decode_now(Job(JSON, BODY, 1)), "one waits: keep the order")
        clock.advance(0)
        self.assertEqual(len(pool.jobs), 1)
        self.assertIsNone(queue.decode_now(Job(JSON, BODY, 1)), "one is in the pool: keep the order")
        pool.finish(0)
        self.assertEqual(len(outcomes), 1)
        self.assertIsInstance(queue.decode_now(Job(JSON, BODY, 1)), Decoded)

    def test_large_or_compressed_bodies_wait_for_the_pool(self) -> None:
        """A body over `inline_bytes`, a gzipped body and a remote-write body wait for the pool even
        when it is idle: their decoding may take long (a compressed body inflates)."""
        queue = ParseQueue(Clock(), ManualPool().run, max_jobs=4, inline_bytes=len(BODY))
        for job in (
            Job(JSON, BODY + b" ", 1),
            Job(JSON, gzip.compress(BODY)[: len(BODY)], 1, gzip=True),
            Job(REMOTE_WRITE, b"", 1),
        ):
            self.assertIsNone(queue.decode_now(job))
        self.assertIsInstance(queue.decode_now(Job(JSON, BODY, 1)), Decoded)

    def test_no_pool_decodes_now(self) -> None:
        """Without a pool (``--threads 0``) every body is decoded at once, however large."""
        queue = ParseQueue(Clock(), None, max_jobs=1)
        large = b"[" + b",".join([BODY] * 1000) + b"]"
        for _ in range(2):
            self.assertIsInstance(queue.decode_now(Job(JSON, large, 1)), Decoded)

    def test_a_bug_in_one_body_fails_that_body_only(self) -> None:
        """A body whose decoding raises a non-`IngestError` gets an `InternalError` carrying the
        traceback (for the receiver to log: the queue logs nothing); the others in its job decode."""
        clock, pool = Clock(), ManualPool()
        queue = ParseQueue(clock, pool.run, max_jobs=4)
        outcomes: list[object] = []
        for body in (BODY, ExplodingBody(BODY), BODY):
            queue.submit(Job(JSON, body, 1), outcomes.append)
        clock.advance(0)
        self.assertEqual(len(pool.jobs), 1)
        with capturedLogs() as events:
            pool.finish(0)
        before, failed, after = outcomes
        self.assertIsInstance(before, Decoded)
        self.assertIsInstance(after, Decoded)
        assert isinstance(failed, InternalError)
        self.assertEqual((failed.status, failed.detail), (500, "see the service log"))
        self.assertIn(f"RuntimeError: {ExplodingBody.SECRET}", failed.trace)
        self.assertEqual(events, [])
        self.assertEqual(queue.queued, 0)

    def test_pool_failure_becomes_500(self) -> None:
        """A pool that fails (a bug, not bad input) is logged with its traceback, answers a generic 500
        for its bodies, nothing of the exception's text, and keeps the queue going."""
        clock = Clock()
        calls = 0

        def broken(function: Any, jobs: Any) -> Deferred[Any]:
            nonlocal calls
            calls += 1
            failed: Deferred[Any] = Deferred()
            failed.errback(RuntimeError("pool died"))
            return failed

        queue = ParseQueue(clock, broken, max_jobs=1)
        outcomes: list[object] = []
        queue.submit(Job(JSON, BODY, 1), outcomes.append)
        queue.submit(Job(JSON, BODY, 1), outcomes.append)
        with capturedLogs() as events:
            clock.advance(0)
        self.assertEqual(len(outcomes), 2)
        for outcome in outcomes:
            assert isinstance(outcome, IngestError)
            self.assertEqual(
                (outcome.status, outcome.error, outcome.detail),
                (500, "internal error", "see the service log"),
            )
            self.assertNotIsInstance(outcome, InternalError)  # logged here, not again by the receiver
        [event] = events
        self.assertEqual(event["bodies"], 2)
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        queue.submit(Job(JSON, BODY, 1), outcomes.append)
        clock.advance(0)
        self.assertEqual((calls, len(outcomes)), (2, 3))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
