"""Routes that answer from state: /health, /stats, /ping; a bug met decoding a body."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import succeed
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from ingest.messages import Request, Response
from tests.helpers import SAMPLE, Stack, get, parse_answers, post
from tests.test_bodies import ExplodingBody


class FakeSink:
    """Stands in for `ingest.sink.Sink` (`ingest.api.SinkView`): the figures and the reason it is behind."""

    def __init__(self, connected: bool = True, lag_bytes: int = 0, lag_seconds: float = 0.0) -> None:
        self.figures = {"connected": connected, "lag_bytes": lag_bytes, "lag_seconds": lag_seconds}
        self.reason: str | None = None if connected else "sink disconnected from NATS; segments keep the data"

    def status(self) -> dict[str, Any]:
        return dict(self.figures)

    def behind(self) -> str | None:
        return self.reason


class SinkFigureTests(SynchronousTestCase):
    """With --sink, /health, /stats and /metrics carry the sink's state and lag."""

    def ask(self, stack: Stack, request: bytes) -> Any:
        [answer] = stack.ask(request)
        return answer

    def test_health_ok_with_the_sink(self) -> None:
        answer = self.ask(Stack(sink=FakeSink()), get(b"/health"))
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json()["status"], "ok")
        self.assertEqual(answer.json()["sink"], {"connected": True, "lag_bytes": 0, "lag_seconds": 0.0})

    def test_health_degraded_while_behind(self) -> None:
        """Behind (here disconnected) is 200 "degraded" with the reason: the data is safe on disk."""
        answer = self.ask(
            Stack(sink=FakeSink(connected=False, lag_bytes=10, lag_seconds=3.5)), get(b"/health")
        )
        self.assertEqual(answer.status, 200)
        document = answer.json()
        self.assertEqual(document["status"], "degraded")
        self.assertEqual(document["reasons"], ["sink disconnected from NATS; segments keep the data"])
        self.assertEqual(document["sink"], {"connected": False, "lag_bytes": 10, "lag_seconds": 3.5})

    def test_unhealthy_wins_over_degraded(self) -> None:
        stack = Stack(sink=FakeSink(connected=False), storage_problem=lambda: "disk full")
        answer = self.ask(stack, get(b"/health"))
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json()["sink"]["connected"], False)

    def test_stats_and_metrics(self) -> None:
        stack = Stack(sink=FakeSink(connected=False, lag_bytes=10, lag_seconds=3.5))
        self.assertEqual(
            self.ask(stack, get(b"/stats")).json()["sink"],
            {"connected": False, "lag_bytes": 10, "lag_seconds": 3.5},
        )
        text = self.ask(stack, get(b"/metrics")).body.decode()
        self.assertIn("\ningest_sink_connected 0.0\n", text)
        self.assertIn("\ningest_sink_lag_bytes 10.0\n", text)
        self.assertIn("\ningest_sink_lag_seconds 3.5\n", text)

    def test_no_sink_no_figures(self) -> None:
        stack = Stack()
        self.assertNotIn("sink", self.ask(stack, get(b"/health")).json())
        self.assertNotIn("sink", self.ask(stack, get(b"/stats")).json())
        self.assertNotIn("ingest_sink", self.ask(stack, get(b"/metrics")).body.decode())


