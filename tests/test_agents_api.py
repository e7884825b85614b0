"""The agents' routes through the whole front: remote write, OTLP/HTTP and collectd's ``write_http``.

Each request goes through `tests.helpers.Stack`: the channel over a ``StringTransport``, the parse
queue on the memory pool (so the bodies are decoded as in the service, off the channel), a ``Clock``
and no disk.  The bodies are the recorded fixtures of ``tests/fixtures`` (what Prometheus 2.42, the
OpenTelemetry Python SDK and collectd 5.12 really sent) or made here from them.  How each decoder
maps a body to samples is held by ``test_remote_write``, ``test_otlp`` and ``test_collectd``; this
module holds what PRODUCT.md promises a client of each route: the status, the headers, the error
body in the path's own form, what is stored, and what ``/stats`` and ``/metrics`` count.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from ingest.auth import Tokens
from ingest.http11 import Limits
from ingest.ratelimit import ClientLimits
from tests.helpers import Answer, Stack, get, parse_answers, post
from tests.test_otlp import as_json, gauge, number
from tests.test_otlp import request as export_request
from tests.test_remote_write import FIXTURES, fixture, snappy

REMOTE_WRITE = fixture("remote_write.snappy")
"""Prometheus scraping itself: 377 series of one sample each, 351 stored and 26 NaN skipped."""
REMOTE_WRITE_SIZE = 52103
"""What `REMOTE_WRITE` inflates to, as its snappy header declares."""
METADATA = fixture("remote_write_metadata.snappy")
STALE = fixture("remote_write_stale.snappy")
"""A scrape target gone: 426 staleness markers and nothing else."""
OTLP = fixture("otlp_metrics.pb")
"""The SDK's export: counters, an up-down counter, a gauge and a histogram, 23 samples."""
COLLECTD = fixture("collectd.json")
"""One POST of collectd 5.12: 41 value lists, 61 values of which 2 are null."""

PROTOBUF = b"Content-Type: application/x-protobuf"
JSON = b"Content-Type: application/json"
GZIP = b"Content-Encoding: gzip"


def recorded_headers() -> tuple[bytes, ...]:
    """The header lines Prometheus sent with its bodies (``remote_write.headers.json``)."""
    with open(os.path.join(FIXTURES, "remote_write.headers.json"), encoding="utf-8") as file:
        return tuple(f"{name}: {value}".encode() for name, value in json.load(file).items())


PROMETHEUS = recorded_headers()


def write(body: bytes, *headers: bytes, path: bytes = b"/api/v1/write") -> bytes:
    """A remote-write POST with Prometheus' headers, or with `headers` when given."""
    return post(path, body, *(headers or PROMETHEUS))


def varint(number: int) -> bytes:
    """`number` as protobuf's (and snappy's length header's) base-128 varint."""
    data = bytearray()
    while number > 0x7F:
        data.append(number & 0x7F | 0x80)
        number >>= 7
    return bytes(data + bytes((number,)))


def stats(stack: Stack) -> dict[str, Any]:
    """What ``GET /stats`` says now."""
    [answer] = stack.ask(get(b"/stats"))
    document: dict[str, Any] = answer.json()
    return document


def closing_answer(test: SynchronousTestCase, stack: Stack, requested: bytes) -> Answer:
    """The one answer to `requested`, which must close the connection."""
    channel, transport = stack.connect()
    channel.dataReceived(requested)
    stack.settle()
    [answer] = parse_answers(transport.value())
    test.assertTrue(answer.closes, answer.headers)
    test.assertTrue(transport.disconnecting)
    return answer


