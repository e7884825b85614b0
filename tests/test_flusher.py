"""Tests for `ingest.flusher`: the LoopingCall on a `Clock`, failed writes, and stop."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ingest.buffer import Buffer
from ingest.flusher import MAX_BACKOFF, Flusher
from ingest.stats import Stats

INTERVAL = 0.1


class FakeStorage:
    """Stands in for `SegmentStore`: keeps the batches written; fails on command like a full disk."""

    directory = "/fake/data"
    segment_bytes = 1 << 20

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.synced: list[bool] = []
        self.rotation_error: OSError | None = None
        self.attempts = 0
        self.failing = False
        self.close_failing = False
        self.closed = 0

    def write(self, data: bytes, sync: bool = False) -> bool:
        self.attempts += 1
        self.synced.append(sync)
        if self.failing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written.append(data)
        return False

    def close(self) -> None:
        self.closed += 1
        if self.close_failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    def expired(self) -> bool:
        return False


class BrokenRotationStorage(FakeStorage):
    """Each write succeeds and says it rotated, but reading the closed segment raises: a bug met
    in the flusher's bookkeeping after a good write (`Flusher._written`), on the reactor thread."""

    def write(self, data: bytes, sync: bool = False) -> bool:
        super().write(data, sync)
        return True

    @property
    def last_closed(self) -> tuple[str, int]:
        raise RuntimeError("a bug after the write")


