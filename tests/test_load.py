"""ingest-load: its pure parts without a reactor, and short runs against a real service on 127.0.0.1.

The runs assert nothing about the machine's speed: they count requests, and
the one that checks the open loop's pacing runs it on a `Clock` (see
`ClockedReactor`), advanced by the test.
"""

from __future__ import annotations

import io
import json
import random
import sys
from functools import partial
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web._newclient import ResponseNeverReceived

from ingest.bodies import JSON, LINE, OTLP_PROTOBUF, REMOTE_WRITE, Job, decode_job
from ingest.config import Settings
from ingest.load import (
    BODY_VARIANTS,
    HOSTS,
    METRICS,
    LoadOptions,
    ProgressMeter,
    Report,
    Schedule,
    Summary,
    Tally,
    WorkerProcess,
    error_kind,
    format_progress,
    format_summary,
    json_body,
    line_body,
    make_bodies,
    make_samples,
    merge_reports,
    otlp_body,
    parse_args,
    prometheus_body,
    run_load,
    split,
    summarize,
    target,
    worker_message,
)
from ingest.tap import IngestService
from tests.polling import wait_until
from tests.segments import read_segments
from tests.tempdir import temp_path

NOW_NS = 1_700_000_000 * 10**9


def assert_close(
    case: SynchronousTestCase, actual: dict[str, float | None], expected: dict[str, float]
) -> None:
    """`actual` has `expected`'s keys, each value within the histogram's 0.1% above the expected one."""
    case.assertEqual(set(actual), set(expected))
    for key, value in expected.items():
        got = actual[key]
        assert got is not None, key
        case.assertTrue(value <= got <= value * 1.001 + 0.001, f"{key}: {got} for {value}")


class HistogramTests(SynchronousTestCase):
    def test_percentiles(self) -> None:
        """The p-th percentile is the value with p% of the latencies at or below it, to 3 significant
        digits (HDR's precision), never below the true value; the maximum is the largest."""
        tally = tally_of([(202, n / 1000) for n in range(1, 1001)])
        assert_close(
            self,
            tally.latency_ms(),
            {"p50": 500.0, "p90": 900.0, "p99": 990.0, "p99.9": 999.0, "max": 1000.0},
        )

    def test_exact_below_two_milliseconds(self) -> None:
        """Below 2,048 microseconds every microsecond is its own bucket: the figures are exact."""
        tally = tally_of([(202, 0.0005), (202, 0.001), (202, 0.002)])
        self.assertEqual(tally.latency_ms(), {"p50": 1.0, "p90": 2.0, "p99": 2.0, "p99.9": 2.0, "max": 2.0})

    def test_out_of_range(self) -> None:
        """A latency past an hour counts as an hour; a negative one as 0."""
        tally = tally_of([(202, -1.0), (202, 7200.0)])
        self.assertEqual(tally.latencies.get_total_count(), 2)
        assert_close(self, {"max": tally.latency_ms()["max"]}, {"max": 3_600_000.0})
        self.assertEqual(tally.latency_ms()["p50"], 0.0)

    def test_merged_tallies_are_one_tally(self) -> None:
        """Two tallies sent as JSON (histograms encoded) and added give the counts and the percentiles of
        one tally of all their requests."""
        first = tally_of([(202, n / 1000) for n in range(1, 301)], ("timeout",))
        second = tally_of([(202, n / 1000) for n in range(301, 401)] + [(503, 0.5)], ("timeout", "Refused"))
        everything = tally_of(
            [(202, n / 1000) for n in range(1, 401)] + [(503, 0.5)], ("timeout", "timeout", "Refused")
        )
        merged = Tally()
        for tally in (first, second):
            merged.add(Tally.from_json(json.loads(json.dumps(tally.as_json()))))
        self.assertEqual(merged.statuses, {202: 400, 503: 1})
        self.assertEqual(merged.errors, {"timeout": 2, "Refused": 1})
        self.assertEqual((merged.done, merged.failed, merged.succeeded), (404, 3, 400))
        self.assertEqual(merged.latencies.get_total_count(), 401)
        self.assertEqual(merged.latency_ms(), everything.latency_ms())

    def test_merged_reports(self) -> None:
        """Reports of processes run side by side: counts add up, the run lasts as long as the longest,
        each process's CPU is kept; through JSON as a worker sends it."""
        reports = [
            Report(tally_of([(202, 0.001)] * 3), 2.0, 2, unsent=1, cpu_seconds=(1.5,)),
            Report(tally_of([(202, 0.003)] * 2, ("timeout",)), 2.5, 1, unsent=2, cpu_seconds=(2.0,)),
        ]
        merged = merge_reports([Report.from_json(json.loads(json.dumps(r.as_json()))) for r in reports])
        self.assertEqual((merged.tally.done, merged.tally.succeeded, merged.tally.failed), (6, 5, 1))
        self.assertEqual((merged.elapsed, merged.connections_opened, merged.unsent), (2.5, 3, 3))
        self.assertEqual(merged.cpu_seconds, (1.5, 2.0))
        summary = summarize(LoadOptions(connections=3, duration=2.0, processes=2), merged)
        self.assertEqual((summary.client_cpu, summary.client_cpu_busiest), (3.5 / 2.5, 0.8))
        self.assertFalse(summary.client_saturated)
        self.assertIn("140% of one core in 2 processes (the busiest 80%)", format_summary(summary))


