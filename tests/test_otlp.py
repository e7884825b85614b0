"""Tests for `ingest.otlp`: OTLP/HTTP metrics bodies to samples, and the answers OTLP specifies.

A body the OpenTelemetry Python SDK's OTLP/HTTP exporter really sent
(``tests/fixtures/otlp_metrics.pb``, made by ``tests/fixtures/record_otlp.py``)
decodes to the samples PRODUCT.md names; OTLP/JSON bodies written by hand after
the specification's example decode to the same samples as their protobuf.  Most
cases run three ways (`converted`): protobuf, OTLP/JSON through the direct walk,
and OTLP/JSON through ``json_format``; all three must agree.  The property tests
hold the module's contract: any bytes give a `Converted` or an `IngestError`
(400), and any request gives, by all three ways, the samples of a slow reference
mapping written from PRODUCT.md with `ingest.sample.make`'s rules.  gzip is the
caller's (`ingest.bodies`): a gzip body given as it is is refused.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
from collections.abc import Callable
from typing import Any

import ujson
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.metrics.v1 import metrics_pb2
from twisted.trial.unittest import SynchronousTestCase

from ingest import otlp
from ingest.errors import IngestError
from ingest.sample import MAX_NAME, MAX_NS, MAX_TAGS, Converted, Sample, check_name, make

NOW = 1_700_000_000_123_456_789
T = 1_700_000_000_000_000_000
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "otlp_metrics.pb")


def any_value(value: Any) -> AnyValue:
    """An ``AnyValue`` from a Python value: str, bool, int, float, bytes, list, dict; None is empty."""
    if value is None:
        return AnyValue()
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    return AnyValue(kvlist_value=KeyValueList(values=attributes(value)))


def attributes(values: dict[str, Any] | None) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in (values or {}).items()]


def number(
    value: float | int | None, tags: dict[str, Any] | None = None, time: int = T, flags: int = 0
) -> metrics_pb2.NumberDataPoint:
    point = metrics_pb2.NumberDataPoint(attributes=attributes(tags), time_unix_nano=time, flags=flags)
    if isinstance(value, float):
        point.as_double = value
    elif value is not None:
        point.as_int = value
    return point


def gauge(name: str, *points: metrics_pb2.NumberDataPoint) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(name=name, gauge=metrics_pb2.Gauge(data_points=points))


def counter(name: str, *points: metrics_pb2.NumberDataPoint) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(
        name=name, sum=metrics_pb2.Sum(data_points=points, is_monotonic=True, aggregation_temporality=2)
    )


def histogram(
    name: str,
    count: int,
    bounds: list[float],
    counts: list[int],
    total: float | None = None,
    tags: dict[str, Any] | None = None,
    flags: int = 0,
) -> metrics_pb2.Metric:
    point = metrics_pb2.HistogramDataPoint(
        attributes=attributes(tags),
        time_unix_nano=T,
        count=count,
        explicit_bounds=bounds,
        bucket_counts=counts,
        flags=flags,
        min=0.5,
        max=99.0,
    )
    if total is not None:
        point.sum = total
    return metrics_pb2.Metric(name=name, histogram=metrics_pb2.Histogram(data_points=[point]))


def summary(
    name: str,
    count: int,
    total: float,
    quantiles: list[tuple[float, float]],
    tags: dict[str, Any] | None = None,
) -> metrics_pb2.Metric:
    point = metrics_pb2.SummaryDataPoint(
        attributes=attributes(tags),
        time_unix_nano=T,
        count=count,
        sum=total,
        quantile_values=[
            metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=q, value=v) for q, v in quantiles
        ],
    )
    return metrics_pb2.Metric(name=name, summary=metrics_pb2.Summary(data_points=[point]))


def request(
    *metrics: metrics_pb2.Metric, resource: dict[str, Any] | None = None, scope: str = ""
) -> ExportMetricsServiceRequest:
    message = ExportMetricsServiceRequest()
    resource_metrics = message.resource_metrics.add()
    resource_metrics.resource.attributes.extend(attributes(resource))
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = scope
    scope_metrics.scope.version = "9.9"
    scope_metrics.metrics.extend(metrics)
    return message


def as_json(message: ExportMetricsServiceRequest) -> bytes:
    """OTLP/JSON as the protobuf JSON mapping writes it (lowerCamel keys, 64-bit integers as strings)."""
    text: str = json_format.MessageToJson(message)
    return text.encode()


def converted(message: ExportMetricsServiceRequest, now_ns: int = NOW) -> Converted:
    """`message` decoded as protobuf, as OTLP/JSON (the direct walk or, where it declines, json_format)
    and as OTLP/JSON through json_format: the three must agree."""
    protobuf = otlp.decode(message.SerializeToString(), False, now_ns)
    walked = otlp.decode(as_json(message), True, now_ns)
    mapped = otlp._mapped_json_request(json.loads(as_json(message)), now_ns)
    assert walked == protobuf, (walked, protobuf)
    assert mapped == protobuf, (mapped, protobuf)
    return protobuf


def samples(result: Converted) -> list[Sample]:
    """The stored samples, read back; each line is exactly what ujson writes for its sample."""
    found = []
    for line in result.lines:
        sample = ujson.loads(line)
        assert list(sample) == ["name", "value", "timestamp", "tags"], line
        assert ujson.dumps(sample) == line, line
        found.append(Sample(**sample))
    return found


def s(name: str, value: float | int, timestamp: int = T, **tags: str) -> Sample:
    return Sample(name, value, timestamp, tags)


class SdkBodyTests(SynchronousTestCase):
    """The body the OpenTelemetry Python SDK's OTLP/HTTP exporter sent (the recorded fixture)."""

    def setUp(self) -> None:
        with open(FIXTURE, "rb") as fixture:
            self.body = fixture.read()
        self.message = ExportMetricsServiceRequest.FromString(self.body)

    def expected(self) -> list[Sample]:
        resource = self.message.resource_metrics[0].resource
        sdk = {kv.key: kv.value.string_value for kv in resource.attributes}
        time = self.message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0].time_unix_nano
        base = {
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": sdk["telemetry.sdk.version"],
            "service.instance.id": sdk["service.instance.id"],
            "service.name": "checkout",
            "host.name": "web-1",
            "deployment.replicas": "3",
            "otel_scope_name": "shop.orders",
        }
        latency = {**base, "host.name": "web-1-pod", "route": "/cart"}
        bounds = ["0", "5", "10", "25", "50", "75", "100", "250", "500", "750", "1000", "2500", "5000"]
        bounds += ["7500", "10000", "+Inf"]
        cumulative = [0, 1, 3, 3, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 6, 6]
        return [
            Sample("orders", 3, time, {**base, "region": "eu", "paid": "true"}),
            Sample("orders", 5, time, {**base, "region": "us", "paid": "false"}),
            Sample("revenue", 12.5, time, {**base, "region": "eu"}),
            Sample("queue.depth", 5, time, {**base, "queue": "mail"}),
            Sample("room.temperature", 21.5, time, {**base, "room": "lab", "floor": "2"}),
            Sample("http.latency_count", 6, time, latency),
            Sample("http.latency_sum", 6177.0, time, latency),
        ] + [
            Sample("http.latency_bucket", count, time, {**latency, "le": le})
            for le, count in zip(bounds, cumulative, strict=True)
        ]

    def test_protobuf(self) -> None:
        """Counters, an up-down counter, a gauge and a histogram: names as sent, every tag, no loss."""
        result = otlp.decode(self.body, False, NOW)
        self.assertEqual(samples(result), self.expected())
        self.assertEqual((result.rejected, result.errors, result.skipped), (0, [], {}))

    def test_as_otlp_json(self) -> None:
        """The same request as OTLP/JSON gives the same samples, through the direct walk."""
        self.assertEqual(samples(otlp.decode(as_json(self.message), True, NOW)), self.expected())
        otlp._json_request(json.loads(as_json(self.message)), otlp._Output(NOW))  # does not decline
        self.assertEqual(converted(self.message), otlp.decode(self.body, False, NOW))

    def test_gzip_is_the_callers(self) -> None:
        """A gzip body as it came is not a request: the caller inflates it first."""
        self.assertRaises(IngestError, otlp.decode, gzip.compress(self.body), False, NOW)
        self.assertRaises(IngestError, otlp.decode, gzip.compress(as_json(self.message)), True, NOW)


