"""Retention: `ingest.retention` deciding (`choose`, `protected`) and deleting real files in a temporary
directory on a `Clock`, with the modification times set by the test; the timer, the rotation hook of the
flusher, the log lines and the figures in ``/stats`` and ``/metrics``; the sink's ``forwarded_before``
without NATS; the options' parsing."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ingest import config
from ingest.buffer import Buffer
from ingest.exposition import Exposition
from ingest.flusher import Flusher
from ingest.retention import INTERVAL, Deletion, Retention, SegmentFile, choose, protected
from ingest.sink import Sink, SinkSettings
from ingest.stats import Stats
from ingest.storage import SegmentStore, segment_name
from tests.tempdir import temp_path

SECOND = 10**9
NOW = 1_000_000  # the clock's seconds in these tests (files' times are set relative to it)
DAY = 86_400


def run_now(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A storage thread that runs the work at once, on the calling thread."""
    return defer.maybeDeferred(function, *args)


def segment(
    start_s: int, size: int = 10, modified_s: int | None = None, worker: int | None = None
) -> SegmentFile:
    name = segment_name(start_s * SECOND, worker)
    modified = (start_s if modified_s is None else modified_s) * SECOND
    return SegmentFile(name, start_s * SECOND, worker, False, size, modified)


class ChooseTests(SynchronousTestCase):
    """The pure decision."""

    def test_age_at_the_limit_stays_one_past_goes(self) -> None:
        """A segment last written exactly --retention ago stays; one nanosecond older goes, for its age;
        the age is the last write, not the start in the name."""
        limit = DAY * SECOND
        now = NOW * SECOND
        at_limit = SegmentFile(segment_name(1), 1, None, False, 10, now - limit)
        past = SegmentFile(segment_name(0), 0, None, False, 10, now - limit - 1)
        self.assertEqual(choose([at_limit, past], now, limit, 0), [Deletion(past.name, 10, "age")])

    def test_bytes_at_the_limit_stay_one_past_oldest_goes(self) -> None:
        """At exactly --retention-bytes nothing goes; one byte over, the oldest goes (by the start in its
        name, whatever the listing's order), and only as many as bring the total to the limit."""
        files = [segment(30, 10), segment(10, 10), segment(20, 10)]
        self.assertEqual(choose(files, NOW * SECOND, 0, 30), [])
        self.assertEqual(choose(files, NOW * SECOND, 0, 29), [Deletion(segment(10).name, 10, "bytes")])
        self.assertEqual(
            [d.name for d in choose(files, NOW * SECOND, 0, 10)], [segment(10).name, segment(20).name]
        )

    def test_kept_segments_are_passed_over_and_still_counted(self) -> None:
        """A kept segment is never chosen, even the oldest; its bytes still count in the total."""
        files = [segment(10, 10), segment(20, 10), segment(30, 10)]
        chosen = choose(files, NOW * SECOND, SECOND, 15, keep={segment(10).name})
        self.assertEqual(
            chosen, [Deletion(segment(20).name, 10, "age"), Deletion(segment(30).name, 10, "age")]
        )
        chosen = choose(files, NOW * SECOND, 0, 15, keep={segment(10).name})
        self.assertEqual(
            chosen, [Deletion(segment(20).name, 10, "bytes"), Deletion(segment(30).name, 10, "bytes")]
        )

    def test_workers_in_time_order(self) -> None:
        """Oldest first across writers: by start time, then worker."""
        files = [segment(20, worker=1), segment(10, worker=2), segment(10, worker=1)]
        chosen = [d.name for d in choose(files, NOW * SECOND, 0, 1)]
        self.assertEqual(
            chosen, [segment(10, worker=1).name, segment(10, worker=2).name, segment(20, worker=1).name]
        )

    def test_protected(self) -> None:
        """The active segment; with live workers, the newest plain segment of each other worker (not of the
        single process's, left from an earlier run); with a sink, the
        deleter's segments from the one it still needs on, gzipped ones included."""
        own = [segment(10), segment(20), segment(30)]
        gzipped = SegmentFile(segment(20).name + ".gz", 20 * SECOND, None, True, 5, 20 * SECOND)
        others = [segment(5, worker=2), segment(15, worker=2), segment(12, worker=3)]
        files = [*own, gzipped, *others]
        self.assertEqual(protected(files, None, segment(30).name, False, None), {segment(30).name})
        self.assertEqual(
            protected(files, 1, None, True, None), {segment(15, worker=2).name, segment(12, worker=3).name}
        )
        self.assertEqual(
            protected(files, None, None, False, segment(20).name),
            {segment(20).name, gzipped.name, segment(30).name},
        )
        self.assertEqual(protected(files, None, None, False, ""), {f.name for f in own} | {gzipped.name})


