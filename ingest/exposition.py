"""The Prometheus text exposition of the service's figures (``GET /metrics``).

The figures live in `ingest.stats` as plain numbers; this side module turns
a snapshot of them into `prometheus_client` metric families at scrape time,
so the hot path never touches a prometheus_client object (no locks, no
label lookups per request) and the text format is prometheus_client's own.
Process figures (RSS, CPU, open files) come from its `ProcessCollector`.

Every labelled counter series that can exist is exported from start, at 0:
each ``(route, status)`` of `expected_answers` and every known rejection
and skip reason (`ingest.stats.REJECTION_REASONS`, `SKIP_REASONS`), both reload results, and
every reason retention deletes a segment for (`DELETION_REASONS`).  A
series that first appears at its first event is invisible to ``rate()``
and ``increase()``, so an alert on it would miss that event.

Under ``--workers`` the snapshot is the sum over workers
(`ingest.workerstats.merge`) and every family keeps its name for the sum;
each worker's part of the unlabelled counters and gauges is exported too,
as ``ingest_worker_<figure>{worker="K"}`` (`per_worker_families`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ingest.stats import DELETION_REASONS, REJECTION_REASONS, SKIP_REASONS

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode("ascii")


class SnapshotCollector:
    """A prometheus_client collector reading `ingest.stats.Stats.snapshot` output."""

    def __init__(
        self, snapshot: Callable[[], dict[str, Any]], expected_answers: Iterable[tuple[str, int]] = ()
    ) -> None:
        self._snapshot = snapshot
        self._expected_answers = sorted(set(expected_answers))

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        yield from self._families(s)
        if "workers" in s:
            yield from per_worker_families(
                {worker: list(self._families(figures, True)) for worker, figures in s["workers"].items()}
            )
            yield per_worker_gauge(
                "ingest_worker_figures_age_seconds",
                "How old each worker's figures in this scrape are (published every second)",
                {worker: figures["age_seconds"] for worker, figures in s["workers"].items()},
            )

    def _requests(self, s: dict[str, Any]) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ingest_requests", "HTTP requests answered, by route and status", labels=["route", "status"]
        )
        answered: dict[tuple[str, str], int] = {
            (route, str(status)): 0 for route, status in self._expected_answers
        }
        for route, statuses in s["requests"]["by_route"].items():
            for status, count in statuses.items():
                answered[route, status] = count
        for (route, status), count in sorted(answered.items()):
            requests.add_metric([route, status], count)
        yield requests
        yield _histogram(
            "ingest_request_duration_seconds",
            "Time from a request's first line to its answer being ready",
            s["requests"]["latency_seconds"],
        )

    def _families(self, s: dict[str, Any], unlabelled_only: bool = False) -> Iterator[Metric]:
        """The families of one snapshot (a process's own, or the merge of all workers').

        `unlabelled_only` leaves out the labelled families and histograms,
        which `per_worker_families` does not use (most of the cost of a
        scrape), and the disk's figures (all workers measure one directory).
        """
        if not unlabelled_only:
            yield from self._requests(s)
        samples = s["samples"]
        yield CounterMetricFamily("ingest_samples_accepted", "Samples accepted", value=samples["accepted"])
        if not unlabelled_only:
            yield from _reasons(samples)
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
        if not unlabelled_only:
            yield _histogram(
                "ingest_flush_duration_seconds", "Time to write one batch", s["flush_duration_seconds"]
            )
        yield CounterMetricFamily(
            "ingest_bytes_written", "Bytes written to segments", value=s["bytes_written"]
        )
        deleted = CounterMetricFamily(
            "ingest_segments_deleted",
            "Segments deleted by retention, by reason (age, bytes)",
            labels=["reason"],
        )
        deleted_bytes = CounterMetricFamily(
            "ingest_segments_deleted_bytes",
            "Bytes of the segments retention deleted, by reason",
            labels=["reason"],
        )
        for reason, count in _from_zero(DELETION_REASONS, s.get("segments_deleted", {})):
            deleted.add_metric([reason], count)
        for reason, count in _from_zero(DELETION_REASONS, s.get("segment_bytes_deleted", {})):
            deleted_bytes.add_metric([reason], count)
        yield deleted
        yield deleted_bytes
        connections = s["connections"]
        yield GaugeMetricFamily(
            "ingest_connections_open", "Open client connections", value=connections["open"]
        )
        yield CounterMetricFamily("ingest_connections", "Connections accepted", value=connections["total"])
        yield CounterMetricFamily(
            "ingest_connections_refused",
            "Connections closed unread past --max-connections",
            value=connections["refused"],
        )
        if not unlabelled_only:
            reloads = CounterMetricFamily(
                "ingest_reloads",
                "Reloads of the settings on SIGHUP, by result: ok or failed",
                labels=["result"],
            )
            for result, count in s["reloads"].items():
                reloads.add_metric([result], count)
            yield reloads
        disk = None if unlabelled_only else s.get("disk")  # one directory: the same for every worker
        if disk is not None:
            for key, name, documentation in (
                (
                    "segment_bytes",
                    "ingest_segments_bytes",
                    "Bytes of the segment files in the data directory",
                ),
                ("segments", "ingest_segments", "Segment files in the data directory"),
                ("free_bytes", "ingest_disk_free_bytes", "Free bytes on the data directory's file system"),
                ("total_bytes", "ingest_disk_size_bytes", "Size of the data directory's file system"),
                ("min_free_bytes", "ingest_disk_min_free_bytes", "--min-free: below it, ingestion gets 503"),
            ):
                yield GaugeMetricFamily(name, documentation, value=disk[key])
            for key, name, documentation in (
                (
                    "oldest_segment_seconds",
                    "ingest_oldest_segment_timestamp_seconds",
                    "Oldest segment's start",
                ),
                (
                    "newest_segment_seconds",
                    "ingest_newest_segment_timestamp_seconds",
                    "Newest segment's start",
                ),
            ):
                if disk[key] is not None:
                    yield GaugeMetricFamily(name, documentation, value=disk[key])
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


PER_WORKER_PREFIX = "ingest_worker_"
"""Per-worker families are named ``ingest_worker_<figure>``: see `per_worker_families`."""


def per_worker_families(families: dict[str, list[Metric]]) -> Iterator[Metric]:
    """Each unlabelled counter and gauge of ingest's, once per worker, under a ``worker`` label.

    `families` are each worker's own families, by worker id.  A figure
    ``ingest_X`` becomes ``ingest_worker_X{worker="K"}``: a name of its own,
    so that ``sum()`` over the unlabelled family (already the sum over
    workers) never counts twice.  Labelled families (by route, status,
    reason) and histograms are exported as sums only: per worker they would
    multiply the series by N for little gain.
    """
    merged: dict[str, Metric] = {}
    for worker, worker_families in sorted(families.items(), key=lambda item: int(item[0])):
        for family in worker_families:
            if family.type not in ("counter", "gauge") or family.name == "ingest_worker_id":
                continue
            if len(family.samples) != 1 or family.samples[0].labels:
                continue
            name = PER_WORKER_PREFIX + family.name.removeprefix("ingest_")
            if name not in merged:
                kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
                merged[name] = kind(name, f"{family.documentation}, per worker", labels=["worker"])
            merged[name].add_metric([worker], family.samples[0].value)  # type: ignore[attr-defined]
    yield from merged.values()


def per_worker_gauge(name: str, documentation: str, values: dict[str, float]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["worker"])
    for worker, value in sorted(values.items(), key=lambda item: int(item[0])):
        gauge.add_metric([worker], value)
    return gauge


def _reasons(samples: dict[str, Any]) -> Iterator[Metric]:
    rejected = CounterMetricFamily(
        "ingest_samples_rejected",
        "Samples rejected (or whole bodies, where their count is unknown), by reason",
        labels=["reason"],
    )
    for reason, count in _from_zero(REJECTION_REASONS, samples["rejected_by_reason"]):
        rejected.add_metric([reason], count)
    yield rejected
    skipped = CounterMetricFamily(
        "ingest_samples_skipped", "Values received that are not samples, by reason", labels=["reason"]
    )
    for reason, count in _from_zero(SKIP_REASONS, samples["skipped_by_reason"]):
        skipped.add_metric([reason], count)
    yield skipped


def _from_zero(known: Iterable[str], counts: dict[str, int]) -> list[tuple[str, int]]:
    """`counts` with every `known` key at 0 when it has none yet, sorted by key."""
    return sorted({**dict.fromkeys(known, 0), **counts}.items())


def _histogram(name: str, documentation: str, figures: dict[str, Any]) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=list(figures["buckets"].items()), sum_value=figures["sum"]
    )


class Exposition:
    """A registry of its own (never the global one) holding our figures and the process's."""

    def __init__(
        self, snapshot: Callable[[], dict[str, Any]], expected_answers: Iterable[tuple[str, int]] = ()
    ) -> None:
        """`expected_answers`: the ``(route, status)`` pairs exported at 0 before their first answer."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot, expected_answers))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
