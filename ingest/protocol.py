"""The HTTP/1.1 connection: a `LineReceiver` shell around `ingest.http11`.

`HttpChannel` reads the request line and header fields as lines, switches
to raw mode for a body (Content-Length or chunked), and hands each complete
request to the API.  It acts on framing decisions; it makes none of its own.

Pipelining: every request gets an `_Exchange` slot in a queue at the moment
its head is complete; answers are written strictly in queue order, however
the parse pool schedules the bodies.  Effects keep that order too: the
parse queue delivers outcomes in submission order, and a safe request
(GET, HEAD) waits until every request before it on the connection is
answered, so a pipelined ``GET /stats`` sees the POSTs sent before it
(RFC 9112 section 9.3.2 lets only safe requests run side by side).  When
`max_pipeline` exchanges are open the channel pauses (`pause`:
LineReceiver's loop stops and the transport stops reading), so one
connection can neither queue unbounded work nor grow LineReceiver's buffer,
which is copied once per line.

Errors: a framing error (`IngestError.close`) is answered after the answers
already owed, then the connection closes and nothing after the bad bytes is
read.  A refusal known from the head alone (404, 405, 415) keeps the
connection: the body is read and dropped.

Flow control: the channel stops reading (pauses its transport) for any of
three reasons and reads again when none is left: ``pipeline`` (too many
exchanges open), ``pressure`` (the buffer is above its high mark: the
factory pauses every channel until it falls below the low mark) and
``write`` (the transport's write buffer is full because the peer does not
read; the channel is the transport's producer).  A peer that stays unread
for `write_grace` seconds is aborted.  Past `max_connections` open
connections the factory stops accepting; new ones wait in the backlog.

Timeouts: an idle connection closes after `idle_timeout` seconds; one
caught in the middle of a request (a head or a body that stopped coming)
gets ``408`` first.  Answers the service still owes, or reading it paused,
are not the client's idleness.  A peer that half-closes mid-request gets
``400``.  A request head must be complete within `header_timeout` seconds
of its first byte, however slowly it trickles in (slowloris), or it gets
``408``.  Both are checked by one lazy timer per connection, on the
injected clock, which traffic does not touch (`_check_timers`).
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate
from functools import partial
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import interfaces, tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ingest import http11
from ingest.errors import IngestError
from ingest.messages import Request, Response, error_response
from ingest.ratelimit import TokenBucket
from ingest.stats import Stats

_REQUEST_LINE, _HEADERS, _BODY, _CLOSING = range(4)
_SAFE_METHODS = frozenset((b"GET", b"HEAD"))

log = Logger()

REJECTION_LOG_RATE = 5.0
REJECTION_LOG_BURST = 20.0
"""Log lines about rejected requests: 5 a second on average, bursts of 20."""


class Application(TypingProtocol):
    """What the channel needs from the routes (`ingest.api.Api`)."""

    def check(self, method: bytes, path: bytes, headers: dict[bytes, bytes]) -> Endpoint: ...

    def route_label(self, path: bytes) -> str: ...


Endpoint = Callable[[Request], "Response | Deferred[Response] | None"]
"""A route: it answers at once (a `Response`), later (a Deferred), or later
through ``request.respond`` (None)."""


def _no_endpoint(request: Request) -> Response:
    raise AssertionError("a request was dispatched before its head was checked")


class _Exchange:
    """One request's slot in the answer queue."""

    __slots__ = (
        "close",
        "data",
        "expect_continue",
        "head_only",
        "keep_alive",
        "received",
        "route",
        "version",
    )

    def __init__(
        self,
        version: bytes,
        keep_alive: bool,
        head_only: bool,
        expect_continue: bool,
        route: str = "other",
        received: float = 0.0,
    ) -> None:
        self.version = version
        self.route = route
        self.received = received
        self.keep_alive = keep_alive
        self.head_only = head_only
        self.expect_continue = expect_continue
        self.data: bytes | None = None
        self.close = not keep_alive