def run_now(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A storage thread that runs the work at once, on the calling thread."""
    return defer.maybeDeferred(function, *args)


class HeldThread:
    """A storage thread whose work runs only when the test calls `finish`."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        result: Deferred[Any] = Deferred()
        self.waiting.append((function, args, result))
        return result

    def finish(self) -> str:
        """Run the oldest waiting work, fire its Deferred, and return the name of what ran."""
        function, args, result = self.waiting.pop(0)
        try:
            value = function(*args)
        except Exception as error:
            result.errback(error)
        else:
            result.callback(value)
        return function.__name__


class FlusherTestMixin:
    def make(
        self,
        run_in_thread: Callable[..., Deferred[Any]] = run_now,
        capacity: int = 100,
        stop_retries: int = 3,
        durable: bool = False,
        storage: FakeStorage | None = None,
    ) -> None:
        self.clock = Clock()
        self.buffer = Buffer(capacity)
        self.storage = FakeStorage() if storage is None else storage
        self.stats = Stats(0.0)
        self.flusher = Flusher(
            self.buffer,
            self.storage,  # type: ignore[arg-type]
            self.clock,
            run_in_thread,
            INTERVAL,
            self.stats,
            durable=durable,
            stop_retries=stop_retries,
            stop_retry_delay=0.5,
        )


class LoopTests(FlusherTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.make()

    def test_nothing_written_before_the_first_interval(self) -> None:
        """`start` does not flush at once: the first flush is one interval later."""
        self.buffer.add(b"a\n", 1)
        self.flusher.start()
        self.assertEqual(self.storage.written, [])
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.written, [b"a\n"])

    def test_flushes_every_interval(self) -> None:
        """Each interval, everything pending is written as one batch, and its room freed."""
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.buffer.add(b"b\n", 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.written, [b"a\nb\n"])
        self.assertEqual(self.buffer.depth, 0)
        self.buffer.add(b"c\n", 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.written, [b"a\nb\n", b"c\n"])
        self.assertEqual(self.stats.flushes, 2)
        self.assertEqual(self.stats.samples_written, 3)
        self.assertEqual(self.stats.bytes_written, 6)

    def test_failed_fsync_at_rotation_is_reported_not_rewritten(self) -> None:
        """A failed fsync at rotation counts as an error; the batch, already written, is not written again."""
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.storage.rotation_error = OSError(errno.EIO, os.strerror(errno.EIO))
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.written, [b"a\n"])
        self.assertEqual(self.stats.flush_errors, 1)
        self.assertIsNone(self.storage.rotation_error)
        self.assertEqual(self.buffer.depth, 0)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.written, [b"a\n"])

    def test_empty_tick_writes_nothing(self) -> None:
        """A tick with nothing pending does not call storage."""
        self.flusher.start()
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.attempts, 0)
        self.assertEqual(self.stats.flushes, 0)

    def test_failed_write_keeps_the_batch_and_the_loop(self) -> None:
        """A failed write restores the batch, counts the error, reports the problem, and the loop goes on."""
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.storage.failing = True
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.attempts, 1)
        self.assertEqual(self.storage.written, [])
        self.assertEqual(self.stats.flush_errors, 1)
        self.assertEqual(self.buffer.depth, 1)
        problem = self.flusher.problem()
        assert problem is not None
        self.assertIn(os.strerror(errno.ENOSPC), problem)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_retry_writes_old_then_new_data_once(self) -> None:
        """After a failure the next tick writes the kept batch followed by newer data, once, in order."""
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.storage.failing = True
        self.clock.advance(INTERVAL)
        self.buffer.add(b"b\n", 1)
        self.clock.advance(MAX_BACKOFF)
        self.assertEqual(self.stats.flush_errors, 2)
        self.buffer.add(b"c\n", 1)
        self.storage.failing = False
        self.clock.advance(MAX_BACKOFF)
        self.assertEqual(self.storage.written, [b"a\nb\nc\n"])
        self.assertEqual(self.buffer.depth, 0)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.written, [b"a\nb\nc\n"])

    def test_success_clears_the_problem(self) -> None:
        """A good write after a failed one clears `problem`."""
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.storage.failing = True
        self.clock.advance(INTERVAL)
        self.assertIsNotNone(self.flusher.problem())
        self.storage.failing = False
        with capturedLogs() as events:
            self.clock.advance(MAX_BACKOFF)
        self.assertIsNone(self.flusher.problem())
        self.assertEqual(self.stats.flush_errors, 1)
        self.assertEqual(self.stats.flushes, 1)
        [recovered] = [e for e in events if "succeeded again" in e["log_format"]]
        self.assertEqual(recovered["failures"], 1, "the recovery is logged with the failures it ends")

    def test_no_second_write_while_one_is_in_progress(self) -> None:
        """While a write is in the storage thread, ticks do not start another; the next batch waits."""
        thread = HeldThread()
        self.make(run_in_thread=thread)
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.clock.advance(INTERVAL)
        self.buffer.add(b"b\n", 1)
        self.clock.advance(INTERVAL * 3)
        self.assertEqual(len(thread.waiting), 1)
        thread.finish()
        self.assertEqual(self.storage.written, [b"a\n"])
        self.clock.advance(INTERVAL)
        thread.finish()
        self.assertEqual(self.storage.written, [b"a\n", b"b\n"])