class SplitTests(SynchronousTestCase):
    def test_even_shares(self) -> None:
        """Connections and requests spread as evenly as whole numbers allow, the rate divided, each
        process its own seed, the duration the same."""
        options = LoadOptions(connections=10, requests=100, rate=300.0, duration=5.0, seed=7, processes=3)
        shares = split(options)
        self.assertEqual([share.connections for share in shares], [4, 3, 3])
        self.assertEqual([share.requests for share in shares], [34, 33, 33])
        self.assertEqual([share.rate for share in shares], [100.0] * 3)
        self.assertEqual([share.seed for share in shares], [7, 8, 9])
        self.assertEqual({(share.duration, share.processes) for share in shares}, {(5.0, 1)})

    def test_one_process(self) -> None:
        """One process runs the whole load."""
        options = LoadOptions(connections=3, duration=1.0)
        self.assertEqual(split(options), [options])

    def test_every_process_needs_work(self) -> None:
        """More processes than connections, or than requests, is a ValueError."""
        self.assertRaises(ValueError, split, LoadOptions(connections=2, duration=1.0, processes=3))
        self.assertRaises(ValueError, split, LoadOptions(connections=4, requests=2, processes=3))
        self.assertEqual(len(split(LoadOptions(connections=3, requests=3, processes=3))), 3)


class ScheduleTests(SynchronousTestCase):
    def test_closed_loop_by_count(self) -> None:
        """Closed loop: each request is due when asked for, until `requests` have been handed out."""
        schedule = Schedule(start=100.0, duration=None, requests=3, rate=None)
        self.assertEqual(
            [schedule.next(now) for now in (100.0, 100.5, 101.0, 102.0)], [100.0, 100.5, 101.0, None]
        )
        self.assertEqual(schedule.unsent, 0)

    def test_closed_loop_by_duration(self) -> None:
        """Closed loop with a duration: nothing is handed out at or past its end."""
        schedule = Schedule(start=100.0, duration=2.0, requests=None, rate=None)
        self.assertEqual(schedule.next(101.999), 101.999)
        self.assertIsNone(schedule.next(102.0))

    def test_open_loop_is_due_on_the_clock(self) -> None:
        """Open loop: the i-th request is due at start + i/rate however late it is asked for."""
        schedule = Schedule(start=100.0, duration=1.0, requests=None, rate=4.0)
        self.assertEqual(schedule.planned, 4)
        self.assertEqual(schedule.next(100.0), 100.0)
        self.assertEqual(schedule.next(100.0), 100.25)
        self.assertEqual(schedule.next(100.9), 100.5)
        self.assertEqual(schedule.next(100.9), 100.75)
        self.assertIsNone(schedule.next(100.9))
        self.assertEqual(schedule.unsent, 0)

    def test_open_loop_counts_what_the_end_left_unsent(self) -> None:
        """Requests due within the duration but not handed out when it ends are unsent."""
        schedule = Schedule(start=0.0, duration=1.0, requests=None, rate=10.0)
        for _ in range(3):
            schedule.next(0.0)
        self.assertIsNone(schedule.next(1.0))
        self.assertEqual(schedule.unsent, 7)

    def test_open_loop_by_count(self) -> None:
        """With both limits, the smaller one holds."""
        self.assertEqual(Schedule(0.0, 10.0, 5, 100.0).planned, 5)
        self.assertEqual(Schedule(0.0, 0.1, 50, 100.0).planned, 10)
        self.assertEqual(Schedule(0.0, None, 7, 100.0).planned, 7)

    def test_needs_an_end(self) -> None:
        """A schedule without a duration and a count would never end: ValueError."""
        self.assertRaises(ValueError, Schedule, 0.0, None, None, 10.0)