@implementer(interfaces.IHalfCloseableProtocol)
class HttpChannel(LineReceiver):
    """One HTTP/1.1 server connection.

    An idle connection's footprint counts (10,000 of them must fit in a few
    tens of MB): state is plain attributes, empty containers are lists or
    shared frozensets, and the per-request objects are dropped between
    requests.  Our own state lives in slots, leaving the instance dict to
    the few attributes of LineReceiver (a dict of 40 keys
    costs about 1.6 KB a connection).
    """

    __slots__ = (
        "_active",
        "_app",
        "_body",
        "_chunked",
        "_direct",
        "_disconnected",
        "_endpoint",
        "_exchange",
        "_exchanges",
        "_factory",
        "_head",
        "_head_began",
        "_held",
        "_limits",
        "_line",
        "_pauses",
        "_peer",
        "_producing",
        "_received",
        "_refusal",
        "_remaining",
        "_state",
        "_stats",
        "_timer",
        "_unanswered",
        "_write_stall",
    )

    def __init__(self, factory: ChannelFactory) -> None:
        self._factory = factory
        self._limits = factory.limits
        self._app = factory.app
        self._stats = factory.stats
        self._head = http11.HeadParser(self._limits)
        # Lists, not deques: at most max_pipeline long, and an empty deque
        # costs 600 bytes a connection where an empty list costs 56.
        self._exchanges: list[_Exchange] = []
        self._unanswered = 0
        self._held: list[tuple[_Exchange, Endpoint, Request]] = []
        self._endpoint: Endpoint = _no_endpoint
        self._state = _REQUEST_LINE
        self._line: http11.RequestLine | None = None
        self._exchange: _Exchange | None = None
        self._received = 0.0
        self._refusal: IngestError | None = None
        self._remaining = 0
        self._chunked: http11.ChunkedDecoder | None = None
        self._body: list[bytes] = []
        self._pauses: frozenset[str] = frozenset()  # the empty one is shared
        self._timer: Any = None
        self._active = 0.0
        self._head_began: float | None = None
        self._write_stall: Any = None
        self._disconnected = False
        self._direct = False
        self._producing = False
        self._peer = ""
        self.MAX_LENGTH = self._limits.max_request_line

    # -- connection events -------------------------------------------------

    def connectionMade(self) -> None:
        self._stats.connections_open += 1
        self._stats.connections_total += 1
        self._factory.channel_opened(self)
        self._active = self._factory.clock.seconds()
        self._arm(self._active)
        self.transport.registerProducer(self, True)
        self._producing = True
        self._direct = type(self.transport) is tcp.Server

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._disconnected = True
        self._state = _CLOSING
        for timer in (self._timer, self._write_stall):
            if timer is not None and timer.active():
                timer.cancel()
        self._stats.connections_open -= 1
        self._factory.channel_closed(self)

    def readConnectionLost(self) -> None:
        """The peer finished sending: answer what it asked, then close.

        A request it left unfinished can never be completed: it gets 400.
        """
        if self._state in (_HEADERS, _BODY):
            self._fail(IngestError(400, "incomplete request", "the client stopped sending mid-request"))
        else:
            self.close_when_done()

    def writeConnectionLost(self) -> None:
        self._close()

    def _close(self) -> None:
        """Close once what was written has gone out.

        The channel stops being the transport's producer first: a transport
        that paused its producer resumes it, instead of closing, when its
        buffer drains (Twisted's `loseConnection` asks for this), and the
        connection would stay open, read by no one.
        """
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._state == _CLOSING:
            return
        now = self._active = self._factory.clock.seconds()
        if data and self._head_began is None and self._state != _BODY:
            self._head_begins(now)
        super().dataReceived(data)
        if self._state == _REQUEST_LINE and not self._buffer:
            self._head_began = None  # no request begun: nothing to time
        elif self._head_began is None and self._state != _BODY and self._buffer:
            self._head_begins(now)

    # Timeouts cost no timer call per request: the channel notes when it was
    # last active and when the head in progress began, and one timer per
    # connection checks them when due and re-arms for the nearer deadline.

    def _head_begins(self, now: float) -> None:
        self._head_began = now
        timer = self._timer
        if timer is not None and timer.getTime() > now + self._factory.header_timeout:
            # A new timer, not `reset`: moving a DelayedCall sooner is a linear search of the
            # reactor's heap (measured: 10,000 connections, 5,574 req/s without, 1,921 with).
            timer.cancel()
            self._timer = self._factory.clock.callLater(self._factory.header_timeout, self._check_timers)

    def _arm(self, now: float) -> None:
        factory = self._factory
        due = self._active + factory.idle_timeout
        if self._head_began is not None:
            due = min(due, self._head_began + factory.header_timeout)
        self._timer = factory.clock.callLater(max(due - now, 0.0), self._check_timers)

    def _check_timers(self) -> None:
        self._timer = None
        factory = self._factory
        now = factory.clock.seconds()
        began = self._head_began
        if began is not None:
            if self._pauses:  # we are not reading: the client cannot be late
                self._head_began = now
            elif now - began >= factory.header_timeout - 1e-6:
                self._fail(
                    IngestError(408, "request timeout", "request head not received in time", close=True)
                )
                return
        if now - self._active >= factory.idle_timeout - 1e-6 and self._idle_expired(now):
            return
        self._arm(now)

    def _idle_expired(self, now: float) -> bool:
        """No traffic for the idle timeout: close (408 first mid-request); True when closing."""
        if self._state == _CLOSING:
            if self._exchanges:  # answers still owed: the close waits for them
                self._active = now
                return False
            # Closing, nothing owed, and still open: the peer does not take the last bytes.
            self.transport.abortConnection()
            return True
        waiting_for_us = self._pauses or (
            self._exchanges and self._state == _REQUEST_LINE and not self._buffer
        )
        if waiting_for_us:  # answers we owe, or reading we paused, are not the client's idleness
            self._active = now
            return False
        if self._state != _REQUEST_LINE or self._buffer:
            self._fail(IngestError(408, "request timeout", "request not completed in time", close=True))
        else:
            self._close()
        return True

    # -- flow control --------------------------------------------------------

    def pause(self, reason: str) -> None:
        """Stop reading for `reason` (pipeline, pressure, write)."""
        if not self._pauses:
            LineReceiver.pauseProducing(self)
        self._pauses = self._pauses | {reason}

    def resume(self, reason: str) -> None:
        """`reason` no longer holds; read again if no other does."""
        if reason in self._pauses:
            self._pauses = self._pauses - {reason}
            if not self._pauses and not self._disconnected:
                LineReceiver.resumeProducing(self)

    def pauseProducing(self) -> None:
        """The transport cannot write more: the peer is not reading.  Stop reading it, for a while."""
        self.pause("write")
        if self._write_stall is None:
            self._write_stall = self._factory.clock.callLater(self._factory.write_grace, self._write_stalled)

    def resumeProducing(self) -> None:
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        self.resume("write")

    def _read_peer(self) -> None:
        """Note the client's address: at its first request, after a PROXY protocol header if any."""
        peer: Any = self.transport.getPeer()
        self._peer = str(getattr(peer, "host", peer))

    def _write_stalled(self) -> None:
        self._write_stall = None
        if not self._peer:
            self._read_peer()
        log.info(
            "aborting {client}: it has read nothing for {grace} s",
            client=self._peer,
            grace=self._factory.write_grace,
        )
        self.transport.abortConnection()

    def close_when_done(self) -> None:
        """Read no more requests; close once every open exchange is answered."""
        if self._state != _CLOSING:
            self._state = _CLOSING
            self.clearLineBuffer()
            if self._exchanges:
                self._exchanges[-1].close = True
            else:
                self._close()

    def finish_and_close(self) -> None:
        """Shutdown: like `close_when_done`, but a request whose body is arriving is read and answered first.

        That request is in flight, and the service answers what is in
        flight before it stops; dropping it would also keep the connection
        open (its exchange never answered) until the drain's grace ran out.
        `close_when_done` cannot wait for it: there the peer stopped sending.
        """
        exchange = self._exchange
        if self._state == _BODY and exchange is not None:
            exchange.keep_alive = False  # `_request_complete` then reads no further
            exchange.close = True
        else:
            self.close_when_done()

    # -- framing -----------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        try:
            if self._state == _HEADERS:
                if line:
                    self._head.add(line)
                else:
                    self._head_complete()
            elif self._state == _REQUEST_LINE:
                if line:  # RFC 9112 2.2: ignore empty lines before a request line
                    if not self._peer:
                        self._read_peer()
                    self._line = http11.parse_request_line(line)
                    self._received = self._factory.clock.seconds()
                    self._state = _HEADERS
                    self.MAX_LENGTH = self._limits.max_header_line
                    self._whole_head()
        except IngestError as error:
            self._fail(error)

    def _whole_head(self) -> None:
        """When the rest of the head has arrived with its request line, take its fields in one piece.

        The common case: LineReceiver would hand them over a line at a time,
        copying the buffer's rest for each.  A head that is not all here, or
        that `HeadParser.add_block` declines, goes the line way.
        """
        buffer = self._buffer
        end = 0 if buffer[:2] == b"\r\n" else buffer.find(b"\r\n\r\n") + 2
        if end == 1 or not self._head.add_block(buffer[:end]):
            return
        self._buffer = buffer[end + 2 :]
        self._head_complete()

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._state == _REQUEST_LINE:
            self._fail(
                IngestError(414, "request line too long", f"over {self._limits.max_request_line} bytes")
            )
        else:
            self._fail(IngestError(431, "header line too long", f"over {self._limits.max_header_line} bytes"))

    def _head_complete(self) -> None:
        line = self._line
        assert line is not None
        framing = self._head.finish(line.version, line.method)
        self._head_began = None
        exchange = _Exchange(
            line.version,
            framing.keep_alive,
            line.method == b"HEAD",
            False,
            self._app.route_label(line.path),
            self._received,
        )
        self._exchanges.append(exchange)
        self._unanswered += 1
        self._exchange = exchange
        try:
            self._endpoint = self._app.check(line.method, line.path, self._head.headers)
        except IngestError as refusal:
            if framing.expect_continue:
                # The client waits to hear before it sends the body: say no and close.
                self._fail(refusal)
                return
            self._refusal = refusal  # read the body, drop it, answer this
        else:
            if framing.expect_continue:
                if exchange is self._exchanges[0]:
                    self.transport.write(http11.CONTINUE)
                else:
                    exchange.expect_continue = True
        length = framing.length
        if length is not None and len(self._buffer) >= length:  # the body came with its head: no raw mode
            buffer = self._buffer
            self._buffer = buffer[length:]
            self._request_complete(buffer[:length] if self._refusal is None else b"")
            return
        self._state = _BODY
        self._body = []
        if framing.length is None:
            self._chunked = http11.ChunkedDecoder(self._limits)
        else:
            self._chunked = None
            self._remaining = length
        self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:
        if self._state != _BODY:
            return
        if self._chunked is not None:
            try:
                pieces, rest = self._chunked.feed(data)
            except IngestError as error:
                self._fail(error)
                return
            if self._refusal is None:
                self._body += pieces
            if rest is None:
                return
        else:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining -= len(data)
                if self._refusal is None:
                    self._body.append(data)
                return
            rest = data[remaining:]
            if self._refusal is None:
                self._body.append(data[:remaining] if rest else data)
        body = b"".join(self._body)
        self._body = []
        self._request_complete(body)
        self.setLineMode(rest)

    def _request_complete(self, body: bytes) -> None:
        """Hand a complete request to the routes; ready the channel for the next one."""
        line = self._line
        exchange = self._exchange
        assert line is not None and exchange is not None
        refusal, self._refusal = self._refusal, None
        headers = self._head.headers
        self._head.reset()
        self._line = None
        self._exchange = None
        self._state = _REQUEST_LINE if exchange.keep_alive else _CLOSING
        self.setLineMode()
        self.MAX_LENGTH = self._limits.max_request_line
        if refusal is not None:
            self._finish_exchange(exchange, refusal)
        else:
            request = Request(
                line.method,
                line.path,
                line.query,
                line.version,
                headers,
                body,
                self._received,
                self._peer,
                partial(self._answered, exchange),
            )
            endpoint = self._endpoint
            if self._held or (request.method in _SAFE_METHODS and self._unanswered > 1):
                self._held.append((exchange, endpoint, request))
            else:
                self._dispatch(exchange, endpoint, request)
        if self._state == _CLOSING:
            self.clearLineBuffer()
        elif len(self._exchanges) >= self._factory.max_pipeline:
            self.pause("pipeline")

    def _dispatch(self, exchange: _Exchange, endpoint: Endpoint, request: Request) -> None:
        try:
            answer = endpoint(request)
        except Exception:
            self._answered(exchange, Failure())
        else:
            if isinstance(answer, Deferred):
                answer.addBoth(partial(self._answered, exchange))
            elif answer is not None:  # None: the endpoint answers through request.respond
                self._finish_exchange(exchange, answer)

    def _dispatch_held(self) -> None:
        """Hand on the held requests that may go now (see the module docstring)."""
        held = self._held
        while held:
            exchange, endpoint, request = held[0]
            if request.method in _SAFE_METHODS and self._unanswered > len(held):
                return
            del held[0]
            self._dispatch(exchange, endpoint, request)

    def _answered(self, exchange: _Exchange, result: Response | IngestError | Failure) -> None:
        if isinstance(result, Failure):
            if isinstance(result.value, IngestError):
                self._finish_exchange(exchange, result.value)
                return
            log.failure("unexpected error answering a request", result)
            result = error_response(IngestError(500, "internal error", "see the service log"))
        self._finish_exchange(exchange, result)

    def _fail(self, error: IngestError) -> None:
        """A framing error: owe the client one last answer, then stop reading."""
        error.close = True
        exchange = self._exchange
        if exchange is None:
            version = self._line.version if self._line else http11.HTTP_11
            exchange = _Exchange(version, False, False, False, "other", self._factory.clock.seconds())
            self._exchanges.append(exchange)
            self._unanswered += 1
        self._exchange = None
        self._state = _CLOSING
        self._head_began = None  # answered: no second 408 for this head
        self.clearLineBuffer()
        self._finish_exchange(exchange, error)

    # -- answers -----------------------------------------------------------

    def _finish_exchange(self, exchange: _Exchange, answer: Response | IngestError) -> None:
        if isinstance(answer, IngestError):
            answer = error_response(answer)
        if answer.close:
            exchange.close = True
        self._unanswered -= 1
        stats = self._stats
        stats.responses[exchange.route, answer.status] += 1
        now = self._factory.clock.seconds()
        stats.latency.observe(now - exchange.received)
        if answer.status >= 400 and not (answer.status == 503 and exchange.route == "/health"):
            if not self._peer:  # refused before its first request line was read
                self._read_peer()
            self._factory.rejected(now, self._peer, answer.status, answer.reason)
        exchange.data = http11.format_response(
            exchange.version,
            answer.status,
            answer.headers,
            answer.body,
            not exchange.close,
            self._factory.date(),
            exchange.head_only,
        )
        self._write_ready()

    def _send(self, data: bytes) -> None:
        """Write `data`, straight to the socket when the transport holds nothing unsent.

        A plain TCP transport buffers every write until the next reactor
        turn finds the socket writable: two ``epoll_ctl`` calls and one
        event dispatch per answer.  When nothing is queued before it, the
        answer is sent at once and only what the kernel did not take goes
        through the transport (which also sees any error on its next write).
        Measured in BENCHMARKS.md ("Steps taken").
        """
        transport: Any = self.transport
        if self._direct and not (
            transport.dataBuffer or transport._tempDataBuffer or transport.disconnecting
        ):
            sent = transport.writeSomeData(data)
            if type(sent) is int:
                if sent == len(data):
                    return
                data = data[sent:]
        transport.write(data)

    def _write_ready(self) -> None:
        """Write the answers at the head of the queue that are ready, in order."""
        exchanges = self._exchanges
        if self._disconnected:
            exchanges.clear()
            return
        while exchanges and exchanges[0].data is not None:
            exchange = exchanges.pop(0)
            assert exchange.data is not None
            self._send(exchange.data)
            if exchange.close:
                exchanges.clear()
                self._state = _CLOSING
                self._close()
                return
        if exchanges:
            head = exchanges[0]
            if head.expect_continue:
                head.expect_continue = False
                self.transport.write(http11.CONTINUE)
        else:
            self._active = self._factory.clock.seconds()  # idle from the last answer on
        if len(exchanges) < self._factory.max_pipeline:
            self.resume("pipeline")
        if self._held:
            self._dispatch_held()


