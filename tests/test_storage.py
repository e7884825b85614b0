"""Tests for `ingest.storage`: segments on real files in a temporary directory (see `tests.tempdir`)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

from twisted.trial.unittest import SynchronousTestCase

from ingest.storage import (
    SegmentName,
    SegmentStore,
    list_readable_segments,
    list_segments,
    parse_segment_name,
    repair_tail,
    repair_tails,
    segment_name,
    segment_start,
)
from tests.tempdir import temp_path


def read(path: str) -> bytes:
    with open(path, "rb") as segment:
        return segment.read()


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as segment:
        segment.write(data)


def ticking_clock(*times: int) -> Callable[[], int]:
    """A `clock_ns` that returns `times` one after another."""
    values: Iterator[int] = iter(times)
    return lambda: next(values)


class RecordingWrite:
    """A stand-in for ``os.write`` that counts its calls and writes through."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int, data: memoryview) -> int:
        self.calls += 1
        return os.write(fd, data)


class FailingWrite:
    """A stand-in for ``os.write`` that fails on command.

    With `short` set, the first call writes only that many bytes (a short
    write, as the kernel may do) and the next call raises, so the failure
    lands part-way through a batch.
    """

    def __init__(self) -> None:
        self.failing = False
        self.short: int | None = None
        self._short_done = False

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.failing:
            if self.short is not None and not self._short_done:
                self._short_done = True
                return os.write(fd, data[: self.short])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)


class NamesTests(SynchronousTestCase):
    def test_name_round_trip(self) -> None:
        """`segment_start` reads back the start time `segment_name` wrote."""
        self.assertEqual(segment_start(segment_name(1_700_000_000_123_456_789)), 1_700_000_000_123_456_789)
        self.assertEqual(segment_start(segment_name(5)), 5)

    def test_names_sort_in_time_order(self) -> None:
        """Names are zero-padded, so sorting them as strings sorts them by start time."""
        starts = [5, 1_700_000_000_000_000_000, 999, 10_000, 42]
        names = [segment_name(start) for start in starts]
        self.assertEqual([segment_start(name) for name in sorted(names)], sorted(starts))

    def test_list_segments_oldest_first_ignoring_foreign_files(self) -> None:
        """`list_segments` lists only segment files, oldest first; other files are ignored."""
        directory = temp_path(self)
        os.makedirs(directory)
        segments = [segment_name(3_000), segment_name(1_000), segment_name(2_000)]
        foreign = [
            "notes.txt",
            "segment-.ndjson",
            "segment-abc.ndjson",
            "segment-9.ndjson",
            "segment-\u00b2\u00b3.ndjson",
            segment_name(4_000) + ".tmp",
            "x" + segment_name(5_000),
        ]
        for name in segments + foreign:
            write_file(os.path.join(directory, name), b"")
        self.assertEqual(list_segments(directory), sorted(segments))

    def test_segment_start_of_foreign_names_is_none(self) -> None:
        """A name that is not exactly ``segment-<19 ASCII digits>.ndjson`` is not a segment."""
        for name in [
            "segment-9.ndjson",
            "segment-\u00b2\u00b3.ndjson",
            "segment-" + "\u0661" * 19 + ".ndjson",
        ]:
            self.assertIsNone(segment_start(name), name)