def tally_of(answers: list[tuple[int, float]], failures: tuple[str, ...] = ()) -> Tally:
    tally = Tally()
    for status, latency in answers:
        tally.answered(status, latency)
    for kind in failures:
        tally.failure(kind)
    return tally


class SummaryTests(SynchronousTestCase):
    def test_arithmetic(self) -> None:
        """Rates divide by the elapsed time; samples count 2xx answers times the batch; latencies in ms."""
        answers = [(202, n / 1000) for n in range(1, 101)] + [(400, 0.2), (503, 0.3)]
        tally = tally_of(answers, ("ConnectionRefusedError", "timeout", "timeout"))
        options = LoadOptions(connections=4, duration=2.0, batch=10)
        summary = summarize(options, Report(tally, 2.0, connections_opened=5, unsent=0, cpu_seconds=(0.5,)))
        self.assertEqual(summary.requests, 105)
        self.assertEqual(summary.succeeded, 100)
        self.assertEqual(summary.samples, 1000)
        self.assertEqual(summary.requests_per_second, 52.5)
        self.assertEqual(summary.samples_per_second, 500.0)
        self.assertAlmostEqual(summary.success_rate, 100 / 105)
        self.assertEqual(summary.statuses, {202: 100, 400: 1, 503: 1})
        self.assertEqual(summary.errors, {"ConnectionRefusedError": 1, "timeout": 2})
        expected = {"p50": 51.0, "p90": 92.0, "p99": 200.0, "p99.9": 300.0, "max": 300.0}
        assert_close(self, summary.latency_ms, expected)
        self.assertEqual((summary.client_cpu, summary.client_cpu_busiest, summary.processes), (0.25, 0.25, 1))
        self.assertFalse(summary.client_saturated)

    def test_nothing_done(self) -> None:
        """A run that sent nothing has no latencies and no division by zero."""
        summary = summarize(LoadOptions(requests=1), Report(Tally(), 0.0, 0))
        self.assertEqual(summary.requests_per_second, 0.0)
        self.assertEqual(summary.success_rate, 0.0)
        self.assertEqual(set(summary.latency_ms.values()), {None})
        self.assertIsNone(summary.client_cpu)
        self.assertIn("p50 -", format_summary(summary))

    def test_json(self) -> None:
        """The JSON summary is one object with the rates, statuses keyed by their text, latencies and the
        processes."""
        tally = tally_of([(204, 0.001), (204, 0.003)], ("ResponseNeverReceived(ConnectionLost)",))
        options = LoadOptions(form="line", rate=50.0, duration=1.0, connections=2, processes=2)
        summary = summarize(options, Report(tally, 1.0, 1, unsent=47, cpu_seconds=(0.25, 0.5)))
        document = json.loads(json.dumps(summary.as_json()))
        self.assertEqual(document["statuses"], {"204": 2})
        self.assertEqual(document["errors"], {"ResponseNeverReceived(ConnectionLost)": 1})
        self.assertEqual(document["requests_per_second"], 3.0)
        self.assertEqual(document["success_rate"], round(2 / 3, 6))
        expected = {"p50": 1.0, "p90": 3.0, "p99": 3.0, "p99.9": 3.0, "max": 3.0}
        assert_close(self, document["latency_ms"], expected)
        self.assertEqual(
            (document["format"], document["rate_target"], document["unsent"]), ("line", 50.0, 47)
        )
        self.assertEqual(
            (document["processes"], document["client_cpu"], document["client_cpu_busiest"]), (2, 0.75, 0.5)
        )

    def test_text(self) -> None:
        """The text summary names throughput, success, statuses, errors, latencies and the client's CPU."""
        tally = tally_of([(202, 0.002)] * 3, ("timeout",))
        summary = summarize(
            LoadOptions(connections=2, duration=1.0), Report(tally, 1.0, 2, cpu_seconds=(0.95,))
        )
        text = format_summary(summary)
        for part in (
            "requests:  4 (4.0/s)",
            "75.00%",
            "202: 3",
            "timeout: 1",
            "p99 2.000",
            "95% of one core",
        ):
            self.assertIn(part, text)
        self.assertTrue(summary.client_saturated)
        self.assertIn("warning:", text)
        self.assertNotIn("schedule:", text)
        self.assertNotIn("processes", text)

    def test_saturation_is_per_process(self) -> None:
        """Two processes at 60% of a core each are not saturated; one at 95% is, whatever the other."""
        options = LoadOptions(connections=2, duration=1.0, processes=2)
        calm = summarize(options, Report(tally_of([(202, 0.001)]), 1.0, 2, cpu_seconds=(0.6, 0.6)))
        busy = summarize(options, Report(tally_of([(202, 0.001)]), 1.0, 2, cpu_seconds=(0.95, 0.1)))
        self.assertFalse(calm.client_saturated)
        self.assertTrue(busy.client_saturated)
        self.assertIn("2 connections (keep-alive, 2 opened) in 2 processes", format_summary(calm))

    def test_text_open_loop(self) -> None:
        """An open-loop summary tells the rate wanted and how many due requests were not sent."""
        summary = summarize(
            LoadOptions(rate=100.0, duration=1.0), Report(tally_of([(202, 0.001)]), 1.0, 1, unsent=99)
        )
        self.assertIn("100 req/s wanted, 1.0 sent; 99 due but not sent", format_summary(summary))

    def test_progress(self) -> None:
        """A progress line gives the elapsed seconds, the requests done, their rate since the line before
        and the transport errors so far."""
        self.assertEqual(
            format_progress(3.02, 12345, 2253.4, 4),
            "   3.0 s      12,345 requests      2,253 req/s  4 errors",
        )
        meter = ProgressMeter()
        self.assertIn("1,000 req/s", meter.line(1.0, 1000, 0))
        self.assertIn("  3,000 requests      4,000 req/s  2 errors", meter.line(1.5, 3000, 2))
        self.assertIn("      0 req/s", meter.line(1.5, 3000, 2))

    def test_error_kinds(self) -> None:
        """A transport failure is named by its class, and by the reasons Twisted wraps in it."""
        wrapped = ResponseNeverReceived([Failure(ConnectionLost())])
        self.assertEqual(error_kind(wrapped), "ResponseNeverReceived(ConnectionLost)")
        self.assertEqual(error_kind(ConnectionRefusedError()), "ConnectionRefusedError")