# Written by hand after the OTLP/JSON example of the specification (opentelemetry-proto's
# examples/metrics.json): lowerCamel keys, 64-bit integers as strings or as numbers, enums as
# integers, an exemplar's ids in hex.
HAND_JSON = b"""{
  "resourceMetrics": [{
    "resource": {"attributes": [
      {"key": "service.name", "value": {"stringValue": "billing"}},
      {"key": "pid", "value": {"intValue": "4242"}}
    ]},
    "scopeMetrics": [{
      "scope": {"name": "billing.lib", "version": "0.1.0",
                "attributes": [{"key": "ignored", "value": {"stringValue": "scope attributes"}}]},
      "metrics": [
        {"name": "invoices", "unit": "1", "description": "issued",
         "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [
           {"asInt": "17", "startTimeUnixNano": "1699999990000000000", "timeUnixNano": "1700000000000000000",
            "attributes": [{"key": "currency", "value": {"stringValue": "EUR"}}],
            "exemplars": [{"asInt": "3", "timeUnixNano": "1699999999000000000",
                           "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                           "filteredAttributes": [{"key": "user", "value": {"stringValue": "u1"}}]}]}
         ]}},
        {"name": "queue.size", "gauge": {"dataPoints": [
           {"asDouble": 2.5, "timeUnixNano": 1700000000000000000,
            "attributes": [{"key": "queue", "value": {"stringValue": "mail"}},
                           {"key": "durable", "value": {"boolValue": true}},
                           {"key": "weight", "value": {"doubleValue": 0.75}}]}
         ]}},
        {"name": "latency", "unit": "ms", "histogram": {"aggregationTemporality": 2, "dataPoints": [
           {"startTimeUnixNano": "1699999990000000000", "timeUnixNano": "1700000000000000000",
            "count": "4", "sum": 12.5, "bucketCounts": ["1", "2", "1"], "explicitBounds": [0.5, 5],
            "min": 0.25, "max": 9, "attributes": []}
         ]}}
      ]
    }]
  }]
}"""

HAND_BASE = {"service.name": "billing", "pid": "4242", "otel_scope_name": "billing.lib"}
HAND_SAMPLES = [
    s("invoices", 17, **HAND_BASE, currency="EUR"),
    s("queue.size", 2.5, **HAND_BASE, queue="mail", durable="true", weight="0.75"),
    s("latency_count", 4, **HAND_BASE),
    s("latency_sum", 12.5, **HAND_BASE),
    s("latency_bucket", 1, **HAND_BASE, le="0.5"),
    s("latency_bucket", 3, **HAND_BASE, le="5"),
    s("latency_bucket", 4, **HAND_BASE, le="+Inf"),
]