class ChannelFactory(Factory):
    """Builds channels and keeps what they share: routes, limits, clock, the Date header.

    It also acts for all of them: `set_pressure` pauses and resumes every
    channel, and past `max_connections` (0: no limit) it stops accepting
    from `listening` (the port, set once listening) until one closes.
    Connections opened while the buffer is saturated are read (so that
    ``/health`` can still be asked); the buffer's hard limit, answered with
    503, bounds what they can add.
    """

    noisy = False

    def __init__(
        self,
        app: Application,
        stats: Stats,
        clock: IReactorTime,
        limits: http11.Limits,
        idle_timeout: float,
        max_pipeline: int = 16,
        header_timeout: float = 10.0,
        write_grace: float = 30.0,
        max_connections: int = 0,
    ) -> None:
        self.app = app
        self.stats = stats
        self.clock = clock
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.max_pipeline = max_pipeline
        self.header_timeout = header_timeout
        self.write_grace = write_grace
        self.max_connections = max_connections
        self.listening: Any = None
        self._accepting = True
        self.saturated = False
        self.channels: set[HttpChannel] = set()
        self._date_second = -1
        self._date = b""
        self._drained: list[Deferred[None]] = []
        self._rejection_log = TokenBucket(REJECTION_LOG_RATE, REJECTION_LOG_BURST, clock.seconds())
        self._rejections_unlogged = 0

    def buildProtocol(self, addr: Any) -> HttpChannel:
        return HttpChannel(self)

    def date(self) -> bytes:
        """The Date header's value, formatted once per second."""
        now = int(self.clock.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True).encode("ascii")
        return self._date

    def rejected(self, now: float, client: str, status: int, reason: str) -> None:
        """Log a rejected request; at most `REJECTION_LOG_RATE` lines a second, the rest counted."""
        if not self._rejection_log.take(now):
            self._rejections_unlogged += 1
            return
        unlogged, self._rejections_unlogged = self._rejections_unlogged, 0
        log.info(
            "rejected request from {client}: {status} {reason}{more}",
            client=client,
            status=status,
            reason=reason or "error",
            more=f" ({unlogged} more rejections not logged)" if unlogged else "",
        )

    def channel_opened(self, channel: HttpChannel) -> None:
        self.channels.add(channel)
        if self.max_connections and len(self.channels) >= self.max_connections and self._accepting:
            self._accepting = False
            if self.listening is not None:
                self.listening.stopReading()
            log.info("{count} connections open: not accepting more for now", count=len(self.channels))

    def set_pressure(self, saturated: bool) -> None:
        """The buffer crossed a mark: stop or start reading from every connection."""
        self.saturated = saturated
        log.info(
            "buffer {state}: {action} reading from {count} connections",
            state="above its high mark" if saturated else "back below its low mark",
            action="pausing" if saturated else "resuming",
            count=len(self.channels),
        )
        for channel in list(self.channels):
            if saturated:
                channel.pause("pressure")
            else:
                channel.resume("pressure")

    def channel_closed(self, channel: HttpChannel) -> None:
        self.channels.discard(channel)
        if not self._accepting and len(self.channels) < self.max_connections:
            self._accepting = True
            if self.listening is not None:
                self.listening.startReading()
            log.info("{count} connections open: accepting again", count=len(self.channels))
        if not self.channels:
            drained, self._drained = self._drained, []
            for waiting in drained:
                waiting.callback(None)

    def drain(self, grace: float) -> Deferred[None]:
        """Close every connection once its open exchanges are answered.

        A request whose body is arriving is read to its end and answered
        too (`HttpChannel.finish_and_close`).  Fires when all are closed;
        connections still open after `grace` seconds (a peer that stopped
        reading) are aborted.
        """
        done: Deferred[None] = Deferred()
        if not self.channels:
            done.callback(None)
            return done
        self._drained.append(done)
        for channel in list(self.channels):
            channel.finish_and_close()

        def abort() -> None:
            for channel in list(self.channels):
                channel.transport.abortConnection()

        timer = self.clock.callLater(grace, abort)

        def cancel(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(cancel)
