"""Tests for `ingest.workerstats` (one view of all workers) and its use in /stats, /metrics and /health.

The merge is pure: two snapshots in, one out.  The files are written and
read in a temporary directory; the publishing loop runs on a `Clock`; the
routes run on `ingest.tap.build_front` with a `Clock` and no disk.  The
whole thing through ``twistd --workers 2`` is in `tests.test_workers`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ingest.buffer import Buffer
from ingest.config import Settings
from ingest.exposition import Exposition
from ingest.stats import Stats
from ingest.tap import build_front
from ingest.workers import StatsPublisher
from ingest.workerstats import (
    WRITTEN_AT,
    merge,
    prepare_directory,
    read_snapshots,
    remove_snapshot,
    stats_directory,
    write_snapshot,
)
from tests.helpers import Stack
from tests.tempdir import temp_path

GAUGES = {"depth": 0, "high_mark": 0, "capacity": 100, "parse_queue": 0}


def worker_snapshot(worker: int, accepted: int, now: float = 10.0, **gauges: int) -> dict[str, Any]:
    """A worker's snapshot after `accepted` samples in one request, one 400 and one rejected sample."""
    stats = Stats(0.0, worker=worker)
    stats.samples_accepted = accepted
    stats.samples_rejected["invalid"] += worker  # a reason each worker has, differently
    stats.samples_rejected[f"only_in_{worker}"] += 1
    stats.responses["/metrics", 202] += 1
    stats.responses["/metrics", 400] += worker
    stats.latency.observe(0.002 * worker)
    stats.connections_open = worker
    stats.connections_total = 10 * worker
    return stats.snapshot(now, {**GAUGES, **gauges})


def stamped(snapshot: Mapping[str, Any], written_at: float) -> dict[str, Any]:
    """`snapshot` as `read_snapshots` gives it: with its write time."""
    return {**snapshot, WRITTEN_AT: written_at}


class MergeTests(SynchronousTestCase):
    def test_two_snapshots_make_one(self) -> None:
        """Counters, their labels, histograms and amounts are summed; the answering worker is named."""
        own = worker_snapshot(1, 5, depth=3, high_mark=7)
        other = worker_snapshot(2, 4, depth=2, high_mark=9)
        merged = merge(1, {1: stamped(own, 10.0), 2: stamped(other, 10.0)}, 10.0)
        self.assertEqual(merged["worker"], 1)
        self.assertEqual(merged["samples"]["accepted"], 9)
        self.assertEqual(merged["samples"]["rejected"], 5)
        self.assertEqual(
            merged["samples"]["rejected_by_reason"], {"invalid": 3, "only_in_1": 1, "only_in_2": 1}
        )
        self.assertEqual(merged["requests"]["total"], 5)
        self.assertEqual(merged["requests"]["by_status"], {"202": 2, "400": 3})
        self.assertEqual(merged["requests"]["by_route"], {"/metrics": {"202": 2, "400": 3}})
        latency = merged["requests"]["latency_seconds"]
        self.assertEqual(latency["count"], 2)
        self.assertAlmostEqual(latency["sum"], 0.006)
        self.assertEqual(latency["buckets"]["0.0025"], 1)
        self.assertEqual(latency["buckets"]["0.005"], 2)
        self.assertEqual(latency["buckets"]["+Inf"], 2)
        self.assertEqual(merged["connections"], {"open": 3, "total": 30, "refused": 0})
        self.assertEqual(merged["buffer"], {"depth": 5, "high_mark": 16, "capacity": 200})

    def test_each_workers_own_figures_are_kept(self) -> None:
        """``workers`` holds each worker's snapshot as it was, with how old it is."""
        own = worker_snapshot(2, 5, now=12.0)
        other = worker_snapshot(1, 4, now=11.5)
        merged = merge(2, {2: stamped(own, 1012.0), 1: stamped(other, 1011.5)}, 1012.0)
        self.assertEqual(list(merged["workers"]), ["1", "2"])
        self.assertEqual(merged["workers"]["2"], {**own, "age_seconds": 0.0})
        self.assertEqual(merged["workers"]["1"]["samples"], other["samples"])
        self.assertEqual(merged["workers"]["1"]["age_seconds"], 0.5)
        # The other's uptime counted on to now; the merged one is the oldest worker's.
        self.assertEqual(merged["workers"]["1"]["uptime_seconds"], 12.0)
        self.assertEqual(merged["uptime_seconds"], 12.0)

    def test_disk_is_the_answering_workers_and_the_sink_merges_by_kind(self) -> None:
        """Workers measure one directory: not summed; sink lag: bytes add, age is the worst."""
        own = {
            **worker_snapshot(1, 0),
            "disk": {"free_bytes": 100, "segment_bytes": 7},
            "sink": {"connected": True, "lag_bytes": 10, "lag_seconds": 0.5},
        }
        other = {
            **worker_snapshot(2, 0),
            "disk": {"free_bytes": 90, "segment_bytes": 6},
            "sink": {"connected": False, "lag_bytes": 5, "lag_seconds": 3.0},
        }
        merged = merge(1, {1: stamped(own, 10.0), 2: stamped(other, 10.0)}, 10.0)
        self.assertEqual(merged["disk"], {"free_bytes": 100, "segment_bytes": 7})
        self.assertEqual(merged["sink"], {"connected": False, "lag_bytes": 15, "lag_seconds": 3.0})

    def test_alone_is_itself(self) -> None:
        """With no other worker's file yet, the figures are the worker's own."""
        own = worker_snapshot(1, 5)
        merged = merge(1, {1: stamped(own, 10.0)}, 10.0)
        self.assertEqual({key: value for key, value in merged.items() if key != "workers"}, own)


class FilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = temp_path(self)
        self.directory = prepare_directory(self.data_dir, 4242, lambda pid: False)

    def test_written_snapshots_are_read_back_but_ones_own(self) -> None:
        """Each worker's file is read with its write time; the reader's own is skipped."""
        for worker in (1, 2, 3):
            write_snapshot(self.directory, worker, worker_snapshot(worker, worker), 100.0 + worker)
        found = read_snapshots(self.directory, skip=2)
        self.assertEqual(sorted(found), [1, 3])
        self.assertEqual(found[3], stamped(worker_snapshot(3, 3), 103.0))
        names = ["worker-1.json", "worker-2.json", "worker-3.json"]
        self.assertEqual(sorted(os.listdir(self.directory)), names)

    def test_a_write_replaces_the_last(self) -> None:
        write_snapshot(self.directory, 1, worker_snapshot(1, 1), 1.0)
        write_snapshot(self.directory, 1, worker_snapshot(1, 2), 2.0)
        self.assertEqual(read_snapshots(self.directory, skip=0)[1]["samples"]["accepted"], 2)

    def test_unreadable_files_are_passed_over(self) -> None:
        """A torn or foreign file, or a temporary one, is not a worker's figures; no directory gives none."""
        write_snapshot(self.directory, 1, worker_snapshot(1, 1), 1.0)
        for name, text in (
            ("worker-2.json", '{"samples": '),
            ("worker-3.json", "[1, 2]"),
            ("worker-4.json", json.dumps({"no": "time"})),
            ("worker-5.json.77.tmp", json.dumps(stamped(worker_snapshot(5, 1), 1.0))),
        ):
            with open(os.path.join(self.directory, name), "w", encoding="utf-8") as out:
                out.write(text)
        self.assertEqual(sorted(read_snapshots(self.directory, skip=0)), [1])
        self.assertEqual(read_snapshots(os.path.join(self.data_dir, "nowhere"), skip=0), {})

    def test_remove_forgets_a_worker(self) -> None:
        write_snapshot(self.directory, 1, worker_snapshot(1, 1), 1.0)
        remove_snapshot(self.directory, 1)
        remove_snapshot(self.directory, 1)  # already gone: nothing happens
        self.assertEqual(read_snapshots(self.directory, skip=0), {})

    def test_prepare_keeps_live_supervisors_and_empties_its_own(self) -> None:
        """A new supervisor starts empty and removes the directories of supervisors that are gone."""
        write_snapshot(self.directory, 1, worker_snapshot(1, 1), 1.0)
        for pid in (111, 222):
            os.makedirs(stats_directory(self.data_dir, pid))
        again = prepare_directory(self.data_dir, 4242, lambda pid: pid == 222)
        self.assertEqual(again, stats_directory(self.data_dir, 4242))
        self.assertEqual(os.listdir(again), [])
        self.assertEqual(sorted(os.listdir(os.path.dirname(again))), ["222", "4242"])


