"""The HTTP/1.1 connection: the Twisted glue between a socket and the pure decisions.

`HttpChannel` is a `LineReceiver`: it reads the request line and header
fields as lines, switches to raw mode for a body, and hands each complete
request to the API.  It decides nothing of its own; it carries out what
three pure modules decide:

- `ingest.http11`: framing (the head's rules, the body's length or chunks
  through `LengthDecoder` and `ChunkedDecoder`, keep-alive, the bytes of an
  answer);
- `ingest.pipeline`: the answer order (which request may run, which answer
  may be written, when ``100 Continue`` goes out, when the connection
  closes), one `Pipeline` per connection, fed events and returning actions
  that `_carry_out` performs in order;
- `ingest.timeouts`: the one timer per connection (idle, slow head, write
  stall, a close that does not complete), `next_due` of the connection's
  state and the time.

What is left here is the read state (`_state`: a request line, header
fields, a body, or nothing more), flow control and the transport.

Flow control: the channel stops reading (pauses its transport) for any of
three reasons and reads again when none is left: ``pipeline`` (the
pipeline is full), ``pressure`` (the buffer is above its high mark: the
factory pauses every channel until it falls below the low mark) and
``write`` (the transport's write buffer is full because the peer does not
read; the channel is the transport's producer).  Past `max_connections`
open connections the factory stops accepting; new ones wait in the backlog,
and one the accept loop already took is closed before anything is read
(`ChannelFactory.admit`).

Errors: a framing error (`IngestError.close`) is answered after the answers
already owed, then the connection closes and nothing after the bad bytes is
read.  A refusal known from the head alone (404, 405, 415) keeps the
connection: the body is read and dropped.  A peer that half-closes
mid-request gets ``400``; after a whole request it gets its answers, then
the close.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate
from functools import partial
from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet import interfaces
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ingest import http11, timeouts
from ingest.errors import IngestError, internal_error
from ingest.messages import Request, Response, error_response
from ingest.pipeline import Action, Close, Dispatch, Pipeline, SendContinue, Slot, Write
from ingest.ratelimit import TokenBucket
from ingest.stats import Stats
from ingest.twisted_internals import consume, send_now, sends_now, take, unread

_REQUEST_LINE, _HEADERS, _BODY, _DONE = range(4)
"""What the channel reads next: a request line, header fields, body bytes, or nothing more."""

_SAFE_METHODS = frozenset((b"GET", b"HEAD"))
_NO_PAUSES: frozenset[str] = frozenset()
"""A channel's pauses when there are none: one shared set (each ``frozenset()`` is a new one of 216
bytes, a twelfth of an idle connection's memory)."""

log = Logger()

DEFAULT_TIMEOUTS = timeouts.Timeouts()

REJECTION_LOG_RATE = 5.0
REJECTION_LOG_BURST_SECONDS = 4.0
REJECTION_LOG_BURST = REJECTION_LOG_RATE * REJECTION_LOG_BURST_SECONDS
"""Log lines about rejected requests: 5 a second on average (the default ``--rejection-log-rate``),
bursts of 4 s worth (20)."""


class Transport(TypingProtocol):
    """What the channel uses of its transport (TCP, TLS, or a test's StringTransport)."""

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def getPeer(self) -> object: ...


class Application(TypingProtocol):
    """What the channel needs from the routes (`ingest.api.Api`)."""

    def check(self, method: bytes, path: bytes, headers: dict[bytes, bytes]) -> Endpoint: ...

    def route_label(self, path: bytes) -> str: ...

    def shape(self, path: bytes, headers: dict[bytes, bytes], error: IngestError) -> IngestError: ...


Endpoint = Callable[[Request], "Response | Deferred[Response] | None"]
"""A route: it answers at once (a `Response`), later (a Deferred), or later
through ``request.respond`` (None)."""

Result = Response | IngestError | Failure
"""What an endpoint answers with, at once or later."""