class RemoteWriteRouteTests(SynchronousTestCase):
    """``POST /api/v1/write`` and its alias ``/api/v1/push``: Prometheus remote write 1.0."""

    def assert_refused(self, answer: Answer, status: int, error: str) -> None:
        self.assertEqual((answer.status, answer.json()["error"]), (status, error), answer)

    def test_recorded_batch(self) -> None:
        """Prometheus' batch with its own headers is 204 on both paths: every finite sample stored,
        with its labels as tags, the NaNs skipped and said in ``X-Ingest-Skipped``."""
        for path in (b"/api/v1/write", b"/api/v1/push"):
            stack = Stack()
            [answer] = stack.ask(write(REMOTE_WRITE, path=path))
            self.assertEqual((answer.status, answer.body), (204, b""), path)
            self.assertEqual(answer.headers[b"x-ingest-skipped"], b"26")
            stored = stack.stored()
            self.assertEqual(len(stored), 351)
            [up] = [sample for sample in stored if sample["name"] == "up"]
            self.assertEqual((up["value"], up["tags"]["job"]), (1.0, "prometheus"))
            self.assertRegex(up["tags"]["instance"], r"^127\.0\.0\.1:\d+$")
            self.assertEqual(up["timestamp"] % 1_000_000, 0, "milliseconds in nanoseconds")
            self.assertEqual(stack.stats.samples_accepted, 351)
            self.assertEqual(stack.stats.samples_skipped, {"nan": 26})

    def test_headers_missing(self) -> None:
        """No Content-Type and no Content-Encoding: taken as snappy protobuf, as Prometheus' own
        receiver takes them."""
        stack = Stack()
        [answer] = stack.ask(write(REMOTE_WRITE, b"User-Agent: Prometheus/2.42.0+ds"))
        self.assertEqual(answer.status, 204)
        self.assertEqual(len(stack.stored()), 351)

    def test_gzip_refused(self) -> None:
        """This path is snappy only: ``Content-Encoding: gzip`` is 415, whatever the body."""
        stack = Stack()
        [answer] = stack.ask(write(gzip.compress(REMOTE_WRITE), PROTOBUF, GZIP))
        self.assert_refused(answer, 415, "unsupported content encoding")
        self.assertEqual(stack.stored(), [])

    def test_other_media_type_refused(self) -> None:
        """A Content-Type other than ``application/x-protobuf`` is 415."""
        stack = Stack()
        for content_type in (b"application/json", b"text/plain", b"application/octet-stream"):
            [answer] = stack.ask(write(REMOTE_WRITE, b"Content-Type: " + content_type))
            self.assert_refused(answer, 415, "unsupported media type")
        self.assertEqual(stack.stored(), [])

    def test_remote_write_2_refused(self) -> None:
        """Remote write 2.0's type is 415, what its spec asks of a 1.0-only receiver; 1.0's own
        ``proto=prometheus.WriteRequest`` is taken."""
        stack = Stack()
        v2 = b"Content-Type: application/x-protobuf;proto=io.prometheus.write.v2.Request"
        [answer] = stack.ask(write(REMOTE_WRITE, v2, b"Content-Encoding: snappy"))
        self.assert_refused(answer, 415, "unsupported media type")
        self.assertIn("2.0", answer.json()["detail"])
        self.assertEqual(stack.stored(), [])
        v1 = b"Content-Type: application/x-protobuf;proto=prometheus.WriteRequest"
        [answer] = stack.ask(write(REMOTE_WRITE, v1, b"Content-Encoding: snappy"))
        self.assertEqual(answer.status, 204)

    def test_garbage_refused(self) -> None:
        """A body that is not snappy, or is snappy but not a ``WriteRequest``, is 400 and stores
        nothing."""
        stack = Stack()
        [not_snappy] = stack.ask(write(b"not snappy at all"))
        self.assert_refused(not_snappy, 400, "malformed snappy")
        [not_protobuf] = stack.ask(write(snappy(b"\xff\xff\xff\xff not a WriteRequest")))
        self.assert_refused(not_protobuf, 400, "malformed remote write")
        self.assertEqual(stack.stored(), [])

    def test_length_header_lies(self) -> None:
        """A snappy block whose length header declares one byte more than its data inflates to is 400."""
        header = varint(REMOTE_WRITE_SIZE)
        self.assertTrue(REMOTE_WRITE.startswith(header))
        stack = Stack()
        [answer] = stack.ask(write(varint(REMOTE_WRITE_SIZE + 1) + REMOTE_WRITE[len(header) :]))
        self.assert_refused(answer, 400, "malformed snappy")
        self.assertIn("52104", answer.json()["detail"])
        self.assertEqual(stack.stored(), [])

    def test_inflated_size_limit(self) -> None:
        """--max-body counts the inflated body: at the limit 204, one byte under it 413 and the
        connection closes, though the snappy body itself is far smaller."""
        at_limit = Stack(limits=Limits(max_body=REMOTE_WRITE_SIZE))
        [answer] = at_limit.ask(write(REMOTE_WRITE))
        self.assertEqual(answer.status, 204)
        over = Stack(limits=Limits(max_body=REMOTE_WRITE_SIZE - 1))
        answer = closing_answer(self, over, write(REMOTE_WRITE))
        self.assert_refused(answer, 413, "body too large")
        self.assertEqual(over.stored(), [])

    def test_metadata_only(self) -> None:
        """Prometheus' metadata-only request is 204, stores nothing and counts nothing skipped."""
        stack = Stack()
        [answer] = stack.ask(write(METADATA))
        self.assertEqual((answer.status, answer.body), (204, b""))
        self.assertNotIn(b"x-ingest-skipped", answer.headers)
        self.assertEqual(stack.stored(), [])
        samples = stats(stack)["samples"]
        self.assertEqual((samples["accepted"], samples["rejected"], samples["skipped"]), (0, 0, 0))

    def test_staleness_markers(self) -> None:
        """Staleness markers are 204 (never a 400, which would drop the batch), none stored, and
        ``/stats`` counts them under the reason ``stale``."""
        stack = Stack()
        [answer] = stack.ask(write(STALE, path=b"/api/v1/push"))
        self.assertEqual(answer.status, 204)
        self.assertEqual(answer.headers[b"x-ingest-skipped"], b"426")
        self.assertEqual(stack.stored(), [])
        samples = stats(stack)["samples"]
        self.assertEqual((samples["accepted"], samples["skipped_by_reason"]), (0, {"stale": 426}))

    def test_rate_limited_503(self) -> None:
        """Over its rate limit a client gets 503 with Retry-After on this path (Prometheus retries a
        503 and drops a batch answered 429), none of the batch stored; after the wait it is taken."""
        stack = Stack(client_limits=ClientLimits(rate=100, burst=400))
        [first] = stack.ask(write(REMOTE_WRITE))
        self.assertEqual(first.status, 204)
        [second] = stack.ask(write(REMOTE_WRITE))
        self.assert_refused(second, 503, "rate limited")
        self.assertEqual(second.headers[b"retry-after"], b"4")  # 351 - 49 tokens left, at 100/s: 3.02 s
        self.assertEqual(len(stack.stored()), 351)
        self.assertEqual(stack.stats.samples_rejected["rate_limited"], 351)
        stack.clock.advance(4)
        [third] = stack.ask(write(REMOTE_WRITE))
        self.assertEqual(third.status, 204)

    def test_buffer_full_spends_no_allowance(self) -> None:
        """A batch refused for want of room spends none of the client's rate allowance: once the
        buffer has room, the same batch is taken, not refused as over the limit."""
        stack = Stack(capacity=351, client_limits=ClientLimits(rate=100, burst=400))
        stack.buffer.add(b'{"name":"a","value":1,"timestamp":0,"tags":{}}\n', 1)
        [refused] = stack.ask(write(REMOTE_WRITE))
        self.assert_refused(refused, 503, "buffer full")
        stack.stored()  # the flusher takes what was there: room again
        [taken] = stack.ask(write(REMOTE_WRITE))
        self.assertEqual(taken.status, 204)
        self.assertEqual(stack.stats.samples_rejected["rate_limited"], 0)

    def test_buffer_full_503(self) -> None:
        """A batch the buffer has no room for is 503 with Retry-After, none of it stored: one that fills
        it to capacity is taken, the next one (the buffer full) and one a sample too big are refused."""
        stack = Stack(capacity=351)
        answers = stack.ask(write(REMOTE_WRITE)) + stack.ask(write(REMOTE_WRITE))
        self.assertEqual(answers[0].status, 204)
        too_small = Stack(capacity=350)
        answers += too_small.ask(write(REMOTE_WRITE))
        for answer in answers[1:]:
            self.assert_refused(answer, 503, "buffer full")
            self.assertEqual(answer.headers[b"retry-after"], b"1")
        self.assertEqual(len(stack.stored()), 351)
        self.assertEqual(too_small.stored(), [])