class RetentionFiles(SynchronousTestCase):
    """Real files in a temporary directory, a `Clock`, and a store that writes with that clock."""

    def setUp(self) -> None:
        self.directory = temp_path(self)
        os.makedirs(self.directory)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.stats = Stats(0.0)
        self.store = SegmentStore(
            self.directory, 1 << 20, clock_ns=lambda: round(self.clock.seconds() * SECOND)
        )

    def file(
        self, start_s: int, size: int = 10, modified_s: int | None = None, worker: int | None = None
    ) -> str:
        """A closed segment started at `start_s`, last written at `modified_s` (default: its start)."""
        name = segment_name(start_s * SECOND, worker)
        path = os.path.join(self.directory, name)
        with open(path, "wb") as file:
            file.write(b"x" * size)
        modified = (start_s if modified_s is None else modified_s) * SECOND
        os.utime(path, ns=(modified, modified))
        return name

    def names(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    def retention(self, **kwargs: Any) -> Retention:
        return Retention(self.clock, run_now, self.store, self.stats, **kwargs)


class RetentionTests(RetentionFiles):
    def test_by_age_at_the_limit_and_one_second_past(self) -> None:
        """--retention 1d: a segment last written a day ago stays, one written a day and a second ago goes,
        whatever its start; the next second, the other goes too."""
        old = self.file(NOW - 2 * DAY, modified_s=NOW - DAY - 1)
        edge = self.file(NOW - 2 * DAY + 1, modified_s=NOW - DAY)
        retention = self.retention(retention=config.duration("1d"))
        with capturedLogs() as events:
            retention.check()
        self.assertEqual(self.names(), [edge])
        self.assertEqual([(e["segment"], e["reason"], e["bytes"]) for e in events], [(old, "age", 10)])
        self.clock.advance(1)
        retention.check()
        self.assertEqual(self.names(), [])
        self.assertEqual(self.stats.segments_deleted["age"], 2)
        self.assertEqual(self.stats.segment_bytes_deleted["age"], 20)

    def test_by_bytes_at_the_limit_and_one_byte_past(self) -> None:
        """--retention-bytes at the segments' total deletes nothing; one byte under it, the oldest goes."""
        first, second, third = self.file(10, 100), self.file(20, 100), self.file(30, 100)
        self.retention(retention_bytes=300).check()
        self.assertEqual(self.names(), [first, second, third])
        with capturedLogs() as events:
            self.retention(retention_bytes=299).check()
        self.assertEqual(self.names(), [second, third])
        self.assertEqual(self.stats.segments_deleted, {"bytes": 1})
        self.assertEqual(self.stats.segment_bytes_deleted, {"bytes": 100})
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.info)
        from twisted.logger import formatEvent

        self.assertEqual(
            formatEvent(events[0]),
            f"retention deleted {first} (100 bytes): segments over --retention-bytes 299",
        )

    def test_never_the_active_segment(self) -> None:
        """The active segment stays however old and however far over the byte limit; once closed, it goes."""
        closed = self.file(10, 100, modified_s=10)
        self.store.open()
        self.store.write(b"x" * 50 + b"\n")
        active = os.path.basename(self.store.active_path or "")
        self.clock.advance(10 * DAY)
        retention = self.retention(retention=1.0, retention_bytes=1)
        retention.check()
        self.assertEqual(self.names(), [active])
        self.assertNotEqual(active, closed)
        self.store.close()
        retention.check()
        self.assertEqual(self.names(), [])

    def test_never_past_the_sink(self) -> None:
        """Segments from the one the sink still needs on stay, over both limits; older ones go."""
        forwarded, needed, newer = self.file(10), self.file(20), self.file(30)
        still_needed = [""]
        retention = self.retention(retention=1.0, retention_bytes=1, forwarded_before=lambda: still_needed[0])
        retention.check()
        self.assertEqual(self.names(), [forwarded, needed, newer], "nothing known forwarded: nothing goes")
        still_needed[0] = needed
        retention.check()
        self.assertEqual(self.names(), [needed, newer])

    def test_never_a_segment_another_ingest_holds(self) -> None:
        """A segment another running store holds locked (a second ingest on the directory, during a
        restart that hands the port over) stays, however far over the limit; the next oldest goes in its
        place; once the lock is gone, it goes too."""
        import fcntl

        held, next_oldest, newest = self.file(10, 100), self.file(20, 100), self.file(30, 100)
        other = os.open(os.path.join(self.directory, held), os.O_RDONLY)
        self.addCleanup(lambda: os.close(other) if other >= 0 else None)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.retention(retention_bytes=250).check()
        self.assertEqual(self.names(), [held, newest])
        self.assertNotIn(next_oldest, self.names())
        os.close(other)
        other = -1
        self.retention(retention_bytes=150).check()
        self.assertEqual(self.names(), [newest])

    def test_worker_one_deletes_for_every_worker(self) -> None:
        """Under --workers, worker 1 deletes every writer's segments, oldest first, but never the newest
        plain segment of another worker (its active one); the byte limit is the whole directory's."""
        self.store = SegmentStore(self.directory, 1 << 20, worker=1)
        w1_old, w2_old, w2_newest = self.file(10, worker=1), self.file(11, worker=2), self.file(12, worker=2)
        w1_new = self.file(13, worker=1)
        single = self.file(5)
        self.retention(retention_bytes=20, others_live=True).check()
        self.assertEqual(self.names(), sorted([w2_newest, w1_new]))
        self.assertNotIn(w1_old, self.names())
        self.assertNotIn(w2_old, self.names())
        self.assertNotIn(single, self.names())

    def test_timer(self) -> None:
        """A check at start, then one every INTERVAL seconds on the clock; stop ends them."""
        retention = self.retention(retention=60.0)
        self.file(NOW - 120)
        retention.start()
        self.assertEqual(self.names(), [])
        later = self.file(NOW)
        self.clock.advance(60)
        self.assertEqual(self.names(), [later], "at the limit")
        self.clock.advance(INTERVAL - 60 + 1)
        self.assertEqual(self.names(), [later], "not yet a timer tick")
        self.clock.advance(59)
        self.assertEqual(self.names(), [], "the tick at 2 * INTERVAL")
        retention.stop()
        self.file(NOW)
        self.clock.advance(10 * INTERVAL)
        self.assertEqual(len(self.names()), 1)

    def test_configure_at_runtime(self) -> None:
        """`configure` turns retention on, changes and turns off its limits; the next check uses them."""
        retention = self.retention()
        first, second = self.file(10, 100), self.file(20, 100)
        retention.start()
        self.assertEqual(self.names(), [first, second])
        retention.configure(0, 150)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.names(), [second])
        retention.configure(0, 0)
        self.file(30, 100)
        self.clock.advance(INTERVAL)
        self.assertEqual(len(self.names()), 2)
        self.assertRaises(ValueError, retention.configure, -1, 0)
        retention.stop()

    def test_a_check_during_a_check_runs_after_it(self) -> None:
        """A rotation's check asked for while the timer's runs in the thread is run once it is over."""
        held: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

        def hold(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
            held.append((function, args, Deferred()))
            return held[-1][2]

        retention = Retention(self.clock, hold, self.store, self.stats, retention_bytes=1)
        retention.check()
        retention.check()
        retention.check()
        self.assertEqual(len(held), 1)
        function, args, result = held.pop()
        result.callback(function(*args))
        self.assertEqual(len(held), 1, "one more check after the first")

    def test_a_failed_deletion_is_logged_once(self) -> None:
        """A segment that cannot be deleted (here a directory by a segment's name) is logged once while the
        error repeats, is not counted, and does not stop the other deletions."""
        stuck = os.path.join(self.directory, segment_name(5 * SECOND))
        os.makedirs(stuck)
        other = self.file(10)
        retention = self.retention(retention_bytes=1)
        with capturedLogs() as events:
            retention.check()
            retention.check()
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn(segment_name(5 * SECOND), errors[0]["error"])
        self.assertNotIn(other, self.names())
        self.assertEqual(self.stats.segments_deleted["bytes"], 1)

    def test_on_rotation(self) -> None:
        """The flusher calls its rotation hook after a segment closes by size: retention deletes then."""
        self.store = SegmentStore(self.directory, 100, clock_ns=lambda: round(self.clock.seconds() * SECOND))
        self.store.open()
        retention = self.retention(retention_bytes=150)
        buffer = Buffer(1000)
        flusher = Flusher(
            buffer, self.store, self.clock, run_now, 0.1, self.stats, on_rotation=retention.check
        )
        for _ in range(3):
            buffer.add(b"x" * 119 + b"\n", 1)
            flusher.flush()
            self.clock.advance(1)
        self.assertEqual(len(self.names()), 1, "each rotation deleted the segment before it")
        self.assertEqual(self.stats.segments_deleted["bytes"], 2)


class FiguresTests(SynchronousTestCase):
    def test_stats_and_metrics(self) -> None:
        """Deletions by reason in /stats and in /metrics, each reason exported at 0 from start."""
        stats = Stats(0.0)
        gauges = {"depth": 0, "high_mark": 0, "capacity": 1, "parse_queue": 0}
        exposition = Exposition(lambda: stats.snapshot(0.0, gauges))
        text = exposition.render().decode()
        self.assertIn('ingest_segments_deleted_total{reason="age"} 0.0', text)
        self.assertIn('ingest_segments_deleted_total{reason="bytes"} 0.0', text)
        stats.segments_deleted["bytes"] += 2
        stats.segment_bytes_deleted["bytes"] += 300
        snapshot = stats.snapshot(0.0, gauges)
        self.assertEqual(snapshot["segments_deleted"], {"age": 0, "bytes": 2})
        self.assertEqual(snapshot["segment_bytes_deleted"], {"age": 0, "bytes": 300})
        text = exposition.render().decode()
        self.assertIn('ingest_segments_deleted_total{reason="bytes"} 2.0', text)
        self.assertIn('ingest_segments_deleted_bytes_total{reason="bytes"} 300.0', text)


class FakeReactor:
    def seconds(self) -> float:
        return 0.0


class SinkForwardedBeforeTests(SynchronousTestCase):
    """`Sink.forwarded_before` from what the sink has pending and acknowledged (no NATS needed)."""

    def test_pending_and_acknowledged(self) -> None:
        """Nothing known: "" (keep all); a batch pending: its segment; all acknowledged: the last
        acknowledged segment (it may still grow)."""
        from ingest.forwarding import Position

        sink = Sink(FakeReactor(), "/nonexistent", SinkSettings(["nats://127.0.0.1:1"], "ingest", "n1"))
        first, second = segment_name(1), segment_name(2)
        self.assertEqual(sink.forwarded_before(), "")
        sink.forward(first, 0, b"a\n", 1)
        self.assertEqual(sink.forwarded_before(), first)
        sink.forward(second, 0, b"b\n", 2)
        sink.acked(Position(first, 2))
        self.assertEqual(sink.forwarded_before(), second)
        sink.acked(Position(second, 2))
        self.assertEqual(sink.forwarded_before(), second)


class OptionTests(SynchronousTestCase):
    def test_parsing(self) -> None:
        """--retention takes durations, --retention-bytes sizes; 0 is off; nonsense is refused."""
        settings = config.load({"retention": "30d", "retention-bytes": "50GiB"}, None, cwd="/nonexistent")
        self.assertEqual((settings.retention, settings.retention_bytes), (30 * DAY, 50 * 2**30))
        settings = config.load({"retention": "12h", "retention-bytes": "500MB"}, None, cwd="/nonexistent")
        self.assertEqual((settings.retention, settings.retention_bytes), (12 * 3600, 500_000_000))
        settings = config.load({"retention": "90", "retention-bytes": "1000"}, None, cwd="/nonexistent")
        self.assertEqual((settings.retention, settings.retention_bytes), (90, 1000))
        settings = config.load({"retention": "", "retention-bytes": ""}, None, cwd="/nonexistent")
        self.assertEqual((settings.retention, settings.retention_bytes), (0, 0))
        self.assertEqual((config.Settings().retention, config.Settings().retention_bytes), (0, 0))
        for option, bad in (
            ("retention", "-1d"),
            ("retention", "soon"),
            ("retention-bytes", "5%"),
            ("retention-bytes", "auto"),
        ):
            self.assertRaises(config.ConfigError, config.load, {option: bad}, None, "/nonexistent")


class SinkCursorTests(SynchronousTestCase):
    def test_from_the_cursor_of_an_earlier_run(self) -> None:
        """A real cursor file at the end of the log, NATS unreachable: before any acknowledgement of this
        run, the segments before the cursor's may go; the cursor's segment stays."""
        from ingest.forwarding import Cursor, cursor_path, write_cursor
        from tests.helpers_nats import free_port
        from tests.test_sink import ThreadReactor

        directory = temp_path(self)
        os.makedirs(directory)
        names = [segment_name(start * SECOND) for start in (10, 20, 30)]
        for name in names:
            with open(os.path.join(directory, name), "wb") as file:
                file.write(b'{"name":"m","value":1,"timestamp":1,"tags":{}}\n')
        size = os.path.getsize(os.path.join(directory, names[2]))
        write_cursor(cursor_path(directory, "n1"), Cursor(names[2], size, 7))
        reactor = ThreadReactor()
        sink = Sink(reactor, directory, SinkSettings([f"nats://127.0.0.1:{free_port()}"], "ingest", "n1"))
        sink.start()
        self.assertEqual(sink.forwarded_before(), names[2], "the cursor's segment (nothing left to replay)")
        clock = Clock()
        store = SegmentStore(directory, 1 << 20)
        Retention(
            clock, run_now, store, Stats(0.0), retention_bytes=1, forwarded_before=sink.forwarded_before
        ).check()
        self.assertEqual(sorted(n for n in os.listdir(directory) if n.startswith("segment-")), names[2:])
        stopped = sink.stop(1.0)
        reactor.pump(lambda: stopped.called)
