"""The whole service on the real reactor: real sockets on 127.0.0.1, real files in a temp directory."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from ingest.config import Settings
from ingest.storage import segment_name
from ingest.tap import IngestService
from tests.helpers import SAMPLE, get, post
from tests.http_answers import Answer, AnswerReader, AnswerStream
from tests.polling import block_until, wait_until
from tests.segments import read_segments
from tests.tempdir import temp_path


class Client(Protocol):
    """Sends requests and reads the answers (with `tests.http_answers`) as they arrive."""

    def __init__(self) -> None:
        self.reader = AnswerReader()
        self.received: list[Answer] = []
        self.closed = False
        self._waiting: list[tuple[int, Deferred[list[Answer]]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        self._check()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        self.reader.close()
        self._check()

    def answers(self, n: int) -> Deferred[list[Answer]]:
        """Every answer received, interim ones included, once `n` final ones are in or the peer closed."""
        waiting: Deferred[list[Answer]] = Deferred()
        self._waiting.append((n, waiting))
        self._check()
        return waiting

    def _check(self) -> None:
        while (answer := self.reader.next_answer()) is not None:
            self.received.append(answer)
        have = sum(not answer.interim for answer in self.received)
        for n, waiting in list(self._waiting):
            if have >= n or self.closed:
                self._waiting.remove((n, waiting))
                waiting.callback(list(self.received))


class ServiceTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.data_dir = temp_path(self)

    def start(self, **overrides: Any) -> IngestService:
        values: dict[str, Any] = {
            "port": "tcp:0:interface=127.0.0.1",
            "data_dir": self.data_dir,
            "threads": 4,
            "flush_interval": 0.05,
        }
        values.update(overrides)
        service = IngestService(Settings(**values), reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    @inlineCallbacks
    def connect(self, service: IngestService) -> Any:
        address = service.port.getHost()
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        client = yield endpoints.connectProtocol(endpoint, Client())
        self.addCleanup(client.transport.loseConnection)
        return client

    def stored(self) -> list[dict[str, Any]]:
        return read_segments(self.data_dir)

    @inlineCallbacks
    def test_keep_alive_pipelined_and_persisted(self) -> Any:
        """One connection carries many pipelined requests, answered in order; stop() persists them all."""
        service = self.start()
        client = yield self.connect(service)
        ndjson = b'{"name":"n1","value":1}\n{"name":"n2","value":2}\n'
        client.transport.write(
            post(b"/metrics", SAMPLE, b"Content-Type: application/json")
            + get(b"/ping")
            + post(b"/metrics", b"[" + SAMPLE + b"," + SAMPLE + b"]")
            + post(b"/metrics", ndjson, b"Content-Type: application/x-ndjson")
            + get(b"/stats")
        )
        answers = yield client.answers(5)
        self.assertEqual([a.status for a in answers], [202, 204, 202, 202, 200])
        self.assertEqual(
            [a.json() for a in (answers[0], answers[2], answers[3])],
            [{"accepted": 1}, {"accepted": 2}, {"accepted": 2}],
        )
        self.assertEqual(answers[4].json()["samples"]["accepted"], 5)
        self.assertFalse(client.closed)
        yield service.stopService()
        stored = self.stored()
        self.assertEqual([s["name"] for s in stored], ["cpu.load"] * 3 + ["n1", "n2"])
        for sample in stored:
            self.assertEqual(set(sample), {"name", "value", "timestamp", "tags"})
            self.assertIsInstance(sample["timestamp"], int)

    @inlineCallbacks
    def test_flushes_within_an_interval(self) -> Any:
        """Accepted samples reach a segment file while the service runs, not only at stop."""
        service = self.start(flush_interval=0.02)
        client = yield self.connect(service)
        client.transport.write(post(b"/metrics", SAMPLE))
        yield client.answers(1)
        yield wait_until(reactor, lambda: bool(self.stored()), "the sample in a segment file")
        self.assertEqual(len(self.stored()), 1)
        self.assertTrue(service.running)

    @inlineCallbacks
    def test_many_connections(self) -> Any:
        """Fifty connections posting at once are all answered and all stored."""
        service = self.start()
        clients = yield gatherResults([self.connect(service) for _ in range(50)])
        for index, client in enumerate(clients):
            body = b"[" + b",".join(b'{"name":"c%d","value":%d}' % (index, i) for i in range(10)) + b"]"
            client.transport.write(post(b"/metrics", body) * 4)
        results = yield gatherResults([client.answers(4) for client in clients])
        for answers in results:
            self.assertEqual([a.status for a in answers], [202] * 4)
        yield service.stopService()
        self.assertEqual(len(self.stored()), 50 * 4 * 10)

    @inlineCallbacks
    def test_stop_answers_requests_in_flight(self) -> Any:
        """A request already sent when stop begins is answered and its samples are stored.

        Stop begins once the service has read the request: its ``100 Continue`` says so.
        """
        service = self.start(flush_interval=60)
        client = yield self.connect(service)
        client.transport.write(post(b"/metrics", SAMPLE, b"Expect: 100-continue"))
        yield wait_until(reactor, lambda: bool(client.received), "the 100 Continue")
        stopped = service.stopService()
        answers = yield client.answers(1)
        yield stopped
        self.assertEqual([a.status for a in answers], [100, 202])
        self.assertEqual(len(self.stored()), 1)
        self.assertTrue(client.closed)

    @inlineCallbacks
    def test_torn_tail_cut_at_start(self) -> Any:
        """A torn last line left by a crash is cut off at start; the service starts and appends after it."""
        os.makedirs(self.data_dir)
        torn = os.path.join(self.data_dir, segment_name(1))
        with open(torn, "wb") as segment:
            segment.write(b'{"name":"ok","value":1,"timestamp":1,"tags":{}}\n{"name":"to')
        service = self.start()
        with open(torn, "rb") as segment:
            self.assertEqual(segment.read(), b'{"name":"ok","value":1,"timestamp":1,"tags":{}}\n')
        client = yield self.connect(service)
        client.transport.write(post(b"/metrics", SAMPLE))
        yield client.answers(1)
        yield service.stopService()
        self.assertEqual([s["name"] for s in self.stored()], ["ok", "cpu.load"])

    @inlineCallbacks
    def test_inline_parsing(self) -> Any:
        """--threads 0 parses on the reactor thread with the same answers."""
        service = self.start(threads=0)
        client = yield self.connect(service)
        client.transport.write(post(b"/metrics", SAMPLE) + post(b"/metrics", b"[1]"))
        answers = yield client.answers(2)
        self.assertEqual([a.status for a in answers], [202, 400])

    @inlineCallbacks
    def test_bad_client_does_not_disturb_others(self) -> Any:
        """A framing error closes only its own connection; a neighbour goes on being served."""
        service = self.start()
        bad = yield self.connect(service)
        good = yield self.connect(service)
        bad.transport.write(
            b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        good.transport.write(post(b"/metrics", SAMPLE))
        bad_answers = yield bad.answers(1)
        good_answers = yield good.answers(1)
        self.assertEqual(bad_answers[0].status, 400)
        yield wait_until(reactor, lambda: bad.closed, "the bad connection closed")  # its FIN may come later
        self.assertEqual(good_answers[0].status, 202)
        self.assertFalse(good.closed)


class TuneGcTests(TestCase):
    def test_tune_gc_freezes_and_raises_the_thresholds(self) -> None:
        """`tune_gc` moves what exists to the permanent generation and sets the serving thresholds."""
        import gc

        from ingest.tap import GC_THRESHOLDS, tune_gc

        thresholds = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *thresholds)
        self.addCleanup(gc.unfreeze)
        tune_gc()
        self.assertEqual(gc.get_threshold(), GC_THRESHOLDS)
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertGreater(GC_THRESHOLDS[0], thresholds[0], "collects less often than Python's default")


class SlowReaderTests(TestCase):
    def test_close_after_answers_a_slow_reader_has_not_read(self) -> None:
        """Pipelined answers past the socket buffers, the last with ``Connection: close``, to a client
        that reads only later: every answer arrives, then the end of the stream, and no channel is left.

        (A transport that pauses its producer resumes it, instead of closing, when its buffer drains,
        unless the channel has unregistered first; the connection then stayed open for good.)  The
        client reads once the service is in that state: it has asked to close while its transport
        holds more than it could send and has paused its producer.  The idle timeout is longer than
        the client's wait for the end of the stream, so that a connection left open is seen as such.
        """
        import socket

        from twisted.internet.threads import blockingCallFromThread, deferToThread

        from ingest.api import Api
        from ingest.buffer import Buffer
        from ingest.http11 import Limits
        from ingest.pool import ParseQueue
        from ingest.protocol import ChannelFactory
        from ingest.stats import Stats
        from ingest.timeouts import Timeouts

        stats = Stats(reactor.seconds())
        api = Api(Buffer(1000), ParseQueue(reactor, None, max_jobs=4), stats, reactor, lambda: None)
        factory = ChannelFactory(api, stats, reactor, Limits(), Timeouts(idle=60.0))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit it
        number = port.getHost().port

        def closing_with_producer_paused() -> bool:
            return any(c.transport.disconnecting and c.transport.producerPaused for c in factory.channels)

        def client() -> tuple[bool, int]:
            with socket.socket() as conn:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                conn.connect(("127.0.0.1", number))
                head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                conn.sendall((head + b"\r\n") * 15 + head + b"Connection: close\r\n\r\n")
                block_until(
                    lambda: blockingCallFromThread(reactor, closing_with_producer_paused),
                    "the service closing with its buffers full",
                )
                conn.settimeout(8)
                stream = AnswerStream(conn)
                try:
                    stream.receive_all()
                except TimeoutError:
                    return False, len(stream.answers)
                return True, len(stream.answers)

        def check(result: tuple[bool, int]) -> None:
            self.assertEqual(result, (True, 16), "all 16 answers, then the end of the stream")
            self.assertEqual(factory.channels, set())

        return deferToThread(client).addCallback(check)