def rpc_status(test: SynchronousTestCase, answer: Answer, is_json: bool = False) -> tuple[int, str]:
    """The ``google.rpc.Status`` an OTLP error answer carries, as ``(code, message)``; its
    Content-Type must be the request's encoding."""
    content_type = b"application/json" if is_json else b"application/x-protobuf"
    test.assertEqual(answer.headers[b"content-type"], content_type, answer)
    if is_json:
        document = answer.json()
        test.assertEqual(set(document), {"code", "message"})
        return document["code"], document["message"]
    status = status_pb2.Status.FromString(answer.body)
    return status.code, status.message


def with_invalid_points() -> ExportMetricsServiceRequest:
    """A valid gauge between one with an empty name and one with a name of 257 characters."""
    return export_request(
        gauge("", number(1.0)),
        gauge("queue.depth", number(5, {"queue": "mail"})),
        gauge("x" * 257, number(2.0)),
    )


class OtlpRouteTests(SynchronousTestCase):
    """``POST /v1/metrics``: OTLP/HTTP, answered and refused in the request's encoding."""

    def test_recorded_protobuf(self) -> None:
        """The SDK's protobuf export is 200 with an empty ``ExportMetricsServiceResponse`` in protobuf,
        and every point stored."""
        stack = Stack()
        [answer] = stack.ask(post(b"/v1/metrics", OTLP, PROTOBUF))
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.headers[b"content-type"], b"application/x-protobuf")
        self.assertEqual(ExportMetricsServiceResponse.FromString(answer.body), ExportMetricsServiceResponse())
        stored = stack.stored()
        self.assertEqual(len(stored), 23)
        [temperature] = [sample for sample in stored if sample["name"] == "room.temperature"]
        self.assertEqual((temperature["value"], temperature["tags"]["room"]), (21.5, "lab"))
        self.assertEqual(temperature["tags"]["otel_scope_name"], "shop.orders")

    def test_otlp_json(self) -> None:
        """The same export as OTLP/JSON is 200 with the JSON response ``{}``, the same samples stored."""
        stack = Stack()
        body = as_json(ExportMetricsServiceRequest.FromString(OTLP))
        [answer] = stack.ask(post(b"/v1/metrics", body, JSON))
        self.assertEqual((answer.status, answer.headers[b"content-type"]), (200, b"application/json"))
        self.assertEqual(answer.json(), {})
        protobuf = Stack()
        protobuf.ask(post(b"/v1/metrics", OTLP, PROTOBUF))
        self.assertEqual(stack.stored(), protobuf.stored())

    def test_gzip(self) -> None:
        """A gzip-encoded protobuf export is inflated and taken: 200, every point stored."""
        stack = Stack()
        [answer] = stack.ask(post(b"/v1/metrics", gzip.compress(OTLP), PROTOBUF, GZIP))
        self.assertEqual(answer.status, 200)
        self.assertEqual(ExportMetricsServiceResponse.FromString(answer.body), ExportMetricsServiceResponse())
        self.assertEqual(len(stack.stored()), 23)

    def test_partial_success(self) -> None:
        """Invalid points (an empty name, a name over 256 characters) are 200 with
        ``partial_success.rejected_data_points`` in the request's encoding; the valid point is stored."""
        message = with_invalid_points()
        for body, header, is_json in (
            (message.SerializeToString(), PROTOBUF, False),
            (as_json(message), JSON, True),
        ):
            stack = Stack()
            [answer] = stack.ask(post(b"/v1/metrics", body, header))
            self.assertEqual(answer.status, 200)
            if is_json:
                self.assertEqual(answer.headers[b"content-type"], b"application/json")
                response = json_format.Parse(answer.body, ExportMetricsServiceResponse())
            else:
                self.assertEqual(answer.headers[b"content-type"], b"application/x-protobuf")
                response = ExportMetricsServiceResponse.FromString(answer.body)
            self.assertEqual(response.partial_success.rejected_data_points, 2)
            self.assertIn("point 0: name", response.partial_success.error_message)
            self.assertIn("point 2: name", response.partial_success.error_message)
            self.assertEqual([sample["name"] for sample in stack.stored()], ["queue.depth"])
            self.assertEqual(stack.stats.samples_rejected["invalid"], 2)

    def test_malformed_protobuf(self) -> None:
        """A body that is not an ``ExportMetricsServiceRequest`` is 400 with a protobuf
        ``google.rpc.Status`` of code 3 (INVALID_ARGUMENT)."""
        stack = Stack()
        [answer] = stack.ask(post(b"/v1/metrics", b"\xff\xff\xff\xff garbage", PROTOBUF))
        self.assertEqual(answer.status, 400)
        code, message = rpc_status(self, answer)
        self.assertEqual(code, 3)
        self.assertIn("ExportMetricsServiceRequest", message)
        self.assertEqual(stack.stored(), [])

    def test_malformed_json(self) -> None:
        """A body that is not JSON is 400 with a JSON ``google.rpc.Status``: ``{"code": 3, ...}``."""
        stack = Stack()
        [answer] = stack.ask(post(b"/v1/metrics", b"{not json", JSON))
        self.assertEqual(answer.status, 400)
        code, message = rpc_status(self, answer, is_json=True)
        self.assertEqual(code, 3)
        self.assertIn("not JSON", message)

    def test_unsupported_media_type(self) -> None:
        """``Content-Type: text/plain`` is 415 with a ``google.rpc.Status`` body, not our JSON error."""
        [answer] = Stack().ask(post(b"/v1/metrics", OTLP, b"Content-Type: text/plain"))
        self.assertEqual(answer.status, 415)
        code, message = rpc_status(self, answer)
        self.assertEqual(code, 3)
        self.assertIn("application/x-protobuf", message)

    def test_buffer_full(self) -> None:
        """An export the buffer has no room for is 503 with Retry-After (OTLP exporters retry it) and a
        ``google.rpc.Status`` of code 14 (UNAVAILABLE), in each encoding; nothing is stored."""
        for body, header, is_json in (
            (OTLP, PROTOBUF, False),
            (as_json(ExportMetricsServiceRequest.FromString(OTLP)), JSON, True),
        ):
            stack = Stack(capacity=22)
            [answer] = stack.ask(post(b"/v1/metrics", body, header))
            self.assertEqual(answer.status, 503)
            self.assertEqual(answer.headers[b"retry-after"], b"1")
            self.assertEqual(rpc_status(self, answer, is_json)[0], 14)
            self.assertEqual(stack.stored(), [])

    def test_token_missing(self) -> None:
        """With auth on, an export without a token is 401 with ``WWW-Authenticate`` and a
        ``google.rpc.Status`` of code 16 (UNAUTHENTICATED); with its token it is taken."""
        stack = Stack(tokens=Tokens.from_text("s3cr3t otel-collector\n"))
        [answer] = stack.ask(post(b"/v1/metrics", OTLP, PROTOBUF))
        self.assertEqual(answer.status, 401)
        self.assertEqual(answer.headers[b"www-authenticate"], b'Bearer realm="ingest"')
        self.assertEqual(rpc_status(self, answer)[0], 16)
        [answer] = stack.ask(post(b"/v1/metrics", b"{}", JSON))
        self.assertEqual((answer.status, rpc_status(self, answer, is_json=True)[0]), (401, 16))
        self.assertEqual(stack.stored(), [])
        [answer] = stack.ask(post(b"/v1/metrics", OTLP, PROTOBUF, b"Authorization: Bearer s3cr3t"))
        self.assertEqual(answer.status, 200)
        self.assertEqual(len(stack.stored()), 23)

    def test_wrong_method(self) -> None:
        """``GET /v1/metrics`` is 405 with ``Allow: POST`` and a ``google.rpc.Status`` of code 12
        (UNIMPLEMENTED), as every error answer on this path."""
        [answer] = Stack().ask(get(b"/v1/metrics"))
        self.assertEqual((answer.status, answer.headers[b"allow"]), (405, b"POST"))
        self.assertEqual(rpc_status(self, answer)[0], 12)

    def test_inflated_size_limit(self) -> None:
        """--max-body counts the body after gzip inflation: at the limit 200, one byte over 413 with a
        ``google.rpc.Status`` of code 8 (RESOURCE_EXHAUSTED), and the connection closes."""
        gzipped = post(b"/v1/metrics", gzip.compress(OTLP), PROTOBUF, GZIP)
        [answer] = Stack(limits=Limits(max_body=len(OTLP))).ask(gzipped)
        self.assertEqual(answer.status, 200)
        over = Stack(limits=Limits(max_body=len(OTLP) - 1))
        answer = closing_answer(self, over, gzipped)
        self.assertEqual(answer.status, 413)
        self.assertEqual(rpc_status(self, answer)[0], 8)
        self.assertEqual(over.stored(), [])

    def test_framing_errors(self) -> None:
        """Errors the channel finds in the framing are answered with a ``google.rpc.Status`` on this
        path too: a Content-Length over --max-body (413, code 8, before the body is read) and a chunked
        body with a malformed chunk size (400, code 3); the connection closes."""
        over = Stack(limits=Limits(max_body=len(OTLP) - 1))
        answer = closing_answer(self, over, post(b"/v1/metrics", OTLP, PROTOBUF))
        self.assertEqual((answer.status, rpc_status(self, answer)[0]), (413, 8))
        head = b"POST /v1/metrics HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        chunked = head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
        answer = closing_answer(self, Stack(), chunked)
        self.assertEqual(answer.status, 400)
        self.assertEqual(answer.headers.get(b"content-type"), b"application/json")
        self.assertEqual(json.loads(answer.body)["code"], 3)


