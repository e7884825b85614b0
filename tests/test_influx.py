"""The official influxdb-client writes through /api/v2/write to a live service, gzip on and off."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ingest.config import Settings
from ingest.tap import IngestService
from tests.segments import read_segments
from tests.tempdir import temp_path


def write_with_client(port: int, gzip: bool) -> bool:
    """What a user's program does, blocking; runs in a thread beside the reactor."""
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    with InfluxDBClient(url=f"http://127.0.0.1:{port}", token="t", org="o", enable_gzip=gzip) as client:
        alive = client.ping()
        write_api = client.write_api(write_options=SYNCHRONOUS)
        point = (
            Point("cpu")
            .tag("host", "a b")
            .field("usage_user", 0.5)
            .field("value", 3)
            .field("ok", True)
            .field("note", "not a sample")
            .time(1700000000123, WritePrecision.MS)
        )
        write_api.write(bucket="b", record=point, write_precision=WritePrecision.MS)
        write_api.write(bucket="b", record="mem,host=a used=10i 1700000000000000000")
        return bool(alive)


class InfluxClientTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def check(self, gzip: bool) -> Any:
        data_dir = temp_path(self)
        service = IngestService(
            Settings(port="tcp:0:interface=127.0.0.1", data_dir=data_dir, threads=2), reactor
        )
        service.startService()
        try:
            alive = yield deferToThread(write_with_client, service.port.getHost().port, gzip)
        finally:
            yield service.stopService()
        self.assertTrue(alive, "client.ping() saw the service")
        by_name = {sample["name"]: sample for sample in read_segments(data_dir)}
        self.assertEqual(sorted(by_name), ["cpu", "cpu_ok", "cpu_usage_user", "mem_used"])
        self.assertEqual(by_name["cpu_usage_user"]["value"], 0.5)
        self.assertEqual(by_name["cpu"]["value"], 3)
        self.assertEqual(by_name["cpu_ok"]["value"], 1)
        self.assertEqual(by_name["cpu"]["tags"], {"host": "a b"})
        self.assertEqual(by_name["cpu"]["timestamp"], 1700000000123000000)
        self.assertEqual(
            by_name["mem_used"],
            {"name": "mem_used", "value": 10, "timestamp": 1700000000000000000, "tags": {"host": "a"}},
        )
        self.assertEqual(service.stats.samples_skipped["string_field"], 1)

    def test_write_v2(self) -> Any:
        """Points written by influxdb-client arrive as samples named the VictoriaMetrics way."""
        return self.check(gzip=False)

    def test_write_v2_gzip(self) -> Any:
        """The same with the client's gzip compression on."""
        return self.check(gzip=True)
