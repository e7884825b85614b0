"""Tests for `ingest.reader`: real segment files in a temporary directory (see `tests.tempdir`)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
from typing import Any

import ujson
from twisted.trial.unittest import SynchronousTestCase

from ingest.reader import MAX_LINE, Query, Skipped, main, parse_time, read_samples
from ingest.sample import MAX_NAME, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS, MIN_NS, Sample, encode
from ingest.storage import segment_name
from tests.tempdir import temp_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

N = 1_795_845_600_000_000_000
"""2026-11-28T06:00:00Z in nanoseconds."""


def stored(name: str, value: float, timestamp: int, **tags: str) -> dict[str, Any]:
    return {"name": name, "value": value, "timestamp": timestamp, "tags": tags}


def lines_of(*samples: dict[str, Any]) -> bytes:
    """The storage form of `samples`, as the service writes it."""
    return encode([Sample(s["name"], s["value"], s["timestamp"], s["tags"]) for s in samples])


def make_dir(case: SynchronousTestCase) -> str:
    directory = temp_path(case)
    os.makedirs(directory)
    return directory


def write_segment(
    directory: str, start: int, data: bytes, gzipped: bool = False, worker: int | None = None
) -> str:
    path = os.path.join(directory, segment_name(start, worker))
    if gzipped:
        path += ".gz"
        with gzip.open(path, "wb") as segment:
            segment.write(data)
    else:
        with open(path, "wb") as segment:
            segment.write(data)
    return path


def collect(source: Any, query: Query | None = None, **options: Any) -> tuple[list[Any], list[Skipped]]:
    """The samples `read_samples` yields and the warnings it gives."""
    warnings: list[Skipped] = []
    samples = list(read_samples(source, query, warnings.append, **options))
    return samples, warnings


def names(samples: list[dict[str, Any]]) -> list[str]:
    return [sample["name"] for sample in samples]


class ParseTimeTests(SynchronousTestCase):
    def test_iso_with_z(self) -> None:
        """An ISO 8601 time with ``Z`` is UTC."""
        self.assertEqual(parse_time("2026-11-28T06:00:00Z"), N)

    def test_iso_with_offset(self) -> None:
        """An offset is honoured: 07:00 at +01:00 is 06:00 UTC."""
        self.assertEqual(parse_time("2026-11-28T07:00:00+01:00"), N)
        self.assertEqual(parse_time("2026-11-28T05:00:00-01:00"), N)

    def test_naive_time_and_date_alone_are_utc(self) -> None:
        """A time without an offset, and a date alone, are read as UTC."""
        self.assertEqual(parse_time("2026-11-28T06:00:00"), N)
        self.assertEqual(parse_time("2026-11-28"), N - 6 * 3600 * 1_000_000_000)

    def test_iso_fraction_keeps_nanoseconds(self) -> None:
        """Fraction digits are kept to the nanosecond, beyond what `datetime` holds."""
        self.assertEqual(parse_time("2026-11-28T06:00:00.000000001Z"), N + 1)
        self.assertEqual(parse_time("2026-11-28T05:59:59.999999999Z"), N - 1)
        self.assertEqual(parse_time("2026-11-28T07:00:00.5+01:00"), N + 500_000_000)

    def test_unix_seconds(self) -> None:
        """A bare number is Unix seconds, integer or fraction, exact to the nanosecond."""
        self.assertEqual(parse_time("1795845600"), N)
        self.assertEqual(parse_time("1795845600.25"), N + 250_000_000)
        self.assertEqual(parse_time("1795845600.000000001"), N + 1)
        self.assertEqual(parse_time("1795845600."), N)
        self.assertEqual(parse_time(".5"), 500_000_000)
        self.assertEqual(parse_time("0"), 0)

    def test_negative_unix_seconds(self) -> None:
        """Before 1970, Unix seconds are negative (ingest stores timestamps back to 1677); past nine
        fraction digits they round up too, towards zero."""
        self.assertEqual(parse_time("-1.5"), -1_500_000_000)
        self.assertEqual(parse_time("-86400"), -86_400_000_000_000)
        self.assertEqual(parse_time("-.5"), -500_000_000)
        self.assertEqual(parse_time("-1.0000000019"), -1_000_000_001)
        self.assertEqual(parse_time("-9223372036.854775806"), -9_223_372_036_854_775_806)
        self.assertEqual(parse_time("-1"), parse_time("1969-12-31T23:59:59Z"))

    def test_digits_past_the_nanosecond_round_up(self) -> None:
        """Past nine fraction digits the time rounds up, which keeps both bounds exact on integer ns."""
        self.assertEqual(parse_time("1795845600.0000000001"), N + 1)
        self.assertEqual(parse_time("1795845600.0000000010"), N + 1)
        self.assertEqual(parse_time("1795845600.0000000000"), N)
        self.assertEqual(parse_time("2026-11-28T06:00:00.0000000001Z"), N + 1)

    def test_neither_form_raises_value_error(self) -> None:
        """Text that is neither ISO 8601 nor Unix seconds raises `ValueError` naming it."""
        bad = ["", ".", "-", "-.", "yesterday", "1e9", "--5", "+5", "2026-13-01", "0x10", "1795845600,5"]
        for text in bad:
            error = self.assertRaises(ValueError, parse_time, text)
            self.assertIn(repr(text.strip()), str(error))


class FilterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = make_dir(self)
        self.samples = [
            stored("cpu.load", 0.5, N - 1, host="a", dc="x"),
            stored("cpu.idle", 1, N, host="b", dc="x"),
            stored("CPU.load", 2, N + 1, host="a", dc="y"),
            stored("mem.used", 3, N, host="a", dc="x", note="k=v"),
            stored("xcpu.load", 4, N + 1, host="a", empty=""),
        ]
        write_segment(self.directory, 1_000, lines_of(*self.samples))

    def select(self, **query: Any) -> list[str]:
        samples, warnings = collect(self.directory, Query(**query))
        self.assertEqual(warnings, [])
        return names(samples)

    def test_no_filter_selects_everything_in_stored_order(self) -> None:
        """Without a filter every sample comes back, as stored and in the stored order."""
        samples, warnings = collect(self.directory)
        self.assertEqual(samples, self.samples)
        self.assertEqual(warnings, [])

    def test_samples_have_the_four_keys_in_order(self) -> None:
        """Each sample is a dict with exactly name, value, timestamp and tags, in that order."""
        samples, _ = collect(self.directory)
        for sample in samples:
            self.assertEqual(list(sample), ["name", "value", "timestamp", "tags"])

    def test_name_glob(self) -> None:
        """The name glob matches the whole name, shell-style, and is case-sensitive."""
        self.assertEqual(self.select(name="cpu.*"), ["cpu.load", "cpu.idle"])
        self.assertEqual(self.select(name="*cpu.load"), ["cpu.load", "xcpu.load"])
        self.assertEqual(self.select(name="CPU.*"), ["CPU.load"])
        self.assertEqual(self.select(name="cpu.????"), ["cpu.load", "cpu.idle"])
        self.assertEqual(self.select(name="[cm]*"), ["cpu.load", "cpu.idle", "mem.used"])
        self.assertEqual(self.select(name="cpu"), [])
        self.assertEqual(self.select(name="cpu.load"), ["cpu.load"])

    def test_since_is_inclusive_at_n_and_n_plus_minus_1(self) -> None:
        """`since` keeps samples at or after it: at N-1, N and N+1."""
        self.assertEqual(self.select(since_ns=N - 1), names(self.samples))
        self.assertEqual(self.select(since_ns=N), ["cpu.idle", "CPU.load", "mem.used", "xcpu.load"])
        self.assertEqual(self.select(since_ns=N + 1), ["CPU.load", "xcpu.load"])
        self.assertEqual(self.select(since_ns=N + 2), [])

    def test_until_is_exclusive_at_n_and_n_plus_minus_1(self) -> None:
        """`until` keeps samples strictly before it: at N-1, N and N+1."""
        self.assertEqual(self.select(until_ns=N - 1), [])
        self.assertEqual(self.select(until_ns=N), ["cpu.load"])
        self.assertEqual(self.select(until_ns=N + 1), ["cpu.load", "cpu.idle", "mem.used"])
        self.assertEqual(self.select(until_ns=N + 2), names(self.samples))

    def test_since_and_until_together(self) -> None:
        """A range [N, N+1) holds exactly the samples at N; an empty range holds none."""
        self.assertEqual(self.select(since_ns=N, until_ns=N + 1), ["cpu.idle", "mem.used"])
        self.assertEqual(self.select(since_ns=N, until_ns=N), [])

    def test_one_tag(self) -> None:
        """A tag selects the samples that carry it with that value."""
        self.assertEqual(self.select(tags=(("host", "b"),)), ["cpu.idle"])
        self.assertEqual(self.select(tags=(("dc", "y"),)), ["CPU.load"])
        self.assertEqual(self.select(tags=(("host", "c"),)), [])
        self.assertEqual(self.select(tags=(("nokey", "a"),)), [])

    def test_tag_values_empty_or_with_equals_sign(self) -> None:
        """An empty tag value and a value holding ``=`` are matched exactly."""
        self.assertEqual(self.select(tags=(("empty", ""),)), ["xcpu.load"])
        self.assertEqual(self.select(tags=(("note", "k=v"),)), ["mem.used"])

    def test_several_tags_must_all_match(self) -> None:
        """With several tags, a sample must carry every one of them."""
        self.assertEqual(self.select(tags=(("host", "a"), ("dc", "x"))), ["cpu.load", "mem.used"])
        self.assertEqual(self.select(tags=(("host", "a"), ("dc", "y"))), ["CPU.load"])
        self.assertEqual(self.select(tags=(("host", "b"), ("dc", "y"))), [])

    def test_filters_combined(self) -> None:
        """Name, range and tags together select what each would alone, intersected."""
        self.assertEqual(
            self.select(name="*.load", since_ns=N - 1, until_ns=N + 2, tags=(("host", "a"),)),
            ["cpu.load", "CPU.load", "xcpu.load"],
        )
        self.assertEqual(
            self.select(name="*.load", since_ns=N, until_ns=N + 2, tags=(("host", "a"), ("dc", "y"))),
            ["CPU.load"],
        )
        self.assertEqual(self.select(name="cpu.*", since_ns=N + 1), [])


class SegmentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = make_dir(self)

    def test_gzipped_and_plain_segments_interleave_in_time_order(self) -> None:
        """Plain and gzipped segments are read together, ordered by the start time in their names."""
        write_segment(self.directory, 4_000, lines_of(stored("d", 4, 4)), gzipped=True)
        write_segment(self.directory, 3_000, lines_of(stored("c", 3, 3)))
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)))
        write_segment(self.directory, 2_000, lines_of(stored("b", 2, 2), stored("b2", 2, 2)), gzipped=True)
        write_segment(self.directory, 10_000, lines_of(stored("e", 5, 5)))
        samples, warnings = collect(self.directory)
        self.assertEqual(names(samples), ["a", "b", "b2", "c", "d", "e"])
        self.assertEqual(warnings, [])

    def test_segment_both_plain_and_gzipped_is_read_once(self) -> None:
        """While gzip is still writing a ``.gz``, only the plain segment is read: no duplicates."""
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1), stored("b", 2, 2)))
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1))[:5], gzipped=True)
        samples, warnings = collect(self.directory)
        self.assertEqual(names(samples), ["a", "b"])
        self.assertEqual(warnings, [])

    def test_segment_gzipped_after_listing_is_read_from_the_gz(self) -> None:
        """A plain segment gzipped between the listing and its reading is read from its ``.gz``."""
        data = lines_of(stored("a", 1, 1), stored("b", 2, 2))
        plain = write_segment(self.directory, 1_000, data)
        warnings: list[Skipped] = []
        samples = read_samples(self.directory, warn=warnings.append)
        write_segment(self.directory, 1_000, data, gzipped=True)
        os.remove(plain)
        self.assertEqual(names(list(samples)), ["a", "b"])
        self.assertEqual(warnings, [])

    def test_segment_deleted_after_listing_is_passed_over(self) -> None:
        """A segment retention deleted between the listing and its reading (neither plain nor gzipped is
        there) is passed over without a warning, so ``ingest-read`` does not fail; the rest is read."""
        first = write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)))
        write_segment(self.directory, 2_000, lines_of(stored("b", 2, 2)))
        warnings: list[Skipped] = []
        samples = read_samples(self.directory, warn=warnings.append)
        os.remove(first)
        self.assertEqual(names(list(samples)), ["b"])
        self.assertEqual(warnings, [])

    def test_segment_deleted_while_open_is_read_to_its_end(self) -> None:
        """A segment deleted while the reader has it open is still read whole (Linux keeps a deleted file
        until its last descriptor closes)."""
        first = write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1), stored("b", 2, 2)))
        write_segment(self.directory, 2_000, lines_of(stored("c", 3, 3)))
        warnings: list[Skipped] = []
        samples = read_samples(self.directory, warn=warnings.append)
        self.assertEqual(next(samples)["name"], "a")
        os.remove(first)
        self.assertEqual(names(list(samples)), ["b", "c"])
        self.assertEqual(warnings, [])

    def test_every_workers_segments_are_read_in_time_order(self) -> None:
        """The segments of every worker and of the single process, plain or gzipped, by start time."""
        write_segment(self.directory, 4_000, lines_of(stored("d", 4, 4)), worker=2, gzipped=True)
        write_segment(self.directory, 3_000, lines_of(stored("c", 3, 3)), worker=1)
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)))
        write_segment(self.directory, 2_000, lines_of(stored("b", 2, 2), stored("b2", 2, 2)), worker=2)
        write_segment(self.directory, 3_000, lines_of(stored("c2", 3, 3)), worker=2)
        write_segment(self.directory, 10_000, lines_of(stored("e", 5, 5)), worker=1, gzipped=True)
        samples, warnings = collect(self.directory)
        self.assertEqual(names(samples), ["a", "b", "b2", "c", "c2", "d", "e"])
        self.assertEqual(warnings, [])

    def test_worker_segment_both_plain_and_gzipped_is_read_once(self) -> None:
        """A worker's segment that gzip is still writing is read once, from the plain file."""
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1), stored("b", 2, 2)), worker=3)
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1))[:5], worker=3, gzipped=True)
        samples, warnings = collect(self.directory)
        self.assertEqual(names(samples), ["a", "b"])
        self.assertEqual(warnings, [])

    def test_torn_last_line_is_skipped_with_a_warning(self) -> None:
        """An incomplete last line is skipped and named (file and line) in a warning; the rest is read."""
        torn = write_segment(self.directory, 2_000, lines_of(stored("b", 2, 2)) + b'{"name":"c","val')
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)))
        samples, warnings = collect(self.directory)
        self.assertEqual(names(samples), ["a", "b"])
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0].path, warnings[0].line), (torn, 2))
        self.assertIn(os.path.basename(torn) + ":2: skipped an incomplete last line", str(warnings[0]))

    def test_last_line_without_newline_is_skipped_even_when_it_decodes(self) -> None:
        """A last line missing only its newline is skipped, as the service's start-up repair would cut it."""
        data = lines_of(stored("a", 1, 1), stored("b", 2, 2))[:-1]
        path = write_segment(self.directory, 1_000, data)
        samples, warnings = collect(self.directory)
        self.assertEqual(names(samples), ["a"])
        self.assertEqual(
            warnings, [Skipped(path, 2, "skipped an incomplete last line (being written, or torn)")]
        )

    def test_undecodable_and_foreign_lines_are_skipped(self) -> None:
        """Lines that are not JSON, or not stored samples, are skipped with warnings; the rest is read."""
        bad = [
            b"{not json",
            b"\xff\xfe",
            b"",
            b"[1, 2]",
            b'{"name": "x", "value": 1, "timestamp": 1.5, "tags": {}}',
            b'{"name": 5, "value": 1, "timestamp": 1, "tags": {}}',
            b'{"name": "x", "timestamp": 1, "tags": {}}',
            b'{"name": "x", "value": 1, "timestamp": 1, "tags": []}',
            b'{"name": "x", "value": 1, "timestamp": true, "tags": {}}',
        ]
        data = lines_of(stored("a", 1, 1)) + b"\n".join(bad) + b"\n" + lines_of(stored("b", 2, 2))
        path = write_segment(self.directory, 1_000, data)
        samples, warnings = collect(self.directory)
        self.assertEqual(names(samples), ["a", "b"])
        self.assertEqual([(w.path, w.line) for w in warnings], [(path, 2 + i) for i in range(len(bad))])

    def test_extra_keys_are_dropped(self) -> None:
        """A key the service never writes is left out of the sample."""
        write_segment(self.directory, 1_000, b'{"tags":{},"extra":1,"timestamp":1,"value":2,"name":"a"}\n')
        samples, warnings = collect(self.directory)
        self.assertEqual((samples, warnings), ([stored("a", 2, 1)], []))
        self.assertEqual(list(samples[0]), ["name", "value", "timestamp", "tags"])

    def test_line_of_max_line_bytes_is_read_and_one_more_is_skipped(self) -> None:
        """A line of exactly `max_line` bytes (newline included) is read; one byte more is skipped whole."""
        short = lines_of(stored("a", 1, 1, pad=""))
        limit = len(short) + 100
        exact = lines_of(stored("b", 1, 1, pad="x" * 100))
        over = lines_of(stored("c", 1, 1, pad="x" * 101))
        self.assertEqual((len(exact), len(over)), (limit, limit + 1))
        path = write_segment(self.directory, 1_000, exact + over + short + over)
        samples, warnings = collect(self.directory, max_line=limit)
        self.assertEqual(names(samples), ["b", "a"])
        reason = f"skipped a line longer than {limit} bytes"
        self.assertEqual(warnings, [Skipped(path, 2, reason), Skipped(path, 4, reason)])

    def test_torn_line_longer_than_max_line(self) -> None:
        """A torn last line longer than `max_line` is skipped with a warning, read in pieces."""
        path = write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)) + b"x" * 1000)
        samples, warnings = collect(self.directory, max_line=64)
        self.assertEqual(names(samples), ["a"])
        self.assertEqual(warnings, [Skipped(path, 2, "skipped a line longer than 64 bytes")])

    def test_default_max_line_holds_the_longest_sample(self) -> None:
        """`MAX_LINE` is above the longest line the service can write (`MAX_TAGS` tags, escaped worst
        case: ujson writes a character outside the BMP as 12 bytes)."""
        emoji = "\U0001f600"
        tags = {f"{i:03d}" + emoji * (MAX_TAG_KEY - 3): emoji * MAX_TAG_VALUE for i in range(MAX_TAGS)}
        longest = lines_of(stored(emoji * MAX_NAME, -1.2345678901234567e-300, MIN_NS, **tags))
        self.assertLess(len(longest), MAX_LINE)

    def test_corrupt_gzip_segment_is_skipped_and_the_next_is_read(self) -> None:
        """A gzip segment cut short gives its lines up to the cut, then a warning; later segments follow."""
        data = lines_of(*[stored(f"a{i}", i, i) for i in range(2000)])
        compressed = gzip.compress(data)
        path = os.path.join(self.directory, segment_name(1_000) + ".gz")
        with open(path, "wb") as segment:
            segment.write(compressed[: len(compressed) // 2])
        write_segment(self.directory, 2_000, lines_of(stored("b", 1, 1)))
        samples, warnings = collect(self.directory)
        self.assertGreater(len(samples), 100)
        self.assertEqual(names(samples)[-1], "b")
        self.assertEqual(names(samples)[:-1], [f"a{i}" for i in range(len(samples) - 1)])
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0].path, path)
        self.assertIsNone(warnings[0].line)

    def test_not_gzip_data_in_a_gz_name(self) -> None:
        """A ``.gz`` segment that is not gzip data is skipped with a warning, never an exception."""
        path = write_segment(self.directory, 1_000, b"")
        os.rename(path, path + ".gz")
        with open(path + ".gz", "wb") as segment:
            segment.write(lines_of(stored("a", 1, 1)))
        samples, warnings = collect(self.directory)
        self.assertEqual(samples, [])
        self.assertEqual([(w.path, w.line) for w in warnings], [(path + ".gz", None)])

    def test_empty_directory(self) -> None:
        """An empty data directory gives no samples and no warnings."""
        self.assertEqual(collect(self.directory), ([], []))

    def test_empty_segment(self) -> None:
        """A segment just opened (empty) gives no samples and no warnings."""
        write_segment(self.directory, 1_000, b"")
        self.assertEqual(collect(self.directory), ([], []))

    def test_foreign_files_are_ignored(self) -> None:
        """Files that are not segments are not read, however much they look like one."""
        line = lines_of(stored("foreign", 1, 1))
        for name in [
            "notes.txt",
            "segment-9.ndjson",
            "segment-9.ndjson.gz",
            segment_name(2_000) + ".tmp",
            segment_name(3_000) + ".gz.partial",
            segment_name(4_000)[:-7] + ".json.gz",
            "x" + segment_name(5_000),
        ]:
            with open(os.path.join(self.directory, name), "wb") as foreign:
                foreign.write(line)
        os.makedirs(os.path.join(self.directory, "sub"))
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)))
        samples, warnings = collect(self.directory)
        self.assertEqual(names(samples), ["a"])
        self.assertEqual(warnings, [])

    def test_paths_are_read_in_the_order_given(self) -> None:
        """Given paths rather than a directory, the reader reads them in the order given, gzip by name."""
        first = write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)))
        second = write_segment(self.directory, 2_000, lines_of(stored("b", 2, 2)), gzipped=True)
        self.assertEqual(names(collect([second, first])[0]), ["b", "a"])

    def test_missing_file_among_paths_is_a_warning(self) -> None:
        """A path that cannot be opened is skipped with a warning for the whole file."""
        missing = os.path.join(self.directory, segment_name(9_000))
        present = write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)))
        samples, warnings = collect([missing, present])
        self.assertEqual(names(samples), ["a"])
        self.assertEqual([(w.path, w.line) for w in warnings], [(missing, None)])

    def test_missing_directory_raises_at_once(self) -> None:
        """A data directory that does not exist raises `OSError` when `read_samples` is called."""
        self.assertRaises(OSError, read_samples, os.path.join(self.directory, "absent"))

    def test_reading_is_lazy(self) -> None:
        """Samples are read as they are asked for: nothing past the first sample is read for it."""
        present = write_segment(self.directory, 1_000, lines_of(stored("a", 1, 1)))
        missing = os.path.join(self.directory, segment_name(9_000))
        warnings: list[Skipped] = []
        samples = read_samples([present, missing], warn=warnings.append)
        self.assertEqual(next(samples)["name"], "a")
        self.assertEqual(warnings, [])
        self.assertEqual(list(samples), [])
        self.assertEqual(len(warnings), 1)


