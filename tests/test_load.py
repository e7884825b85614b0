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
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web._newclient import ResponseNeverReceived

from ingest.bodies import JSON, LINE, Job, decode_job
from ingest.config import Settings
from ingest.load import (
    BODY_VARIANTS,
    HOSTS,
    METRICS,
    LoadOptions,
    Schedule,
    Summary,
    Tally,
    error_kind,
    format_progress,
    format_summary,
    json_body,
    line_body,
    make_bodies,
    make_samples,
    parse_args,
    percentile,
    run_load,
    summarize,
    target,
)
from ingest.tap import IngestService
from tests.polling import wait_until
from tests.segments import read_segments
from tests.tempdir import temp_path

NOW_NS = 1_700_000_000 * 10**9


class PercentileTests(SynchronousTestCase):
    def test_nearest_rank(self) -> None:
        """The p-th percentile is the smallest value with at least p% of the values at or below it."""
        values = [float(n) for n in range(1, 11)]
        self.assertEqual(percentile(values, 50), 5.0)
        self.assertEqual(percentile(values, 90), 9.0)
        self.assertEqual(percentile(values, 91), 10.0)
        self.assertEqual(percentile(values, 99), 10.0)

    def test_ends(self) -> None:
        """p0 is the minimum, p100 the maximum; one value is every percentile."""
        values = [0.5, 1.5, 7.0]
        self.assertEqual(percentile(values, 0), 0.5)
        self.assertEqual(percentile(values, 100), 7.0)
        self.assertEqual([percentile([3.0], p) for p in (0, 50, 99, 100)], [3.0] * 4)

    def test_refuses_nothing_and_out_of_range(self) -> None:
        """No values, or p outside 0..100, is a ValueError."""
        self.assertRaises(ValueError, percentile, [], 50)
        self.assertRaises(ValueError, percentile, [1.0], -1)
        self.assertRaises(ValueError, percentile, [1.0], 100.5)


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
        summary = summarize(options, tally, 2.0, connections_opened=5, unsent=0, client_cpu_seconds=0.5)
        self.assertEqual(summary.requests, 105)
        self.assertEqual(summary.succeeded, 100)
        self.assertEqual(summary.samples, 1000)
        self.assertEqual(summary.requests_per_second, 52.5)
        self.assertEqual(summary.samples_per_second, 500.0)
        self.assertAlmostEqual(summary.success_rate, 100 / 105)
        self.assertEqual(summary.statuses, {202: 100, 400: 1, 503: 1})
        self.assertEqual(summary.errors, {"ConnectionRefusedError": 1, "timeout": 2})
        self.assertEqual(summary.latency_ms, {"p50": 51.0, "p90": 92.0, "p99": 200.0, "max": 300.0})
        self.assertEqual(summary.client_cpu, 0.25)
        self.assertFalse(summary.client_saturated)

    def test_nothing_done(self) -> None:
        """A run that sent nothing has no latencies and no division by zero."""
        summary = summarize(LoadOptions(requests=1), Tally(), 0.0, 0)
        self.assertEqual(summary.requests_per_second, 0.0)
        self.assertEqual(summary.success_rate, 0.0)
        self.assertEqual(set(summary.latency_ms.values()), {None})
        self.assertIsNone(summary.client_cpu)
        self.assertIn("p50 -", format_summary(summary))

    def test_json(self) -> None:
        """The JSON summary is one object with the rates, statuses keyed by their text, and latencies."""
        tally = tally_of([(204, 0.001), (204, 0.003)], ("ResponseNeverReceived(ConnectionLost)",))
        summary = summarize(LoadOptions(form="line", rate=50.0, duration=1.0), tally, 1.0, 1, unsent=47)
        document = json.loads(json.dumps(summary.as_json()))
        self.assertEqual(document["statuses"], {"204": 2})
        self.assertEqual(document["errors"], {"ResponseNeverReceived(ConnectionLost)": 1})
        self.assertEqual(document["requests_per_second"], 3.0)
        self.assertEqual(document["success_rate"], round(2 / 3, 6))
        self.assertEqual(document["latency_ms"], {"p50": 1.0, "p90": 3.0, "p99": 3.0, "max": 3.0})
        self.assertEqual(
            (document["format"], document["rate_target"], document["unsent"]), ("line", 50.0, 47)
        )

    def test_text(self) -> None:
        """The text summary names throughput, success, statuses, errors, latencies and the client's CPU."""
        tally = tally_of([(202, 0.002)] * 3, ("timeout",))
        summary = summarize(LoadOptions(connections=2, duration=1.0), tally, 1.0, 2, client_cpu_seconds=0.95)
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

    def test_text_open_loop(self) -> None:
        """An open-loop summary tells the rate wanted and how many due requests were not sent."""
        summary = summarize(
            LoadOptions(rate=100.0, duration=1.0), tally_of([(202, 0.001)]), 1.0, 1, unsent=99
        )
        self.assertIn("100 req/s wanted, 1.0 sent; 99 due but not sent", format_summary(summary))

    def test_progress(self) -> None:
        """A progress line gives the elapsed seconds, requests in the last second and errors."""
        self.assertEqual(format_progress(3.02, 2253, 1, 4), "   3.0 s     2,253 req/s  1 errors (4 total)")

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
        """JSON goes to /metrics, line protocol to /write in nanoseconds; a base URL may end with a slash."""
        self.assertEqual(target("http://h:1", "json"), (b"http://h:1/metrics", b"application/json"))
        self.assertEqual(target("http://h:1/", "line")[0], b"http://h:1/write?precision=ns")
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
            "--format line --no-keepalive --timeout 2 --seed 9 --json".split()
        )
        expected = LoadOptions("http://10.0.0.1:9", 100, None, 5, 7, 2253.0, "line", False, 2.0, 9)
        self.assertEqual(options, expected)
        self.assertTrue(as_json)

    def test_misuse_exits(self) -> None:
        """Zero or negative counts, a bad format or an https URL are usage errors."""
        self.patch(sys, "stderr", io.StringIO())
        for argv in (["--connections", "0"], ["--rate", "-1"], ["--format", "xml"], ["--url", "https://x"]):
            self.assertRaises(SystemExit, parse_args, argv)


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