class BodyTests(SynchronousTestCase):
    def test_json_bodies_are_accepted_whole(self) -> None:
        """A JSON body is an array of `batch` samples that the service's decoder accepts, none rejected."""
        body = json_body(make_samples(50, random.Random(1)))
        decoded = decode_job(Job(JSON, body, NOW_NS))
        self.assertEqual((decoded.accepted, decoded.rejected), (50, 0))
        for document in json.loads(body):
            self.assertEqual(set(document), {"name", "value", "tags"})

    def test_line_bodies_store_the_same_samples(self) -> None:
        """Line protocol of the same samples is accepted whole and stores the same names, values and tags."""
        samples = make_samples(50, random.Random(2))
        from_json = decode_job(Job(JSON, json_body(samples), NOW_NS))
        from_lines = decode_job(Job(LINE, line_body(samples), NOW_NS))
        self.assertEqual((from_lines.accepted, from_lines.rejected, from_lines.skipped), (50, 0, 0))
        self.assertEqual(from_lines.data, from_json.data)

    def test_prometheus_bodies_store_the_same_samples(self) -> None:
        """A remote-write body is accepted whole by the service's decoder and stores what the JSON body of
        the same samples stores, at the body's time instead of the time of receipt."""
        samples = make_samples(50, random.Random(5))
        time_ms = 1_700_000_000_123
        from_json = decode_job(Job(JSON, json_body(samples), time_ms * 1_000_000))
        from_remote_write = decode_job(Job(REMOTE_WRITE, prometheus_body(samples, time_ms), NOW_NS))
        self.assertEqual(
            (from_remote_write.accepted, from_remote_write.rejected, from_remote_write.skipped), (50, 0, 0)
        )
        self.assertEqual(from_remote_write.data, from_json.data)

    def test_otlp_bodies_store_the_same_samples(self) -> None:
        """An OTLP body (a Gauge a name) is accepted whole and stores the JSON body's samples, grouped by
        name."""
        samples = make_samples(50, random.Random(6))
        from_json = decode_job(Job(JSON, json_body(samples), NOW_NS))
        from_otlp = decode_job(Job(OTLP_PROTOBUF, otlp_body(samples), NOW_NS))
        self.assertEqual((from_otlp.accepted, from_otlp.rejected, from_otlp.skipped), (50, 0, 0))
        self.assertEqual(sorted(from_otlp.data.splitlines()), sorted(from_json.data.splitlines()))

    def test_samples_vary_a_little(self) -> None:
        """Names, hosts and values vary, hosts from a small set; every value is within its metric's range."""
        samples = make_samples(500, random.Random(3))
        self.assertEqual({name for name, _, _ in samples}, {name for name, _ in METRICS})
        self.assertLessEqual({host for _, _, host in samples}, set(HOSTS))
        self.assertGreater(len({host for _, _, host in samples}), 1)
        self.assertGreater(len({value for _, value, _ in samples}), 400)
        tops = dict(METRICS)
        for name, value, _ in samples:
            self.assertTrue(0 <= value <= tops[name])

    def test_bodies_differ(self) -> None:
        """The bodies sent in turn are all different, and the same seed gives the same bodies."""
        bodies = make_bodies("json", 3, BODY_VARIANTS, random.Random(4))
        self.assertEqual(len(set(bodies)), BODY_VARIANTS)
        self.assertEqual(bodies, make_bodies("json", 3, BODY_VARIANTS, random.Random(4)))
        self.assertEqual(len(make_bodies("line", 3, 2, random.Random(4))[0].splitlines()), 3)


