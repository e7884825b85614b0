"""Tests for `tests.segments`, the tests' one reader of stored samples."""

from __future__ import annotations

import gzip
import os

from twisted.trial.unittest import SynchronousTestCase

from tests.segments import read_segments
from tests.tempdir import temp_path


class ReadSegmentsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temp_path(self)
        os.makedirs(self.directory)

    def write(self, name: str, data: bytes) -> None:
        path = os.path.join(self.directory, name)
        with gzip.open(path, "wb") if name.endswith(".gz") else open(path, "wb") as segment:
            segment.write(data)

    def test_every_file_in_name_order(self) -> None:
        """Every file's lines, plain or gzipped, file by file in name order, each line a dict."""
        self.write("segment-0000000000000002000.ndjson.gz", b'{"name":"b"}\n')
        self.write("segment-0000000000000003000-w1.ndjson", b'{"name":"c"}\n{"name":"d"}\n')
        self.write("segment-0000000000000001000.ndjson", b'{"name":"a","tags":{"k":"v"}}\n')
        self.write("stray", b'{"name":"e"}\n')
        samples = read_segments(self.directory)
        self.assertEqual([s["name"] for s in samples], ["a", "b", "c", "d", "e"])
        self.assertEqual(samples[0]["tags"], {"k": "v"})

    def test_only_picks_files_by_name(self) -> None:
        """`only` chooses the files read."""
        self.write("segment-0000000000000001000-w1.ndjson", b'{"name":"one"}\n')
        self.write("segment-0000000000000001000-w2.ndjson", b'{"name":"two"}\n')
        samples = read_segments(self.directory, lambda name: name.endswith("-w2.ndjson"))
        self.assertEqual(samples, [{"name": "two"}])

    def test_no_directory_is_nothing_stored(self) -> None:
        """A data directory the service never made holds no samples."""
        self.assertEqual(read_segments(os.path.join(self.directory, "absent")), [])

    def test_a_torn_line_raises(self) -> None:
        """A line that is not JSON (a torn tail not yet repaired) raises ValueError."""
        self.write("segment-0000000000000001000.ndjson", b'{"name":"a"}\n{"na')
        self.assertRaises(ValueError, read_segments, self.directory)
