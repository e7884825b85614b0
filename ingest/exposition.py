"""The Prometheus text exposition of the service's figures (``GET /metrics``).

The figures live in `ingest.stats` as plain numbers; this side module turns
a snapshot of them into `prometheus_client` metric families at scrape time,
so the hot path never touches a prometheus_client object (no locks, no
label lookups per request) and the text format is prometheus_client's own.
Process figures (RSS, CPU, open files) come from its `ProcessCollector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode("ascii")


class SnapshotCollector:
    """A prometheus_client collector reading `ingest.stats.Stats.snapshot` output."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        requests = CounterMetricFamily(
            "ingest_requests", "HTTP requests answered, by route and status", labels=["route", "status"]
        )
        for route, statuses in s["requests"]["by_route"].items():
            for status, count in statuses.items():
                requests.add_metric([route, status], count)
        yield requests
        yield _histogram(
            "ingest_request_duration_seconds",
            "Time from a request's first line to its answer being ready",
            s["requests"]["latency_seconds"],
        )
        samples = s["samples"]
        yield CounterMetricFamily("ingest_samples_accepted", "Samples accepted", value=samples["accepted"])
        rejected = CounterMetricFamily(
            "ingest_samples_rejected",
            "Samples rejected (or whole bodies, where their count is unknown), by reason",
            labels=["reason"],
        )
        for reason, count in samples["rejected_by_reason"].items():
            rejected.add_metric([reason], count)
        yield rejected
        skipped = CounterMetricFamily(
            "ingest_samples_skipped", "Values received that are not samples, by reason", labels=["reason"]
        )
        for reason, count in samples["skipped_by_reason"].items():
            skipped.add_metric([reason], count)
        yield skipped
        yield CounterMetricFamily(
            "ingest_samples_written", "Samples written to disk", value=samples["written"]
        )
        buffer = s["buffer"]
        yield GaugeMetricFamily("ingest_buffer_samples", "Samples held in memory", value=buffer["depth"])
        yield GaugeMetricFamily(
            "ingest_buffer_high_mark_samples",
            "Most samples held in memory since start",
            value=buffer["high_mark"],
        )
        yield GaugeMetricFamily(
            "ingest_buffer_capacity_samples", "Samples the buffer holds at most", value=buffer["capacity"]
        )
        yield GaugeMetricFamily(
            "ingest_parse_queue_bodies", "Bodies waiting for or in the parse pool", value=s["parse_queue"]
        )
        yield CounterMetricFamily("ingest_flushes", "Batches written to disk", value=s["flushes"])
        yield CounterMetricFamily("ingest_write_errors", "Failed writes or fsyncs", value=s["flush_errors"])
        yield _histogram(
            "ingest_flush_duration_seconds", "Time to write one batch", s["flush_duration_seconds"]
        )
        yield CounterMetricFamily(
            "ingest_bytes_written", "Bytes written to segments", value=s["bytes_written"]
        )
        connections = s["connections"]
        yield GaugeMetricFamily(
            "ingest_connections_open", "Open client connections", value=connections["open"]
        )
        yield CounterMetricFamily("ingest_connections", "Connections accepted", value=connections["total"])
        if "worker" in s:
            yield GaugeMetricFamily(
                "ingest_worker_id", "Which worker process answered (--workers)", value=s["worker"]
            )
        if "sink" in s:
            sink = s["sink"]
            yield GaugeMetricFamily(
                "ingest_sink_connected", "1 while the NATS sink is connected", value=int(sink["connected"])
            )
            yield GaugeMetricFamily(
                "ingest_sink_lag_bytes",
                "Bytes on disk not yet acknowledged by JetStream",
                value=sink["lag_bytes"],
            )
            yield GaugeMetricFamily(
                "ingest_sink_lag_seconds",
                "Age of the oldest batch not yet acknowledged by JetStream",
                value=sink["lag_seconds"],
            )


def _histogram(name: str, documentation: str, figures: dict[str, Any]) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=list(figures["buckets"].items()), sum_value=figures["sum"]
    )


class Exposition:
    """A registry of its own (never the global one) holding our figures and the process's."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