class OptionTests(SynchronousTestCase):
    def test_targets(self) -> None:
        """JSON goes to /metrics, line protocol to /write in nanoseconds, remote write to /api/v1/write
        with Prometheus' headers, OTLP to /v1/metrics; a base URL may end with a slash."""
        self.assertEqual(
            target("http://h:1", "json"), (b"http://h:1/metrics", {b"Content-Type": b"application/json"})
        )
        self.assertEqual(target("http://h:1/", "line")[0], b"http://h:1/write?precision=ns")
        self.assertEqual(
            target("http://h:1", "prometheus"),
            (
                b"http://h:1/api/v1/write",
                {
                    b"Content-Type": b"application/x-protobuf",
                    b"Content-Encoding": b"snappy",
                    b"X-Prometheus-Remote-Write-Version": b"0.1.0",
                },
            ),
        )
        self.assertEqual(
            target("http://h:1", "otlp"),
            (b"http://h:1/v1/metrics", {b"Content-Type": b"application/x-protobuf"}),
        )
        self.assertRaises(ValueError, target, "https://h:1", "json")
        self.assertRaises(ValueError, target, "h:1", "json")
        self.assertRaises(ValueError, target, "http://h:1", "xml")

    def test_defaults(self) -> None:
        """With neither --duration nor --requests the run lasts 10 seconds, on one keep-alive connection."""
        options, as_json = parse_args([])
        self.assertEqual(options, LoadOptions(duration=10.0))
        self.assertFalse(as_json)

    def test_all_options(self) -> None:
        """Every option reaches LoadOptions; --requests alone sets no duration."""
        options, as_json = parse_args(
            "--url http://10.0.0.1:9 --connections 100 --requests 5 --batch 7 --rate 2253 "
            "--format line --no-keepalive --timeout 2 --seed 9 --processes 3 --json".split()
        )
        expected = LoadOptions("http://10.0.0.1:9", 100, None, 5, 7, 2253.0, "line", False, 2.0, 9, 3)
        self.assertEqual(options, expected)
        self.assertTrue(as_json)

    def test_misuse_exits(self) -> None:
        """Zero or negative counts, a bad format, an https URL, or more processes than connections or
        requests are usage errors."""
        self.patch(sys, "stderr", io.StringIO())
        for argv in (
            ["--connections", "0"],
            ["--rate", "-1"],
            ["--format", "xml"],
            ["--url", "https://x"],
            ["--processes", "0"],
            ["--processes", "2"],
            ["--processes", "2", "--connections", "2", "--requests", "1"],
        ):
            self.assertRaises(SystemExit, parse_args, argv)
        self.assertEqual(parse_args(["--processes", "2", "--connections", "2"])[0].processes, 2)