def value_list(values: list[Any], dsnames: list[str], **identity: str) -> dict[str, Any]:
    """A collectd value list, of the ``load`` plugin on host ``a`` unless `identity` says otherwise."""
    return {
        "values": values,
        "dstypes": ["gauge"] * len(values),
        "dsnames": dsnames,
        "time": 1796199706.752,
        "interval": 10.0,
        **{"host": "a", "plugin": "load", "plugin_instance": "", "type": "load", "type_instance": ""},
        **identity,
    }


def collectd_post(value_lists: list[dict[str, Any]] | bytes, *headers: bytes) -> bytes:
    """A POST as collectd's write_http sends it: ``application/json``, unless `headers` say otherwise."""
    body = value_lists if isinstance(value_lists, bytes) else json.dumps(value_lists).encode()
    return post(b"/collectd", body, *(headers or (JSON,)))


class CollectdRouteTests(SynchronousTestCase):
    """``POST /collectd``: collectd's ``write_http`` plugin with ``Format "JSON"``."""

    def test_recorded_body(self) -> None:
        """collectd's POST is 200 ``{"accepted": N}`` (collectd logs any other status as an error), N
        its samples, named ``<plugin>.<type>.<dsname>`` with the host as a tag."""
        stack = Stack()
        [answer] = stack.ask(collectd_post(COLLECTD))
        self.assertEqual((answer.status, answer.json()), (200, {"accepted": 59}))
        self.assertEqual(answer.headers[b"content-type"], b"application/json")
        stored = stack.stored()
        self.assertEqual(len(stored), 59)
        [load] = [sample for sample in stored if sample["name"] == "load.load.shortterm"]
        self.assertEqual(load["tags"], {"host": "capture-host"})
        self.assertEqual(load["timestamp"], 1796199707414000000)

    def test_null_skipped(self) -> None:
        """A null value (collectd's NaN) is skipped, its data source's siblings stored, and ``/stats``
        counts it under ``nan``."""
        stack = Stack()
        body = [value_list([0.5, None, 0.25], ["shortterm", "midterm", "longterm"])]
        [answer] = stack.ask(collectd_post(body))
        self.assertEqual((answer.status, answer.json()), (200, {"accepted": 2}))
        self.assertEqual([s["name"] for s in stack.stored()], ["load.load.shortterm", "load.load.longterm"])
        self.assertEqual(stats(stack)["samples"]["skipped_by_reason"], {"nan": 1})

    def test_partial_write(self) -> None:
        """A bad value list among good ones is a 400 partial write that counts value lists rejected and
        samples accepted apart, reports the value list by its index, and stores the good ones."""
        stack = Stack()
        good = value_list([0.5, 0.75, 0.25], ["shortterm", "midterm", "longterm"])
        bad = value_list([1, 2], ["value"], plugin="cpu", type="cpu")
        memory = value_list([1024], ["value"], plugin="memory", type="memory", type_instance="used")
        [answer] = stack.ask(collectd_post([good, bad, memory]))
        self.assertEqual(answer.status, 400)
        self.assertEqual(
            answer.json(),
            {
                "error": "partial write",
                "detail": "1 value list rejected, 4 samples accepted",
                "accepted": 4,
                "rejected": 1,
                "errors": [{"index": 1, "error": "dsnames: 1 names for 2 values"}],
            },
        )
        self.assertEqual(
            [sample["name"] for sample in stack.stored()],
            ["load.load.shortterm", "load.load.midterm", "load.load.longterm", "memory.memory"],
        )
        self.assertEqual(stack.stats.samples_rejected["invalid"], 1)

    def test_not_json(self) -> None:
        """A body that is not JSON is 400 and stores nothing."""
        stack = Stack()
        [answer] = stack.ask(collectd_post(b"PUTVAL a/load/load N:1:2:3"))
        self.assertEqual((answer.status, answer.json()["error"]), (400, "malformed JSON"))
        self.assertEqual(stack.stored(), [])

    def test_text_plain_refused(self) -> None:
        """``Content-Type: text/plain`` (write_http's ``Format "Command"``) is 415."""
        [answer] = Stack().ask(collectd_post(COLLECTD, b"Content-Type: text/plain"))
        self.assertEqual((answer.status, answer.json()["error"]), (415, "unsupported media type"))

    def test_gzip(self) -> None:
        """A gzip-encoded body is inflated and taken: 200 with every sample."""
        stack = Stack()
        [answer] = stack.ask(collectd_post(gzip.compress(COLLECTD), JSON, GZIP))
        self.assertEqual((answer.status, answer.json()), (200, {"accepted": 59}))
        self.assertEqual(len(stack.stored()), 59)