class _Exchange(Slot):
    """One request and its answer: its place in the `Pipeline` and what the channel needs to answer it.

    `endpoint` runs it, or `refusal` answers it (known from the head: its
    body is read and dropped); `request` is set once the body is in,
    `response` once the answer is ready.
    """

    __slots__ = ("endpoint", "head_only", "received", "refusal", "request", "response", "route", "version")

    def __init__(
        self,
        version: bytes,
        method: bytes,
        close: bool,
        expect_continue: bool,
        route: str,
        received: float,
        endpoint: Endpoint | None = None,
        refusal: IngestError | None = None,
    ) -> None:
        # Slot's three fields set here, not through super().__init__ (measured: 180 ns a request);
        # its state is set by Pipeline.open.
        self.safe = method in _SAFE_METHODS
        self.close = close
        self.expect_continue = expect_continue
        self.version = version
        self.head_only = method == b"HEAD"
        self.route = route
        self.received = received
        self.endpoint = endpoint
        self.refusal = refusal
        self.request: Request | None = None
        self.response: Response | None = None


@implementer(interfaces.IHalfCloseableProtocol, interfaces.IPushProducer)
class HttpChannel(LineReceiver):
    """One HTTP/1.1 server connection.

    An idle connection's footprint counts (10,000 of them must fit in a few
    tens of MB): state is plain attributes in slots, empty containers are
    shared (the empty frozenset of pauses), and the per-request objects are
    dropped between requests.  LineReceiver's few attributes stay in the
    instance dict.
    """

    __slots__ = (
        "_active",
        "_app",
        "_body",
        "_busy",
        "_closing_since",
        "_decoder",
        "_direct",
        "_disconnected",
        "_exchange",
        "_factory",
        "_head",
        "_head_began",
        "_input_ended",
        "_limits",
        "_line",
        "_opened_at",
        "_out",
        "_pauses",
        "_peer",
        "_pipeline",
        "_producing",
        "_queued",
        "_received",
        "_stalled_since",
        "_state",
        "_stats",
        "_timer",
    )

    def __init__(self, factory: ChannelFactory) -> None:
        self._factory = factory
        self._limits = factory.limits
        self._app = factory.app
        self._stats = factory.stats
        self._pipeline: Pipeline[_Exchange] = Pipeline(
            factory.max_pipeline, factory.max_requests_per_connection, factory.max_connection_age
        )
        self._head = http11.HeadParser(self._limits)
        self._state = _REQUEST_LINE
        self._line: http11.RequestLine | None = None
        self._exchange: _Exchange | None = None  # the request being received
        self._received = 0.0
        self._decoder: http11.LengthDecoder | http11.ChunkedDecoder | None = None
        self._body: list[bytes] = []
        self._busy = False
        self._queued: list[Action[_Exchange]] = []
        self._pauses = _NO_PAUSES
        self._input_ended = False
        self._timer: IDelayedCall | None = None
        self._active = 0.0
        self._opened_at = 0.0
        self._head_began: float | None = None
        self._stalled_since: float | None = None
        self._closing_since: float | None = None
        self._disconnected = False
        self._direct = False
        self._producing = False
        self._peer = ""
        self._out: Transport = cast(Transport, None)  # the transport, typed; set by connectionMade
        self.MAX_LENGTH = self._limits.max_request_line
        # The instance attributes of Twisted's classes, set at once: the dict of a channel then has its
        # size from the start, where growing it on the first read cost 272 bytes more (tracemalloc).
        self.connected = 0
        self.transport = None
        self._busyReceiving = False
        self._buffer = b""

    # -- connection events -------------------------------------------------

    def connectionMade(self) -> None:
        if not self._factory.admit(self):
            # Past --max-connections: nothing is read, nothing is counted open; connectionLost follows.
            self._state = _DONE
            self._disconnected = True
            cast(Transport, self.transport).abortConnection()
            return
        self._stats.connections_open += 1
        self._stats.connections_total += 1
        self._out = out = cast(Transport, self.transport)
        self._active = self._opened_at = self._factory.clock.seconds()
        self._schedule()
        out.registerProducer(self, True)
        self._producing = True
        self._direct = sends_now(out)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._out is None:  # refused in connectionMade: never counted, never registered
            return
        self._disconnected = True
        self._state = _DONE
        self._pipeline.lost()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._stats.connections_open -= 1
        self._factory.channel_closed(self)

    def readConnectionLost(self) -> None:
        """The peer finished sending: answer what it asked, then close; a request it left unfinished gets 400.

        Requests still unread because the channel paused are read first (on resume).
        """
        self._input_ended = True
        if not self._pauses:
            self._input_over()

    def writeConnectionLost(self) -> None:
        self._close()

    def _input_over(self) -> None:
        state = self._state
        if state == _DONE:
            return
        if state == _BODY:
            assert self._decoder is not None
            try:
                self._decoder.end()
            except IngestError as error:
                self._fail(error)
        elif state == _HEADERS or unread(self):
            self._fail(IngestError(400, "incomplete request", "the client stopped sending mid-request"))
        else:
            self._stop_reading()
            self._carry_out(self._pipeline.end())

    def retire(self) -> None:
        """Shutdown: close after one more answer, so the client moves to a new connection (pipeline rule 7).

        A connection with requests open closes after the last of them is
        answered (a body arriving is read first: that request is in
        flight); a request pipelined behind them is not read (the client
        sends it again on a new connection, as it must after a ``Connection:
        close``).  A connection with none open reads one more request,
        the one its client may be sending now, and answers it with
        ``Connection: close``: closing it at once could cut that request
        (the client would see the connection reset).  An idle one closes
        when the drain calls `close_if_idle`.
        """
        pipeline = self._pipeline
        pipeline.retire()
        if not pipeline.accepting and self._state != _BODY:
            self._stop_reading()

    def close_if_idle(self) -> None:
        """Shutdown: close now if no request is open and none has begun to arrive, else after that answer."""
        if self._pipeline.slots or self._state != _REQUEST_LINE or unread(self):
            return
        self._stop_reading()
        self._carry_out(self._pipeline.end())

    def _stop_reading(self) -> None:
        self._state = _DONE
        self._head_began = None
        self.clearLineBuffer()

    def _close(self) -> None:
        """Close once what was written has gone out; abort if that has not happened in `close_grace`.

        The channel stops being the transport's producer first: a transport
        that paused its producer resumes it, instead of closing, when its
        buffer drains (Twisted's `loseConnection` asks for this), and the
        connection would stay open, read by no one.
        """
        if self._closing_since is not None or self._disconnected:
            return
        self._stop_reading()
        if self._producing:
            self._producing = False
            self._out.unregisterProducer()
        self._closing_since = self._factory.clock.seconds()
        self._out.loseConnection()
        if not self._disconnected:
            self._schedule()

    # -- reading -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state == _DONE:
            return
        now = self._active = self._factory.clock.seconds()
        super().dataReceived(data)
        state = self._state
        if state == _HEADERS or (state == _REQUEST_LINE and unread(self)):
            if self._head_began is None:
                self._head_began = now
                self._schedule()
        else:
            self._head_began = None

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
                    self._received = self._active  # the time of the bytes being read
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
        buffer = unread(self)
        end = 0 if buffer[:2] == b"\r\n" else buffer.find(b"\r\n\r\n") + 2
        if end == 1 or not self._head.add_block(buffer[:end]):
            return
        consume(self, end + 2)
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
        endpoint: Endpoint | None = None
        refusal: IngestError | None = None
        try:
            endpoint = self._app.check(line.method, line.path, self._head.headers)
        except IngestError as error:
            refusal = error
        exchange = _Exchange(
            line.version,
            line.method,
            not framing.keep_alive,
            framing.expect_continue and refusal is None,
            self._app.route_label(line.path),
            self._received,
            endpoint,
            refusal,
        )
        self._exchange = exchange
        actions = self._pipeline.open(exchange, self._received - self._opened_at)
        if actions:  # a 100 Continue
            self._carry_out(actions)
        if refusal is not None and framing.expect_continue:
            # The client waits to hear before it sends the body: say no and close.
            self._fail(refusal)
            return
        length = framing.length
        if length is not None:
            body = take(self, length)
            if body is not None:  # the body came with its head: no raw mode
                self._request_complete(body)
                return
        self._state = _BODY
        self._body = []
        self._decoder = (
            http11.ChunkedDecoder(self._limits) if length is None else http11.LengthDecoder(length)
        )
        self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:
        if self._state != _BODY:
            return
        decoder = self._decoder
        assert decoder is not None
        try:
            pieces, rest = decoder.feed(data)
        except IngestError as error:
            self._fail(error)
            return
        exchange = self._exchange
        if exchange is not None and exchange.refusal is None:
            self._body += pieces
        if rest is None:
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._decoder = None
        self._request_complete(body)
        if self._state != _DONE:
            self.setLineMode(rest)

    def _request_complete(self, body: bytes) -> None:
        """Hand a complete request on (or its refusal); ready the channel for the next one."""
        line = self._line
        exchange = self._exchange
        assert line is not None and exchange is not None
        headers = self._head.headers
        self._head.reset()
        self._line = None
        self._exchange = None
        self.MAX_LENGTH = self._limits.max_request_line  # a request line comes next
        pipeline = self._pipeline
        if pipeline.accepting:
            self._state = _REQUEST_LINE
        else:
            self._stop_reading()
        if exchange.refusal is not None:
            self._answer(exchange, exchange.refusal)
        else:
            exchange.request = Request(
                line.method,
                line.path,
                line.query,
                line.version,
                headers,
                body,
                self._received,
                self._peer,
                partial(self._answer, exchange),
            )
            self._carry_out(pipeline.complete(exchange))
        if len(pipeline.slots) >= pipeline.limit:  # full
            self.pause("pipeline")

    def _fail(self, error: IngestError) -> None:
        """A framing error or a timeout: owe the client one last answer, then close; read nothing more."""
        if self._pipeline.closed:
            return
        error.close = True
        exchange = self._exchange
        self._exchange = None
        self._stop_reading()
        if exchange is None:
            if not self._pipeline.accepting:  # the last request is already in: its answer closes
                return
            line = self._line  # the request line, when the error is in the head after it
            version, method = (line.version, line.method) if line else (http11.HTTP_11, b"")
            # The method makes a HEAD's error answer bodiless, as every answer to a HEAD is.
            exchange = _Exchange(version, method, True, False, "other", self._factory.clock.seconds())
            self._carry_out(self._pipeline.open(exchange))
        if self._line is not None:  # a request's own error: answered in its path's way (OTLP's Status)
            error = self._app.shape(self._line.path, self._head.headers, error)
        self._answer(exchange, error)

    # -- answering -------------------------------------------------------------

    def _dispatch(self, exchange: _Exchange) -> None:
        endpoint, request = exchange.endpoint, exchange.request
        assert endpoint is not None and request is not None
        exchange.endpoint = exchange.request = None
        try:
            answer = endpoint(request)
        except Exception:
            self._answer(exchange, Failure())
            return
        if isinstance(answer, Deferred):
            answer.addBoth(partial(self._answer, exchange))
        elif answer is not None:  # None: the endpoint answers through request.respond
            self._answer(exchange, answer)

    def _answer(self, exchange: _Exchange, result: Result) -> None:
        """An answer is ready: count it, and write it when its turn comes (`request.respond` calls this)."""
        if isinstance(result, Failure):
            if isinstance(result.value, IngestError):
                result = result.value
            else:
                log.failure("unexpected error answering a request", result)
                result = internal_error()
        response = error_response(result) if isinstance(result, IngestError) else result
        stats = self._stats
        stats.responses[exchange.route, response.status] += 1
        now = self._factory.clock.seconds()
        stats.latency.observe(now - exchange.received)
        if response.status >= 400 and not (response.status == 503 and exchange.route == "/health"):
            if not self._peer:  # refused before its first request line was read
                self._read_peer()
            self._factory.rejected(now, self._peer, response.status, response.reason)
        exchange.response = response
        actions = self._pipeline.answer(exchange, response.close)
        if self._busy:  # answered while dispatched: performed after the actions before it (`_carry_out`)
            self._queued += actions
        elif actions:
            self._carry_out(actions)

    def _carry_out(self, actions: tuple[()] | list[Action[_Exchange]]) -> None:
        """Perform the pipeline's actions in order, and the actions they lead to after them.

        A dispatched request that answers at once, or reading resumed,
        comes back here while a list is being performed: its actions wait
        in `_queued`, so every list is performed whole and in the order the
        pipeline returned it (ingest.pipeline's contract).  Once answers
        are written, the channel is idle from then if none is owed, and
        reads again if the pipeline has room.
        """
        if self._busy:
            self._queued += actions
            return
        self._busy = True
        wrote = False
        try:
            while not self._disconnected:  # actions queued before a loss: nobody is left to answer
                for action in actions:
                    if type(action) is Write:
                        exchange, last = action
                        response = exchange.response
                        assert response is not None
                        self._send(
                            http11.format_response(
                                exchange.version,
                                response.status,
                                response.headers,
                                response.body,
                                not last,  # the last answer says Connection: close
                                self._factory.date(),
                                exchange.head_only,
                            )
                        )
                        wrote = True
                    elif type(action) is Dispatch:
                        (exchange,) = action
                        self._dispatch(exchange)
                    elif type(action) is SendContinue:
                        self._send(http11.CONTINUE)
                    else:
                        assert type(action) is Close
                        self._close()
                if not self._queued:
                    break
                actions, self._queued = self._queued, []
        finally:
            self._busy = False
        if wrote:
            owed = len(self._pipeline.slots)
            if not owed:
                self._active = self._factory.clock.seconds()  # idle from the last answer on
            if "pipeline" in self._pauses and owed < self._pipeline.limit:
                self.resume("pipeline")

    def _send(self, data: bytes) -> None:
        """Write `data`, straight to the socket when the transport holds nothing unsent (`send_now`)."""
        if self._disconnected:
            return
        if self._direct:
            data = send_now(self._out, data)
            if not data:
                return
        self._out.write(data)

    # -- flow control --------------------------------------------------------

    def pause(self, reason: str) -> None:
        """Stop reading for `reason` (pipeline, pressure, write)."""
        if not self._pauses:
            LineReceiver.pauseProducing(self)
        self._pauses = self._pauses | {reason}

    def resume(self, reason: str) -> None:
        """`reason` no longer holds; read again if no other does.

        The client's clocks start over: the time the channel did not read
        was not its delay.  Requests that arrived meanwhile are read now.
        A closing connection is not read again.
        """
        if reason not in self._pauses:
            return
        self._pauses = self._pauses - {reason} or _NO_PAUSES
        if self._pauses or self._disconnected or self._closing_since is not None:
            return
        now = self._active = self._factory.clock.seconds()
        if self._head_began is not None:
            self._head_began = now
        LineReceiver.resumeProducing(self)
        if self._input_ended and not self._pauses:
            self._input_over()
        if not self._disconnected:
            self._schedule()

    def pauseProducing(self) -> None:
        """The transport cannot write more: the peer is not reading.  Stop reading it, for a while."""
        self.pause("write")
        if self._stalled_since is None:
            self._stalled_since = self._factory.clock.seconds()
            self._schedule()

    def resumeProducing(self) -> None:
        self._stalled_since = None
        self.resume("write")

    def abort(self) -> None:
        """Drop the connection now, whatever is unsent (the drain's grace ran out)."""
        self._out.abortConnection()

    def _read_peer(self) -> None:
        """Note the client's address: at its first request, after a PROXY protocol header if any."""
        peer: Any = self._out.getPeer()
        self._peer = str(getattr(peer, "host", peer))

    # -- the timer -------------------------------------------------------------

    def _due(self, now: float) -> timeouts.Due:
        state = self._state
        if state == _BODY:
            reading = timeouts.BODY
        elif state == _DONE:
            reading = timeouts.ENDED
        elif self._head_began is not None:
            reading = timeouts.HEAD
        else:
            reading = timeouts.IDLE
        return timeouts.next_due(
            self._factory.timeouts,
            now,
            reading,
            self._active,
            self._head_began,
            bool(self._pauses),
            bool(self._pipeline.slots),
            self._stalled_since,
            self._closing_since,
        )

    def _schedule(self) -> None:
        """Arm the timer for the next deadline, unless it already fires by then.

        A timer is re-created, not moved sooner: moving a DelayedCall sooner
        is a linear search of the reactor's heap (10,000 connections: 1,921
        req/s with it, 5,574 without; BENCHMARKS.md).
        """
        clock = self._factory.clock
        due = self._due(clock.seconds())
        timer = self._timer
        if timer is not None:
            if timer.getTime() <= due.at:
                return
            timer.cancel()
        self._timer = clock.callLater(max(due.at - clock.seconds(), 0.0), self._timer_fired)

    def timeouts_changed(self) -> None:
        """The factory's timeouts changed: arm the timer for the deadline they give now."""
        if not self._disconnected:
            self._schedule()

    def _timer_fired(self) -> None:
        self._timer = None
        now = self._factory.clock.seconds()
        due = self._due(now)
        if due.at <= now + 1e-6:
            if due.action == timeouts.TIMEOUT:
                self._fail(IngestError(408, "request timeout", due.reason, close=True))
            elif due.action == timeouts.CLOSE:
                self._stop_reading()
                self._carry_out(self._pipeline.end())
            elif due.action == timeouts.ABORT:
                if not self._peer:
                    self._read_peer()
                log.info("aborting {client}: {reason}", client=self._peer, reason=due.reason)
                self._out.abortConnection()
                return  # connectionLost follows: nothing more is due
        if not self._disconnected:
            self._schedule()


