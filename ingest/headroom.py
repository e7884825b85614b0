"""Disk headroom: how much the segments take and how much room their file system has left.

`Headroom` measures the data directory every `interval` seconds, in the
storage thread (`ingest.storage.disk_usage`: a listing, a ``stat`` a
segment, a ``statvfs``), and keeps the last measure for ``/health``,
``/stats`` and ``/metrics``, which never touch the disk themselves.

``--min-free`` (`ingest.config.min_free_bytes`): while the free space is
below it, `problem` says so; ``/health`` answers 503 with that reason and
new ingest requests get 503, so the disk does not fill to the last byte
and the last segment is never torn by ENOSPC.  What is already in the
buffer is still written.  The check lags the disk by at most `interval`:
keep ``--min-free`` above what the service writes in that time.

A measure that fails (the directory unreadable) is logged once per new
error and leaves the last good measure in place; the next tick tries again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ingest.config import min_free_bytes
from ingest.storage import DiskUsage

INTERVAL = 5.0
"""Seconds between measures."""

log = Logger()


class Headroom:
    """The last measure of the data directory and what it means for ``--min-free``.

    `measure` returns a `DiskUsage` (blocking: it runs through
    `run_in_thread`); `min_free` is the ``--min-free`` setting.
    """

    def __init__(
        self,
        clock: IReactorTime,
        run_in_thread: Callable[..., Deferred[Any]],
        measure: Callable[[], DiskUsage],
        min_free: str,
        interval: float = INTERVAL,
    ) -> None:
        self._run_in_thread = run_in_thread
        self._measure = measure
        self._min_free = min_free
        self._interval = interval
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock
        self._error: str | None = None
        self.usage: DiskUsage | None = None
        """The last good measure; None before the first."""
        self.min_free_bytes = 0
        """``--min-free`` in bytes for the measured file system."""

    def start(self) -> None:
        """Measure now, on the calling thread (start-up, where `SegmentStore.open` lists the directory
        too), so that the figures and the check hold from the first request; then every `interval`
        seconds in the storage thread."""
        try:
            self._measured(self._measure())
        except OSError as error:
            self._failed(Failure(error))  # type: ignore[no-untyped-call]  # Twisted's Failure is not annotated
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def refresh(self) -> Deferred[None]:
        """Measure once in the storage thread; never fails (a LoopingCall stops for good if it does)."""
        measuring = self._run_in_thread(self._measure)
        return measuring.addCallbacks(self._measured, self._failed)

    def _measured(self, usage: DiskUsage) -> None:
        self.usage = usage
        self.min_free_bytes = min_free_bytes(self._min_free, usage.total_bytes)
        if self._error is not None:
            log.info("measuring the data directory works again")
            self._error = None

    def _failed(self, failure: Failure) -> None:
        error = failure.getErrorMessage()
        if error != self._error:
            log.error("measuring the data directory failed: {error}", error=error)
        self._error = error

    def problem(self) -> str | None:
        """Why the disk takes no more writes (free space under ``--min-free``), or None."""
        usage = self.usage
        if usage is None or usage.free_bytes >= self.min_free_bytes:
            return None
        return f"disk space low: {usage.free_bytes} bytes free, under --min-free of {self.min_free_bytes}"

    def figures(self) -> dict[str, Any] | None:
        """The last measure for ``/health``, ``/stats`` and ``/metrics``; None before the first.

        Segment times are Unix seconds (None with no segment).
        """
        usage = self.usage
        if usage is None:
            return None

        def seconds(ns: int | None) -> float | None:
            return None if ns is None else round(ns / 1e9, 3)

        return {
            "segment_bytes": usage.segment_bytes,
            "segments": usage.segments,
            "free_bytes": usage.free_bytes,
            "total_bytes": usage.total_bytes,
            "min_free_bytes": self.min_free_bytes,
            "oldest_segment_seconds": seconds(usage.oldest_ns),
            "newest_segment_seconds": seconds(usage.newest_ns),
        }
