"""End to end: the real Prometheus remote-writes to `twistd -n ingest`, and everything it sent is stored.

Prometheus (the Debian package's binary) scrapes its own ``/metrics`` every second and remote-writes
to the service (`tests.helpers_prometheus.CONFIG`, metadata every second too).  After ten seconds of
shipping, a reload ends the scrape (its series then get staleness markers), the queue drains, and
Prometheus' own counters are compared with what the service stored: every sample Prometheus counts
as sent is a stored sample or a skipped NaN (the staleness markers, and the NaN quantiles of empty
summaries).  Takes about 25 s, most of it Prometheus' start (its first batch leaves 6 to 7 s after
it starts) and the ten seconds.  Skipped, saying why, when the binary is not installed.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.helpers_prometheus import PROMETHEUS, Prometheus, counters, get, samples_sent, start_prometheus
from tests.helpers_twistd import TWISTD, start_twistd, temp_cwd
from tests.segments import read_segments

SHIPPING = 10.0
"""Seconds of shipping after Prometheus' first batch is acknowledged."""
QUIET = 3.0
"""Seconds Prometheus' counters must stay still, its queue empty, before they are taken as final."""
TIMEOUT = 30.0
POLL = 0.25


class PrometheusRemoteWriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        if PROMETHEUS is None:
            raise SkipTest("prometheus is not installed (apt-get install prometheus): remote write not run")
        if TWISTD is None:
            self.fail("twistd is not installed: pip install . first")
        self.cwd = temp_cwd(self)

    def test_everything_sent_is_stored(self) -> None:
        """Ten seconds of Prometheus' remote write: no failure on its side, each sample sent stored or
        skipped by reason, ``up`` and ``prometheus_build_info`` stored with their job and instance."""
        data_dir = os.path.join(self.cwd, "data")
        service = start_twistd(
            self,
            self.cwd,
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--data-dir",
            data_dir,
            "--flush-interval",
            "0.1",
        )
        prometheus_dir = os.path.join(self.cwd, "prometheus")
        os.mkdir(prometheus_dir)
        prometheus = start_prometheus(prometheus_dir, f"http://127.0.0.1:{service.port}/api/v1/write")
        self.addCleanup(prometheus.stop)
        started = time.time_ns()

        poll(prometheus, lambda figures: samples_sent(figures) > 0, "Prometheus' first batch acknowledged")
        time.sleep(SHIPPING)
        prometheus.stop_scraping()
        final = drained(prometheus, service.port)
        sent = samples_sent(final)
        for problem in ("samples_failed", "samples_retried", "samples_dropped", "metadata_failed"):
            self.assertEqual(final[f"prometheus_remote_storage_{problem}_total"], 0, prometheus.log())
        self.assertGreater(
            final["prometheus_remote_storage_metadata_total"], 0, "metadata requests were sent"
        )

        status, text = get(service.port, "/stats")
        self.assertEqual(status, 200)
        stats = json.loads(text)
        samples = stats["samples"]
        self.assertEqual(service.stop(), -15, service.log())
        stored = read_segments(data_dir)

        skipped = samples["skipped_by_reason"]
        self.assertEqual(set(skipped), {"stale", "nan"}, "Prometheus' own metrics: no infinity, exemplar")
        self.assertGreater(skipped["stale"], 100, "a staleness marker for each series of the ended scrape")
        self.assertEqual(samples["rejected"], 0)
        self.assertLessEqual(set(stats["requests"]["by_status"]), {"200", "204"}, "no request refused")
        self.assertEqual(samples["accepted"], len(stored))
        self.assertEqual(
            len(stored) + skipped["stale"] + skipped["nan"], sent, "every sample sent is accounted"
        )
        self.assertNotIn("Traceback", service.log())

        target = prometheus.target
        for sample in stored:
            self.assertEqual(sorted(sample), ["name", "tags", "timestamp", "value"])
            self.assertEqual((sample["tags"]["job"], sample["tags"]["instance"]), ("prometheus", target))
            self.assertEqual(sample["timestamp"] % 1_000_000, 0, "milliseconds, in nanoseconds")
            self.assertTrue(started - 10**9 < sample["timestamp"] < time.time_ns())
        up = series(stored, "up")
        self.assertGreaterEqual(len(up), SHIPPING, "one a second while shipping")
        self.assertEqual({s["value"] for s in up}, {1.0})
        self.assertEqual(up[0]["tags"], {"instance": target, "job": "prometheus"})
        timestamps = [s["timestamp"] for s in up]
        self.assertEqual(timestamps, sorted(set(timestamps)), "one sample a scrape, in order")
        build = series(stored, "prometheus_build_info")
        self.assertEqual(len(build), len(up))
        self.assertEqual(
            sorted(build[0]["tags"]),
            ["branch", "goarch", "goos", "goversion", "instance", "job", "revision", "version"],
        )
        sent_counter = series(stored, "prometheus_remote_storage_samples_total")
        self.assertLessEqual(max(s["value"] for s in sent_counter), sent, "Prometheus' own count, stored")


def series(stored: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [sample for sample in stored if sample["name"] == name]


def poll(prometheus: Prometheus, condition: Any, what: str) -> dict[str, float]:
    """Prometheus' remote-storage figures once `condition` holds of them; fails past `TIMEOUT`."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        figures = counters(prometheus.port)
        if condition(figures):
            return figures
        time.sleep(POLL)
    raise AssertionError(f"not within {TIMEOUT} s: {what}\n{prometheus.log()}")


def drained(prometheus: Prometheus, ingest_port: int) -> dict[str, float]:
    """The final figures: the ended scrape's staleness markers stored, everything Prometheus read
    from its WAL sent, nothing pending, and all of it still for `QUIET` s."""
    last: list[Any] = [None, 0.0]

    def still(figures: dict[str, float]) -> bool:
        now = time.monotonic()
        read = figures["prometheus_remote_storage_samples_in_total"]
        state = (read, samples_sent(figures), figures["prometheus_remote_storage_samples_pending"])
        if state != last[0]:
            last[:] = [state, now]
            return False
        return read == state[1] and state[2] == 0 and now - last[1] >= QUIET and stale_seen(ingest_port)

    return poll(prometheus, still, "Prometheus' queue drained and still")


def stale_seen(port: int) -> bool:
    """Whether the service has counted staleness markers (they come a few seconds after the reload)."""
    status, text = get(port, "/stats")
    return status == 200 and json.loads(text)["samples"]["skipped_by_reason"].get("stale", 0) > 0