def ended(code: int) -> Failure:
    """How a process's end reaches its protocol: ProcessDone for 0, else ProcessTerminated."""
    return Failure(ProcessDone(0) if code == 0 else ProcessTerminated(code))


class WorkerProcessTests(SynchronousTestCase):
    def test_messages(self) -> None:
        """The parent reads a worker's lines fed byte by byte: ready, progress, then the report,
        which `ended` gives once the process exits 0; ``go`` starts it."""
        worker = WorkerProcess()
        transport = StringTransport()
        worker.makeConnection(transport)
        report = Report(tally_of([(202, 0.001)] * 4, ("timeout",)), 1.5, 2, cpu_seconds=(0.5,))
        stream = (
            worker_message("ready")
            + worker_message("progress", done=3, failed=1)
            + worker_message("report", report=report.as_json())
        )
        ready = len(worker_message("ready"))
        for offset in range(len(stream)):
            worker.outReceived(stream[offset : offset + 1])
            if offset == ready - 2:
                self.assertNoResult(worker.ready)
            elif offset == ready - 1:
                self.successResultOf(worker.ready)
                worker.start()
                self.assertEqual(transport.value(), b"go\n")
        self.assertEqual((worker.done, worker.failed), (5, 1))
        self.assertNoResult(worker.ended)
        worker.processEnded(ended(0))
        received = self.successResultOf(worker.ended)
        self.assertEqual((received.tally.done, received.elapsed, received.cpu_seconds), (5, 1.5, (0.5,)))

    def test_ending_without_a_report_fails(self) -> None:
        """A worker that exits before its report, with another status than 0, or that wrote a line that is not
        a message, fails `ready` (if it had not fired) and `ended`."""
        early = WorkerProcess()
        early.processEnded(ended(1))
        self.failureResultOf(early.ready, RuntimeError)
        self.failureResultOf(early.ended, RuntimeError)
        late = WorkerProcess()
        late.outReceived(
            worker_message("ready") + worker_message("report", report=Report(Tally(), 1.0, 1).as_json())
        )
        late.processEnded(ended(2))
        self.successResultOf(late.ready)
        self.failureResultOf(late.ended, RuntimeError)
        garbled = WorkerProcess()
        garbled.outReceived(
            b"a warning\n" + worker_message("report", report=Report(Tally(), 1.0, 1).as_json())
        )
        garbled.processEnded(ended(0))
        self.assertIn("a warning", str(self.failureResultOf(garbled.ended, RuntimeError).value))
        self.failureResultOf(garbled.ready, RuntimeError)


class ParentTests(SynchronousTestCase):
    """`run_load` with processes, on a `Clock`, its workers played by the test (`spawn_worker`)."""

    def test_starts_together_shows_merged_progress_and_merges_reports(self) -> None:
        """Workers get their shares; none starts before all are ready; the progress line sums their latest
        counts every second; the summary merges their reports."""
        clock = Clock()
        spawned: list[tuple[WorkerProcess, LoadOptions, StringTransport]] = []

        def spawn(protocol: ProcessProtocol, share: LoadOptions) -> None:
            assert isinstance(protocol, WorkerProcess)
            transport = StringTransport()
            protocol.makeConnection(transport)
            spawned.append((protocol, share, transport))

        progress: list[tuple[float, int, int]] = []
        options = LoadOptions(connections=5, duration=2.0, batch=3, processes=2)
        running = run_load(clock, options, lambda *counts: progress.append(counts), spawn_worker=spawn)
        self.assertEqual([(share.connections, share.seed) for _, share, _ in spawned], [(3, 0), (2, 1)])
        first, second = (worker for worker, _, _ in spawned)
        first.outReceived(worker_message("ready"))
        self.assertEqual(spawned[0][2].value(), b"", "not started before every worker is ready")
        second.outReceived(worker_message("ready"))
        self.assertEqual([transport.value() for _, _, transport in spawned], [b"go\n", b"go\n"])
        first.outReceived(worker_message("progress", done=10, failed=1))
        second.outReceived(worker_message("progress", done=20, failed=0))
        clock.advance(1.0)
        self.assertEqual(progress, [(1.0, 30, 1)])
        reports = [
            Report(tally_of([(202, 0.001)] * 12, ("timeout",)), 2.0, 3, cpu_seconds=(1.0,)),
            Report(tally_of([(202, 0.002)] * 25), 2.1, 2, cpu_seconds=(1.2,)),
        ]
        for worker, report in zip((first, second), reports, strict=True):
            worker.outReceived(worker_message("report", report=report.as_json()))
            worker.processEnded(ended(0))
        summary = self.successResultOf(running)
        self.assertEqual((summary.requests, summary.succeeded, summary.samples), (38, 37, 111))
        self.assertEqual((summary.elapsed, summary.connections_opened, summary.processes), (2.1, 5, 2))
        self.assertEqual(summary.errors, {"timeout": 1})

    def test_a_worker_that_fails_to_start(self) -> None:
        """A worker that dies before it is ready fails the run; the others are asked to stop."""
        clock = Clock()
        workers: list[WorkerProcess] = []

        def spawn(protocol: ProcessProtocol, share: LoadOptions) -> None:
            assert isinstance(protocol, WorkerProcess)
            workers.append(protocol)

        running = run_load(clock, LoadOptions(connections=2, requests=4, processes=2), spawn_worker=spawn)
        workers[0].outReceived(worker_message("ready"))
        workers[1].processEnded(ended(1))
        self.assertNoResult(running)
        workers[0].processEnded(ended(-1))
        self.failureResultOf(running)