class GzippedNamesTests(SynchronousTestCase):
    def test_parse_segment_name_plain_and_gzipped(self) -> None:
        """`parse_segment_name` reads the start time of plain and gzipped names, and says which."""
        self.assertEqual(parse_segment_name(segment_name(1_000)), SegmentName(1_000, False))
        self.assertEqual(parse_segment_name(segment_name(1_000) + ".gz"), SegmentName(1_000, True))

    def test_parse_segment_name_of_foreign_names_is_none(self) -> None:
        """Only ``segment-<19 ASCII digits>.ndjson`` with an optional ``.gz`` is a segment."""
        for name in [
            "segment-9.ndjson.gz",
            "segment-\u00b2\u00b3.ndjson.gz",
            segment_name(1_000) + ".gz.gz",
            segment_name(1_000) + ".GZ",
            segment_name(1_000)[: -len(".ndjson")] + ".gz",
            "x" + segment_name(1_000) + ".gz",
            "notes.txt",
        ]:
            self.assertIsNone(parse_segment_name(name), name)

    def test_writer_does_not_see_gzipped_segments(self) -> None:
        """`segment_start` and `list_segments`, the writer's view, ignore gzipped segments."""
        directory = temp_path(self)
        os.makedirs(directory)
        write_file(os.path.join(directory, segment_name(1_000)), b"")
        write_file(os.path.join(directory, segment_name(2_000) + ".gz"), b"")
        self.assertIsNone(segment_start(segment_name(2_000) + ".gz"))
        self.assertEqual(list_segments(directory), [segment_name(1_000)])

    def test_list_readable_segments_interleaves_plain_and_gzipped_in_time_order(self) -> None:
        """`list_readable_segments` lists both forms, ordered by start time, ignoring foreign files."""
        directory = temp_path(self)
        os.makedirs(directory)
        expected = [
            segment_name(1_000) + ".gz",
            segment_name(2_000),
            segment_name(3_000) + ".gz",
            segment_name(10_000),
        ]
        for name in [*expected, "notes.txt", "segment-9.ndjson.gz", segment_name(5_000) + ".gz.tmp"]:
            write_file(os.path.join(directory, name), b"")
        self.assertEqual(list_readable_segments(directory), expected)

    def test_list_readable_segments_prefers_plain_to_gzipped_twin(self) -> None:
        """A segment there both plain and gzipped (gzip still at work) is listed once, plain."""
        directory = temp_path(self)
        os.makedirs(directory)
        for name in [segment_name(2_000) + ".gz", segment_name(2_000), segment_name(1_000) + ".gz"]:
            write_file(os.path.join(directory, name), b"")
        self.assertEqual(
            list_readable_segments(directory), [segment_name(1_000) + ".gz", segment_name(2_000)]
        )

    def test_open_and_write_never_touch_a_gzipped_segment(self) -> None:
        """The newest segment gzipped: `open` neither repairs it nor appends to it; writes go elsewhere."""
        directory = temp_path(self)
        os.makedirs(directory)
        older = os.path.join(directory, segment_name(1_000))
        gzipped = os.path.join(directory, segment_name(2_000) + ".gz")
        write_file(older, b'{"a":1}\n')
        write_file(gzipped, b"\x1f\x8b torn, no newline")
        store = SegmentStore(directory, 1024, clock_ns=lambda: 3_000)
        self.assertIsNone(store.open())
        store.write(b'{"b":2}\n')
        store.close()
        self.assertEqual(read(gzipped), b"\x1f\x8b torn, no newline")
        self.assertEqual(read(older), b'{"a":1}\n')
        self.assertEqual(read(os.path.join(directory, segment_name(3_000))), b'{"b":2}\n')