class ExpositionTests(SynchronousTestCase):
    def render(self) -> str:
        own = worker_snapshot(1, 5)
        merged = merge(1, {1: stamped(own, 10.0), 2: stamped(worker_snapshot(2, 4), 9.5)}, 10.0)
        return Exposition(lambda: merged).render().decode()

    def test_sums_unlabelled_and_each_worker_labelled(self) -> None:
        """The family keeps its name for the sum; ``ingest_worker_*{worker}`` holds each worker's part."""
        text = self.render()
        self.assertIn("\ningest_samples_accepted_total 9.0\n", text)
        self.assertIn('\ningest_worker_samples_accepted_total{worker="1"} 5.0\n', text)
        self.assertIn('\ningest_worker_samples_accepted_total{worker="2"} 4.0\n', text)
        self.assertIn('\ningest_worker_connections_open{worker="2"} 2.0\n', text)
        self.assertIn('\ningest_worker_buffer_capacity_samples{worker="1"} 100.0\n', text)
        self.assertIn("\ningest_buffer_capacity_samples 200.0\n", text)
        self.assertIn('\ningest_worker_figures_age_seconds{worker="1"} 0.0\n', text)
        self.assertIn('\ningest_worker_figures_age_seconds{worker="2"} 0.5\n', text)
        self.assertIn("\n# TYPE ingest_worker_samples_accepted_total counter\n", text)
        self.assertIn("\n# TYPE ingest_worker_connections_open gauge\n", text)
        self.assertIn("\ningest_worker_id 1.0\n", text)

    def test_labelled_families_and_histograms_are_sums_only(self) -> None:
        """Per route, status or reason, and histograms, are not repeated per worker; no series twice."""
        text = self.render()
        self.assertIn('\ningest_samples_rejected_total{reason="invalid"} 3.0\n', text)
        self.assertIn('\ningest_requests_total{route="/metrics",status="400"} 3.0\n', text)
        self.assertIn("\ningest_request_duration_seconds_count 2.0\n", text)
        self.assertNotIn("ingest_worker_samples_rejected", text)
        self.assertNotIn("ingest_worker_requests", text)
        self.assertNotIn("ingest_worker_request_duration", text)
        self.assertNotIn("ingest_worker_worker_id", text)
        series = [line.split(" ")[0] for line in text.splitlines() if not line.startswith("#")]
        self.assertEqual(len(series), len(set(series)))