class BrokenPipe(io.StringIO):
    """A stdout whose reader has gone, as after ``ingest-read | head -1``."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


class MainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = make_dir(self)
        self.samples = [
            stored("cpu.load", 0.42, N - 1, host="a"),
            stored("cpu.load", 0.1, N, host="b"),
            stored("mem.used", 12345678901234567890, N + 1, host="a", dc="x"),
            stored("path/with/slash", -1.5e-7, N + 2),
        ]
        self.data = lines_of(*self.samples)
        write_segment(self.directory, 1_000, self.data)

    def run_main(self, *argv: str, stdout: io.StringIO | None = None) -> tuple[int, str, str]:
        out = io.StringIO() if stdout is None else stdout
        err = io.StringIO()
        status = main(["--data-dir", self.directory, *argv], out, err)
        return status, out.getvalue(), err.getvalue()

    def test_prints_stored_lines_unchanged(self) -> None:
        """Without filters, main prints every stored line as the service wrote it, and exits 0."""
        self.assertEqual(self.run_main(), (0, self.data.decode(), ""))

    def test_name_option(self) -> None:
        """--name selects by glob."""
        status, out, _ = self.run_main("--name", "cpu.*")
        self.assertEqual(status, 0)
        self.assertEqual([ujson.loads(line) for line in out.splitlines()], self.samples[:2])

    def test_since_and_until_in_iso_and_unix_forms(self) -> None:
        """ISO 8601 (Z, offset, fraction) and Unix seconds give the same, exact bounds."""
        for since, until in [
            ("2026-11-28T06:00:00Z", "2026-11-28T06:00:00.000000002Z"),
            ("2026-11-28T07:00:00+01:00", "1795845600.000000002"),
            ("1795845600", "2026-11-28T06:00:00.000000002"),
            ("1795845600.0", "1795845600.0000000011"),
        ]:
            status, out, err = self.run_main("--since", since, "--until", until)
            self.assertEqual((status, err), (0, ""), (since, until))
            timestamps = [ujson.loads(line)["timestamp"] for line in out.splitlines()]
            self.assertEqual(timestamps, [N, N + 1], (since, until))

    def test_tag_options_repeat_and_all_match(self) -> None:
        """--tag may repeat; every tag given must match."""
        _, out, _ = self.run_main("--tag", "host=a")
        self.assertEqual(len(out.splitlines()), 2)
        _, out, _ = self.run_main("--tag", "host=a", "--tag", "dc=x")
        self.assertEqual([ujson.loads(line) for line in out.splitlines()], [self.samples[2]])

    def test_all_options_combined(self) -> None:
        """All options together select the intersection."""
        status, out, _ = self.run_main(
            "--name", "cpu.*", "--since", "1795845600", "--until", "2026-11-28T07:00:00Z", "--tag", "host=b"
        )
        self.assertEqual((status, [ujson.loads(line) for line in out.splitlines()]), (0, [self.samples[1]]))

    def test_torn_line_warns_on_stderr_and_exits_0(self) -> None:
        """A torn last line gives a warning naming the file on stderr, no traceback, and exit status 0."""
        path = write_segment(self.directory, 2_000, b'{"name":"torn"')
        status, out, err = self.run_main()
        self.assertEqual((status, out), (0, self.data.decode()))
        self.assertEqual(
            err, f"ingest-read: warning: {path}:1: skipped an incomplete last line (being written, or torn)\n"
        )

    def test_unreadable_segment_exits_1_after_printing_the_rest(self) -> None:
        """A segment that cannot be read is a warning, the others are printed, and the exit status is 1."""
        path = os.path.join(self.directory, segment_name(500) + ".gz")
        with open(path, "wb") as segment:
            segment.write(b"not gzip\n")
        status, out, err = self.run_main()
        self.assertEqual((status, out), (1, self.data.decode()))
        self.assertTrue(err.startswith(f"ingest-read: warning: {path}: skipped"), err)
        self.assertNotIn("Traceback", err)

    def test_missing_data_directory_exits_1(self) -> None:
        """A missing data directory is a one-line error and exit status 1."""
        absent = os.path.join(self.directory, "absent")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["--data-dir", absent], out, err), 1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(
            err.getvalue(), f"ingest-read: no data directory at {absent} (--data-dir names another)\n"
        )

    def test_data_directory_that_is_a_file_exits_1(self) -> None:
        """A data directory that is a file is an error and exit status 1."""
        path = os.path.join(self.directory, segment_name(1_000))
        status, out, err = self.run_main("--data-dir", path)
        self.assertEqual((status, out), (1, ""))
        self.assertIn("cannot list the data directory", err)

    def test_bad_arguments_exit_2_with_usage(self) -> None:
        """Bad arguments give the usage and an error on stderr and exit status 2, printing nothing."""
        for argv in [
            ["--since", "yesterday"],
            ["--until", "1e9"],
            ["--tag", "host"],
            ["--tag", "=a"],
            ["--since", "2026-11-28T07:00:00Z", "--until", "2026-11-28T06:00:00Z"],
            ["--frobnicate"],
            ["positional"],
        ]:
            status, out, err = self.run_main(*argv)
            self.assertEqual((status, out), (2, ""), argv)
            self.assertTrue(err.startswith("usage: ingest-read"), err)
            self.assertIn("ingest-read: error: ", err)

    def test_help_goes_to_stdout_and_says_naive_times_are_utc(self) -> None:
        """--help prints to the given stdout, exits 0, and says that a time without an offset is UTC."""
        status, out, err = self.run_main("--help")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("usage: ingest-read", out)
        self.assertIn("a time without an offset, and\n  a date alone, are UTC", out)

    def test_closed_stdout_exits_0_quietly(self) -> None:
        """When stdout is closed under it, main stops with exit status 0 and writes nothing to stderr."""
        self.assertEqual(self.run_main(stdout=BrokenPipe()), (0, "", ""))


class CommandTests(SynchronousTestCase):
    """The command as a user runs it: the installed console script if it is on PATH, else ``-m``."""

    def setUp(self) -> None:
        self.cwd = make_dir(self)
        self.directory = os.path.join(self.cwd, "data")
        os.makedirs(self.directory)
        script = shutil.which("ingest-read")
        self.command = [script] if script else [sys.executable, "-m", "ingest.reader"]
        self.env = dict(os.environ)
        # The working tree's package, even where an older one is installed.
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, self.env.get("PYTHONPATH")]))

    def test_command_reads_default_data_directory(self) -> None:
        """The command reads ./data by default, prints NDJSON, warns about a torn line and exits 0."""
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, N)), gzipped=True)
        torn = write_segment(self.directory, 2_000, lines_of(stored("b", 2, N + 1)) + b'{"na')
        result = subprocess.run(
            [*self.command, "--since", "2026-11-28T06:00:00Z"],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, lines_of(stored("a", 1, N), stored("b", 2, N + 1)))
        expected = f"ingest-read: warning: ./data/{os.path.basename(torn)}:2: skipped an incomplete last line"
        self.assertIn(expected.encode(), result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)

    def test_command_reads_every_worker(self) -> None:
        """``ingest-read`` prints the samples of every worker's segments, in the order of their names."""
        write_segment(self.directory, 2_000, lines_of(stored("b", 2, N + 1)), worker=2)
        write_segment(self.directory, 1_000, lines_of(stored("a", 1, N)), worker=1, gzipped=True)
        write_segment(self.directory, 3_000, lines_of(stored("c", 3, N + 2)), worker=1)
        result = subprocess.run(self.command, cwd=self.cwd, env=self.env, capture_output=True, timeout=60)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertEqual(
            result.stdout, lines_of(stored("a", 1, N), stored("b", 2, N + 1), stored("c", 3, N + 2))
        )

    def test_command_exits_0_when_the_reader_of_its_output_goes(self) -> None:
        """Like ``ingest-read | head -1``: after the pipe closes it exits 0 with nothing on stderr."""
        many = [stored(f"n{i}", i, N + i, host="h" * 50) for i in range(20_000)]
        write_segment(self.directory, 1_000, lines_of(*many))
        process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read()
        process.stderr.close()
        self.assertEqual(process.wait(timeout=60), 0, stderr)
        self.assertEqual(first, lines_of(many[0]))
        self.assertEqual(stderr, b"")