class WorkerNamesTests(SynchronousTestCase):
    """The names of the segments of ``--workers``: ``segment-<ns>-w<K>.ndjson``, K from 1."""

    def setUp(self) -> None:
        self.directory = temp_path(self)
        os.makedirs(self.directory)

    def touch(self, *names: str, data: bytes = b"") -> None:
        for name in names:
            write_file(os.path.join(self.directory, name), data)

    def test_single_process_names_are_unchanged(self) -> None:
        """Without a worker the name is exactly what it always was."""
        self.assertEqual(segment_name(1_000), "segment-0000000000000001000.ndjson")
        self.assertEqual(segment_name(1_000, None), segment_name(1_000))

    def test_worker_name_round_trip(self) -> None:
        """A worker's name carries its id after the start time; the parser reads both back."""
        self.assertEqual(segment_name(1_000, 2), "segment-0000000000000001000-w2.ndjson")
        self.assertEqual(parse_segment_name(segment_name(1_000, 2)), SegmentName(1_000, False, 2))
        self.assertEqual(parse_segment_name(segment_name(1_000, 12) + ".gz"), SegmentName(1_000, True, 12))
        self.assertEqual(parse_segment_name(segment_name(1_000)), SegmentName(1_000, False, None))

    def test_foreign_worker_names_are_not_segments(self) -> None:
        """Only the id `segment_name` writes counts: no zero, no leading zero, no sign, no other mark."""
        stem = segment_name(1_000)[: -len(".ndjson")]
        for name in [
            f"{stem}-w0.ndjson",
            f"{stem}-w01.ndjson",
            f"{stem}-w.ndjson",
            f"{stem}-wx.ndjson",
            f"{stem}-w-1.ndjson",
            f"{stem}-w+1.ndjson",
            f"{stem}-W1.ndjson",
            f"{stem}-w1-w2.ndjson",
            f"{stem}w1.ndjson",
            f"{stem}-1.ndjson",
            f"{stem}-w\u00b2.ndjson",
            f"{stem}-w1.ndjson.tmp",
            f"{stem}-w1.gz",
        ]:
            self.assertIsNone(parse_segment_name(name), name)

    def test_each_writer_sees_only_its_own_segments(self) -> None:
        """`segment_start` and `list_segments` are one writer's view: the single process's or worker K's."""
        self.touch(
            segment_name(1_000), segment_name(2_000, 1), segment_name(3_000, 2), segment_name(4_000, 1)
        )
        self.touch(segment_name(5_000, 1) + ".gz")
        self.assertEqual(list_segments(self.directory), [segment_name(1_000)])
        self.assertEqual(list_segments(self.directory, 1), [segment_name(2_000, 1), segment_name(4_000, 1)])
        self.assertEqual(list_segments(self.directory, 2), [segment_name(3_000, 2)])
        self.assertEqual(list_segments(self.directory, 3), [])
        self.assertIsNone(segment_start(segment_name(2_000, 1)))
        self.assertEqual(segment_start(segment_name(2_000, 1), 1), 2_000)
        self.assertIsNone(segment_start(segment_name(2_000, 1), 2))
        self.assertIsNone(segment_start(segment_name(5_000, 1) + ".gz", 1))

    def test_readers_see_every_writer_in_time_order(self) -> None:
        """`list_readable_segments` lists all writers' segments, plain and gzipped, by start time."""
        expected = [
            segment_name(1_000),
            segment_name(2_000, 2) + ".gz",
            segment_name(3_000, 1),
            segment_name(3_000, 2),
            segment_name(4_000, 10),
            segment_name(10_000, 1) + ".gz",
            segment_name(10_001),
        ]
        self.touch(*expected, segment_name(3_000, 1) + ".gz", "segment-0000000000000005000-w0.ndjson")
        self.assertEqual(list_readable_segments(self.directory), expected)

    def test_worker_store_writes_names_with_its_id(self) -> None:
        """A worker's store names its segments with its id, and sorts them after every writer's."""
        self.touch(segment_name(5_000, 2), segment_name(1_000))
        store = SegmentStore(self.directory, 1024, clock_ns=lambda: 3_000, worker=1)
        self.assertIsNone(store.open())
        store.write(b'{"a":1}\n')
        self.assertEqual(store.active_path, os.path.join(self.directory, segment_name(5_001, 1)))
        store.close()

    def test_worker_store_repairs_only_its_own_newest_segment(self) -> None:
        """Worker 1 cuts its own torn tail and leaves those of other writers, which may be writing."""
        torn = b'{"a":1}\n{"torn":'
        self.touch(segment_name(1_000, 1), segment_name(2_000, 2), segment_name(3_000), data=torn)
        store = SegmentStore(self.directory, 1024, worker=1)
        self.assertEqual(store.open(), (os.path.join(self.directory, segment_name(1_000, 1)), 8))
        self.assertEqual(read(os.path.join(self.directory, segment_name(2_000, 2))), torn)
        self.assertEqual(read(os.path.join(self.directory, segment_name(3_000))), torn)

    def test_single_process_store_ignores_worker_segments(self) -> None:
        """The single process's store repairs its own newest segment, not a newer one of a worker."""
        torn = b'{"a":1}\n{"torn":'
        self.touch(segment_name(1_000), segment_name(2_000, 1), data=torn)
        self.assertEqual(
            SegmentStore(self.directory, 1024).open(), (os.path.join(self.directory, segment_name(1_000)), 8)
        )
        self.assertEqual(read(os.path.join(self.directory, segment_name(2_000, 1))), torn)

    def test_repair_tails_cuts_the_newest_of_writers_not_skipped(self) -> None:
        """`repair_tails` repairs the newest plain segment of each writer outside `skip`, nothing else."""
        torn = b'{"a":1}\n{"torn":'
        names = [
            segment_name(1_000),
            segment_name(2_000),
            segment_name(1_500, 1),
            segment_name(2_500, 3),
            segment_name(3_500, 3),
            segment_name(4_500, 3) + ".gz",
        ]
        self.touch(*names, data=torn)
        cuts = repair_tails(self.directory, skip={1, 2})
        repaired = [segment_name(2_000), segment_name(3_500, 3)]
        self.assertEqual(sorted(cuts), sorted((os.path.join(self.directory, n), 8) for n in repaired))
        for name in names:
            expected = b'{"a":1}\n' if name in repaired else torn
            self.assertEqual(read(os.path.join(self.directory, name)), expected, name)
        self.assertEqual(repair_tails(self.directory, skip={1, 2}), [])
        self.assertEqual(
            repair_tails(self.directory, skip={None, 3}), [(os.path.join(self.directory, names[2]), 8)]
        )


class RepairTailTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = temp_path(self)

    def test_clean_file_is_left_alone(self) -> None:
        """A file that ends with a newline is not changed and nothing is cut."""
        write_file(self.path, b'{"a":1}\n{"b":2}\n')
        self.assertEqual(repair_tail(self.path), 0)
        self.assertEqual(read(self.path), b'{"a":1}\n{"b":2}\n')

    def test_empty_file_is_left_alone(self) -> None:
        """An empty segment needs no repair."""
        write_file(self.path, b"")
        self.assertEqual(repair_tail(self.path), 0)
        self.assertEqual(read(self.path), b"")

    def test_torn_last_line_is_cut(self) -> None:
        """A last line without a newline is cut off; the complete lines stay; the count is returned."""
        write_file(self.path, b'{"a":1}\n{"b":2}\n{"c":')
        self.assertEqual(repair_tail(self.path), 5)
        self.assertEqual(read(self.path), b'{"a":1}\n{"b":2}\n')

    def test_torn_line_longer_than_a_read_block(self) -> None:
        """A torn line longer than 64 KiB is cut whole, back to the last newline."""
        torn = b"x" * (3 * 65536 + 17)
        write_file(self.path, b'{"a":1}\n' + torn)
        self.assertEqual(repair_tail(self.path), len(torn))
        self.assertEqual(read(self.path), b'{"a":1}\n')

    def test_torn_line_ending_exactly_at_a_block_edge(self) -> None:
        """A newline that falls exactly on a 64 KiB block edge is found."""
        head = b"y" * (65536 - 1) + b"\n"
        torn = b"x" * 65536
        write_file(self.path, head + torn)
        self.assertEqual(repair_tail(self.path), len(torn))
        self.assertEqual(read(self.path), head)

    def test_file_that_is_one_torn_line(self) -> None:
        """A file with no newline at all is cut to empty."""
        write_file(self.path, b"z" * 70_000)
        self.assertEqual(repair_tail(self.path), 70_000)
        self.assertEqual(read(self.path), b"")