class ApiTests(SynchronousTestCase):
    def ask(self, stack: Stack, request: bytes) -> list:
        channel, transport = stack.connect()
        channel.dataReceived(request)
        stack.settle()
        return parse_answers(transport.value())

    def test_ping(self) -> None:
        """GET /ping answers 204 with no body."""
        [answer] = self.ask(Stack(), get(b"/ping"))
        self.assertEqual((answer.status, answer.body), (204, b""))

    def test_health_ok(self) -> None:
        """/health is 200 JSON while storage works and the buffer has room."""
        [answer] = self.ask(Stack(), get(b"/health"))
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json()["status"], "ok")

    def test_health_storage_failing(self) -> None:
        """/health is 503 JSON naming the storage problem."""
        stack = Stack(storage_problem=lambda: "[Errno 28] No space left on device")
        [answer] = self.ask(stack, get(b"/health"))
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json()["status"], "unhealthy")
        self.assertIn("No space left", answer.json()["reasons"][0])

    def test_durable_ingest_refused_while_storage_fails(self) -> None:
        """With durable acks, a POST while storage is failing gets 503 with Retry-After at once;
        with buffered acks it is accepted into the buffer."""
        problem = "[Errno 28] No space left on device"
        durable = Stack(inline=True, storage_problem=lambda: problem, durable=lambda seq: succeed(None))
        [answer] = self.ask(durable, post(b"/metrics", SAMPLE))
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json()["error"], "storage failing")
        self.assertIn("No space left", answer.json()["detail"])
        self.assertEqual(answer.headers[b"retry-after"], b"1")
        self.assertEqual(durable.stored(), [])
        buffered = Stack(inline=True, storage_problem=lambda: problem)
        [answer] = self.ask(buffered, post(b"/metrics", SAMPLE))
        self.assertEqual(answer.status, 202)
        self.assertEqual(len(buffered.stored()), 1)

    def test_health_buffer_full(self) -> None:
        """/health is 503 when the buffer is full."""
        stack = Stack(inline=True, capacity=1)
        answers = self.ask(stack, post(b"/metrics", SAMPLE))
        channel, transport = stack.connect()  # a connection opened while saturated is read
        channel.dataReceived(get(b"/health"))
        answers += parse_answers(transport.value())
        self.assertEqual([a.status for a in answers], [202, 503])
        self.assertEqual(answers[1].json()["reasons"], ["buffer full"])

    def test_ping_says_influxdb_version(self) -> None:
        """/ping carries X-Influxdb-Version, which InfluxDB clients read when they probe."""
        [answer] = self.ask(Stack(), get(b"/ping"))
        self.assertIn(b"x-influxdb-version", answer.headers)

    def test_prometheus_scrape(self) -> None:
        """GET /metrics is Prometheus text that prometheus_client's own parser reads, with our figures."""
        from prometheus_client.parser import text_string_to_metric_families

        stack = Stack(inline=True)
        answers = self.ask(stack, post(b"/metrics", SAMPLE) + get(b"/nowhere") + get(b"/metrics"))
        scrape = answers[-1]
        self.assertEqual(scrape.status, 200)
        self.assertTrue(scrape.headers[b"content-type"].startswith(b"text/plain"))
        families = {family.name: family for family in text_string_to_metric_families(scrape.body.decode())}
        for name in (
            "ingest_requests",
            "ingest_request_duration_seconds",
            "ingest_samples_accepted",
            "ingest_samples_rejected",
            "ingest_samples_skipped",
            "ingest_buffer_samples",
            "ingest_buffer_high_mark_samples",
            "ingest_flushes",
            "ingest_flush_duration_seconds",
            "ingest_bytes_written",
            "ingest_write_errors",
            "ingest_connections_open",
            "ingest_parse_queue_bodies",
        ):
            self.assertIn(name, families)
        requests = {
            (sample.labels["route"], sample.labels["status"]): sample.value
            for sample in families["ingest_requests"].samples
        }
        self.assertEqual(
            {pair: n for pair, n in requests.items() if n}, {("/metrics", "202"): 1, ("other", "404"): 1}
        )
        [accepted] = families["ingest_samples_accepted"].samples
        self.assertEqual(accepted.value, 1)
        [depth] = families["ingest_buffer_samples"].samples
        self.assertEqual(depth.value, 1)
        count = [s for s in families["ingest_request_duration_seconds"].samples if s.name.endswith("_count")]
        self.assertEqual(count[0].value, 2)

    def scrape(self, stack: Stack) -> dict[str, dict[tuple[str, ...], float]]:
        """The labelled counters of one GET /metrics: family -> label values -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        [scrape] = self.ask(stack, get(b"/metrics"))
        return {
            family.name: {tuple(sample.labels.values()): sample.value for sample in family.samples}
            for family in text_string_to_metric_families(scrape.body.decode())
            if family.name in ("ingest_requests", "ingest_samples_rejected", "ingest_samples_skipped")
        }

    def test_every_known_series_is_exported_at_0_from_start(self) -> None:
        """Before any request, /metrics has every route's statuses, every rejection reason and every skip
        reason at 0, so that ``rate()`` sees their first event; the first event then counts 1.

        (Before: a labelled series appeared at its first increment, which ``rate()`` cannot see.)"""
        from ingest.api import ROUTE_SUCCESSES
        from ingest.messages import ERROR_STATUSES
        from ingest.stats import REJECTION_REASONS, SKIP_REASONS

        stack = Stack(inline=True)
        families = self.scrape(stack)
        requests = families["ingest_requests"]
        for route, successes in ROUTE_SUCCESSES.items():
            for status in (*successes, *ERROR_STATUSES):
                self.assertEqual(requests[route, str(status)], 0, (route, status))
        for status in ERROR_STATUSES:
            self.assertEqual(requests["other", str(status)], 0, status)
        self.assertEqual(families["ingest_samples_rejected"], {(r,): 0 for r in REJECTION_REASONS})
        self.assertEqual(families["ingest_samples_skipped"], {(r,): 0 for r in SKIP_REASONS})
        channel, _ = stack.connect()
        channel.dataReceived(post(b"/metrics", b"[1]") + post(b"/write", b'm f="s"'))
        stack.settle()
        families = self.scrape(stack)
        self.assertEqual(families["ingest_samples_rejected"][("invalid",)], 1)
        self.assertEqual(families["ingest_samples_skipped"][("string_field",)], 1)
        self.assertEqual(families["ingest_requests"]["/metrics", "400"], 1)
        self.assertEqual(families["ingest_requests"]["/metrics", "200"], 1)  # the first scrape

    def test_known_reasons_and_statuses_cover_what_is_counted(self) -> None:
        """Bodies refused whole count under a known reason; the error statuses are those ingest.http11
        has a status line for."""
        from ingest import http11
        from ingest.messages import ERROR_STATUSES
        from ingest.stats import REJECTION_REASONS

        self.assertEqual(set(ERROR_STATUSES), {s for s in http11._REASONS if s >= 400})
        stack = Stack(inline=True)
        channel, _ = stack.connect()
        bodies = [
            post(b"/metrics", b"{", b"Content-Type: application/json"),
            post(b"/metrics", b"", b"Content-Type: application/json"),
            post(b"/metrics", b"xx", b"Content-Type: application/json\r\nContent-Encoding: gzip"),
            post(b"/collectd", b"{}", b"Content-Type: application/json"),
            post(b"/v1/metrics", b"{", b"Content-Type: application/json"),
            post(b"/api/v1/write", b"garbage"),
        ]
        channel.dataReceived(b"".join(bodies))
        stack.settle()
        counted = set(stack.stats.samples_rejected)
        self.assertGreaterEqual(len(counted), 5, counted)
        self.assertLessEqual(counted, set(REJECTION_REASONS))

    def test_line_protocol_routes(self) -> None:
        """/write and /api/v2/write take line protocol, scale timestamps by precision, and answer 204."""
        stack = Stack(inline=True)
        body = b'cpu,host=a usage=0.5,value=2,note="x" 1700000000\n'
        answers = self.ask(
            stack,
            post(b"/write?db=x&precision=s", body)
            + post(b"/api/v2/write?org=o&bucket=b&precision=s", body)
            + post(b"/api/v2/write?precision=h", body)
            + post(b"/write?precision=parsecs", body),
        )
        self.assertEqual([a.status for a in answers], [204, 204, 400, 400])
        self.assertEqual(answers[0].headers[b"x-ingest-skipped"], b"1")
        self.assertEqual(answers[3].json()["error"], "invalid precision")
        stored = stack.stored()
        self.assertEqual([(s["name"], s["value"]) for s in stored], [("cpu_usage", 0.5), ("cpu", 2)] * 2)
        self.assertEqual({s["timestamp"] for s in stored}, {1700000000 * 10**9})
        self.assertEqual(stack.stats.samples_skipped["string_field"], 2)

    def test_line_protocol_partial_write(self) -> None:
        """Bad lines are reported by line number; good lines are kept."""
        stack = Stack(inline=True)
        [answer] = self.ask(stack, post(b"/write", b"a value=1\nbroken\nb value=2\n"))
        self.assertEqual(answer.status, 400)
        document = answer.json()
        self.assertEqual(
            (document["error"], document["accepted"], document["rejected"]), ("partial write", 2, 1)
        )
        self.assertEqual(document["errors"][0]["line"], 2)
        self.assertEqual([s["name"] for s in stack.stored()], ["a", "b"])

    def test_gzip_bomb_413(self) -> None:
        """A gzip body that inflates past --max-body is 413 and the connection closes."""
        import gzip

        from ingest.api import Api

        stack = Stack(inline=True)
        stack.api = Api(stack.buffer, stack.queue, stack.stats, stack.clock, lambda: None, max_body=1000)
        stack.factory.app = stack.api
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", gzip.compress(bytes(100_000)), b"Content-Encoding: gzip"))
        [answer] = parse_answers(transport.value())
        self.assertEqual(answer.status, 413)
        self.assertTrue(transport.disconnecting)

    def test_health_while_saturated(self) -> None:
        """/health is 503 while the buffer is above its high mark, and 200 again once it drained."""
        stack = Stack(inline=True, capacity=10)
        self.ask(stack, post(b"/metrics", b"[" + b",".join([SAMPLE] * 8) + b"]"))
        [answer] = self.ask(stack, get(b"/health"))
        self.assertEqual(answer.status, 503)
        self.assertIn("saturated", answer.json()["reasons"][0])
        stack.buffer.take()
        stack.buffer.commit()
        [answer] = self.ask(stack, get(b"/health"))
        self.assertEqual(answer.status, 200)

    def test_stats_counts(self) -> None:
        """/stats reports connections, requests by status, samples, buffer depth and flush figures."""
        stack = Stack(inline=True)
        answers = self.ask(
            stack,
            post(b"/metrics", b"[" + SAMPLE + b',{"name":"x"}]') + get(b"/nowhere") + get(b"/stats"),
        )
        stats = answers[-1].json()
        self.assertEqual(stats["connections"], {"open": 1, "total": 1, "refused": 0})
        self.assertEqual(stats["requests"]["by_status"], {"400": 1, "404": 1})
        self.assertEqual(stats["requests"]["by_route"], {"/metrics": {"400": 1}, "other": {"404": 1}})
        self.assertEqual(stats["samples"]["accepted"], 1)
        self.assertEqual(stats["samples"]["rejected_by_reason"], {"invalid": 1})
        self.assertEqual(stats["buffer"], {"depth": 1, "high_mark": 1, "capacity": 1000})
        self.assertEqual(stats["requests"]["latency_seconds"]["count"], 2)
        for key in ("flushes", "flush_errors", "bytes_written", "uptime_seconds", "parse_queue"):
            self.assertIn(key, stats)


def metrics_post(body: bytes, answers: list[Any]) -> Request:
    """A ``POST /metrics`` as the channel hands it to the routes; later answers go to `answers`."""
    headers = {b"content-type": b"application/json"}
    return Request(
        b"POST", b"/metrics", b"", b"HTTP/1.1", headers, body, 1_700_000_000.0, "192.0.2.7", answers.append
    )


class InternalErrorTests(SynchronousTestCase):
    """A bug met decoding one body (`ExplodingBody`: the request's body is the injection point, given
    to the routes directly since a wire cannot carry it) fails that request only: 500 in generic
    words, and the traceback in the log, once, whether decoded in the pool or inline."""

    GENERIC = {"error": "internal error", "detail": "see the service log"}

    def assert_logged_once(self, events: list[dict[str, Any]]) -> None:
        [event] = [event for event in events if "trace" in event]
        self.assertEqual(event["path"], "/metrics")
        text = formatEvent(event)
        self.assertIn("Traceback (most recent call last)", text)
        self.assertIn(f"RuntimeError: {ExplodingBody.SECRET}", text)

    def assert_generic_500(self, answer: Response) -> None:
        self.assertEqual(answer.status, 500)
        self.assertEqual(json.loads(answer.body), self.GENERIC)
        self.assertNotIn(ExplodingBody.SECRET.encode(), answer.body)

    def test_pool(self) -> None:
        """In the pool, the bodies decoded in the same job as the failing one are accepted."""
        stack = Stack()
        answers: list[Any] = []
        with capturedLogs() as events:
            for body in (SAMPLE, ExplodingBody(SAMPLE), SAMPLE):
                self.assertIsNone(stack.api.handle(metrics_post(body, answers)))
            stack.settle()
        self.assertEqual(stack.pool.submitted, 1, "one decode_jobs call for the three bodies")
        self.assertEqual([answer.status for answer in answers], [202, 500, 202])
        self.assert_generic_500(answers[1])
        self.assert_logged_once(events)
        self.assertEqual(len(stack.stored()), 2)
        self.assertEqual(stack.stats.samples_rejected["internal_error"], 1)

    def test_inline(self) -> None:
        """With ``--threads 0`` the failing body is answered at once, the same way."""
        stack = Stack(inline=True)
        answers: list[Any] = []
        with capturedLogs() as events:
            answer = stack.api.handle(metrics_post(ExplodingBody(SAMPLE), answers))
            good = stack.api.handle(metrics_post(SAMPLE, answers))
        assert isinstance(answer, Response) and isinstance(good, Response)
        self.assert_generic_500(answer)
        self.assertEqual(good.status, 202)
        self.assertEqual(answers, [])
        self.assert_logged_once(events)
        self.assertEqual(len(stack.stored()), 1)
