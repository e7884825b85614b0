"""End to end: ``twistd -n ingest`` with a small ``--segment-bytes`` and ``--retention-bytes`` deletes its
oldest segments as it writes new ones, logs each deletion once, counts them in ``/stats`` and
``/metrics``, and ``ingest-read`` reads what is left."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ingest.storage import parse_segment_name
from tests.helpers_twistd import ROOT, TWISTD, environment, start_twistd, temp_cwd
from tests.polling import block_until

SEGMENT_BYTES = 300
RETENTION_BYTES = 1000
REQUESTS = 12


def segments(directory: str) -> dict[str, int]:
    """The segment files of `directory` and their sizes."""
    found = {}
    for name in os.listdir(directory):
        if parse_segment_name(name) is not None:
            try:
                found[name] = os.path.getsize(os.path.join(directory, name))
            except FileNotFoundError:
                continue
    return found


class RetentionEndToEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        if TWISTD is None:
            self.fail("twistd is not installed: pip install . first")
        self.cwd = temp_cwd(self)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def stats(self) -> dict[str, Any]:
        status, body = self.request("GET", "/stats")
        self.assertEqual(status, 200)
        result: dict[str, Any] = json.loads(body)
        return result

    def written(self) -> int:
        samples: int = self.stats()["samples"]["written"]
        return samples

    def test_oldest_segments_go_past_retention_bytes(self) -> None:
        """Posting about 4 times --retention-bytes in segments of --segment-bytes: the oldest segments are
        deleted, the directory ends within the limit, each deletion has one log line (name, bytes, why),
        /stats and /metrics count them, and ingest-read exits 0 on what is left."""
        data_dir = os.path.join(self.cwd, "data")
        service = start_twistd(
            self,
            self.cwd,
            "--port=tcp:0:interface=127.0.0.1",
            "--data-dir=data",
            f"--segment-bytes={SEGMENT_BYTES}",
            f"--retention-bytes={RETENTION_BYTES}",
            "--flush-interval=0.05",
        )
        self.port = service.port
        seen: set[str] = set()
        for index in range(REQUESTS):
            body = json.dumps(
                [{"name": "cpu.load", "value": index + part / 10, "tags": {"host": "a"}} for part in range(4)]
            ).encode()
            self.assertEqual(self.request("POST", "/metrics", body)[0], 202)
            block_until(lambda: self.written() == 4 * (index + 1), "the request written")  # noqa: B023
            seen.update(segments(data_dir))
        self.assertGreaterEqual(len(seen), 6, "rotations by size")
        block_until(
            lambda: sum(segments(data_dir).values()) <= RETENTION_BYTES, "the directory within the limit"
        )
        left = segments(data_dir)
        deleted = sorted(seen - set(left))
        self.assertTrue(deleted)
        self.assertLess(max(deleted), min(left), "the oldest went first")

        stats = self.stats()
        self.assertEqual(stats["segments_deleted"], {"age": 0, "bytes": len(deleted)})
        status, metrics = self.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(f'ingest_segments_deleted_total{{reason="bytes"}} {len(deleted)}.0', metrics.decode())
        self.assertIn('ingest_segments_deleted_total{reason="age"} 0.0', metrics.decode())

        self.assertEqual(service.stop(), -signal.SIGTERM)
        lines = re.findall(r"retention deleted (\S+) \((\d+) bytes\): (.*)", service.log())
        self.assertEqual(
            sorted(name for name, _bytes, _why in lines), deleted, "one line per deleted segment"
        )
        for _name, size, why in lines:
            self.assertGreaterEqual(int(size), SEGMENT_BYTES)
            self.assertEqual(why.strip(), f"segments over --retention-bytes {RETENTION_BYTES}")

        stored_lines = 0
        for name in left:
            with open(os.path.join(data_dir, name), "rb") as segment:
                stored_lines += segment.read().count(b"\n")
        self.assertLess(stored_lines, 4 * REQUESTS)
        reader = subprocess.run(
            [sys.executable, "-m", "ingest.reader", "--data-dir", data_dir],
            capture_output=True,
            env=environment(),
            cwd=ROOT,
            timeout=30,
        )
        self.assertEqual((reader.returncode, reader.stderr), (0, b""))
        self.assertEqual(len(reader.stdout.splitlines()), stored_lines)

    def test_worker_one_deletes_every_workers_segments(self) -> None:
        """Under --workers 2, worker 1 deletes the oldest segments of both workers; worker 2 deletes none."""
        data_dir = os.path.join(self.cwd, "data")
        service = start_twistd(
            self,
            self.cwd,
            "--port=tcp:0:interface=127.0.0.1",
            "--data-dir=data",
            "--workers=2",
            f"--segment-bytes={SEGMENT_BYTES}",
            f"--retention-bytes={RETENTION_BYTES}",
            "--flush-interval=0.05",
        )
        self.port = service.port
        body = json.dumps([{"name": "cpu.load", "value": part, "tags": {"host": "a"}} for part in range(4)])

        def posted_and_deleted() -> bool:
            """Post once more (a new connection: the kernel spreads them over the workers), then look for
            a deletion of worker 2's: worker 1 checks after its own rotations, once worker 2 has closed
            a segment older than its newest."""
            self.assertEqual(self.request("POST", "/metrics", body.encode())[0], 202)
            return re.search(r"retention deleted segment-\d{19}-w2\.ndjson", service.log()) is not None

        block_until(posted_and_deleted, "worker 1 deleted a segment of worker 2")
        self.assertEqual(service.stop(), -signal.SIGTERM)
        deleting = re.findall(r"\[worker (\d) [^\]]*\] retention deleted (\S+)", service.log())
        self.assertEqual({worker for worker, _name in deleting}, {"1"})
        self.assertIn("w2", {name[-9:-7] for _worker, name in deleting}, "worker 2's segments too")
        self.assertFalse(set(segments(data_dir)) & {name for _worker, name in deleting})

    def test_sighup_turns_retention_on(self) -> None:
        """Without retention nothing is deleted; --retention-bytes written to tap.cfg and SIGHUP: the reload
        says it changed, and the next rotation deletes the oldest segments down to the limit."""
        with open(os.path.join(self.cwd, "tap.cfg"), "w", encoding="utf-8") as config_file:
            config_file.write(f"[ingest]\nsegment-bytes = {SEGMENT_BYTES}\nflush-interval = 0.05\n")
        data_dir = os.path.join(self.cwd, "data")
        service = start_twistd(self, self.cwd, "--port=tcp:0:interface=127.0.0.1")
        self.port = service.port
        body = json.dumps([{"name": "cpu.load", "value": part, "tags": {"host": "a"}} for part in range(4)])
        for index in range(6):
            self.assertEqual(self.request("POST", "/metrics", body.encode())[0], 202)
            block_until(lambda: self.written() == 4 * (index + 1), "the request written")  # noqa: B023
        before = segments(data_dir)
        self.assertGreater(sum(before.values()), RETENTION_BYTES)
        self.assertEqual(self.stats()["segments_deleted"], {"age": 0, "bytes": 0})

        with open(os.path.join(self.cwd, "tap.cfg"), "a", encoding="utf-8") as config_file:
            config_file.write(f"retention-bytes = {RETENTION_BYTES}\n")
        service.process.send_signal(signal.SIGHUP)
        block_until(lambda: "reload: changed retention-bytes 0 -> 1000" in service.log(), "the reload")
        self.assertEqual(self.request("POST", "/metrics", body.encode())[0], 202)
        block_until(
            lambda: sum(segments(data_dir).values()) <= RETENTION_BYTES, "the directory within the limit"
        )
        self.assertTrue(set(before) - set(segments(data_dir)))
        self.assertEqual(service.stop(), -signal.SIGTERM)