class ClockedReactor:
    """The real reactor for sockets, `clock` for time: what `run_load` schedules happens when the test says.

    `run_load` takes its times and its waits (`seconds`, `callLater`) from
    the reactor it is given; everything else (connecting, reading) goes to
    the real one, so the requests travel over real sockets while the
    schedule stands still between two `Clock.advance` calls.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, function: Any, *args: Any, **kwargs: Any) -> IDelayedCall:
        return self.clock.callLater(delay, function, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class RunTests(TestCase):
    """Short runs of `run_load` against a real service in the same reactor."""

    timeout = 30

    def setUp(self) -> None:
        self.data_dir = temp_path(self)
        settings = Settings(port="tcp:0:interface=127.0.0.1", data_dir=self.data_dir, threads=2)
        self.service = IngestService(settings, reactor)
        self.service.startService()
        self.addCleanup(lambda: self.service.stopService() if self.service.running else None)
        self.url = f"http://127.0.0.1:{self.service.port.getHost().port}"

    def stored(self) -> int:
        """Samples in the segment files."""
        return len(read_segments(self.data_dir))

    def stores(self, count: int) -> bool:
        """The segment files hold `count` samples."""
        return self.stored() == count

    def answered(self) -> int:
        """Requests the service has answered."""
        return sum(self.service.stats.responses.values())

    def settled(self, clock: Clock, answered: int, turns: list[float]) -> bool:
        """The service has answered `answered` requests, the load has read every answer, and its request
        loops wait on `clock` for `turns`: none is sent until the clock moves."""
        return self.answered() == answered and scheduled(clock) == (turns, 0)

    @inlineCallbacks
    def test_keepalive_reuses_its_connections(self) -> Any:
        """Forty requests on 4 connections: all succeed, all are stored, the server saw 4 connections."""
        progress: list[str] = []
        options = LoadOptions(url=self.url, connections=4, requests=40, batch=5)
        summary: Summary = yield run_load(reactor, options, progress.append)
        yield self.service.stopService()
        self.assertEqual(summary.errors, {})
        self.assertEqual(summary.statuses, {202: 40})
        self.assertEqual(summary.success_rate, 1.0)
        self.assertEqual(summary.requests, 40)
        self.assertEqual(summary.samples, 40 * 5)
        self.assertEqual(self.stored(), summary.samples)
        self.assertEqual(self.service.stats.connections_total, 4)
        self.assertEqual(summary.connections_opened, 4)
        self.assertIsNotNone(summary.latency_ms["p99"])

    @inlineCallbacks
    def test_every_format_stores_its_batches(self) -> Any:
        """Each format, 12 requests of 7 samples on 3 connections: all succeed and the service stores 7
        samples a request, no more, no fewer."""
        statuses = {"json": 202, "line": 204, "prometheus": 204, "otlp": 200}
        for form, status in statuses.items():
            before = self.stored()
            options = LoadOptions(url=self.url, connections=3, requests=12, batch=7, form=form)
            summary: Summary = yield run_load(reactor, options)
            self.assertEqual((summary.statuses, summary.samples), ({status: 12}, 84), form)
            yield wait_until(reactor, partial(self.stores, before + 84), f"{form}: 84 more samples stored")
        self.assertEqual(sum(self.service.stats.samples_rejected.values()), 0)

    @inlineCallbacks
    def test_processes_merge_their_figures(self) -> Any:
        """--processes 2: two worker processes share 5 connections and 30 requests; the merged summary
        counts what the service answered and stored, over the 5 connections it saw."""
        options = LoadOptions(url=self.url, connections=5, requests=30, batch=4, processes=2)
        summary: Summary = yield run_load(reactor, options)
        yield self.service.stopService()
        self.assertEqual((summary.processes, summary.requests, summary.statuses), (2, 30, {202: 30}))
        self.assertEqual(summary.errors, {})
        self.assertEqual(self.answered(), 30)
        self.assertEqual(summary.samples, 120)
        self.assertEqual(self.stored(), 120)
        self.assertEqual(summary.connections_opened, 5)
        self.assertEqual(self.service.stats.connections_total, 5)
        self.assertIsNotNone(summary.latency_ms["p99.9"])
        self.assertIsNotNone(summary.client_cpu_busiest)

    @inlineCallbacks
    def test_no_keepalive_opens_a_connection_per_request(self) -> Any:
        """--no-keepalive: the server sees one connection per request; line protocol is stored too."""
        options = LoadOptions(url=self.url, connections=2, requests=20, batch=3, form="line", keepalive=False)
        summary: Summary = yield run_load(reactor, options)
        yield self.service.stopService()
        self.assertEqual(summary.statuses, {204: 20})
        self.assertEqual(self.service.stats.connections_total, 20)
        self.assertEqual(summary.connections_opened, 20)
        self.assertEqual(self.stored(), 60)

    @inlineCallbacks
    def test_rate_is_held(self) -> Any:
        """--rate R for one second, open loop: request i is sent when the clock reaches i / R, not before
        and not later, while the other connections wait for their turns; all R are sent and answered.

        On a `Clock` the test advances one step of 1 / R at a time, once the
        requests due so far are answered and every connection waits on the
        clock for its next turn.  R = 128 makes every due time exact in binary.
        """
        rate, connections = 128, 4
        clock = Clock()
        options = LoadOptions(url=self.url, connections=connections, duration=1.0, rate=float(rate))
        running = run_load(ClockedReactor(clock), options)
        for sent in range(1, rate + 1):
            # Requests 0 .. sent - 1 are due; the connections wait for the next ones, one each.
            turns = [number / rate for number in range(sent, min(sent + connections, rate))]
            yield wait_until(
                reactor,
                partial(self.settled, clock, sent, turns),
                f"at {clock.seconds()} s, {sent} requests answered (not more) and the loops waiting for "
                f"their turns at {turns}",
            )
            if sent < rate:
                clock.advance(1 / rate)
        summary: Summary = yield running
        self.assertEqual((summary.requests, summary.unsent, summary.success_rate), (rate, 0, 1.0))
        self.assertEqual(summary.elapsed, (rate - 1) / rate, "the last was answered when it was due")
        self.assertEqual(set(summary.latency_ms.values()), {0.0}, "each answered at its due time")
        self.assertEqual(self.service.stats.connections_total, connections)

    @inlineCallbacks
    def test_transport_failures_are_counted_by_kind(self) -> Any:
        """With nothing listening, every request fails in transport and is counted as such."""
        yield self.service.stopService()
        summary: Summary = yield run_load(reactor, LoadOptions(url=self.url, connections=2, requests=6))
        self.assertEqual(summary.errors, {"ConnectionRefusedError": 6})
        self.assertEqual((summary.succeeded, summary.statuses, summary.connections_opened), (0, {}, 0))


def scheduled(
    clock: Clock, duration: float = 1.0, timeout: float = LoadOptions.timeout
) -> tuple[list[float], int]:
    """What a run of `duration` seconds has on `clock`: the turns its request loops wait for, soonest
    first, and how many requests are in flight.

    A loop waits for a turn within the run.  A request in flight has its
    timeout (`LoadOptions.timeout`) pending, from the time it was sent: the
    timeout is cancelled when its answer has been read, just before the
    loop counts it.  The other calls come at the end of the run (the
    progress ticker) or minutes on (idle pooled connections).
    """
    times = [call.getTime() for call in clock.getDelayedCalls()]
    turns = sorted(time for time in times if time < duration)
    return turns, sum(timeout <= time < timeout + duration for time in times)
