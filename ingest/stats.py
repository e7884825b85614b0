"""The service's own figures: counters and gauges.  Pure; a side module.

Every layer bumps plain integer attributes (no locks: only the reactor
thread touches them).  `snapshot` shapes them as the JSON of ``GET /stats``;
gauges owned elsewhere (buffer depth) are passed in.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    """Counters since start-up, plus the open-connection gauge."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.connections_open = 0
        self.connections_total = 0
        self.responses: Counter[int] = Counter()
        self.samples_accepted = 0
        self.samples_rejected = 0
        self.flushes = 0
        self.flush_errors = 0
        self.bytes_written = 0
        self.samples_written = 0

    def snapshot(self, now: float, buffer_depth: int, buffer_capacity: int) -> dict[str, Any]:
        return {
            "uptime_seconds": round(now - self.started, 3),
            "connections": {"open": self.connections_open, "total": self.connections_total},
            "requests": {
                "total": sum(self.responses.values()),
                "by_status": {str(status): n for status, n in sorted(self.responses.items())},
            },
            "samples": {"accepted": self.samples_accepted, "rejected": self.samples_rejected},
            "buffer": {"depth": buffer_depth, "capacity": buffer_capacity},
            "flushes": self.flushes,
            "flush_errors": self.flush_errors,
            "bytes_written": self.bytes_written,
            "samples_written": self.samples_written,
        }