class OpenTests(SynchronousTestCase):
    def test_open_creates_the_directory(self) -> None:
        """`open` creates a missing data directory (and its parents) and reports no repair."""
        directory = os.path.join(temp_path(self), "nested", "data")
        store = SegmentStore(directory, 1024)
        self.assertIsNone(store.open())
        self.assertTrue(os.path.isdir(directory))

    def test_open_repairs_only_the_newest_segment(self) -> None:
        """`open` cuts the torn tail of the newest segment and returns its path and the bytes cut."""
        directory = temp_path(self)
        os.makedirs(directory)
        older = os.path.join(directory, segment_name(1_000))
        newest = os.path.join(directory, segment_name(2_000))
        write_file(older, b'{"a":1}\n{"tor')
        write_file(newest, b'{"b":2}\n{"torn":')
        store = SegmentStore(directory, 1024)
        self.assertEqual(store.open(), (newest, 8))
        self.assertEqual(read(newest), b'{"b":2}\n')
        self.assertEqual(read(older), b'{"a":1}\n{"tor')

    def test_open_leaves_the_active_segment_of_a_running_store_alone(self) -> None:
        """Two processes on one directory (a restart that hands the port over): the new store's `open`
        does not cut the old store's active segment, whose last line may be a write in progress (which
        the old store then finishes); the new store's segment gets a name of its own."""
        directory = temp_path(self)
        old = SegmentStore(directory, 1 << 20, clock_ns=ticking_clock(1_000, 1_000))
        old.open()
        old.write(b'{"a":1}\n')
        active = old.active_path
        assert active is not None
        with open(active, "ab") as segment:
            segment.write(b'{"being":"writ')  # the old process's write, half done
        new = SegmentStore(directory, 1 << 20, clock_ns=ticking_clock(1_000, 1_000))
        self.assertIsNone(new.open())
        self.assertEqual(read(active), b'{"a":1}\n{"being":"writ')
        with open(active, "ab") as segment:
            segment.write(b'ten"}\n')
        new.write(b'{"b":2}\n')
        self.assertEqual(list_segments(directory), [segment_name(1_000), segment_name(1_001)])
        new.close()
        old.close()
        self.assertEqual(read(active), b'{"a":1}\n{"being":"written"}\n')

    def test_open_with_clean_newest_segment_returns_none(self) -> None:
        """`open` returns None and changes nothing when the newest segment is whole."""
        directory = temp_path(self)
        os.makedirs(directory)
        newest = os.path.join(directory, segment_name(2_000))
        write_file(newest, b'{"b":2}\n')
        self.assertIsNone(SegmentStore(directory, 1024).open())
        self.assertEqual(read(newest), b'{"b":2}\n')

    def test_open_ignores_foreign_files(self) -> None:
        """A foreign file that merely looks like a segment is neither repaired nor taken for the newest."""
        directory = temp_path(self)
        os.makedirs(directory)
        newest = os.path.join(directory, segment_name(2_000))
        foreign = os.path.join(directory, "segment-9.ndjson")
        write_file(newest, b'{"b":2}\n{"torn":')
        write_file(foreign, b"not ours")
        self.assertEqual(SegmentStore(directory, 1024).open(), (newest, 8))
        self.assertEqual(read(foreign), b"not ours")


class WriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temp_path(self)

    def test_one_write_call_per_batch(self) -> None:
        """A batch is appended with one ``write`` call, after what was there."""
        recording = RecordingWrite()
        store = SegmentStore(self.directory, 1 << 20, clock_ns=lambda: 1_000, write=recording)
        store.open()
        self.assertFalse(store.write(b'{"a":1}\n{"b":2}\n'))
        self.assertEqual(recording.calls, 1)
        self.assertFalse(store.write(b'{"c":3}\n'))
        self.assertEqual(recording.calls, 2)
        store.close()
        self.assertEqual(list_segments(self.directory), [segment_name(1_000)])
        self.assertEqual(
            read(os.path.join(self.directory, segment_name(1_000))), b'{"a":1}\n{"b":2}\n{"c":3}\n'
        )

    def test_short_writes_are_completed(self) -> None:
        """When the kernel writes short, the rest of the batch is written, so the batch lands whole."""
        calls: list[int] = []

        def short_write(fd: int, data: memoryview) -> int:
            calls.append(len(data))
            return os.write(fd, data[:3])

        store = SegmentStore(self.directory, 1 << 20, clock_ns=lambda: 1_000, write=short_write)
        store.open()
        store.write(b"0123456789\n")
        store.close()
        self.assertEqual(calls, [11, 8, 5, 2])
        self.assertEqual(read(os.path.join(self.directory, segment_name(1_000))), b"0123456789\n")

    def test_write_names_the_segment_from_the_clock(self) -> None:
        """The first write opens a segment named after the injected clock."""
        store = SegmentStore(self.directory, 1 << 20, clock_ns=lambda: 1_700_000_000_000_000_000)
        store.open()
        store.write(b"a\n")
        self.assertEqual(
            store.active_path, os.path.join(self.directory, segment_name(1_700_000_000_000_000_000))
        )
        store.close()
        self.assertIsNone(store.active_path)

    def test_rotation_when_size_reaches_segment_bytes(self) -> None:
        """The write that brings a segment to `segment_bytes` closes it; the next write opens a new file."""
        store = SegmentStore(self.directory, 10, clock_ns=ticking_clock(1_000, 2_000))
        store.open()
        self.assertFalse(store.write(b"12345\n"))
        self.assertTrue(store.write(b"6789\n"))
        first = os.path.join(self.directory, segment_name(1_000))
        self.assertEqual(store.last_closed, (first, 11), "the closed segment and its size, for the log")
        self.assertIsNone(store.active_path)
        self.assertEqual(read(first), b"12345\n6789\n")
        self.assertFalse(store.write(b"next\n"))
        store.close()
        self.assertEqual(list_segments(self.directory), [segment_name(1_000), segment_name(2_000)])
        self.assertEqual(read(first), b"12345\n6789\n")
        self.assertEqual(read(os.path.join(self.directory, segment_name(2_000))), b"next\n")

    def test_no_rotation_one_byte_below_segment_bytes(self) -> None:
        """A segment of `segment_bytes - 1` bytes stays open and takes the next batch."""
        store = SegmentStore(self.directory, 10, clock_ns=ticking_clock(1_000, 2_000))
        store.open()
        self.assertFalse(store.write(b"12345678\n"))
        self.assertTrue(store.write(b"9\n"))
        self.assertEqual(list_segments(self.directory), [segment_name(1_000)])

    def test_new_segment_after_existing_one_when_the_clock_is_behind(self) -> None:
        """A new segment sorts after the newest one on disk even if the clock says an earlier time."""
        os.makedirs(self.directory)
        existing = segment_name(5_000_000)
        write_file(os.path.join(self.directory, existing), b"old\n")
        store = SegmentStore(self.directory, 1 << 20, clock_ns=lambda: 1_000)
        store.open()
        store.write(b"new\n")
        store.close()
        segments = list_segments(self.directory)
        self.assertEqual(len(segments), 2)
        self.assertEqual(segments[0], existing)
        self.assertGreater(segments[1], existing)
        self.assertEqual(read(os.path.join(self.directory, existing)), b"old\n")
        self.assertEqual(read(os.path.join(self.directory, segments[1])), b"new\n")

    def test_rotation_when_the_clock_goes_backwards(self) -> None:
        """After a rotation, the next segment sorts after the closed one even if the clock went backwards."""
        store = SegmentStore(self.directory, 2, clock_ns=ticking_clock(9_000, 1_000, 1_000))
        store.open()
        self.assertTrue(store.write(b"a\n"))
        self.assertTrue(store.write(b"b\n"))
        self.assertTrue(store.write(b"c\n"))
        segments = list_segments(self.directory)
        self.assertEqual(len(segments), 3)
        self.assertEqual(segments[0], segment_name(9_000))
        self.assertEqual(
            [read(os.path.join(self.directory, name)) for name in segments], [b"a\n", b"b\n", b"c\n"]
        )

    def test_new_segment_sorts_after_a_gzipped_newest(self) -> None:
        """A gzipped newest segment still counts: the next segment's name sorts after it, clock or not."""
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, segment_name(50_000) + ".gz"), "wb"):
            pass
        store = SegmentStore(self.directory, 1000, clock_ns=lambda: 1_000)
        store.open()
        store.write(b"a\n")
        self.assertEqual(list_segments(self.directory), [segment_name(50_001)])

    def test_failed_write_leaves_the_segment_as_before(self) -> None:
        """A write that fails part-way is cut back: the segment holds what it held before the batch."""
        failing = FailingWrite()
        store = SegmentStore(self.directory, 1 << 20, clock_ns=lambda: 1_000, write=failing)
        store.open()
        store.write(b'{"a":1}\n')
        failing.failing = True
        failing.short = 5
        error = self.assertRaises(OSError, store.write, b'{"b":2}\n{"c":3}\n')
        self.assertEqual(error.errno, errno.ENOSPC)
        path = os.path.join(self.directory, segment_name(1_000))
        self.assertEqual(read(path), b'{"a":1}\n')

    def test_retry_after_failed_write_has_no_duplicate(self) -> None:
        """Retrying a batch after a failed write stores it exactly once, after the earlier data."""
        failing = FailingWrite()
        store = SegmentStore(self.directory, 1 << 20, clock_ns=lambda: 1_000, write=failing)
        store.open()
        store.write(b'{"a":1}\n')
        failing.failing = True
        failing.short = 5
        self.assertRaises(OSError, store.write, b'{"b":2}\n{"c":3}\n')
        failing.failing = False
        store.write(b'{"b":2}\n{"c":3}\n')
        store.close()
        self.assertEqual(list_segments(self.directory), [segment_name(1_000)])
        self.assertEqual(
            read(os.path.join(self.directory, segment_name(1_000))), b'{"a":1}\n{"b":2}\n{"c":3}\n'
        )

    def test_failed_first_write_leaves_an_empty_segment(self) -> None:
        """A failure on the first batch of a new segment leaves it empty; the retry fills it once."""
        failing = FailingWrite()
        failing.failing = True
        failing.short = 3
        store = SegmentStore(self.directory, 1 << 20, clock_ns=lambda: 1_000, write=failing)
        store.open()
        self.assertRaises(OSError, store.write, b'{"a":1}\n')
        path = os.path.join(self.directory, segment_name(1_000))
        self.assertEqual(read(path), b"")
        failing.failing = False
        store.write(b'{"a":1}\n')
        store.close()
        self.assertEqual(read(path), b'{"a":1}\n')

    def test_failed_write_does_not_count_towards_rotation(self) -> None:
        """The bytes of a failed write are not counted: rotation still happens at `segment_bytes` of data."""
        failing = FailingWrite()
        store = SegmentStore(self.directory, 10, clock_ns=ticking_clock(1_000, 2_000), write=failing)
        store.open()
        store.write(b"1234\n")
        failing.failing = True
        failing.short = 4
        self.assertRaises(OSError, store.write, b"abcd\n")
        failing.failing = False
        self.assertTrue(store.write(b"abcd\n"))
        self.assertEqual(list_segments(self.directory), [segment_name(1_000)])
        self.assertEqual(read(os.path.join(self.directory, segment_name(1_000))), b"1234\nabcd\n")

    def test_sync_and_close_without_a_segment(self) -> None:
        """`sync` and `close` with no active segment do nothing and raise nothing."""
        store = SegmentStore(self.directory, 1024)
        store.open()
        store.sync()
        store.close()
        self.assertEqual(list_segments(self.directory), [])


