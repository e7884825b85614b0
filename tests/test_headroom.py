"""Disk headroom: `ingest.headroom.Headroom` on a `Clock` with a measure the test controls, seen through
the routes (`/health`, ingest, `/stats`, `/metrics`); `ingest.storage.disk_usage` on real files with a
fake ``statvfs``; ``--min-free``'s arithmetic."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ingest.config import min_free_bytes
from ingest.headroom import INTERVAL, Headroom
from ingest.storage import DiskUsage, disk_usage, segment_name
from tests.helpers import SAMPLE, Stack, get, parse_answers, post
from tests.tempdir import temp_path

GIB = 2**30


def run_now(function: Any, *args: Any) -> Deferred[Any]:
    return defer.maybeDeferred(function, *args)


class MinFreeTests(SynchronousTestCase):
    def test_auto_sizes_and_percentages(self) -> None:
        """auto is 1 GiB or 5%, whichever is smaller; sizes in SI and binary units; 0 is none."""
        self.assertEqual(min_free_bytes("auto", 100 * GIB), GIB)
        self.assertEqual(min_free_bytes("auto", 10 * GIB), GIB // 2)
        self.assertEqual(min_free_bytes("10%", 100 * GIB), 10 * GIB)
        self.assertEqual(min_free_bytes("2GiB", 0), 2 * GIB)
        self.assertEqual(min_free_bytes("500MB", 0), 500_000_000)
        self.assertEqual(min_free_bytes("1_000", 0), 1000)
        self.assertEqual(min_free_bytes("0", 100 * GIB), 0)
        for bad in ("x", "-1", "GiB", "101%", "5 parsecs"):
            self.assertRaises(ValueError, min_free_bytes, bad, GIB)


class FakeStatvfs:
    def __init__(self, free_blocks: int, blocks: int, size: int = 4096) -> None:
        self.f_bavail = free_blocks
        self.f_blocks = blocks
        self.f_frsize = size


class DiskUsageTests(SynchronousTestCase):
    def test_segments_and_file_system(self) -> None:
        """Every writer's segments, plain and gzipped, are counted with their sizes and their start times;
        other files are not; free and total bytes come from statvfs."""
        directory = temp_path(self)
        os.makedirs(directory)
        for name, size in (
            (segment_name(1_000), 10),
            (segment_name(2_000, worker=2), 20),
            (segment_name(500) + ".gz", 5),
            ("notes.txt", 1000),
        ):
            with open(os.path.join(directory, name), "wb") as file:
                file.write(b"x" * size)
        usage = disk_usage(directory, statvfs=lambda path: FakeStatvfs(10, 100))  # type: ignore[arg-type,return-value]
        self.assertEqual(usage, DiskUsage(35, 3, 40960, 409600, 500, 2_000))
        empty = temp_path(self)
        os.makedirs(empty)
        usage = disk_usage(empty, statvfs=lambda path: FakeStatvfs(1, 1))  # type: ignore[arg-type,return-value]
        self.assertEqual((usage.segments, usage.oldest_ns, usage.newest_ns), (0, None, None))


class HeadroomTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.free = 10 * GIB
        built: list[Headroom] = []

        def headroom(clock: Any) -> Headroom:
            built.append(Headroom(clock, run_now, self.measure, "1GiB"))
            return built[0]

        self.stack = Stack(inline=True, headroom=headroom)
        [self.headroom] = built
        self.headroom.start()

    def measure(self) -> DiskUsage:
        return DiskUsage(123, 2, self.free, 100 * GIB, 1_700_000_000 * 10**9, 1_700_000_060 * 10**9)

    def ask(self, request: bytes) -> Any:
        channel, transport = self.stack.connect()
        channel.dataReceived(request)
        self.stack.settle()
        return parse_answers(transport.value())[0]

    def test_below_min_free_refuses_then_recovers(self) -> None:
        """At --min-free exactly: healthy, samples taken.  One byte under it, at the next measure: /health
        503 naming it, ingest 503 ``disk space low`` with Retry-After and nothing buffered, counted under
        its reason.  Space back: healthy and taking samples at the next measure.

        (Before: nothing looked at the disk; writes went on until ENOSPC.)"""
        self.free = GIB
        self.stack.clock.advance(INTERVAL)
        self.assertEqual(self.ask(get(b"/health")).status, 200)
        self.assertEqual(self.ask(post(b"/metrics", SAMPLE)).status, 202)
        self.free = GIB - 1
        self.stack.clock.advance(INTERVAL)
        health = self.ask(get(b"/health"))
        self.assertEqual(health.status, 503)
        self.assertEqual(
            health.json()["reasons"], [f"disk space low: {GIB - 1} bytes free, under --min-free of {GIB}"]
        )
        refused = self.ask(post(b"/metrics", SAMPLE))
        self.assertEqual((refused.status, refused.json()["error"]), (503, "disk space low"))
        self.assertEqual(refused.headers[b"retry-after"], b"10")
        self.assertEqual(self.stack.buffer.depth, 1)
        self.assertEqual(self.stack.stats.samples_rejected["disk_space_low"], 1)
        self.free = 2 * GIB
        self.stack.clock.advance(INTERVAL)
        self.assertEqual(self.ask(get(b"/health")).status, 200)
        self.assertEqual(self.ask(post(b"/metrics", SAMPLE)).status, 202)

    def test_figures_in_health_stats_and_metrics(self) -> None:
        """The last measure is in /health (free, --min-free, segments' bytes), /stats (all of it, segment
        times in Unix seconds) and /metrics (gauges)."""
        from prometheus_client.parser import text_string_to_metric_families

        disk = self.ask(get(b"/health")).json()["disk"]
        self.assertEqual(disk, {"free_bytes": 10 * GIB, "min_free_bytes": GIB, "segment_bytes": 123})
        self.assertEqual(
            self.ask(get(b"/stats")).json()["disk"],
            {
                "segment_bytes": 123,
                "segments": 2,
                "free_bytes": 10 * GIB,
                "total_bytes": 100 * GIB,
                "min_free_bytes": GIB,
                "oldest_segment_seconds": 1_700_000_000,
                "newest_segment_seconds": 1_700_000_060,
            },
        )
        scrape = self.ask(get(b"/metrics")).body.decode()
        gauges = {
            family.name: family.samples[0].value
            for family in text_string_to_metric_families(scrape)
            if family.type == "gauge" and family.samples
        }
        self.assertEqual(gauges["ingest_disk_free_bytes"], 10 * GIB)
        self.assertEqual(gauges["ingest_disk_min_free_bytes"], GIB)
        self.assertEqual(gauges["ingest_segments_bytes"], 123)
        self.assertEqual(gauges["ingest_oldest_segment_timestamp_seconds"], 1_700_000_000)

    def test_a_failing_measure_keeps_the_last_and_is_logged_once(self) -> None:
        """A measure that raises is logged once per new error; the last good figures stay, and the
        next good measure replaces them."""
        good = self.headroom.usage

        def failing() -> DiskUsage:
            raise PermissionError(13, "Permission denied")

        self.headroom._measure = failing
        with capturedLogs() as events:
            self.stack.clock.advance(INTERVAL)
            self.stack.clock.advance(INTERVAL)
        self.assertEqual(len([e for e in events if "failed" in e.get("log_format", "")]), 1)
        self.assertIs(self.headroom.usage, good)
        self.headroom._measure = self.measure
        self.free = GIB // 2
        self.stack.clock.advance(INTERVAL)
        self.assertIsNotNone(self.headroom.problem())
