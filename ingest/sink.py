"""The NATS JetStream sink: forwards every flushed batch, replays after outages and restarts.

Two halves and one hand-off each way:

- `Sink` lives on the reactor thread.  The flusher calls `Sink.forward` with
  each batch it wrote (segment, offset, bytes, last chunk number); `Sink`
  keeps what is not yet acknowledged (for the lag figures and, with
  ``--ack replicated``, for the requests waiting on it) and hands the batch
  to the publisher with ``loop.call_soon_threadsafe``.
- `Publisher` runs nats-py on an asyncio loop in a thread of its own
  (``ingest-sink``).  It cuts ranges into messages (`ingest.forwarding`),
  keeps at most `window` publishes in flight, takes their acknowledgements
  in order, and reports the acknowledged position back with
  ``reactor.callFromThread``; it writes the cursor file as it goes.

The segments are the write-ahead log: a batch is forwarded after it is on
disk.  On start the ranges past the cursor are read back from the segment
files.  On every connection (the first one and after any publish error) the
publisher *reconciles*: it reads the messages of its subject that the stream
holds past the cursor's stream sequence, and skips exactly those while it
publishes the rest again (`ingest.forwarding` says why this gives the same
messages and ids).  While NATS is unreachable ingest keeps writing its
segments; nothing here deletes a segment.  Retention
(`ingest.retention`) asks `Sink.forwarded_before` which segments JetStream
holds whole, and deletes none of the others.

With ``--ack replicated`` a request is answered once the batch holding its
samples is acknowledged by JetStream (`on_confirm` gets the batch's last
chunk number); while the sink has been disconnected for more than
`ACK_PATIENCE` seconds, `ack_problem` says so and new requests get 503.

Threads: the publisher touches only its own state, the files it reads and
the cursor file; everything it reports crosses with ``callFromThread``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ingest.forwarding import (
    HEADER_ROOM,
    ID_HEADER,
    Cursor,
    Position,
    cursor_path,
    message_length,
    message_limit,
    msg_id,
    parse_msg_id,
    read_cursor,
    subject_covers,
    write_cursor,
)
from ingest.storage import list_segments

log = Logger()

WINDOW = 64
"""Publishes in flight at most."""
PUBLISH_TIMEOUT = 3.0
"""Seconds to wait for one acknowledgement before the publisher starts again from the last acknowledged."""
MAX_HELD = 64 * 1024 * 1024
"""Bytes of batches kept in memory for publishing; past it, batches are read back from their segments."""
CURSOR_INTERVAL = 0.2
"""Seconds between cursor writes at most (and one at stop)."""
ACK_PATIENCE = 5.0
"""Seconds disconnected after which replicated requests are refused (503) rather than held."""
RETRY_DELAY = 0.5
"""Seconds between connection attempts (and after a publish error)."""
REPEAT_QUIET = 60.0
"""Seconds during which the same warning is not logged again."""
START_CHECK = 3.0
"""Seconds start-up waits for NATS to check the stream; an unreachable NATS does not stop start-up."""
CONNECT_TIMEOUT = 3.0
"""Seconds one round of attempts at the first connection may take before it starts again."""


class Range(NamedTuple):
    """A run of whole lines of one segment to publish: a flushed batch, or the rest of an older segment."""

    segment: str
    start: int
    end: int
    data: bytes | None
    """The bytes, while held in memory; None to read them from the segment."""
    last_seq: int
    """The buffer's last chunk number in the batch (0 for what is replayed from an earlier run)."""
    written_at: float


class StreamMismatch(Exception):
    """The stream exists and its subjects do not cover ours: ingest must not start."""


@dataclass
class SinkSettings:
    servers: list[str]
    stream: str
    node: str
    replicas: int = 1
    window: int = WINDOW
    publish_timeout: float = PUBLISH_TIMEOUT

    @property
    def subject(self) -> str:
        return f"{self.stream}.{self.node}"


def sink_servers(text: str) -> list[str]:
    """``nats://a:4222,b:4222`` as nats-py's list of server URLs."""
    servers = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        servers.append(part if "://" in part else f"nats://{part}")
    return servers