class StopTests(FlusherTestMixin, SynchronousTestCase):
    def test_stop_flushes_what_is_left_and_closes(self) -> None:
        """`stop` writes what is pending, closes storage, and stops the loop; nothing is `lost`."""
        self.make()
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.successResultOf(self.flusher.stop())
        self.assertEqual(self.storage.written, [b"a\n"])
        self.assertEqual(self.storage.closed, 1)
        self.assertEqual(self.buffer.depth, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.flusher.lost)

    def test_stop_without_start(self) -> None:
        """`stop` on a flusher that never started still flushes and closes."""
        self.make()
        self.buffer.add(b"a\n", 1)
        self.successResultOf(self.flusher.stop())
        self.assertEqual(self.storage.written, [b"a\n"])
        self.assertEqual(self.storage.closed, 1)

    def test_stop_retries_a_failing_write(self) -> None:
        """`stop` retries a failed final write after a delay, and writes it when the disk recovers."""
        self.make()
        self.buffer.add(b"a\n", 1)
        self.storage.failing = True
        stopped = self.flusher.stop()
        self.assertNoResult(stopped)
        self.storage.failing = False
        self.clock.advance(0.5)
        self.successResultOf(stopped)
        self.assertEqual(self.storage.written, [b"a\n"])
        self.assertEqual(self.storage.closed, 1)

    def test_stop_gives_up_after_stop_retries(self) -> None:
        """With storage failing for good, `stop` tries `1 + stop_retries` times, then closes and returns."""
        self.make(stop_retries=3)
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.storage.failing = True
        stopped = self.flusher.stop()
        for _ in range(3):
            self.assertNoResult(stopped)
            self.clock.advance(0.5)
        self.successResultOf(stopped)
        self.assertEqual(self.storage.attempts, 4)
        self.assertEqual(self.stats.flush_errors, 4)
        self.assertEqual(self.storage.closed, 1)
        self.assertEqual(self.buffer.depth, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNotNone(self.flusher.lost, "the process must exit failing")
        assert self.flusher.lost is not None
        self.assertTrue(self.flusher.lost.startswith("1 samples unwritten: "), self.flusher.lost)

    def test_stop_survives_a_failing_close(self) -> None:
        """A final fsync that fails is logged; `stop` still returns."""
        self.make()
        self.storage.close_failing = True
        self.successResultOf(self.flusher.stop())
        self.assertEqual(self.storage.closed, 1)
        self.assertIsNotNone(self.flusher.lost)

    def test_stop_waits_for_the_write_in_progress(self) -> None:
        """`stop` during a write waits for it, then writes what came meanwhile, then closes, in that order."""
        thread = HeldThread()
        self.make(run_in_thread=thread)
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(len(thread.waiting), 1)
        self.buffer.add(b"b\n", 1)
        stopped = self.flusher.stop()
        self.assertNoResult(stopped)
        self.assertEqual(len(thread.waiting), 1)
        self.assertEqual(thread.finish(), "write")
        self.assertNoResult(stopped)
        self.assertEqual(thread.finish(), "write")
        self.assertNoResult(stopped)
        self.assertEqual(thread.finish(), "close")
        self.successResultOf(stopped)
        self.assertEqual(self.storage.written, [b"a\n", b"b\n"])
        self.assertEqual(thread.waiting, [])

    def test_stop_while_a_write_in_progress_fails(self) -> None:
        """If the write `stop` waited for fails, its batch is retried with the rest, once, in order."""
        thread = HeldThread()
        self.make(run_in_thread=thread)
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.clock.advance(INTERVAL)
        self.buffer.add(b"b\n", 1)
        stopped = self.flusher.stop()
        self.storage.failing = True
        thread.finish()
        self.assertEqual(self.stats.flush_errors, 1)
        self.storage.failing = False
        self.clock.advance(0.5)
        self.assertEqual(thread.finish(), "write")
        self.assertEqual(thread.finish(), "close")
        self.successResultOf(stopped)
        self.assertEqual(self.storage.written, [b"a\nb\n"])


class BackoffTests(FlusherTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.make()

    def test_retries_back_off(self) -> None:
        """After n failures in a row the next try waits interval * 2**n; a success ends the backoff."""
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.storage.failing = True
        self.clock.advance(INTERVAL)  # try 1 fails: next no sooner than 2 intervals later
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.attempts, 1)
        self.clock.advance(INTERVAL * 1.5)  # try 2 fails: wait 4 intervals
        self.assertEqual(self.storage.attempts, 2)
        self.clock.advance(INTERVAL * 3)
        self.assertEqual(self.storage.attempts, 2)
        self.storage.failing = False
        self.clock.advance(INTERVAL * 1.5)
        self.assertEqual(self.storage.attempts, 3)
        self.assertEqual(self.storage.written, [b"a\n"])
        self.buffer.add(b"b\n", 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.written, [b"a\n", b"b\n"])

    def test_backoff_is_capped(self) -> None:
        """However many failures, a retry comes at least every MAX_BACKOFF seconds."""
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        self.storage.failing = True
        for _ in range(20):
            self.clock.advance(MAX_BACKOFF)
        self.assertEqual(self.storage.attempts, 20)


class DurableTests(FlusherTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(durable=True)
        self.flusher.start()

    def test_waiters_fire_after_fsynced_write(self) -> None:
        """wait_durable fires once the batch holding the chunk is written with fsync, not before."""
        seq = self.buffer.add(b"a\n", 1)
        done = self.flusher.wait_durable(seq)
        self.assertNoResult(done)
        self.clock.advance(0)  # a prompt flush, not the next interval
        self.successResultOf(done)
        self.assertEqual(self.storage.written, [b"a\n"])
        self.assertEqual(self.storage.synced, [True])

    def test_group_commit(self) -> None:
        """Requests waiting in the same turn share one write and one fsync."""
        waiting = [self.flusher.wait_durable(self.buffer.add(b"%d\n" % i, 1)) for i in range(5)]
        self.clock.advance(0)
        for done in waiting:
            self.successResultOf(done)
        self.assertEqual(self.storage.attempts, 1)

    def test_waiters_during_a_write_get_the_next_one(self) -> None:
        """A request arriving while a write is in progress is acked by the write that follows at once."""
        held = HeldThread()
        self.make(run_in_thread=held, durable=True)
        first = self.flusher.wait_durable(self.buffer.add(b"a\n", 1))
        self.clock.advance(0)
        second = self.flusher.wait_durable(self.buffer.add(b"b\n", 1))
        self.clock.advance(0)
        self.assertEqual(len(held.waiting), 1)
        held.finish()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.clock.advance(0)
        held.finish()
        self.successResultOf(second)

    def test_failed_write_keeps_waiters_waiting(self) -> None:
        """A durable request is not acked while the disk fails; it is once the disk recovers."""
        self.storage.failing = True
        done = self.flusher.wait_durable(self.buffer.add(b"a\n", 1))
        self.clock.advance(0)
        self.assertNoResult(done)
        self.clock.advance(MAX_BACKOFF)
        self.assertNoResult(done)
        self.storage.failing = False
        self.clock.advance(MAX_BACKOFF)
        self.successResultOf(done)
        self.assertEqual(self.storage.written, [b"a\n"])

    def test_already_durable(self) -> None:
        """A chunk already on disk is acked at once."""
        seq = self.buffer.add(b"a\n", 1)
        self.clock.advance(INTERVAL)
        self.successResultOf(self.flusher.wait_durable(seq))


class BookkeepingFailureTests(FlusherTestMixin, SynchronousTestCase):
    """A bug in the bookkeeping after a good write is logged, and the flusher stays consistent."""

    def test_logged_and_flushing_goes_on(self) -> None:
        """The exception is logged with its traceback; the batch counts as written (not written again);
        the loop keeps flushing; `stop` still flushes and closes."""
        self.make(storage=BrokenRotationStorage())
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        with capturedLogs() as events:
            self.clock.advance(INTERVAL)
        [event] = [e for e in events if "log_failure" in e]
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.assertEqual(self.buffer.depth, 0)
        self.assertIsNone(self.flusher.problem())
        self.buffer.add(b"b\n", 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.storage.written, [b"a\n", b"b\n"])
        self.buffer.add(b"c\n", 1)
        self.successResultOf(self.flusher.stop())
        self.assertEqual(self.storage.written, [b"a\n", b"b\n", b"c\n"])
        self.assertEqual(self.storage.closed, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_durable_requests_are_acked(self) -> None:
        """The requests waiting for the batch are acked all the same: their samples are on disk."""
        self.make(storage=BrokenRotationStorage(), durable=True)
        self.flusher.start()
        first = self.flusher.wait_durable(self.buffer.add(b"a\n", 1))
        second = self.flusher.wait_durable(self.buffer.add(b"b\n", 1))
        self.clock.advance(0)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.storage.written, [b"a\nb\n"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_after_a_backoff_the_backoff_ends(self) -> None:
        """A good write whose bookkeeping fails still ends the backoff and clears the problem."""
        storage = BrokenRotationStorage()
        self.make(storage=storage)
        self.flusher.start()
        self.buffer.add(b"a\n", 1)
        storage.failing = True
        self.clock.advance(INTERVAL)
        self.assertIsNotNone(self.flusher.problem())
        storage.failing = False
        self.clock.advance(MAX_BACKOFF)
        self.assertIsNone(self.flusher.problem())
        self.buffer.add(b"b\n", 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(storage.written, [b"a\n", b"b\n"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class SegmentAgeTests(SynchronousTestCase):
    def test_a_quiet_writers_segment_closes_at_its_age(self) -> None:
        """With ``--segment-age 60`` on a `Clock`: a segment written once is still open 59.9 s later and
        closed (fsynced, logged) at the first tick past 60 s, with nothing more written; the next
        batch opens a new segment.  Ages come from the same clock as the ticks.

        (Before: a quiet writer's segment stayed open until it filled or the service stopped.)"""
        from ingest.storage import SegmentStore, list_segments
        from tests.tempdir import temp_path

        clock = Clock()
        clock.advance(1_700_000_000)
        directory = temp_path(self)
        storage = SegmentStore(
            directory, 1 << 20, clock_ns=lambda: int(clock.seconds() * 1e9), segment_age=60.0
        )
        storage.open()
        buffer = Buffer(100)
        flusher = Flusher(buffer, storage, clock, run_now, INTERVAL, Stats(0.0))
        flusher.start()
        buffer.add(b'{"name":"a"}\n', 1)
        clock.advance(INTERVAL)
        first = storage.active_path
        self.assertIsNotNone(first)
        for _ in range(599):  # 59.9 s of ticks with nothing to write
            clock.advance(INTERVAL)
        self.assertEqual(storage.active_path, first)
        with capturedLogs() as events:
            clock.advance(INTERVAL)
            clock.advance(INTERVAL)
        self.assertIsNone(storage.active_path)
        self.assertEqual(storage.last_closed, (first, 13))
        self.assertEqual([e["path"] for e in events if "path" in e], [first])
        buffer.add(b'{"name":"b"}\n', 1)
        clock.advance(INTERVAL)
        self.assertNotEqual(storage.active_path, first)
        self.assertEqual(len(list_segments(directory)), 2)
        self.successResultOf(flusher.stop())


class ReplicatedTests(SynchronousTestCase):
    """``--sink``: each written batch is forwarded; ``--ack replicated`` waits for the sink's `confirm`."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.buffer = Buffer(100)
        self.storage = FakeStorage()
        self.storage.last_batch = ("segment-1.ndjson", 0)  # type: ignore[attr-defined]
        self.forwarded: list[tuple[str, int, bytes, int]] = []
        self.flusher = Flusher(
            self.buffer,
            self.storage,  # type: ignore[arg-type]
            self.clock,
            run_now,
            INTERVAL,
            Stats(0.0),
            forward=lambda *batch: self.forwarded.append(batch),
            replicated=True,
        )
        self.flusher.start()

    def test_batches_are_forwarded_with_their_place(self) -> None:
        """The sink gets each batch with its segment, offset and last chunk number, after the write."""
        self.buffer.add(b"a\n", 1)
        self.buffer.add(b"b\n", 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.forwarded, [("segment-1.ndjson", 0, b"a\nb\n", 2)])
        self.assertEqual(self.storage.synced, [False])  # JetStream holds it: no fsync for the ack

    def test_acked_once_confirmed_not_once_written(self) -> None:
        """A replicated request waits past the write until the sink confirms its chunk; group commit."""
        first = self.flusher.wait_durable(self.buffer.add(b"a\n", 1))
        second = self.flusher.wait_durable(self.buffer.add(b"b\n", 1))
        self.clock.advance(0)  # the prompt flush writes both at once
        self.assertEqual(self.storage.written, [b"a\nb\n"])
        self.assertNoResult(first)
        self.flusher.confirm(1)
        self.successResultOf(first)
        self.assertNoResult(second)
        self.flusher.confirm(2)
        self.successResultOf(second)
        self.successResultOf(self.flusher.wait_durable(2))