class StatsPublisherTests(SynchronousTestCase):
    def test_writes_at_start_and_every_second(self) -> None:
        """The figures of the moment, with the clock's time, at start and then each interval."""
        clock = Clock()
        written: list[tuple[Mapping[str, Any], float]] = []
        count = iter(range(100))
        publisher = StatsPublisher(
            clock, 1, lambda: {"n": next(count)}, lambda s, now: written.append((s, now)), dict
        )
        publisher.start()
        clock.advance(1.0)
        clock.advance(1.0)
        publisher.stop()
        clock.advance(5.0)
        self.assertEqual(written, [({"n": 0}, 0.0), ({"n": 1}, 1.0), ({"n": 2}, 2.0)])

    def test_a_failed_write_is_logged_once_and_tried_again(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        failing = [True]
        written: list[float] = []

        def write(snapshot: Mapping[str, Any], now: float) -> None:
            if failing[0]:
                raise OSError(28, "No space left on device")
            written.append(now)

        publisher = StatsPublisher(clock, 1, dict, write, dict)
        publisher.start()
        clock.advance(1.0)
        clock.advance(1.0)
        failing[0] = False
        clock.advance(1.0)
        publisher.stop()
        texts = [event["log_format"] for event in events if "figures" in event.get("log_format", "")]
        self.assertEqual(
            texts,
            [
                "cannot write this worker's figures for the others: {error}",
                "this worker's figures are written again",
            ],
        )
        self.assertEqual(written, [3.0])

    def test_figures_are_the_last_published_own_included(self) -> None:
        """`figures`: the others' last ones as read, and this worker's last published, not its live ones."""
        clock = Clock()
        live = {"n": 1}
        publisher = StatsPublisher(clock, 1, lambda: dict(live), lambda s, now: None, lambda: {2: {"n": 9}})
        self.assertEqual(publisher.figures(), {2: {"n": 9}}, "nothing published yet")
        publisher.start()
        live["n"] = 2
        self.assertEqual(publisher.figures(), {1: {"n": 1, WRITTEN_AT: 0.0}, 2: {"n": 9}})
        clock.advance(1.0)
        self.assertEqual(publisher.figures()[1], {"n": 2, WRITTEN_AT: 1.0})
        publisher.stop()

    def test_the_sum_never_goes_back_between_workers(self) -> None:
        """Two workers sharing files, scrapes answered by each in turn: the total never goes back."""
        directory = prepare_directory(temp_path(self), 1, lambda pid: False)
        clock = Clock()
        accepted = {1: 0, 2: 0}
        publishers = {
            worker: StatsPublisher(
                clock,
                worker,
                lambda worker=worker: worker_snapshot(worker, accepted[worker]),
                lambda s, now, worker=worker: write_snapshot(directory, worker, s, now),
                lambda worker=worker: read_snapshots(directory, worker),
            )
            for worker in (1, 2)
        }
        publishers[1].start()
        clock.advance(0.5)
        publishers[2].start()  # out of step with worker 1
        totals = []
        for step in range(12):
            accepted[1] += 5
            accepted[2] += 3
            answering = 1 + step % 2
            totals.append(
                merge(answering, publishers[answering].figures(), clock.seconds())["samples"]["accepted"]
            )
            clock.advance(0.25)
        self.assertEqual(totals, sorted(totals))
        clock.advance(1.0)  # both publish again: the last figures
        self.assertEqual(merge(1, publishers[1].figures(), clock.seconds())["samples"]["accepted"], 96)


class RoutesTests(SynchronousTestCase):
    """/stats and /metrics of a worker merge the others' figures; /health stays the worker's own."""

    def api(self, worker: int | None, published: dict[int, dict[str, Any]]) -> Any:
        clock = Clock()
        clock.advance(100.0)
        stats = Stats(clock.seconds(), worker=worker)
        stats.samples_accepted = 3
        _, api, _ = build_front(
            Settings(threads=0, max_buffer=10),
            clock,
            None,
            stats,
            Buffer(10),
            lambda: None,
            worker_figures=lambda: published,
        )
        return api

    def test_a_worker_answers_for_all(self) -> None:
        """The sum of every worker's published figures; its own live ones until it has published."""
        published = {2: stamped(worker_snapshot(2, 4), 99.0)}
        api = self.api(1, published)
        self.assertEqual(api.snapshot()["samples"]["accepted"], 3 + 4)
        self.assertEqual(api.own_snapshot()["samples"]["accepted"], 3)
        published[1] = stamped(worker_snapshot(1, 2), 99.5)
        self.assertEqual(api.snapshot()["samples"]["accepted"], 2 + 4)
        body = json.loads(api.get_stats(None).body)
        self.assertEqual((body["worker"], body["samples"]["accepted"]), (1, 6))
        self.assertEqual(sorted(body["workers"]), ["1", "2"])
        text = api.get_metrics(None).body.decode()
        self.assertIn("\ningest_samples_accepted_total 6.0\n", text)
        self.assertIn('\ningest_worker_samples_accepted_total{worker="2"} 4.0\n', text)

    def test_health_is_the_answering_workers(self) -> None:
        """/health says which worker answered, and its buffer is its own (capacity 10, not the sum)."""
        api = self.api(1, {2: stamped(worker_snapshot(2, 4), 99.0)})
        body = json.loads(api.get_health(None).body)
        self.assertEqual((body["worker"], body["buffer"]), (1, {"depth": 0, "capacity": 10}))

    def test_a_single_process_is_as_before(self) -> None:
        """Without workers, nothing is merged and /stats has no ``workers``."""
        stack = Stack()
        self.assertNotIn("workers", stack.api.snapshot())
        self.assertNotIn("worker", json.loads(stack.api.get_health(None).body))
