"""The private parts of Twisted that the channel uses, each for a measured gain, in one place.

Nothing else in ingest touches a private attribute of Twisted.  Each use
below is kept because a same-run benchmark showed it (BENCHMARKS.md, "Steps
taken"); ``tests/test_twisted_internals.py`` fails if a Twisted release
renames or changes any of them, and ``setup.py`` bounds Twisted to the
releases tested.

- `LineReceiver._buffer` (`unread`, `consume`, `take`): the bytes received and not
  yet handed on.  Read to parse a head that arrived whole in one block
  instead of a line at a time (6,436 to 7,154 req/s, 1 sample per POST), to
  slice a body that came with its head without switching to raw mode (part
  of 6,951 to 8,132 req/s, with the lazy timer), and to tell a partial
  request from none at a half-close.  Rewriting it inside ``lineReceived``
  is safe: `LineReceiver.dataReceived`'s loop reads it afresh each turn.
- `tcp.Server.dataBuffer`, `_tempDataBuffer` and `writeSomeData`
  (`send_now`): an answer goes straight to the socket when the transport
  holds nothing unsent, saving the write event of the next reactor turn
  and its two ``epoll_ctl`` calls (6,452 to 6,914 req/s).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.protocols.basic import LineReceiver


def unread(receiver: LineReceiver) -> bytes:
    """What `receiver` has received and not yet handed to ``lineReceived`` or ``rawDataReceived``."""
    buffer: bytes = receiver._buffer
    return buffer


def consume(receiver: LineReceiver, count: int) -> None:
    """Drop the first `count` unread bytes of `receiver` (called from its ``lineReceived``)."""
    receiver._buffer = receiver._buffer[count:]


def take(receiver: LineReceiver, count: int) -> bytes | None:
    """Take the first `count` unread bytes out of `receiver`, or None (taking nothing) if fewer are here."""
    buffer: bytes = receiver._buffer
    if len(buffer) < count:
        return None
    receiver._buffer = buffer[count:]
    return buffer[:count]


def sends_now(transport: Any) -> bool:
    """Whether `send_now` may be used on `transport`: a plain TCP connection (not TLS, not a test double)."""
    return type(transport) is tcp.Server


def send_now(transport: Any, data: bytes) -> bytes:
    """Send what the socket takes of `data` at once if `transport` holds nothing unsent; return the rest.

    `transport` is one `sends_now` accepted (a `tcp.Server`).

    The rest (all of `data` when something is queued before it, the
    transport is closing, or the socket reported an error) is for
    ``transport.write``, which keeps the order and sees any error on its
    next write.
    """
    if transport.dataBuffer or transport._tempDataBuffer or transport.disconnecting:
        return data
    sent = transport.writeSomeData(data)
    if type(sent) is not int:  # an error: the transport's own write path reports it
        return data
    return data[sent:] if sent else data