class SegmentAgeTests(SynchronousTestCase):
    """``--segment-age``: the active segment closes once that old, however small."""

    def setUp(self) -> None:
        self.directory = temp_path(self)
        self.now = 1_000 * 10**9
        self.store = SegmentStore(self.directory, 1 << 20, clock_ns=lambda: self.now, segment_age=60.0)
        self.store.open()

    def test_expired_at_the_age_and_not_before(self) -> None:
        """No active segment: not expired.  Opened at t: not expired at t + 59.999 s, expired at t + 60 s;
        `close_expired` then closes it, and the next write opens a new segment."""
        self.assertFalse(self.store.expired())
        self.assertFalse(self.store.close_expired())
        self.store.write(b"a\n")
        first = self.store.active_path
        self.now += 60 * 10**9 - 1
        self.assertFalse(self.store.expired())
        self.assertFalse(self.store.close_expired())
        self.now += 1
        self.assertTrue(self.store.expired())
        self.assertTrue(self.store.close_expired())
        self.assertEqual(self.store.last_closed, (first, 2))
        self.assertIsNone(self.store.active_path)
        self.assertFalse(self.store.expired())
        self.store.write(b"b\n")
        self.assertNotEqual(self.store.active_path, first)
        self.assertEqual(len(list_segments(self.directory)), 2)

    def test_a_write_past_the_age_closes_the_segment(self) -> None:
        """A busy writer: the write that finds its segment past the age goes in, then the segment closes
        (the write says it rotated), as at `segment_bytes`."""
        self.assertFalse(self.store.write(b"a\n"))
        self.now += 60 * 10**9
        self.assertTrue(self.store.write(b"b\n"))
        self.assertIsNone(self.store.active_path)
        [only] = list_segments(self.directory)
        self.assertEqual(read(os.path.join(self.directory, only)), b"a\nb\n")

    def test_no_age_limit(self) -> None:
        """segment_age 0: a segment never expires."""
        store = SegmentStore(temp_path(self), 1 << 20, clock_ns=lambda: self.now)
        store.open()
        store.write(b"a\n")
        self.now += 10**18
        self.assertFalse(store.expired())