class Sink:
    """The reactor's side of the sink: what is forwarded and not yet acknowledged, and the figures."""

    def __init__(
        self,
        reactor: Any,
        directory: str,
        settings: SinkSettings,
        on_confirm: Callable[[int], None] | None = None,
        on_fatal: Callable[[str], None] | None = None,
        worker: int | None = None,
    ) -> None:
        self._reactor = reactor
        self._directory = directory
        self.settings = settings
        self._on_confirm = on_confirm
        self._on_fatal = on_fatal
        self._worker = worker
        self._pending: deque[Range] = deque()
        self._acked: Position | None = None
        self.connected = False
        self._disconnected_at: float = reactor.seconds()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publisher: Publisher | None = None
        self._thread: threading.Thread | None = None
        self._stopped: Deferred[None] | None = None
        self.skipped_lines = 0
        """Sample lines too long for any message, passed over (logged each)."""
        self._last_warning: tuple[str, float] = ("", 0.0)

    def start(self) -> None:
        """Read the cursor and the segments past it, then start the publisher's thread.

        Call it after the store repaired its tails and before the first
        flush: the backlog is every plain segment of this writer past the
        cursor, as it is now.
        """
        path = cursor_path(self._directory, self.settings.node)
        cursor = read_cursor(path)
        if cursor is not None:
            self._acked = cursor.position
        now = self._reactor.seconds()
        backlog = []
        for name in list_segments(self._directory, self._worker):
            if cursor is not None and name < cursor.segment:
                continue
            start = cursor.offset if cursor is not None and name == cursor.segment else 0
            size = os.path.getsize(os.path.join(self._directory, name))
            if size > start:
                backlog.append(Range(name, start, size, None, 0, now))
        self._pending.extend(backlog)
        if backlog:
            log.info(
                "sink: {bytes} bytes in {count} segments to replay past the cursor",
                bytes=sum(r.end - r.start for r in backlog),
                count=len(backlog),
            )
        self._loop = asyncio.new_event_loop()
        self._publisher = Publisher(self.settings, self._directory, path, cursor, backlog, self._loop, self)
        self._thread = threading.Thread(target=self._run, name="ingest-sink", daemon=True)
        self._thread.start()
        self._publisher.checked.wait(START_CHECK)
        if self._publisher.mismatch is not None:
            raise StreamMismatch(self._publisher.mismatch)

    def _run(self) -> None:
        loop, publisher = self._loop, self._publisher
        assert loop is not None and publisher is not None
        try:
            loop.run_until_complete(publisher.run())
        finally:
            loop.close()
            self._reactor.callFromThread(self._finished)

    def forward(self, segment: str, offset: int, data: bytes, last_seq: int) -> None:
        """`data` (whole lines) is on disk in `segment` at `offset`: publish it."""
        if not data:
            return
        batch = Range(segment, offset, offset + len(data), data, last_seq, self._reactor.seconds())
        self._pending.append(batch._replace(data=None))  # the bytes go to the publisher only
        if self._loop is not None and self._publisher is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._publisher.add, batch)

    # -- reports from the publisher, on the reactor thread ---------------------

    def acked(self, position: Position) -> None:
        self._acked = position
        pending = self._pending
        confirmed = 0
        while pending and (pending[0].segment, pending[0].end) <= position:
            confirmed = max(confirmed, pending.popleft().last_seq)
        if confirmed and self._on_confirm is not None:
            self._on_confirm(confirmed)

    def connection(self, connected: bool, detail: str = "") -> None:
        if connected == self.connected:
            return
        self.connected = connected
        if connected:
            log.info("sink: connected to NATS {detail}", detail=detail)
        else:
            self._disconnected_at = self._reactor.seconds()
            log.warn("sink: disconnected from NATS: {detail}", detail=detail)

    def fatal(self, message: str) -> None:
        log.critical("sink: {message}", message=message)
        if self._on_fatal is not None:
            self._on_fatal(message)

    def warn(self, message: str) -> None:
        """Log `message`, but not again while it repeats within `REPEAT_QUIET` seconds (a retry loop)."""
        now = self._reactor.seconds()
        if message == self._last_warning[0] and now - self._last_warning[1] < REPEAT_QUIET:
            return
        self._last_warning = (message, now)
        log.warn("sink: {message}", message=message)

    def error(self, message: str) -> None:
        self.skipped_lines += 1
        log.error("sink: {message}", message=message)

    def _finished(self) -> None:
        stopped, self._stopped = self._stopped, None
        if stopped is not None:
            stopped.callback(None)

    # -- what the service shows ------------------------------------------------

    def forwarded_before(self) -> str:
        """A segment name: every segment of this writer whose name sorts before it is whole in the stream.

        The oldest segment still needed: the segment of the oldest batch not
        yet acknowledged, else the segment of the last acknowledged position
        (it may still grow, or be the active one); ``""`` (nothing may go)
        before anything is known to be acknowledged, by this run or by the
        cursor of an earlier one.  A segment written after this answer sorts
        at or after the one named, so a stale answer errs on keeping.
        """
        if self._pending:
            return self._pending[0].segment
        return self._acked.segment if self._acked is not None else ""

    def lag_bytes(self) -> int:
        lag = 0
        acked = self._acked
        for pending in self._pending:
            start = pending.start
            if acked is not None and acked.segment == pending.segment:
                start = max(start, min(acked.offset, pending.end))
            lag += pending.end - start
        return lag

    def lag_seconds(self) -> float:
        if not self._pending:
            return 0.0
        return max(0.0, float(self._reactor.seconds()) - self._pending[0].written_at)

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "lag_bytes": self.lag_bytes(),
            "lag_seconds": round(self.lag_seconds(), 3),
        }

    def behind(self) -> str | None:
        """Why the sink is behind (``/health`` says degraded), or None."""
        if not self.connected:
            return "sink disconnected from NATS; segments keep the data"
        if self.lag_seconds() > 2.0:
            return f"sink behind by {self.lag_bytes()} bytes"
        return None

    def ack_problem(self) -> str | None:
        """Why replicated acks cannot be given now (disconnected longer than `ACK_PATIENCE`), or None."""
        if self.connected or self._reactor.seconds() - self._disconnected_at < ACK_PATIENCE:
            return None
        return "NATS JetStream unreachable"

    def stop(self, grace: float = 5.0) -> Deferred[None]:
        """Publish what is pending for up to `grace` seconds, write the cursor, disconnect."""
        thread, loop, publisher = self._thread, self._loop, self._publisher
        if thread is None or loop is None or publisher is None or not thread.is_alive():
            return succeed(None)
        self._stopped = Deferred()
        try:
            loop.call_soon_threadsafe(publisher.finish, grace)
        except RuntimeError:  # the loop closed meanwhile
            return succeed(None)
        return self._stopped


