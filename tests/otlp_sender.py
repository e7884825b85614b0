"""The real sender of `tests.test_otlp_e2e`: the OpenTelemetry Python SDK and its OTLP/HTTP exporter.

    python tests/otlp_sender.py ENDPOINT SECONDS none|gzip RUN REPORT

Runs in a process of its own (the SDK's reader and exporter threads stay out of
the test's reactor).  A ``MeterProvider`` with a resource (``service.name`` =
``e2e-RUN``, ``run`` = RUN) and one scope, ``e2e.sender``, exports through
``OTLPMetricExporter(endpoint=ENDPOINT, compression=...)`` under a
``PeriodicExportingMetricReader(export_interval_millis=500)``, while the
instruments (two counters' series, an up-down counter, a gauge, a histogram with
bounds 0.5, 1, 2.5 and 10) are recorded every 100 ms for SECONDS; then
``force_flush`` and ``shutdown`` export the last state.

The exporter is wrapped: every call's `MetricExportResult` and every point it
carried (the SDK's own data, before encoding) go to the JSON REPORT, with the
``Content-Encoding`` of each POST and every log record of level WARNING or more
(the exporter logs its failures).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

BOUNDS = [0.5, 1.0, 2.5, 10.0]


class RecordingExporter(MetricExporter):
    """`OTLPMetricExporter` as it is, with each export's result and points written down."""

    def __init__(self, inner: OTLPMetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.exports: list[dict[str, Any]] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        self.exports.append({"result": result.name, "points": points(metrics_data)})
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


def points(metrics_data: MetricsData) -> list[dict[str, Any]]:
    found = []
    for resource_metrics in metrics_data.resource_metrics:
        resource = dict(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    entry = {
                        "resource": resource,
                        "scope": scope_metrics.scope.name,
                        "name": metric.name,
                        "attributes": dict(point.attributes or {}),
                        "time": point.time_unix_nano,
                    }
                    if isinstance(point, HistogramDataPoint):
                        entry.update(
                            count=point.count,
                            sum=point.sum,
                            bounds=list(point.explicit_bounds),
                            counts=list(point.bucket_counts),
                        )
                    else:
                        entry["value"] = point.value
                    found.append(entry)
    return found


class Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def main(endpoint: str, seconds: float, compression: str, run: str, report: str) -> None:
    failures = Failures()
    logging.getLogger().addHandler(failures)
    encodings: list[str | None] = []
    session = requests.Session()
    session.hooks["response"].append(
        lambda response, *args, **kwargs: encodings.append(response.request.headers.get("Content-Encoding"))
    )
    exporter = RecordingExporter(
        OTLPMetricExporter(
            endpoint=endpoint,
            compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
            session=session,
        )
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=500)
    resource = Resource.create({"service.name": f"e2e-{run}", "run": run})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("e2e.sender", "0.1")
    served = meter.create_counter("e2e.requests", unit="{request}")
    queue = meter.create_up_down_counter("e2e.queue.depth")
    temperature = meter.create_gauge("e2e.temperature", unit="Cel")
    latency = meter.create_histogram("e2e.latency", unit="s", explicit_bucket_boundaries_advisory=BOUNDS)
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        tick += 1
        served.add(1, {"route": "/a", "ok": True})
        served.add(2, {"route": "/b", "ok": False})
        queue.add(1 if tick % 3 else -2, {"queue": "mail"})
        temperature.set(20 + tick * 0.25, {"room": "lab", "floor": 2})
        latency.record(tick % 12 * 0.3, {"route": "/a"})
        time.sleep(0.1)
    provider.force_flush()
    provider.shutdown()
    with open(report, "w") as output:
        json.dump(
            {
                "exports": exporter.exports,
                "content_encodings": encodings,
                "failures": failures.messages,
                "ticks": tick,
            },
            output,
        )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