class AgentFiguresTests(SynchronousTestCase):
    def test_scrape(self) -> None:
        """``GET /metrics`` shows the agents' skipped values by reason and each agent route's requests
        by status, in Prometheus' text format."""
        stack = Stack()
        answers = stack.ask(
            write(REMOTE_WRITE)
            + write(STALE, path=b"/api/v1/push")
            + post(b"/v1/metrics", OTLP, PROTOBUF)
            + post(b"/v1/metrics", b"garbage", PROTOBUF)
            + collectd_post(COLLECTD)
            + get(b"/metrics")
        )
        self.assertEqual([answer.status for answer in answers], [204, 204, 200, 400, 200, 200])
        families = {
            family.name: family for family in text_string_to_metric_families(answers[-1].body.decode())
        }
        skipped = {
            sample.labels["reason"]: sample.value
            for sample in families["ingest_samples_skipped"].samples
            if sample.name == "ingest_samples_skipped_total" and sample.value
        }
        self.assertEqual(skipped, {"nan": 26 + 2, "stale": 426})
        requests = {
            (sample.labels["route"], sample.labels["status"]): sample.value
            for sample in families["ingest_requests"].samples
            if sample.name == "ingest_requests_total" and sample.value
        }
        self.assertEqual(
            requests,
            {
                ("/api/v1/write", "204"): 1,
                ("/api/v1/push", "204"): 1,
                ("/v1/metrics", "200"): 1,
                ("/v1/metrics", "400"): 1,
                ("/collectd", "200"): 1,
            },
        )
        [accepted] = families["ingest_samples_accepted"].samples
        self.assertEqual(accepted.value, 351 + 23 + 59)
