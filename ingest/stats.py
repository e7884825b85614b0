"""The service's own figures: counters, gauges and histograms.  Pure; a side module.

Every layer bumps plain attributes (no locks: only the reactor thread
touches them), so counting costs a dict update or an integer add on the hot
path.  `snapshot` shapes them as the JSON of ``GET /stats``;
`ingest.exposition` turns the same snapshot into Prometheus families.
Gauges owned elsewhere (buffer depth, parse queue) are passed in.
A worker process (``--workers``) says which it is: its id is in the
snapshot as ``worker``, a field only workers have.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Any

REJECTION_REASONS = (
    "invalid",
    "rate_limited",
    "buffer_full",
    "storage_failing",
    "internal_error",
    "body_too_large",
    "empty_body",
    "invalid_body",
    "malformed_gzip",
    "malformed_json",
    "malformed_line",
    "malformed_otlp",
    "malformed_remote_write",
    "malformed_snappy",
    "disk_space_low",
)
"""The reasons samples are rejected for (`Stats.samples_rejected`): per sample (``invalid``,
``rate_limited``, ``buffer_full``), or a body refused whole under its error's name.  ``/metrics``
exports each from start, at 0, so that an alert's ``rate()`` sees the first one."""

SKIP_REASONS = (
    "string_field",
    "nan",
    "infinity",
    "stale",
    "exemplar",
    "histogram",
    "exponential_histogram",
    "no_recorded_value",
    "notification",
)
"""The reasons values received are not stored as samples (`Stats.samples_skipped`), by format:
line protocol's string fields; remote write's, OTLP's and collectd's non-finite values, staleness
markers, exemplars, histograms and notifications.  Exported from start at 0, as `REJECTION_REASONS`."""

DELETION_REASONS = ("age", "bytes")
"""Why retention deleted a segment (`Stats.segments_deleted`): past ``--retention`` or over
``--retention-bytes``.  Exported from start at 0, as `REJECTION_REASONS`."""

RELOAD_RESULTS = ("ok", "failed")
"""How a reload (SIGHUP) ended (`Stats.reloads`); exported from start at 0."""

# Seconds; the last bucket is +Inf.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts observations in fixed buckets (upper bounds, seconds), as Prometheus does."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs ending with ``+Inf``."""
        total = 0
        pairs = []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count, "sum": round(self.sum, 6), "buckets": dict(self.cumulative())}


class Stats:
    """Figures since start-up."""

    def __init__(self, started: float, worker: int | None = None) -> None:
        """`worker` is the id of the worker process these figures are of; None in a single process."""
        self.started = started
        self.worker = worker
        self.connections_open = 0
        self.connections_total = 0
        self.connections_refused = 0  # past --max-connections, closed unread
        self.responses: Counter[tuple[str, int]] = Counter()  # (route, status)
        self.samples_accepted = 0
        self.samples_rejected: Counter[str] = Counter()  # by reason
        self.samples_skipped: Counter[str] = Counter()  # by reason
        self.latency = Histogram(LATENCY_BUCKETS)
        self.flushes = 0
        self.flush_errors = 0
        self.flush_duration = Histogram(FLUSH_BUCKETS)
        self.bytes_written = 0
        self.samples_written = 0
        self.segments_deleted: Counter[str] = Counter()  # by reason (DELETION_REASONS)
        self.segment_bytes_deleted: Counter[str] = Counter()  # by reason
        self.reloads: Counter[str] = Counter()  # by result: ok, failed

    def snapshot(self, now: float, gauges: dict[str, int]) -> dict[str, Any]:
        by_status: Counter[int] = Counter()
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.responses.items()):
            by_status[status] += count
            by_route.setdefault(route, {})[str(status)] = count
        worker = {} if self.worker is None else {"worker": self.worker}
        return {
            **worker,
            "uptime_seconds": round(now - self.started, 3),
            "connections": {
                "open": self.connections_open,
                "total": self.connections_total,
                "refused": self.connections_refused,
            },
            "requests": {
                "total": sum(by_status.values()),
                "by_status": {str(status): count for status, count in sorted(by_status.items())},
                "by_route": by_route,
                "latency_seconds": self.latency.snapshot(),
            },
            "samples": {
                "accepted": self.samples_accepted,
                "rejected": sum(self.samples_rejected.values()),
                "rejected_by_reason": dict(sorted(self.samples_rejected.items())),
                "skipped": sum(self.samples_skipped.values()),
                "skipped_by_reason": dict(sorted(self.samples_skipped.items())),
                "written": self.samples_written,
            },
            "buffer": {key: gauges[key] for key in ("depth", "high_mark", "capacity")},
            "parse_queue": gauges["parse_queue"],
            "flushes": self.flushes,
            "flush_errors": self.flush_errors,
            "flush_duration_seconds": self.flush_duration.snapshot(),
            "bytes_written": self.bytes_written,
            "segments_deleted": {reason: self.segments_deleted[reason] for reason in DELETION_REASONS},
            "segment_bytes_deleted": {
                reason: self.segment_bytes_deleted[reason] for reason in DELETION_REASONS
            },
            "reloads": {result: self.reloads[result] for result in RELOAD_RESULTS},
        }
