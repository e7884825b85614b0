"""OTLP/HTTP metrics decoding cost per point, against the same samples posted to ``POST /metrics``.

    python bench/micro_otlp.py [--repeat 5]

One 1,000-point body per kind, each timed with `timeit` (best of 5 loops of 20 calls, 2 for
``otlp-json-mapped``; the median over ``--repeat`` rounds), in microseconds a point (a sample for
``/metrics``):

- ``protobuf``: `ingest.otlp.decode` of a protobuf ``ExportMetricsServiceRequest``: one resource
  (4 attributes, as the SDK sends them), one scope, 50 Sums of 20 points, each point with 3 string
  attributes (20 distinct sets), one timestamp;
- ``otlp-json``: the same request as OTLP/JSON (``json_format.MessageToJson``: lowerCamel keys,
  integers as strings), through the direct walk;
- ``otlp-json-mapped``: the same body with one unknown key, which sends it through ``json_format``;
- ``protobuf-distinct``: the protobuf body with 1,000 distinct attribute sets (no reuse);
- ``protobuf-start``: the protobuf body with a start time on each point, as the SDK sends a Sum;
- ``histogram``: 100 Histogram points of 10 bounds (1,300 samples), per sample;
- ``metrics-json``: `ingest.bodies.decode_metrics` of the same 1,000 samples as a JSON array of
  sample objects, the tags each point gets (resource, scope and point attributes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ujson
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ingest import bodies, otlp

TIME_NS = 1_700_000_000_123_456_789
RESOURCE = {
    "service.name": "checkout",
    "host.name": "web-1",
    "service.instance.id": "ffaf668e-281b-45c2-b66c-28daf6fcc48e",
    "telemetry.sdk.language": "python",
}


def request(metrics: int, points: int, distinct: bool, start: bool = False) -> ExportMetricsServiceRequest:
    message = ExportMetricsServiceRequest()
    resource_metrics = message.resource_metrics.add()
    for key, value in RESOURCE.items():
        resource_metrics.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = "shop"
    for m in range(metrics):
        metric = scope_metrics.metrics.add(name=f"metric.{m}")
        for p in range(points):
            point = metric.sum.data_points.add(time_unix_nano=TIME_NS, as_double=p * 0.5 + m)
            if start:
                point.start_time_unix_nano = TIME_NS - 60_000_000_000
            route = f"/r{m * points + p}" if distinct else f"/r{p}"
            for key, value in (("route", route), ("status", "200"), ("method", "GET")):
                point.attributes.add(key=key, value=AnyValue(string_value=value))
    return message


def histograms(count: int) -> ExportMetricsServiceRequest:
    message = ExportMetricsServiceRequest()
    scope_metrics = message.resource_metrics.add().scope_metrics.add()
    metric = scope_metrics.metrics.add(name="http.latency")
    for p in range(count):
        point = metric.histogram.data_points.add(time_unix_nano=TIME_NS, count=55, sum=1234.5)
        point.explicit_bounds.extend([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5])
        point.bucket_counts.extend(range(11))
        point.attributes.add(key="route", value=AnyValue(string_value=f"/r{p % 10}"))
    return message


def metrics_json(message: ExportMetricsServiceRequest) -> bytes:
    samples = [json.loads(line) for line in otlp.decode(message.SerializeToString(), False, 0).lines]
    for sample in samples:
        sample["timestamp"] = sample["timestamp"] / 1e9
    return ujson.dumps(samples).encode()


def measure(call: Callable[[], object], units: int, number: int = 20) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number / units * 1e6


def one_round() -> dict[str, float]:
    shared = request(50, 20, False)
    protobuf = shared.SerializeToString()
    as_json = json_format.MessageToJson(shared, indent=None).encode()
    mapped = as_json.replace(b'{"resourceMetrics"', b'{"unknownField": 1, "resourceMetrics"', 1)
    distinct = request(50, 20, True).SerializeToString()
    started = request(50, 20, False, start=True).SerializeToString()
    histogram = histograms(100).SerializeToString()
    array = metrics_json(shared)
    assert len(otlp.decode(as_json, True, 1).lines) == 1000
    assert otlp.decode(started, False, 1) == otlp.decode(protobuf, False, 1)
    assert otlp.decode(mapped, True, 1) == otlp.decode(as_json, True, 1)
    assert len(otlp.decode(histogram, False, 1).lines) == 1300
    assert bodies.decode_metrics(bodies.JSON, array, 1).accepted == 1000
    return {
        "protobuf": measure(lambda: otlp.decode(protobuf, False, 1), 1000),
        "otlp-json": measure(lambda: otlp.decode(as_json, True, 1), 1000),
        "otlp-json-mapped": measure(lambda: otlp.decode(mapped, True, 1), 1000, number=2),
        "protobuf-distinct": measure(lambda: otlp.decode(distinct, False, 1), 1000),
        "protobuf-start": measure(lambda: otlp.decode(started, False, 1), 1000),
        "histogram": measure(lambda: otlp.decode(histogram, False, 1), 1300),
        "metrics-json": measure(lambda: bodies.decode_metrics(bodies.JSON, array, 1), 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    rounds = [one_round() for _ in range(options.repeat)]
    print("| body | us a point |")
    print("| --- | ---: |")
    for kind in rounds[0]:
        print(f"| {kind} | {statistics.median(r[kind] for r in rounds):.2f} |")


if __name__ == "__main__":
    main()
