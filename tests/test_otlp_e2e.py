"""End to end: the OpenTelemetry Python SDK's OTLP/HTTP exporter against `twistd -n ingest`.

The sender is the real one (``opentelemetry-sdk`` and
``opentelemetry-exporter-otlp-proto-http``, installed with the test extras, so
this test never skips): `tests/otlp_sender.py`, in processes of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers_twistd import TWISTD, environment, reap, start_twistd, temp_cwd
from tests.segments import read_segments

SENDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "otlp_sender.py")
SECONDS = 10.5
LE = {0.5: "0.5", 1.0: "1", 2.5: "2.5", 10.0: "10"}
"""The sender's histogram bounds and the ``le`` tags PRODUCT.md's mapping gives them."""


def tag_text(value: Any) -> str:
    """An attribute as a tag: a string as it is, a bool or an int as its JSON text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    raise AssertionError(f"the sender sends no {value!r}")


def expected_samples(point: dict[str, Any]) -> list[tuple[str, float, int, dict[str, str]]]:
    """What PRODUCT.md says is stored for one point the exporter sent."""
    tags = {key: tag_text(value) for key, value in point["resource"].items()}
    tags["otel_scope_name"] = point["scope"]
    tags.update({key: tag_text(value) for key, value in point["attributes"].items()})
    name, time = point["name"], point["time"]
    if "value" in point:
        return [(name, point["value"], time, tags)]
    stored = [(f"{name}_count", point["count"], time, tags), (f"{name}_sum", point["sum"], time, tags)]
    cumulative = 0
    for bound, count in zip(point["bounds"], point["counts"], strict=False):
        cumulative += count
        stored.append((f"{name}_bucket", cumulative, time, {**tags, "le": LE[bound]}))
    stored.append((f"{name}_bucket", point["count"], time, {**tags, "le": "+Inf"}))
    return stored


def key(name: str, value: float, timestamp: int, tags: dict[str, str]) -> tuple[Any, ...]:
    return name, value, timestamp, tuple(sorted(tags.items()))


class OtlpSdkTests(SynchronousTestCase):
    def setUp(self) -> None:
        if TWISTD is None:
            self.fail("twistd is not installed: pip install . first")
        self.cwd = temp_cwd(self)

    def test_sdk_exporter(self) -> None:
        """Two SDK processes, one with gzip, export every 500 ms for 10.5 s and at shutdown: every
        export succeeds, the exporter logs no failure, and every point it sent is stored, once, under
        the names and tags PRODUCT.md gives (counters, an up-down counter, a gauge, a histogram)."""
        arguments = ("--port", "tcp:0:interface=127.0.0.1", "--flush-interval", "0.05")
        service = start_twistd(self, self.cwd, *arguments)
        endpoint = f"http://127.0.0.1:{service.port}/v1/metrics"
        senders = {}
        for run, compression in (("plain", "none"), ("gzip", "gzip")):
            report = os.path.join(self.cwd, f"{run}.json")
            process = subprocess.Popen(
                [sys.executable, SENDER, endpoint, str(SECONDS), compression, run, report],
                env=environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            self.addCleanup(reap, process)
            senders[run] = (process, report)
        reports = {}
        for run, (process, report) in senders.items():
            output, _ = process.communicate(timeout=90)
            self.assertEqual(process.returncode, 0, output.decode(errors="replace"))
            with open(report) as file:
                reports[run] = json.load(file)
        self.assertEqual(service.stop(), -signal.SIGTERM, service.log())

        expected = []
        for run, report in reports.items():
            self.assertEqual(report["failures"], [], run)
            self.assertEqual({export["result"] for export in report["exports"]}, {"SUCCESS"}, run)
            self.assertGreaterEqual(len(report["exports"]), 15, run)  # 10.5 s at 500 ms, and the last
            self.assertEqual(set(report["content_encodings"]), {"gzip" if run == "gzip" else None}, run)
            for export in report["exports"]:
                for point in export["points"]:
                    expected += [key(*sample) for sample in expected_samples(point)]
        names = {name for name, *_ in expected}
        self.assertEqual(
            names,
            {
                "e2e.requests",
                "e2e.queue.depth",
                "e2e.temperature",
                "e2e.latency_count",
                "e2e.latency_sum",
                "e2e.latency_bucket",
            },
        )
        stored = [key(**sample) for sample in read_segments(os.path.join(self.cwd, "data"))]
        self.assertEqual(Counter(stored), Counter(expected))