class Outgoing(NamedTuple):
    """One message to send: its place, and its payload, or the stream sequence that already holds it."""

    segment: str
    offset: int
    end: int
    payload: bytes | None
    stored_seq: int


class Publisher:
    """nats-py on the sink's asyncio loop.  Every method runs on that loop's thread."""

    def __init__(
        self,
        settings: SinkSettings,
        directory: str,
        cursor_file: str,
        cursor: Cursor | None,
        backlog: list[Range],
        loop: asyncio.AbstractEventLoop,
        sink: Sink,
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._cursor_file = cursor_file
        self._loop = loop
        self._sink = sink
        self._report = sink._reactor.callFromThread
        self._ranges: deque[Range] = deque(backlog)
        self._held = 0
        self._acked = cursor.position if cursor is not None else Position("", 0)
        self._stream_seq = cursor.stream_seq if cursor is not None else 0
        self._cursor_written = self._acked
        self._cursor_at = 0.0
        self._stored: dict[Position, tuple[int, int]] = {}
        self._wakeup = asyncio.Event()
        self._finish = asyncio.Event()
        self._finishing: float | None = None
        self._nc: Any = None
        self._files: tuple[str, Any] | None = None
        self._hint = 0
        """Index in `_ranges` of the range `_next` looks at first (those before it are all sent)."""
        self._inflight: deque[tuple[Outgoing, asyncio.Future[Any] | None]] = deque()
        self.checked = threading.Event()
        """Set once the first attempt to reach NATS and check the stream is over, whatever its outcome."""
        self.mismatch: str | None = None

    # -- called with call_soon_threadsafe ------------------------------------------

    def add(self, batch: Range) -> None:
        if self._held + len(batch.data or b"") > MAX_HELD:
            batch = batch._replace(data=None)
        self._held += len(batch.data or b"")
        self._ranges.append(batch)
        self._wakeup.set()

    def finish(self, grace: float) -> None:
        self._finishing = self._loop.time() + grace
        self._finish.set()
        self._wakeup.set()

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._serve()
        except StreamMismatch as error:
            self.mismatch = str(error)
            self.checked.set()
            self._report(self._sink.fatal, str(error))
        finally:
            self.checked.set()
            self._write_cursor(force=True)
            if self._files is not None:
                self._files[1].close()
            if self._nc is not None:
                try:
                    await asyncio.wait_for(self._nc.close(), 2.0)
                except Exception:
                    pass

    def _done(self) -> bool:
        """Finishing, and all is acknowledged, or the grace is over, or NATS is unreachable (why wait)."""
        finishing = self._finishing
        if finishing is None:
            return False
        connected = self._nc is not None and self._nc.is_connected
        return not self._ranges or not connected or self._loop.time() >= finishing

    async def _serve(self) -> None:
        import nats

        while not self._done():
            if self._nc is None:
                try:
                    self._nc = await self._connect(nats)
                except Exception as error:
                    self._report(self._sink.connection, False, str(error) or type(error).__name__)
                    self.checked.set()
                    await self._pause(RETRY_DELAY)
                    continue
                self._report(self._sink.connection, True, str(self._nc.connected_url.netloc))
            if self._nc.is_closed:  # nats-py gave up (it does not, reconnecting for ever): start over
                self._nc = None
                continue
            if not self._nc.is_connected:
                await self._pause(0.1)
                continue
            try:
                js = self._nc.jetstream(timeout=self._settings.publish_timeout)
                await self._ensure_stream(js)
                self.checked.set()
                await self._reconcile(js)
                await self._publish(js)
            except StreamMismatch:
                raise
            except Exception as error:
                self._report(self._sink.warn, f"publishing stopped, replaying from the cursor: {error!r}")
                await self._pause(RETRY_DELAY)

    async def _connect(self, nats: Any) -> Any:
        """A connection, or `TimeoutError` after `CONNECT_TIMEOUT` or as soon as `finish` is called.

        nats-py tries a first connection for ever when told to reconnect for
        ever: the time limit lets this loop report and start over, and `finish`
        must not wait for it.
        """
        connecting = asyncio.ensure_future(
            nats.connect(
                servers=self._settings.servers,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RETRY_DELAY,
                connect_timeout=2,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        )
        finishing = asyncio.ensure_future(self._finish.wait())
        try:
            await asyncio.wait(
                {connecting, finishing}, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            finishing.cancel()
        if not connecting.done():
            connecting.cancel()
            raise TimeoutError("no NATS server answered")
        return connecting.result()

    async def _pause(self, seconds: float) -> None:
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except TimeoutError:
            pass

    async def _on_error(self, error: Exception) -> None:
        """nats-py's report of a failed attempt: start-up need not wait longer (NATS is unreachable)."""
        self.checked.set()

    async def _on_disconnected(self) -> None:
        """The replies to what is in flight are lost with the connection: fail them now, at once."""
        self._report(self._sink.connection, False, "connection lost")
        for _outgoing, future in self._inflight:
            if future is not None and not future.done():
                future.set_exception(ConnectionError("disconnected from NATS"))

    async def _on_reconnected(self) -> None:
        self._report(self._sink.connection, True, str(self._nc.connected_url.netloc))
        self._wakeup.set()

    async def _ensure_stream(self, js: Any) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        settings = self._settings
        try:
            info = await js.stream_info(settings.stream)
        except NotFoundError:
            config = StreamConfig(
                name=settings.stream,
                subjects=[f"{settings.stream}.>"],
                storage=StorageType.FILE,
                num_replicas=settings.replicas,
            )
            await js.add_stream(config)
            self._report(
                self._sink.warn,
                f"created stream {settings.stream}: subjects {settings.stream}.>, file storage, "
                f"{settings.replicas} replicas",
            )
            return
        subjects = info.config.subjects or []
        if not any(subject_covers(pattern, settings.subject) for pattern in subjects):
            raise StreamMismatch(
                f"stream {settings.stream} exists with subjects {subjects}, which do not cover "
                f"{settings.subject}: add it to the stream or choose another --sink-stream"
            )

    async def _reconcile(self, js: Any) -> None:
        """Learn which messages of this node the stream holds past the cursor's stream sequence."""
        from nats.js.errors import NotFoundError

        stored: dict[Position, tuple[int, int]] = {}
        seq = self._stream_seq + 1
        node = self._settings.node
        if self._stream_seq == 0:
            # No cursor (a new node, or its data directory replaced): when the node's last message in the
            # stream is older than every segment here, none of them can be there; skip the scan.
            try:
                last = await js.get_msg(self._settings.stream, subject=self._settings.subject)
            except NotFoundError:
                self._stored = stored
                return
            parsed = parse_msg_id((last.headers or {}).get(ID_HEADER, ""))
            oldest = self._ranges[0].segment if self._ranges else None
            if parsed is None or oldest is None or parsed[1] < oldest:
                seq = last.seq + 1
        while True:
            try:
                message = await js.get_msg(
                    self._settings.stream, seq, subject=self._settings.subject, next=True
                )
            except NotFoundError:
                break
            parsed = parse_msg_id((message.headers or {}).get(ID_HEADER, ""))
            if parsed is not None and parsed[0] == node:
                start = Position(parsed[1], parsed[2])
                if start >= self._acked:
                    stored[start] = (start.offset + len(message.data or b""), message.seq)
            seq = message.seq + 1
        self._stored = stored

    async def _publish(self, js: Any) -> None:
        """Send from the acknowledged position, `window` at a time; returns when finished, raises on error."""
        settings = self._settings
        limit = message_limit(self._nc.max_payload)
        inflight = self._inflight = deque()
        sending = self._acked
        self._hint = 0
        try:
            while True:
                acked = self._acked
                while inflight and (inflight[0][1] is None or inflight[0][1].done()):
                    self._take_ack(*inflight.popleft())
                if self._acked != acked:
                    self._report(self._sink.acked, self._acked)
                    self._write_cursor()
                if len(inflight) < settings.window:
                    outgoing = self._next(sending, limit)
                    if outgoing is not None:
                        sending = Position(outgoing.segment, outgoing.end)
                        if outgoing.payload is None:
                            inflight.append((outgoing, None))
                        else:
                            headers = {ID_HEADER: msg_id(settings.node, outgoing.segment, outgoing.offset)}
                            future = await js.publish_async(
                                settings.subject, outgoing.payload, headers=headers
                            )
                            inflight.append((outgoing, future))
                        continue
                if inflight:
                    head = inflight[0][1]
                    assert head is not None
                    await asyncio.wait_for(asyncio.shield(head), settings.publish_timeout)
                    continue
                if self._done():
                    return
                self._write_cursor()
                await self._pause(CURSOR_INTERVAL)
        finally:
            self._report(self._sink.acked, self._acked)
            for _outgoing, future in inflight:
                if future is not None and not future.done():
                    future.cancel()

    def _take_ack(self, outgoing: Outgoing, future: asyncio.Future[Any] | None) -> None:
        if future is None:
            seq = outgoing.stored_seq
        else:
            seq = future.result().seq  # raises the publish's error: the caller starts again
        self._acked = Position(outgoing.segment, outgoing.end)
        self._stream_seq = max(self._stream_seq, seq)
        ranges = self._ranges
        while ranges and (ranges[0].segment, ranges[0].end) <= self._acked:
            self._held -= len(ranges.popleft().data or b"")
            self._hint = max(0, self._hint - 1)

    def _next(self, sending: Position, limit: int) -> Outgoing | None:
        """The message after `sending`, cut by `ingest.forwarding`'s rule, or None when all is sent."""
        ranges = self._ranges
        for index in range(self._hint, len(ranges)):
            batch = ranges[index]
            if (batch.segment, batch.end) <= sending:
                self._hint = index + 1
                continue
            offset = sending.offset if batch.segment == sending.segment else 0
            offset = max(offset, batch.start)
            start = Position(batch.segment, offset)
            held = self._stored.get(start)
            if held is not None:
                return Outgoing(batch.segment, offset, held[0], None, held[1])
            bound = batch.end
            for stop in self._stored:
                if stop.segment == batch.segment and offset < stop.offset < bound:
                    bound = stop.offset
            window = self._read(batch, offset, min(bound, offset + limit + 1))
            if not window:  # the segment is shorter than it was (a machine crash lost its tail)
                return Outgoing(batch.segment, offset, bound, None, 0)
            length = message_length(window, limit, at_end=offset + len(window) == bound)
            if length == 0:  # one line longer than the limit: it goes alone
                window = self._read(batch, offset, bound)
                length = message_length(window, limit, at_end=True)
            if length > limit:
                # No server would take it, and a replay would meet it again: pass over it, loudly.
                self._report(
                    self._sink.error,
                    f"a sample line of {length} bytes at {batch.segment}:{offset} is over the server's "
                    f"max payload less {HEADER_ROOM} bytes ({limit}): not forwarded",
                )
                return Outgoing(batch.segment, offset, offset + length, None, 0)
            return Outgoing(batch.segment, offset, offset + length, window[:length], 0)
        return None

    def _read(self, batch: Range, start: int, end: int) -> bytes:
        if batch.data is not None:
            return batch.data[start - batch.start : end - batch.start]
        if self._files is None or self._files[0] != batch.segment:
            if self._files is not None:
                self._files[1].close()
            self._files = (batch.segment, open(os.path.join(self._directory, batch.segment), "rb"))
        segment = self._files[1]
        segment.seek(start)
        data: bytes = segment.read(end - start)
        return data

    def _write_cursor(self, force: bool = False) -> None:
        if self._acked == self._cursor_written or not self._acked.segment:
            return
        now = self._loop.time()
        if not force and now - self._cursor_at < CURSOR_INTERVAL:
            return
        try:
            write_cursor(self._cursor_file, Cursor(self._acked.segment, self._acked.offset, self._stream_seq))
        except OSError as error:
            self._report(self._sink.warn, f"cannot write the cursor {self._cursor_file}: {error}")
            return
        self._cursor_written = self._acked
        self._cursor_at = now