class OtlpJsonTests(SynchronousTestCase):
    """OTLP/JSON bodies as clients write them, and the forms only the protobuf JSON mapping reads."""

    def test_hand_written(self) -> None:
        """The specification's form: string and numeric 64-bit integers, enums as numbers, hex ids."""
        result = otlp.decode(HAND_JSON, True, NOW)
        self.assertEqual(samples(result), HAND_SAMPLES)
        self.assertEqual((result.rejected, result.skipped), (0, {"exemplar": 1}))
        otlp._json_request(json.loads(HAND_JSON), otlp._Output(NOW))  # the direct walk reads it

    def test_through_json_format(self) -> None:
        """An unknown key sends the body through json_format; the hex ids do not stop it."""
        document = json.loads(HAND_JSON)
        document["resourceMetrics"][0]["futureField"] = {"x": 1}
        document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0]["exemplars"][
            0
        ]["spanId"] = "eee19b7ec3c1b1"  # not even a base64 length
        body = json.dumps(document).encode()
        self.assertRaises(otlp._Unusual, otlp._json_request, json.loads(body), otlp._Output(NOW))
        result = otlp.decode(body, True, NOW)
        self.assertEqual(samples(result), HAND_SAMPLES)
        self.assertEqual(result.skipped, {"exemplar": 1})

    def test_snake_case_keys(self) -> None:
        """The protobuf field names (json_format's ``preserving_proto_field_name``) read the same."""
        message = ExportMetricsServiceRequest()
        json_format.Parse(HAND_JSON, message)  # ids base64-read, but not stored anyway
        body = json_format.MessageToJson(message, preserving_proto_field_name=True).encode()
        self.assertIn(b'"resource_metrics"', body)
        self.assertEqual(samples(otlp.decode(body, True, NOW)), HAND_SAMPLES)

    def test_number_forms(self) -> None:
        """Integers as numbers or digit strings, doubles as numbers or the mapping's three names."""
        points = [
            {"asInt": 5, "timeUnixNano": 1700000000000000000},
            {"asInt": "-5", "timeUnixNano": "1700000000000000000"},
            {"asDouble": 3, "timeUnixNano": "0"},
            {"asDouble": "NaN"},
            {"asDouble": "Infinity"},
            {"asDouble": "-Infinity"},
            {"asDouble": "1.5"},  # a string of digits: the mapping reads it, the walk declines
            {"asInt": "9223372036854775807", "flags": 0},
        ]
        body = json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "m", "gauge": {"dataPoints": points}}]}]}]}).encode()  # fmt: skip
        result = otlp.decode(body, True, NOW)
        expected = [s("m", 5), s("m", -5), s("m", 3.0, NOW), s("m", 1.5, NOW), s("m", 2**63 - 1, NOW)]
        self.assertEqual(samples(result), expected)
        self.assertEqual(result.skipped, {"nan": 1, "infinity": 2})

    def test_malformed(self) -> None:
        """Not JSON, not an object, or not the message's types: 400 ``malformed OTLP``."""
        bodies = [
            b"",
            b"{",
            b"[]",
            b'"resourceMetrics"',
            b'{"resourceMetrics": 5}',
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": 5}]}]}]}',
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "gauge": {"dataPoints": ['
            b'{"asInt": "x"}]}}]}]}]}',
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "gauge": {"dataPoints": ['
            b'{"asInt": "18446744073709551615"}]}}]}]}]}',
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "gauge": {"dataPoints": ['
            b'{"asInt": 1, "asDouble": 1.5}]}}]}]}]}',
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "gauge": {"dataPoints": ['
            b'{"timeUnixNano": "-1", "asInt": 1}]}}]}]}]}',
            b'{"resourceMetrics": [{"resource": {"attributes": ['
            b'{"key": "k", "value": {"intValue": 1.5}}]}}]}',
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "gauge": {"dataPoints": ['
            b'{"asDouble": NaN}]}}]}]}]}',
            b"\xff\xfe{}",
        ]
        for body in bodies:
            error = self.assertRaises(IngestError, otlp.decode, body, True, NOW)
            self.assertEqual((error.status, error.error), (400, "malformed OTLP"), body)

    def test_empty_request(self) -> None:
        """An empty request stores nothing and is no error."""
        self.assertEqual(otlp.decode(b"{}", True, NOW), Converted([], 0, [], {}))
        self.assertEqual(otlp.decode(b"", False, NOW), Converted([], 0, [], {}))


class MappingTests(SynchronousTestCase):
    """PRODUCT.md's mapping, each rule alone; every case by protobuf and both OTLP/JSON paths."""

    def test_gauge_and_sum(self) -> None:
        """One sample a point, named by the metric, the value as_double or as_int, the point's time."""
        result = converted(
            request(
                gauge("temp", number(21.5, {"room": "a"}), number(-3, {"room": "b"}, time=T + 1)),
                counter("requests.total_count", number(7)),
            )
        )
        self.assertEqual(
            samples(result),
            [s("temp", 21.5, room="a"), s("temp", -3, T + 1, room="b"), s("requests.total_count", 7)],
        )

    def test_tags_in_order(self) -> None:
        """Resource, then otel_scope_name, then the point's attributes; the later wins a clash."""
        result = converted(
            request(
                gauge("m", number(1.0, {"host": "point", "otel_scope_name": "mine"}), number(2.0)),
                resource={"host": "resource", "region": "eu", "otel_scope_name": "theirs"},
                scope="lib",
            )
        )
        self.assertEqual(
            samples(result),
            [
                s("m", 1.0, host="point", region="eu", otel_scope_name="mine"),
                s("m", 2.0, host="resource", region="eu", otel_scope_name="lib"),
            ],
        )

    def test_no_scope_name(self) -> None:
        """An empty scope name gives no otel_scope_name tag; the scope's version is never stored."""
        self.assertEqual(samples(converted(request(gauge("m", number(1))))), [s("m", 1)])

    def test_attribute_values(self) -> None:
        """A string as it is; any other value as its JSON text (bytes as base64)."""
        values = {
            "s": "text / é",
            "i": -42,
            "b": True,
            "f": False,
            "d": 0.5,
            "whole": 3.0,
            "big": 1e21,
            "small": 1.5e-7,
            "nan": math.nan,
            "inf": -math.inf,
            "bytes": b"\x00\xff",
            "list": ["a/b", 1, 2.0, True, None, b"\x01", [], {"k": "v"}],
            "map": {"x": 1, "y": "é\n"},
            "empty": None,
        }
        result = converted(request(gauge("m", number(1, values))))
        self.assertEqual(
            samples(result)[0].tags,
            {
                "s": "text / é",
                "i": "-42",
                "b": "true",
                "f": "false",
                "d": "0.5",
                "whole": "3",
                "big": "1e+21",
                "small": "1.5e-7",
                "nan": "NaN",
                "inf": "-Infinity",
                "bytes": "AP8=",
                "list": '["a/b",1,2,true,null,"AQ==",[],{"k":"v"}]',
                "map": '{"x":1,"y":"é\\n"}',
                "empty": "",
            },
        )

    def test_histogram(self) -> None:
        """_count, _sum and cumulative _bucket samples; le as Prometheus writes it, +Inf the count."""
        result = converted(
            request(histogram("lat", 10, [0.005, 0.5, 1, 2.5, 1e6], [1, 2, 3, 0, 1, 3], 40.25, {"r": "a"}))
        )
        tags = {"r": "a"}
        self.assertEqual(
            samples(result),
            [
                Sample("lat_count", 10, T, tags),
                Sample("lat_sum", 40.25, T, tags),
                Sample("lat_bucket", 1, T, {**tags, "le": "0.005"}),
                Sample("lat_bucket", 3, T, {**tags, "le": "0.5"}),
                Sample("lat_bucket", 6, T, {**tags, "le": "1"}),
                Sample("lat_bucket", 6, T, {**tags, "le": "2.5"}),
                Sample("lat_bucket", 7, T, {**tags, "le": "1000000"}),
                Sample("lat_bucket", 10, T, {**tags, "le": "+Inf"}),
            ],
        )

    def test_histogram_without_sum_or_buckets(self) -> None:
        """No sum: no _sum sample; no buckets: only +Inf; counts past the bounds: as Prometheus."""
        result = converted(
            request(
                histogram("a", 3, [], []),
                histogram("b", 5, [1.0], [2, 2, 1]),  # three counts, one bound: two buckets
                histogram("c", 5, [1.0, 2.0], [2]),  # one count, two bounds: two buckets
            )
        )
        self.assertEqual(
            samples(result),
            [
                s("a_count", 3),
                s("a_bucket", 3, le="+Inf"),
                s("b_count", 5),
                s("b_bucket", 2, le="1"),
                s("b_bucket", 5, le="+Inf"),
                s("c_count", 5),
                s("c_bucket", 2, le="1"),
                s("c_bucket", 5, le="+Inf"),
            ],
        )

    def test_le_goes_last(self) -> None:
        """A point's own le attribute gives way to the bucket's, which is the last tag."""
        result = converted(request(histogram("h", 1, [1.0], [1, 0], None, {"le": "mine", "z": "1"})))
        self.assertEqual(samples(result)[0].tags, {"le": "mine", "z": "1"})
        self.assertEqual([list(sample.tags.items()) for sample in samples(result)[1:]], [
            [("z", "1"), ("le", "1")], [("z", "1"), ("le", "+Inf")]])  # fmt: skip

    def test_summary(self) -> None:
        """_count, _sum and one sample a quantile named by the metric, with a quantile tag."""
        result = converted(request(summary("rt", 4, 10.5, [(0.0, 1.0), (0.5, 2.5), (0.99, 7.0), (1.0, 9.0)])))
        self.assertEqual(
            samples(result),
            [
                s("rt_count", 4),
                s("rt_sum", 10.5),
                s("rt", 1.0, quantile="0"),
                s("rt", 2.5, quantile="0.5"),
                s("rt", 7.0, quantile="0.99"),
                s("rt", 9.0, quantile="1"),
            ],
        )

    def test_skipped(self) -> None:
        """NaN, infinities, the no-recorded-value flag, exponential histograms and exemplars: counted."""
        two_points = [
            metrics_pb2.ExponentialHistogramDataPoint(count=1),
            metrics_pb2.ExponentialHistogramDataPoint(),
        ]
        exponential = metrics_pb2.Metric(
            name="e", exponential_histogram=metrics_pb2.ExponentialHistogram(data_points=two_points)
        )
        with_exemplars = number(4.0)
        with_exemplars.exemplars.add(as_double=4.0, trace_id=b"t" * 16, span_id=b"s" * 8)
        with_exemplars.exemplars.add(as_int=4)
        result = converted(
            request(
                gauge("g", number(math.nan), number(math.inf), number(-math.inf), number(1.0, flags=1)),
                exponential,
                counter("c", with_exemplars),
                histogram("h", 1, [1.0], [1, 0], math.nan),
                histogram("hidden", 1, [1.0], [1, 0], 1.0, flags=1),
                summary("q", 2, math.inf, [(0.5, math.nan), (0.9, 1.0)]),
            )
        )
        self.assertEqual(
            samples(result),
            [
                s("c", 4.0),
                s("h_count", 1),
                s("h_bucket", 1, le="1"),
                s("h_bucket", 1, le="+Inf"),
                s("q_count", 2),
                s("q", 1.0, quantile="0.9"),
            ],
        )
        self.assertEqual(
            result.skipped,
            {"nan": 3, "infinity": 3, "no_recorded_value": 2, "exponential_histogram": 2, "exemplar": 2},
        )
        self.assertEqual((result.rejected, result.errors), (0, []))

    def test_timestamps(self) -> None:
        """0 is the time of receipt; a time past 2262-04-11 is rejected, as a JSON sample's."""
        points = [number(1, time=0), number(2, time=MAX_NS), number(3, time=MAX_NS + 1)]
        result = converted(request(gauge("m", *points)))
        self.assertEqual(samples(result), [s("m", 1, NOW), s("m", 2, MAX_NS)])
        self.assertEqual(result.errors, [(2, "timestamp: out of range (1677-09-21 to 2262-04-11)")])

    def test_rejected(self) -> None:
        """Points the sample rules refuse are rejected whole, each with its index in the body."""
        result = converted(
            request(
                gauge("ok", number(1)),
                gauge("", number(1), number(2)),
                gauge("bad\x01name", number(1)),
                gauge("n" * MAX_NAME, number(1)),
                gauge("n" * (MAX_NAME + 1), number(1)),
                gauge("m", number(None)),
                gauge("m", number(1, {"": "empty key"})),
                gauge("m", number(1, {"k": "v" * 2000})),
                histogram("h" * (MAX_NAME - 6), 1, [], []),  # _count fits, _bucket does not
                histogram("h", 2**64 - 1, [1.0, 2.0], [2**64 - 1, 1, 0]),  # cumulative past 64 bits
            )
        )
        self.assertEqual(samples(result), [s("ok", 1), s("n" * MAX_NAME, 1)])
        self.assertEqual(result.rejected, 9)
        self.assertEqual(
            result.errors,
            [
                (1, "name: must be a non-empty string"),
                (2, "name: must be a non-empty string"),
                (3, "name: control characters are not allowed"),
                (5, "name: longer than 256 characters"),
                (6, "value: missing"),
                (7, "tags: keys must have 1 to 256 characters"),
                (8, "tags: value of 'k' longer than 1024 characters"),
                (9, "name: longer than 256 characters"),
                (10, "value: integer out of 64-bit range"),
            ],
        )

    def test_tag_count_limit(self) -> None:
        """MAX_TAGS tags are stored; a histogram's le counts as one of them."""
        at_limit = {f"k{i}": "v" for i in range(MAX_TAGS)}
        below = {f"k{i}": "v" for i in range(MAX_TAGS - 1)}
        result = converted(
            request(
                gauge("fits", number(1, at_limit)),
                gauge("over", number(1, {**at_limit, "one": "more"})),
                histogram("fits", 1, [], [], tags=below),
                histogram("over", 1, [], [], tags=at_limit),
            )
        )
        self.assertEqual([sample.name for sample in samples(result)], ["fits", "fits_count", "fits_bucket"])
        self.assertEqual([index for index, _ in result.errors], [1, 3])
        self.assertEqual({reason for _, reason in result.errors}, {f"tags: more than {MAX_TAGS}"})

    def test_error_list_is_bounded(self) -> None:
        """Every rejected point is counted; the first MAX_ERRORS are listed."""
        result = converted(request(gauge("", *[number(i) for i in range(otlp.MAX_ERRORS + 5)])))
        self.assertEqual((result.rejected, len(result.errors)), (otlp.MAX_ERRORS + 5, otlp.MAX_ERRORS))
        self.assertEqual(result.errors[-1][0], otlp.MAX_ERRORS - 1)

    def test_tag_sets_shared(self) -> None:
        """Points of several metrics and scopes with the same attributes get the tags of their scope."""
        message = request(gauge("a", number(1, {"k": "1"}), number(2, {"k": "2"})), scope="one")
        second = message.resource_metrics[0].scope_metrics.add()
        second.scope.name = "two"
        second.metrics.extend([gauge("b", number(3, {"k": "1"})), counter("c", number(4, {"k": "1"}))])
        self.assertEqual(
            samples(converted(message)),
            [
                s("a", 1, k="1", otel_scope_name="one"),
                s("a", 2, k="2", otel_scope_name="one"),
                s("b", 3, k="1", otel_scope_name="two"),
                s("c", 4, k="1", otel_scope_name="two"),
            ],
        )

    def test_malformed_protobuf(self) -> None:
        """Bytes that are not the message, or an attribute whose bytes are not a KeyValue: 400."""
        in_point = request(gauge("m", number(1, {"zz": "v"}))).SerializeToString().replace(b"zz", b"\xff\xff")
        in_resource = request(resource={"zz": "v"}).SerializeToString().replace(b"zz", b"\xff\xff")
        for data in (b"\xff", b"\x0a\x05abc", b"\x0a\x02\x12\x00\x0a", in_point, in_resource):
            error = self.assertRaises(IngestError, otlp.decode, data, False, NOW)
            self.assertEqual((error.status, error.error), (400, "malformed OTLP"), data)


def wire_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (lengths below 2**14, as here)."""
    length = (
        bytes([len(payload)])
        if len(payload) < 128
        else bytes([len(payload) & 0x7F | 0x80, len(payload) >> 7])
    )
    return bytes([number << 3 | 2]) + length + payload


class NestingTests(SynchronousTestCase):
    """Attributes nested past what upb and json_format read (100 messages) are a 400, not a crash."""

    def protobuf(self, depth: int, in_resource: bool) -> bytes:
        value = wire_field(1, b"x")  # AnyValue { string_value }
        for _ in range(depth):  # AnyValue { kvlist_value { values { key, value } } }
            value = wire_field(6, wire_field(1, wire_field(1, b"k") + wire_field(2, value)))
        attribute = wire_field(1, b"deep") + wire_field(2, value)
        point = b"\x31" + bytes(8) + (b"" if in_resource else wire_field(7, attribute))  # as_int 0
        metric = wire_field(1, b"m") + wire_field(5, wire_field(1, point))  # gauge
        resource = wire_field(1, wire_field(1, attribute)) if in_resource else b""
        return wire_field(1, resource + wire_field(2, wire_field(2, metric)))

    def test_protobuf(self) -> None:
        """30 levels are read and written as JSON text; 40 are refused, in a point or a resource."""
        for in_resource in (False, True):
            tags = samples(otlp.decode(self.protobuf(30, in_resource), False, NOW))[0].tags
            self.assertEqual(tags["deep"], '{"k":' * 30 + '"x"' + "}" * 30)
            for depth in (40, 400):
                error = self.assertRaises(
                    IngestError, otlp.decode, self.protobuf(depth, in_resource), False, NOW
                )
                self.assertEqual(error.status, 400)

    def test_json(self) -> None:
        """The same in OTLP/JSON, up to what ujson refuses to decode."""
        for depth in (30, 40, 1000, 5000):
            value = (
                '{"kvlistValue":{"values":[{"key":"k","value":' * depth
                + '{"stringValue":"x"}'
                + "}]}}" * depth
            )
            body = (
                '{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":'
                '[{"asInt":"1","attributes":[{"key":"deep","value":' + value + "}]}]}}]}]}]}"
            ).encode()
            try:
                result = otlp.decode(body, True, NOW)
            except IngestError as error:
                self.assertEqual((depth, error.status), (depth, 400))
            else:
                self.assertEqual(
                    (depth, samples(result)[0].tags["deep"]), (depth, '{"k":' * depth + '"x"' + "}" * depth)
                )


class NumberTextTests(SynchronousTestCase):
    """The two ways a double becomes a tag's text."""

    def test_positional(self) -> None:
        """Go's FormatFloat(x, 'f', -1, 64), for le and quantile (zero either sign is 0)."""
        cases = [
            (0.5, "0.5"),
            (1.0, "1"),
            (0.0, "0"),
            (-0.0, "0"),
            (100.0, "100"),
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5, "-2.5"),
            (123456.789, "123456.789"),
            (math.inf, "+Inf"),
            (-math.inf, "-Inf"),
            (math.nan, "NaN"),
        ]
        for value, text in cases:
            self.assertEqual(otlp.positional_text(value), text, value)

    def test_javascript(self) -> None:
        """ECMAScript's Number::toString (what Go's and the Collector's JSON write), for attributes."""
        cases = [
            (1.0, "1"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (-1.25e-10, "-1.25e-10"),
            (123.456, "123.456"),
            (math.nan, "NaN"),
            (math.inf, "Infinity"),
            (-math.inf, "-Infinity"),
        ]
        for value, text in cases:
            self.assertEqual(otlp.number_text(value), text, value)

    @given(st.floats(allow_nan=False, allow_infinity=False))
    def test_reads_back(self, value: float) -> None:
        """Both texts read back as the same double."""
        self.assertEqual(float(otlp.positional_text(value)), value)
        self.assertEqual(float(otlp.number_text(value)), value)


class AnswerTests(SynchronousTestCase):
    """The ExportMetricsServiceResponse and the google.rpc.Status, in the request's encoding."""

    def test_full_success(self) -> None:
        """Nothing rejected: an empty response (skipped values are not rejections)."""
        accepted = Converted(["line"], 0, [], {"nan": 2})
        self.assertEqual(otlp.response(accepted, False), b"")
        self.assertEqual(json.loads(otlp.response(accepted, True)), {})

    def test_partial_success(self) -> None:
        """Rejected points: partial_success with their number and the listed reasons."""
        partial = Converted([], 3, [(0, "name: must be a non-empty string"), (4, "value: missing")], {})
        message = "3 data points rejected: point 0: name: must be a non-empty string; point 4: value: missing"
        message += "; and 1 more"
        answer = ExportMetricsServiceResponse.FromString(otlp.response(partial, False))
        self.assertEqual(
            (answer.partial_success.rejected_data_points, answer.partial_success.error_message), (3, message)
        )
        self.assertEqual(
            json.loads(otlp.response(partial, True)),
            {"partialSuccess": {"rejectedDataPoints": "3", "errorMessage": message}},
        )

    def test_status(self) -> None:
        """An error body is a google.rpc.Status: protobuf, or JSON with the code as a number."""
        status = status_pb2.Status.FromString(otlp.status_body("body too large", 8, False))
        self.assertEqual((status.code, status.message), (8, "body too large"))
        self.assertEqual(json.loads(otlp.status_body("bad", 3, True)), {"code": 3, "message": "bad"})

    def test_built_status(self) -> None:
        """Without googleapis-common-protos, the Status built from its descriptor encodes the same."""
        built = otlp._built_status_class()
        for code, message in ((3, "bad"), (14, "é/\n"), (0, "")):
            self.assertEqual(
                built(code=code, message=message).SerializeToString(),
                status_pb2.Status(code=code, message=message).SerializeToString(),
            )
            self.assertEqual(
                json_format.MessageToJson(built(code=code, message=message)),
                json_format.MessageToJson(status_pb2.Status(code=code, message=message)),
            )


# Property tests: random requests against a reference mapping, random bytes against the contract.

# A key or a value of 126 bytes or more is read by upb, not by string_attribute.
KEYS = st.one_of(
    st.sampled_from(["host", "le", "quantile", "otel_scope_name", "k", "", "a/b"]),
    st.text(min_size=40, max_size=70),
)
SCALARS = st.one_of(
    st.text(max_size=5),
    st.text(min_size=40, max_size=70),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.binary(max_size=4),
    st.none(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
ATTRIBUTES = st.dictionaries(KEYS, VALUES, max_size=3)


class StringAttributeTests(SynchronousTestCase):
    """`otlp.string_attribute`, the fast reader of a string attribute's wire bytes, reads as upb does."""

    @given(st.text(max_size=130), st.one_of(VALUES, st.text(max_size=130)))
    def test_serialized(self, key: str, value: Any) -> None:
        """A KeyValue as protobuf writes it: read when it is a short string, else left to upb."""
        data = KeyValue(key=key, value=any_value(value)).SerializeToString()
        pair = otlp.string_attribute(data)
        # An empty key is not written at all (proto3's default): upb reads that form.
        short = isinstance(value, str) and 0 < len(key.encode()) < 126 and len(value.encode()) < 126
        self.assertEqual(pair, (key, value) if short else None)

    @settings(max_examples=500)
    @given(st.binary(max_size=20), st.binary(max_size=12))
    def test_any_bytes(self, prefix: bytes, rest: bytes) -> None:
        """Whatever it reads, upb reads the same; what upb refuses, it does not read."""
        for data in (prefix + rest, b"\x0a\x01k\x12" + prefix[:1] + b"\x0a" + rest):
            pair = otlp.string_attribute(data)
            if pair is not None:
                key_value = KeyValue.FromString(data)
                self.assertEqual(key_value.value.WhichOneof("value"), "string_value")
                self.assertEqual(pair, (key_value.key, key_value.value.string_value))

    def test_invalid_utf8(self) -> None:
        """Invalid UTF-8 is not read (upb refuses it: the body is a 400)."""
        self.assertIsNone(otlp.string_attribute(b"\x0a\x01\xff\x12\x03\x0a\x01v"))
        self.assertIsNone(otlp.string_attribute(b"\x0a\x01k\x12\x03\x0a\x01\xff"))
        self.assertEqual(otlp.string_attribute(b"\x0a\x01k\x12\x03\x0a\x01v"), ("k", "v"))


TIMES = st.sampled_from([0, 1, T, MAX_NS, MAX_NS + 1, 2**64 - 1])
NAMES = st.sampled_from(["m", "a.b", "", "x" * (MAX_NAME - 4), "dup"])
DOUBLES = st.one_of(st.floats(), st.sampled_from([0.5, 1.0, -0.0, 1e21]))
UINT64 = st.one_of(st.integers(0, 100), st.just(2**64 - 1))


@st.composite
def number_points(draw: st.DrawFn) -> metrics_pb2.NumberDataPoint:
    value = draw(st.one_of(DOUBLES, st.integers(-(2**63), 2**63 - 1), st.none()))
    point = number(value, draw(ATTRIBUTES), draw(TIMES), draw(st.sampled_from([0, 0, 1, 2])))
    for _ in range(draw(st.integers(0, 2))):
        point.exemplars.add(as_double=1.0, trace_id=draw(st.binary(max_size=16)), span_id=b"12345678")
    return point


@st.composite
def metrics(draw: st.DrawFn) -> metrics_pb2.Metric:
    name = draw(NAMES)
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "summary", "exponential", "none"]))
    if kind in ("gauge", "sum"):
        points = draw(st.lists(number_points(), max_size=3))
        return gauge(name, *points) if kind == "gauge" else counter(name, *points)
    if kind == "histogram":
        bounds = draw(st.lists(DOUBLES, max_size=3))
        metric = histogram(
            name,
            draw(UINT64),
            bounds,
            draw(st.lists(UINT64, max_size=4)),
            draw(st.one_of(st.none(), DOUBLES)),
            draw(ATTRIBUTES),
            draw(st.sampled_from([0, 1])),
        )
        metric.histogram.data_points[0].time_unix_nano = draw(TIMES)
        return metric
    if kind == "summary":
        quantiles = draw(st.lists(st.tuples(DOUBLES, DOUBLES), max_size=3))
        return summary(name, draw(UINT64), draw(DOUBLES), quantiles, draw(ATTRIBUTES))
    if kind == "exponential":
        points = [metrics_pb2.ExponentialHistogramDataPoint(count=1)] * draw(st.integers(0, 2))
        return metrics_pb2.Metric(
            name=name, exponential_histogram=metrics_pb2.ExponentialHistogram(data_points=points)
        )
    return metrics_pb2.Metric(name=name)


@st.composite
def requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    message = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_metrics = message.resource_metrics.add()
        resource_metrics.resource.attributes.extend(attributes(draw(ATTRIBUTES)))
        for _ in range(draw(st.integers(0, 2))):
            scope_metrics = resource_metrics.scope_metrics.add()
            scope_metrics.scope.name = draw(st.sampled_from(["", "lib", "x/y"]))
            scope_metrics.metrics.extend(draw(st.lists(metrics(), max_size=3)))
    return message


def reference_text(value: AnyValue, top: bool = True) -> str:
    """PRODUCT.md's tag text of an attribute: a string as it is, else its JSON text."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value if top else json.dumps(value.string_value, ensure_ascii=False)
    if kind == "bytes_value":
        text = base64.b64encode(value.bytes_value).decode()
        return text if top else json.dumps(text)
    if kind is None:
        return "" if top else "null"
    if kind == "bool_value":
        return json.dumps(value.bool_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return otlp.number_text(value.double_value)  # held by NumberTextTests
    if kind == "array_value":
        return "[" + ",".join(reference_text(item, False) for item in value.array_value.values) + "]"
    pairs = [
        json.dumps(kv.key, ensure_ascii=False) + ":" + reference_text(kv.value, False)
        for kv in value.kvlist_value.values
    ]
    return "{" + ",".join(pairs) + "}"


def reference(message: ExportMetricsServiceRequest, now_ns: int) -> tuple[list[Sample], int, dict[str, int]]:
    """The samples, the rejected count and the skipped counts of `message`, the slow and plain way."""
    stored: list[Sample] = []
    rejected = 0
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    point_skips: list[str] = []

    def finite(value: float) -> bool:
        if math.isnan(value):
            point_skips.append("nan")
        elif math.isinf(value):
            point_skips.append("infinity")
        return math.isfinite(value)

    for resource_metrics in message.resource_metrics:
        resource = {kv.key: reference_text(kv.value) for kv in resource_metrics.resource.attributes}
        for scope_metrics in resource_metrics.scope_metrics:
            scope = {"otel_scope_name": scope_metrics.scope.name} if scope_metrics.scope.name else {}
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                points = list(getattr(metric, kind).data_points) if kind else []
                for point in points:
                    if kind == "exponential_histogram":
                        skip("exponential_histogram")
                        continue
                    skipped["exemplar"] = skipped.get("exemplar", 0) + len(getattr(point, "exemplars", []))
                    if point.flags & 1:
                        skip("no_recorded_value")
                        continue
                    point_skips.clear()
                    tags = {
                        **resource,
                        **scope,
                        **{kv.key: reference_text(kv.value) for kv in point.attributes},
                    }
                    time = point.time_unix_nano or now_ns
                    parts: list[tuple[str, float | int, dict[str, str]]] = []

                    def extra(key: str, value: float, tags: dict[str, str] = tags) -> dict[str, str]:
                        rest = {k: v for k, v in tags.items() if k != key}
                        return {**rest, key: otlp.positional_text(value)}

                    if kind in ("gauge", "sum"):
                        value_kind = point.WhichOneof("value")
                        value = getattr(point, value_kind) if value_kind else None
                        if isinstance(value, float) and not finite(value):
                            skip(point_skips[0])
                            continue
                        parts.append((metric.name, value, tags))  # type: ignore[arg-type]
                    elif kind == "histogram":
                        parts.append((metric.name + "_count", point.count, tags))
                        if point.HasField("sum") and finite(point.sum):
                            parts.append((metric.name + "_sum", point.sum, tags))
                        running = 0
                        for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
                            running += count
                            parts.append((metric.name + "_bucket", running, extra("le", bound)))
                        parts.append((metric.name + "_bucket", point.count, extra("le", math.inf)))
                    else:
                        parts.append((metric.name + "_count", point.count, tags))
                        if finite(point.sum):
                            parts.append((metric.name + "_sum", point.sum, tags))
                        for each in point.quantile_values:
                            if finite(each.value):
                                parts.append((metric.name, each.value, extra("quantile", each.quantile)))
                    try:
                        check_name(metric.name)  # a histogram's or a summary's too, whatever its suffixes
                        checked = [make(name, value, time, tags) for name, value, tags in parts]
                    except IngestError:
                        rejected += 1
                        continue
                    stored += checked
                    for reason in point_skips:
                        skip(reason)
    return stored, rejected, {reason: count for reason, count in skipped.items() if count}


class PropertyTests(SynchronousTestCase):
    """The module's contract, for any input."""

    @settings(max_examples=300, deadline=None)
    @given(requests())
    def test_reference_mapping(self, message: ExportMetricsServiceRequest) -> None:
        """Any request gives the reference's samples, by protobuf and by both OTLP/JSON paths."""
        result = converted(message)
        stored, rejected, skipped = reference(message, NOW)
        self.assertEqual(samples(result), stored)
        self.assertEqual((result.rejected, result.skipped), (rejected, skipped))
        self.assertEqual(len(result.errors), min(rejected, otlp.MAX_ERRORS))

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes(self, body: bytes) -> None:
        """Any bytes, either encoding: a `Converted` or a 400, nothing else."""
        for is_json in (False, True):
            try:
                result = otlp.decode(body, is_json, NOW)
            except IngestError as error:
                self.assertEqual(error.status, 400)
            else:
                self.assertIsInstance(result, Converted)

    @settings(max_examples=300, deadline=None)
    @given(requests(), st.data())
    def test_mutated_protobuf(self, message: ExportMetricsServiceRequest, data: st.DataObject) -> None:
        """A real request with bytes changed, cut or added: a `Converted` or a 400."""
        body = bytearray(message.SerializeToString())
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(body)))
            body[position : position + data.draw(st.integers(0, 2))] = data.draw(st.binary(max_size=2))
        try:
            otlp.decode(bytes(body), False, NOW)
        except IngestError as error:
            self.assertEqual(error.status, 400)

    @settings(max_examples=300, deadline=None)
    @given(requests(), st.data())
    def test_mutated_json(self, message: ExportMetricsServiceRequest, data: st.DataObject) -> None:
        """A real OTLP/JSON request with a value swapped for any JSON value: a `Converted` or a 400."""
        document = json.loads(as_json(message))
        json_values = st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3)),
            lambda inner: st.one_of(
                st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=4), inner, max_size=2)
            ),
            max_leaves=4,
        )
        for _ in range(data.draw(st.integers(1, 3))):
            containers = list(_containers(document))
            if not containers:
                break
            container, key = data.draw(st.sampled_from(containers))
            container[key] = data.draw(json_values)
        try:
            result = otlp.decode(ujson.dumps(document).encode(), True, NOW)
        except IngestError as error:
            self.assertEqual(error.status, 400)
        else:
            self.assertIsInstance(result, Converted)


EXTRA_FIELDS = [
    b"\x11" + (5).to_bytes(8, "little"),  # a start time
    b"\x19" + (0).to_bytes(8, "little"),  # a time again: 0
    b"\x19" + (T + 1).to_bytes(8, "little"),  # a time again
    b"\x21" + bytes(8),  # as_double again: 0.0
    b"\x31" + (7).to_bytes(8, "little"),  # as_int again
    b"\x40\x01",  # flags: no recorded value
    b"\x40\x00",
    b"\x2a\x09\x31" + bytes(8),  # an exemplar
    b"\x3a\x08\x0a\x01k\x12\x03\x0a\x01v",  # an attribute k="v"
    b"\x3a\x02\x0a\xff",  # a broken attribute
    b"\x3a\x05\x0a\x01k",  # a cut attribute
    b"\x3a",  # a field cut after its tag
    b"\x3a\x80\x01\x0a\x7e" + b"k" * 126,  # a long attribute
    b"\x58\x01",  # field 11, unknown
]


@st.composite
def number_requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    """Gauges and Sums in one scope whose points share a few attribute sets and mostly one time,
    with valid names: most of them read at fixed places."""
    shared = draw(st.lists(ATTRIBUTES, min_size=1, max_size=3))
    message = ExportMetricsServiceRequest()
    scope_metrics = message.resource_metrics.add().scope_metrics.add()
    for _ in range(draw(st.integers(1, 3))):
        points = []
        for _ in range(draw(st.integers(1, 6))):
            value = draw(st.one_of(DOUBLES, st.integers(-(2**63), 2**63 - 1), st.none()))
            time = draw(st.one_of(st.just(T), TIMES))
            point = number(value, draw(st.sampled_from(shared)), time, draw(st.sampled_from([0, 0, 1, 2])))
            if draw(st.integers(0, 4)) == 0:
                point.exemplars.add(as_double=1.0)
            points.append(point)
        kind = draw(st.sampled_from([gauge, counter]))
        scope_metrics.metrics.append(kind(draw(st.sampled_from(["m", "m", ""])), *points))
    return message


class NumberFastPathTests(SynchronousTestCase):
    """Gauge and Sum points read at fixed places (`otlp._protobuf_numbers`) give what the same
    points parsed whole give."""

    @staticmethod
    def bodies(message: ExportMetricsServiceRequest, change: Callable[[bytes], bytes]) -> tuple[bytes, bytes]:
        """`message` with `change` made to the wire bytes of each of its Gauge and Sum points, as
        written, and with each such point led by ``flags: 0`` (overridden by any later flags), which
        sends it down the path that parses it whole."""
        read = otlp._readers()[0].FromString(message.SerializeToString())
        whole = otlp._readers()[0].FromString(message.SerializeToString())
        for resource_metrics, whole_resource in zip(
            read.resource_metrics, whole.resource_metrics, strict=True
        ):
            scopes = zip(resource_metrics.scope_metrics, whole_resource.scope_metrics, strict=True)
            for scope_metrics, whole_scope in scopes:
                for metric, whole_metric in zip(scope_metrics.metrics, whole_scope.metrics, strict=True):
                    kind = metric.WhichOneof("data")
                    if kind not in ("gauge", "sum"):
                        continue
                    points = getattr(metric, kind).data_points
                    for index, point in enumerate(points):
                        points[index] = change(point)
                        getattr(whole_metric, kind).data_points[index] = b"\x40\x00" + points[index]
        return read.SerializeToString(), whole.SerializeToString()

    def decoded(self, body: bytes) -> Converted | int:
        try:
            return otlp.decode(body, False, NOW)
        except IngestError as error:
            return error.status

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(requests(), number_requests()), st.data())
    def test_as_parsed_whole(self, message: ExportMetricsServiceRequest, data: st.DataObject) -> None:
        """Any request, its points with start times and fields repeated, flags, exemplars,
        attributes and broken attributes added: the same samples, rejections, skips (or 400)."""

        def change(point: bytes) -> bytes:
            if data.draw(st.booleans()):
                point = b"\x11" + data.draw(st.binary(min_size=8, max_size=8)) + point
            return point + b"".join(data.draw(st.lists(st.sampled_from(EXTRA_FIELDS), max_size=3)))

        fast, whole = self.bodies(message, change)
        self.assertEqual(self.decoded(fast), self.decoded(whole))

    def test_each_tail_form(self) -> None:
        """Each extra field and each pair of them after a point's attributes, with and without a
        start time: as parsed whole."""
        message = request(gauge("m", number(1.5, {"k": "v"}), number(2, {"k": "v"})))
        for first in [b"", *EXTRA_FIELDS]:
            for second in [b"", *EXTRA_FIELDS]:
                for start in (b"", b"\x11" + bytes(8)):
                    fast, whole = self.bodies(
                        message, lambda point, head=start, tail=first + second: head + point + tail
                    )
                    self.assertEqual(self.decoded(fast), self.decoded(whole), (first, second, start))

    def test_shared_tails(self) -> None:
        """Points of one scope sharing their tails, their times valid, invalid and zero in turn."""
        times = [T, T, MAX_NS + 1, T, 0, T + 1, 0, MAX_NS + 1, T]
        points = [number(i * 0.5 if i % 2 else i, {"k": str(i % 2)}, time) for i, time in enumerate(times)]
        points.append(number(math.nan, {"k": "0"}))
        message = request(gauge("m", *points), counter("c", *points), gauge("", *points))
        result = otlp.decode(message.SerializeToString(), False, NOW)
        stored, rejected, skipped = reference(message, NOW)
        self.assertEqual((samples(result), result.rejected, result.skipped), (stored, rejected, skipped))
        self.assertEqual([index for index, _ in result.errors], [2, 7, 12, 17, *range(20, 29)])


def _containers(value: Any) -> Any:
    """Every (container, key or index) of a JSON document, the document's own first."""
    if isinstance(value, dict):
        for key in value:
            yield value, key
            yield from _containers(value[key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield value, index
            yield from _containers(item)