@implementer(interfaces.IProtocolNegotiationFactory)
class ChannelFactory(Factory):
    """Builds channels and keeps what they share: routes, limits, clock, timeouts, the Date header.

    It also acts for all of them: `set_pressure` pauses and resumes every
    channel, and past `max_connections` (0: no limit) it stops accepting
    from `listening` (the port, set once listening) until one closes.
    Connections opened while the buffer is saturated are read (so that
    ``/health`` can still be asked); the buffer's hard limit, answered with
    503, bounds what they can add.  At most `max_pipeline` requests of one
    connection are open at once.  A connection's request number
    `max_requests_per_connection`, or the first that arrives
    `max_connection_age` seconds after it opened, is its last (0: no limit;
    `ingest.pipeline`, rule 6).

    Over TLS it answers ALPN with ``http/1.1`` (`acceptableProtocols`): Twisted
    selects among the protocols the factory names, and with none named it
    fails every handshake that offers ALPN (curl, Go's HTTP client, browsers).
    """

    noisy = False

    def __init__(
        self,
        app: Application,
        stats: Stats,
        clock: IReactorTime,
        limits: http11.Limits,
        timeouts: timeouts.Timeouts = DEFAULT_TIMEOUTS,
        max_pipeline: int = 16,
        max_connections: int = 0,
        max_requests_per_connection: int = 0,
        max_connection_age: float = 0.0,
        rejection_log_rate: float = REJECTION_LOG_RATE,
    ) -> None:
        self.app = app
        self.stats = stats
        self.clock = clock
        self.limits = limits
        self.timeouts = timeouts
        self.max_pipeline = max_pipeline
        self.max_connections = max_connections
        self.max_requests_per_connection = max_requests_per_connection
        self.max_connection_age = max_connection_age
        self.listening: Any = None
        self._accepting = True
        self._refused = 0  # connections refused since the limit was last reached
        self.saturated = False
        self.channels: set[HttpChannel] = set()
        self._date_second = -1
        self._date = b""
        self._drained: list[Deferred[None]] = []
        self._rejection_log = TokenBucket(
            rejection_log_rate, rejection_log_rate * REJECTION_LOG_BURST_SECONDS, clock.seconds()
        )
        self._rejections_unlogged = 0

    def acceptableProtocols(self) -> list[bytes]:
        """The ALPN protocols spoken: HTTP/1.1 only."""
        return [b"http/1.1"]

    def buildProtocol(self, addr: Any) -> HttpChannel:
        return HttpChannel(self)

    def date(self) -> bytes:
        """The Date header's value, formatted once per second."""
        now = int(self.clock.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True).encode("ascii")
        return self._date

    def set_timeouts(self, new: timeouts.Timeouts) -> None:
        """New timeouts (a reload): every open connection's timer is armed again for them at once.

        A shorter timeout then falls due on time; a longer one finds its
        old timer early, which only re-arms it.  O(connections), once.
        """
        self.timeouts = new
        for channel in list(self.channels):
            channel.timeouts_changed()

    def set_rejection_log_rate(self, rate: float) -> None:
        """Log at most `rate` lines a second about rejected requests from now on (a reload)."""
        self._rejection_log.change(rate, rate * REJECTION_LOG_BURST_SECONDS, self.clock.seconds())

    def rejected(self, now: float, client: str, status: int, reason: str) -> None:
        """Log a rejected request; at most the rejection log rate of lines a second, the rest counted."""
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

    def admit(self, channel: HttpChannel) -> bool:
        """A connection was accepted: keep it, or refuse it past `max_connections` (False: close it).

        The limit is hard.  At the limit the factory stops reading the
        listening socket, so new connections wait in the kernel's backlog;
        but Twisted's accept loop takes up to a hundred connections in one
        read of that socket (`tcp.Port.doRead`), before ``stopReading``
        can act, and a connection taken from the backlog cannot be put
        back: those past the limit are refused here, before a byte of them
        is read (the client sees the connection reset or closed, and
        retries).  Refusing here rather than in `buildProtocol`: a factory
        that returns None to a wrapping factory (TLS, the PROXY protocol)
        breaks it.
        """
        limit = self.max_connections
        if limit and len(self.channels) >= limit:
            self.stats.connections_refused += 1
            self._refused += 1
            if self._refused == 1:
                log.info(
                    "{count} connections open: refusing a connection the accept loop took past "
                    "--max-connections",
                    count=len(self.channels),
                )
            return False
        self.channels.add(channel)
        if limit and len(self.channels) >= limit and self._accepting:
            self._accepting = False
            if self.listening is not None:
                self.listening.stopReading()
            log.info("{count} connections open: not accepting more for now", count=len(self.channels))
        return True

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
            refused, self._refused = self._refused, 0
            log.info(
                "{count} connections open: accepting again ({refused} refused meanwhile)",
                count=len(self.channels),
                refused=refused,
            )
        if not self.channels:
            drained, self._drained = self._drained, []
            for waiting in drained:
                waiting.callback(None)

    def drain(self, grace: float, linger: float = 0.0) -> Deferred[None]:
        """Close every connection after one more answer (`HttpChannel.retire`); fires when all are closed.

        A request whose body is arriving is read to its end and answered;
        a connection with no request open takes the next one its client
        sends within `linger` seconds and answers it with ``Connection:
        close``; those still idle then are closed (`close_if_idle`): a
        client that sends at that very moment may see its connection closed
        under its request (every HTTP/1.1 server has this race; `linger`
        spares a client sending without pause).  Connections still open
        after `grace` seconds (a peer that stopped reading) are aborted.
        """
        done: Deferred[None] = Deferred()
        if not self.channels:
            done.callback(None)
            return done
        self._drained.append(done)
        for channel in list(self.channels):
            channel.retire()

        def close_idle() -> None:
            for channel in list(self.channels):
                channel.close_if_idle()

        calls = [self.clock.callLater(linger, close_idle)] if linger > 0 else []
        if not calls:
            close_idle()

        def abort() -> None:
            log.warn(
                "shutdown: aborting {count} connections still open after {grace} s",
                count=len(self.channels),
                grace=grace,
            )
            for channel in list(self.channels):
                channel.abort()

        calls.append(self.clock.callLater(grace, abort))

        def cancel(result: None) -> None:
            for call in calls:
                if call.active():
                    call.cancel()
            return result

        return done.addBoth(cancel)
