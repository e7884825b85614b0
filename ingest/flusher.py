"""The flusher: moves batches from the buffer to storage on a `LoopingCall`.

Every `interval` seconds it takes everything pending from the buffer as one
batch and writes it in the storage thread (one ``write`` call).  A
`LoopingCall` stops for good when its function fails, so `flush` never
fails: a failed write is counted, logged, reported by `problem` (which
``/health`` shows) and its batch restored to the buffer for the next tick.

`stop` is the last step of shutdown: it waits for the write in progress,
flushes what is left, fsyncs and closes the segment.  Buffered-mode data is
fsynced at rotation and at stop; a crash of the process (not of the
machine) loses at most one interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ingest.buffer import Batch, Buffer
from ingest.stats import Stats
from ingest.storage import SegmentStore

RunInThread = Callable[..., "Deferred[Any]"]

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
        stop_retries: int = 10,
        stop_retry_delay: float = 0.5,
    ) -> None:
        self._buffer = buffer
        self._storage = storage
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._interval = interval
        self._stats = stats
        self._stop_retries = stop_retries
        self._stop_retry_delay = stop_retry_delay
        self._loop = LoopingCall(self.flush)
        self._loop.clock = clock
        self._writing: Deferred[None] | None = None
        self._problem: str | None = None

    def problem(self) -> str | None:
        """Why the last write failed, or None when the last write succeeded."""
        return self._problem

    def start(self) -> None:
        self._loop.start(self._interval, now=False)

    def flush(self) -> Deferred[None]:
        """Write everything pending as one batch.  Never fails."""
        if self._writing is not None:
            return self._writing
        batch = self._buffer.take()
        if batch is None:
            return succeed(None)
        writing = self._run_in_thread(self._storage.write, batch.data)
        writing.addCallbacks(self._written, self._failed, callbackArgs=(batch, self._clock.seconds()))
        self._writing = writing
        writing.addBoth(self._done)
        return writing

    def _written(self, rotated: bool, batch: Batch, started: float) -> None:
        self._buffer.commit()
        self._problem = None
        self._stats.flushes += 1
        self._stats.flush_duration.observe(self._clock.seconds() - started)
        self._stats.bytes_written += len(batch.data)
        self._stats.samples_written += batch.samples
        if rotated:
            log.info("segment rotated at {bytes} bytes", bytes=self._storage.segment_bytes)
        error, self._storage.rotation_error = self._storage.rotation_error, None
        if error is not None:
            self._stats.flush_errors += 1
            log.error("fsync of a closed segment failed: {error}", error=error)

    def _failed(self, failure: Failure) -> None:
        self._buffer.restore()
        self._stats.flush_errors += 1
        problem = failure.getErrorMessage()
        if problem != self._problem:
            log.error(
                "write to {directory} failed, batch kept for retry: {problem}",
                directory=self._storage.directory,
                problem=problem,
            )
        self._problem = problem

    def _done(self, result: None) -> None:
        self._writing = None

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop the loop, flush what is left, fsync and close."""
        if self._loop.running:
            self._loop.stop()
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
                break
            yield deferLater(self._clock, self._stop_retry_delay, lambda: None)
        try:
            yield self._run_in_thread(self._storage.close)
        except OSError as error:
            log.critical("final fsync failed: {error}", error=error)
