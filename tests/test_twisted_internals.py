"""The private parts of Twisted that `ingest.twisted_internals` uses: these fail if Twisted changes them.

`LineReceiver._buffer` is checked by behaviour on a `StringTransport`;
`tcp.Server`'s write buffers and ``writeSomeData`` over a real loopback
connection, since only the real transport has them.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ingest.twisted_internals import consume, send_now, sends_now, unread


class Lines(LineReceiver):
    """Records each line with what was unread when it came; after a ``skip N`` line, drops N bytes."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes]] = []

    def lineReceived(self, line: bytes) -> None:
        self.seen.append((line, unread(self)))
        if line.startswith(b"skip "):
            consume(self, int(line[5:]))


class LineBufferTests(SynchronousTestCase):
    def test_unread_is_the_rest_and_consume_is_honoured(self) -> None:
        """`unread` in ``lineReceived`` is what follows the line; bytes `consume`d are never handed on,
        and LineReceiver's loop goes on with what is left."""
        receiver = Lines()
        receiver.makeConnection(StringTransport())
        receiver.dataReceived(b"a\r\nskip 5\r\nJUNK!b\r\nc")
        self.assertEqual(
            receiver.seen,
            [(b"a", b"skip 5\r\nJUNK!b\r\nc"), (b"skip 5", b"JUNK!b\r\nc"), (b"b", b"c")],
        )
        self.assertEqual(unread(receiver), b"c", "a partial line stays unread")


class Catcher(Protocol):
    """The server side of the loopback connection: runs `check` on its transport once connected."""

    def __init__(self, check: Deferred[Any]) -> None:
        self.check = check

    def connectionMade(self) -> None:
        self.check.callback(self.transport)  # a failed assertion becomes the Deferred's failure


class TcpServerTests(TestCase):
    def test_send_now_on_a_real_tcp_transport(self) -> None:
        """A plain TCP server transport is a `tcp.Server` with ``dataBuffer`` and ``_tempDataBuffer``:
        `send_now` sends at once when nothing is queued, and hands everything back when something is
        (so order is kept); the peer gets every byte in order."""
        connected: Deferred[Any] = Deferred()
        factory = Factory.forProtocol(lambda: Catcher(connected))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port

        def read_all() -> bytes:
            with socket.create_connection(("127.0.0.1", number), timeout=10) as client:
                data = b""
                while chunk := client.recv(65536):
                    data += chunk
                return data

        received = deferToThread(read_all)

        def check(transport: Any) -> None:
            self.assertIs(type(transport), tcp.Server)
            self.assertTrue(sends_now(transport))
            self.assertFalse(sends_now(StringTransport()))
            self.assertEqual((transport.dataBuffer, transport._tempDataBuffer), (b"", []))
            self.assertEqual(send_now(transport, b"first "), b"", "sent at once")
            transport.write(b"second ")
            self.assertEqual(send_now(transport, b"third"), b"third", "queued data goes first")
            transport.write(b"third")
            transport.loseConnection()
            self.assertEqual(send_now(transport, b"late"), b"late", "a closing transport sends nothing now")

        connected.addCallback(check)
        return connected.addCallback(lambda _: received).addCallback(self.assertEqual, b"first second third")
