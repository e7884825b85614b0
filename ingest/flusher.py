"""The flusher: moves batches from the buffer to storage on a `LoopingCall`.

Every `interval` seconds it takes everything pending from the buffer as one
batch and writes it in the storage thread (one ``write`` call).  A
`LoopingCall` stops for good when its function fails, so `flush` never
fails: a failed write is counted, logged, reported by `problem` (which
``/health`` shows) and its batch restored to the buffer.  Retries back off:
after the n-th failure in a row the next attempt waits ``interval * 2**n``
seconds, at most `MAX_BACKOFF`; the first good write ends the backoff.

Durable acks (``--ack durable``): each batch is fsynced before the flusher
counts it written, and `wait_durable(seq)` gives requests a Deferred that
fires once the batch holding chunk `seq` is on disk.  Waiting requests do
not wait for the next tick: a flush is started at the end of the current
reactor turn (or as soon as the write in progress ends), so every request
that arrived meanwhile shares one write and one fsync (group commit).

Forwarding (``--sink``): each batch written is handed to `forward` with the
segment it went to and the offset where it began (`ingest.sink.Sink.forward`).
Replicated acks (``--ack replicated``): `wait_durable(seq)` then fires once
the sink says, through `confirm`, that JetStream acknowledged the batch holding
chunk `seq`; the batch is not fsynced for it (JetStream holds it), and the
same group commit applies.

Rotation: after a segment closes (by size or by age), `on_rotation` is
called (retention checks then, `ingest.retention`).

Buffered mode fsyncs at rotation and at stop; a crash of the process (not
of the machine) loses at most one interval.

`stop` is the last step of shutdown: it waits for the write in progress,
flushes what is left (retrying a failing disk a few times), fsyncs and
closes the segment.  When it gives up on samples, or the final fsync
fails, `lost` says so: the process then ends with a failure status
(`ingest.tap.exit_if_data_lost`).

A bug in the bookkeeping after a write (an exception in `_written` or
`_failed`, on the reactor thread) is logged with its traceback and does not
stop the flusher: the next flush still runs, and the state that decides it
(the batch committed, the backoff cleared, durable requests acked) is
settled before anything that could raise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ingest.buffer import Batch, Buffer
from ingest.stats import Stats
from ingest.storage import SegmentStore

RunInThread = Callable[..., "Deferred[Any]"]

MAX_BACKOFF = 5.0

log = Logger()


class Flusher:
    def __init__(
        self,
        buffer: Buffer,
        storage: SegmentStore,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        interval: float,
        stats: Stats,
        durable: bool = False,
        stop_retries: int = 10,
        stop_retry_delay: float = 0.5,
        forward: Callable[[str, int, bytes, int], None] | None = None,
        replicated: bool = False,
        on_rotation: Callable[[], object] | None = None,
    ) -> None:
        """`on_rotation` is called on the reactor thread after each rotation (by size or age) is logged."""
        self._buffer = buffer
        self._storage = storage
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._interval = interval
        self._stats = stats
        self._durable = durable
        self._stop_retries = stop_retries
        self._stop_retry_delay = stop_retry_delay
        self._forward = forward
        self._replicated = replicated
        self._on_rotation = on_rotation
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._writing: Deferred[None] | None = None
        self._problem: str | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._durable_seq = 0
        self._waiters: deque[tuple[int, Deferred[None]]] = deque()
        self._prompt: IDelayedCall | None = None
        self.lost: str | None = None
        """Set by `stop` when data may be lost: samples left unwritten, or a failed final fsync."""

    def problem(self) -> str | None:
        """Why the last write failed, or None when the last write succeeded."""
        return self._problem

    def start(self) -> None:
        self._loop.start(self._interval, now=False)

    def wait_durable(self, seq: int) -> Deferred[None]:
        """Fires once the chunk numbered `seq` is written and fsynced."""
        if seq <= self._durable_seq:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiters.append((seq, waiting))
        self._flush_soon()
        return waiting

    def _flush_soon(self) -> None:
        if self._prompt is None and self._writing is None:
            delay = max(0.0, self._retry_at - self._clock.seconds())
            self._prompt = self._clock.callLater(delay, self._prompt_flush)

    def _prompt_flush(self) -> None:
        self._prompt = None
        self.flush()

    def _tick(self) -> Deferred[None]:
        if self._clock.seconds() < self._retry_at:
            return succeed(None)
        return self.flush()

    def flush(self) -> Deferred[None]:
        """Write everything pending as one batch.  Never fails.

        With nothing pending, close the active segment if it is past
        ``--segment-age`` (`SegmentStore.expired`): a quiet writer's files
        close on time too.
        """
        if self._writing is not None:
            return self._writing
        batch = self._buffer.take()
        if batch is None:
            if not self._storage.expired():
                return succeed(None)
            closing = self._run_in_thread(self._storage.close_expired)
            closing.addCallbacks(self._log_rotation, self._close_by_age_failed)
            self._writing = closing
            closing.addBoth(self._done)
            return closing
        writing = self._run_in_thread(self._storage.write, batch.data, self._durable)
        writing.addCallbacks(self._written, self._failed, callbackArgs=(batch, self._clock.seconds()))
        self._writing = writing
        writing.addBoth(self._done)
        return writing

    def _written(self, rotated: bool, batch: Batch, started: float) -> None:
        """`batch` is on disk: commit it, end any backoff, ack durable requests, count it.

        What decides the next flushes comes first and the durable acks run
        even if counting or logging raises (which `_done` then logs).
        """
        failures, self._failures = self._failures, 0
        recovered, self._problem = self._problem is not None, None
        self._retry_at = 0.0
        if self._durable and not self._replicated:
            self._durable_seq = batch.last_seq
        try:
            self._buffer.commit()  # forgets the batch first; then may call on_pressure
            self._count_written(rotated, batch, started, recovered, failures)
        finally:
            try:
                if self._forward is not None:
                    segment, offset = self._storage.last_batch
                    self._forward(segment, offset, batch.data, batch.last_seq)
            finally:
                self._ack_durable()

    def confirm(self, seq: int) -> None:
        """Replicated acks: JetStream holds every chunk up to `seq`; answer the requests waiting on them."""
        if seq > self._durable_seq:
            self._durable_seq = seq
            self._ack_durable()

    def _count_written(
        self, rotated: bool, batch: Batch, started: float, recovered: bool, failures: int
    ) -> None:
        if recovered:
            log.info(
                "write to {directory} succeeded again after {failures} failed attempts",
                directory=self._storage.directory,
                failures=failures,
            )
        stats = self._stats
        stats.flushes += 1
        stats.flush_duration.observe(self._clock.seconds() - started)
        stats.bytes_written += len(batch.data)
        stats.samples_written += batch.samples
        self._log_rotation(rotated)

    def _log_rotation(self, rotated: bool) -> None:
        """Log a rotation (by size or by age) and a failed fsync of the segment it closed."""
        if rotated and self._storage.last_closed is not None:
            path, size = self._storage.last_closed
            log.info(
                "segment {path} closed at {bytes} bytes: the next batch opens a new one",
                path=path,
                bytes=size,
            )
        if rotated and self._on_rotation is not None:
            self._on_rotation()
        error, self._storage.rotation_error = self._storage.rotation_error, None
        if error is not None:
            self._stats.flush_errors += 1
            log.error("fsync of a closed segment failed: {error}", error=error)

    def _close_by_age_failed(self, failure: Failure) -> None:
        """Closing a segment past its age raised (a bug: an fsync error is kept in `rotation_error`)."""
        log.failure("closing a segment past --segment-age failed", failure)

    def _ack_durable(self) -> None:
        """Fire the waiters whose chunks are on disk (a waiter already fired, say cancelled, is skipped)."""
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._durable_seq:
            waiting = waiters.popleft()[1]
            if not waiting.called:
                waiting.callback(None)

    def _failed(self, failure: Failure) -> None:
        self._buffer.restore()
        self._stats.flush_errors += 1
        self._failures += 1
        backoff = min(MAX_BACKOFF, self._interval * 2**self._failures)
        self._retry_at = self._clock.seconds() + backoff
        problem = failure.getErrorMessage()
        if problem != self._problem:
            log.error(
                "write to {directory} failed, batch kept, retrying: {problem}",
                directory=self._storage.directory,
                problem=problem,
            )
        self._problem = problem

    def _done(self, result: Failure | None) -> None:
        """The write and its bookkeeping are over: a flush may start again.

        A failure here is a bug in `_written` or `_failed`: logged and
        consumed, so that `flush` keeps its promise never to fail (and `stop`
        and the loop go on).
        """
        self._writing = None
        if isinstance(result, Failure):
            log.failure("the bookkeeping after a write failed; the flusher goes on", result)
        if self._waiters:
            self._flush_soon()

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop the loop, flush what is left, fsync and close."""
        if self._loop.running:
            self._loop.stop()
        if self._prompt is not None:
            self._prompt.cancel()
            self._prompt = None
        tries = 0
        while True:
            yield self.flush()
            if self._buffer.depth == 0:
                break
            if self._problem is None:
                continue
            tries += 1
            if tries > self._stop_retries:
                log.critical(
                    "shutting down with {count} samples unwritten: {problem}",
                    count=self._buffer.depth,
                    problem=self._problem,
                )
                self.lost = f"{self._buffer.depth} samples unwritten: {self._problem}"
                break
            yield deferLater(self._clock, self._stop_retry_delay, lambda: None)
        try:
            yield self._run_in_thread(self._storage.close)
        except OSError as error:
            log.critical("final fsync failed: {error}", error=error)
            self.lost = self.lost or f"final fsync failed: {error}"
