"""Retention: deleting closed segments past ``--retention`` (an age) or ``--retention-bytes`` (a total).

Three layers, as in `ingest.headroom`:

- `choose` and `protected` are pure: given the segment files (name,
  writer, size, last write), `protected` says which must stay, and `choose`,
  with the time and the limits, returns the deletions, oldest first.
- `scan` and `delete` are blocking (a listing, a ``stat`` and an ``unlink``
  a segment); `Retention` runs them in the storage thread, so a deletion
  never interleaves with a write, a rotation or a measure of the disk.
- `Retention` is the Twisted shell: it checks on a timer (every `INTERVAL`
  seconds, and once at start) and after each rotation (the flusher's
  ``on_rotation``), logs each deletion once, and counts them in `Stats`.

The rules:

- Order: oldest first, by the start time in the name, then the writer
  (`ingest.storage.list_readable_segments`'s order).
- Age: a segment is as old as its *last write*, its file's modification
  time (never earlier than the start in its name).  A segment holds samples
  received from its start to its last write, so this deletes a segment only
  once everything in it was received more than ``--retention`` ago, and
  needs one ``stat``; the start in the name would delete up to
  ``--segment-age`` of data younger than the limit, and the newest sample's
  own timestamp would mean reading the file and trusting clients' clocks.
  ``gzip`` and ``cp -p`` keep the modification time; a copy that resets it
  only keeps a segment longer.  A segment exactly ``--retention`` old stays;
  one nanosecond older goes.
- Bytes: while every segment file together (plain and gzipped, every
  writer's: the figure ``/stats`` shows as ``disk.segment_bytes``) takes
  more than ``--retention-bytes``, the oldest deletable segment goes.  At
  exactly the limit nothing goes.
- Never deleted: the deleter's active segment; under ``--workers``, the
  newest plain segment of each other worker (its active segment, or the
  one it closed last); a segment another running ingest holds locked (its
  active one, while a restart hands the port over: `delete`); with
  ``--sink`` (one process only), any segment
  JetStream does not hold whole yet (`ingest.sink.Sink.forwarded_before`,
  asked on the reactor thread when the check starts: a segment written
  since sorts after the answer, so a stale answer only keeps more).  A
  kept segment is passed over and the next oldest is considered, so with
  the sink behind, the data directory may stay over ``--retention-bytes``:
  the sink's lag alert says why.

Who deletes: one process per data directory.  The single process deletes
every writer's segments (also those workers of an earlier run left); under
``--workers N``, worker 1 does, for every worker, and ``--retention-bytes``
bounds the whole directory; the other workers delete nothing.  One deleter
sees the whole directory, so "oldest first" and the byte total hold across
workers without any coordination.  While worker 1 restarts nothing is
deleted; the next check catches up.

A reader (``ingest-read``, a backup) that holds a segment open when it is
deleted reads it to the end: on Linux the file lives until its last
descriptor closes.  One that lists the directory and then opens a segment
may find it gone; ``ingest-read`` skips it.

Runtime changes: `configure` takes new limits (a reload calls it); the next
check uses them.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ingest.stats import Stats
from ingest.storage import SegmentStore, parse_segment_name

INTERVAL = 60.0
"""Seconds between checks on the timer."""

log = Logger()


class SegmentFile(NamedTuple):
    """One segment file as retention sees it."""

    name: str
    start_ns: int
    worker: int | None
    compressed: bool
    size: int
    modified_ns: int
    """The file's modification time: its last write (`scan` makes it no earlier than `start_ns`)."""


class Deletion(NamedTuple):
    name: str
    size: int
    reason: str
    """``age`` or ``bytes`` (`ingest.stats.DELETION_REASONS`)."""


def choose(
    files: Iterable[SegmentFile],
    now_ns: int,
    max_age_ns: int,
    max_bytes: int,
    keep: Collection[str] = (),
) -> list[Deletion]:
    """The segments to delete, oldest first; pure.

    `max_age_ns` and `max_bytes` are the limits (0: none); `keep` holds the
    names that must stay.  A segment older than `max_age_ns` goes for its
    age; else, while the total of every file (kept ones included) is over
    `max_bytes`, the oldest that may go goes for bytes.  Cost: O(n log n).
    """
    ordered = sorted(files, key=lambda file: (file.start_ns, file.worker or 0, file.name))
    total = sum(file.size for file in ordered)
    deletions = []
    for file in ordered:
        if file.name in keep:
            continue
        if max_age_ns and now_ns - file.modified_ns > max_age_ns:
            reason = "age"
        elif max_bytes and total > max_bytes:
            reason = "bytes"
        else:
            continue
        deletions.append(Deletion(file.name, file.size, reason))
        total -= file.size
    return deletions


def protected(
    files: Iterable[SegmentFile],
    own: int | None,
    active: str | None,
    others_live: bool,
    forwarded_before: str | None,
) -> set[str]:
    """The names retention must not delete; pure.

    `own` is the deleter's writer (None: the single process) and `active` its
    active segment's name (None when none is open).  With `others_live` (the
    deleter is worker 1 of ``--workers``), the newest plain segment of every
    other worker stays; the single process's segments, left from an earlier
    run, have no writer any more.  `forwarded_before`
    (None without a sink) is `ingest.sink.Sink.forwarded_before`: the
    deleter's segments from that name on stay, gzipped ones included.
    """
    keep = {active} if active else set()
    newest: dict[int | None, str] = {}
    for file in files:
        if others_live and file.worker is not None and file.worker != own and not file.compressed:
            newest[file.worker] = max(newest.get(file.worker, file.name), file.name)
        if forwarded_before is not None and file.worker == own:
            plain = file.name[: -len(".gz")] if file.compressed else file.name
            if plain >= forwarded_before:
                keep.add(file.name)
    keep.update(newest.values())
    return keep


def scan(directory: str) -> list[SegmentFile]:
    """Every segment file of `directory` with its size and last write.  Blocking.

    One ``listdir`` and one ``stat`` a segment; a segment deleted between the
    two is left out.  Raises `OSError` when the directory cannot be listed.
    """
    files = []
    for name in os.listdir(directory):
        parsed = parse_segment_name(name)
        if parsed is None:
            continue
        try:
            status = os.stat(os.path.join(directory, name))
        except FileNotFoundError:
            continue
        modified = max(status.st_mtime_ns, parsed.start_ns)
        files.append(
            SegmentFile(name, parsed.start_ns, parsed.worker, parsed.compressed, status.st_size, modified)
        )
    return files


def delete(
    directory: str, deletions: Sequence[Deletion]
) -> tuple[list[tuple[Deletion, str | None]], str | None]:
    """Unlink `deletions` in order; each done with None, or why it failed.  Blocking; raises nothing.

    Each is unlinked holding its ``flock``: a segment another running store
    holds locked (its active one: a second ingest on this directory, during
    a restart that hands the port over, `ingest.storage`) stops the run,
    and its name is returned with what was done, for the caller to keep it
    and choose again.  A file already gone was deleted by someone else and
    is left out.  Cost: an open, a lock and an unlink a deletion.
    """
    done: list[tuple[Deletion, str | None]] = []
    for deletion in deletions:
        path = os.path.join(directory, deletion.name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        except OSError as error:
            done.append((deletion, str(error)))
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return done, deletion.name
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            done.append((deletion, str(error)))
        else:
            done.append((deletion, None))
        finally:
            os.close(fd)
    return done, None


class Retention:
    """Deletes what `choose` says, in the storage thread, on a timer and after rotations.

    `store` is the deleter's own `SegmentStore` (its directory, its writer
    and its active segment, read in the storage thread only);
    `forwarded_before` is the sink's query (`ingest.sink.Sink.forwarded_before`),
    None without a sink; `others_live` is True in a worker of ``--workers``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        run_in_thread: Callable[..., Deferred[Any]],
        store: SegmentStore,
        stats: Stats,
        retention: float = 0.0,
        retention_bytes: int = 0,
        forwarded_before: Callable[[], str] | None = None,
        others_live: bool = False,
        interval: float = INTERVAL,
    ) -> None:
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._store = store
        self._stats = stats
        self._forwarded_before = forwarded_before
        self._others_live = others_live
        self._interval = interval
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._checking: Deferred[None] | None = None
        self._again = False
        self._error: str | None = None
        self.retention = 0.0
        """``--retention`` in seconds; 0 is off."""
        self.retention_bytes = 0
        """``--retention-bytes``; 0 is off."""
        self.configure(retention, retention_bytes)

    def configure(self, retention: float, retention_bytes: int) -> None:
        """Take new limits (seconds, bytes; 0 turns one off); the next check uses them.

        Call it on the reactor thread, say on a reload.  Raises `ValueError`
        for a negative limit.
        """
        if retention < 0 or retention_bytes < 0:
            raise ValueError("retention limits are 0 or more")
        self.retention = retention
        self.retention_bytes = retention_bytes

    @property
    def enabled(self) -> bool:
        return bool(self.retention or self.retention_bytes)

    def start(self) -> None:
        """Check now, then every `interval` seconds (also while off: `configure` may turn it on)."""
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[None]:
        """Delete what the limits say, in the storage thread; never fails.

        A check asked for while one runs (a rotation during a timer's check)
        runs once more after it, so a rotation is never missed.
        """
        if not self.enabled:
            return succeed(None)
        if self._checking is not None:
            self._again = True
            return self._checking
        forwarded_before = self._forwarded_before() if self._forwarded_before is not None else None
        now_ns = round(self._clock.seconds() * 1e9)
        checking = self._checking = self._run_in_thread(
            self._delete, now_ns, round(self.retention * 1e9), self.retention_bytes, forwarded_before
        )
        # Set before the callbacks: a thread stand-in that has already fired runs them at once.
        checking.addCallbacks(self._deleted, self._failed)
        checking.addBoth(self._done)
        return checking

    def _delete(
        self, now_ns: int, max_age_ns: int, max_bytes: int, forwarded_before: str | None
    ) -> list[tuple[Deletion, str | None]]:
        """In the storage thread: list, choose, unlink."""
        store = self._store
        files = scan(store.directory)
        active = os.path.basename(store.active_path) if store.active_path else None
        keep = protected(files, store.worker, active, self._others_live, forwarded_before)
        done: list[tuple[Deletion, str | None]] = []
        while True:
            deleted, held = delete(store.directory, choose(files, now_ns, max_age_ns, max_bytes, keep))
            done += deleted
            if held is None:
                return done
            # Another ingest's active segment: keep it, and choose again without what is done.
            keep.add(held)
            keep.update(deletion.name for deletion, error in deleted if error is not None)
            gone = {deletion.name for deletion, error in deleted if error is None}
            files = [file for file in files if file.name not in gone]

    def _deleted(self, done: list[tuple[Deletion, str | None]]) -> None:
        errors = []
        for deletion, error in done:
            if error is not None:
                errors.append(f"{deletion.name}: {error}")
                continue
            self._stats.segments_deleted[deletion.reason] += 1
            self._stats.segment_bytes_deleted[deletion.reason] += deletion.size
            why = (
                f"last written more than --retention {self.retention:g} seconds ago"
                if deletion.reason == "age"
                else f"segments over --retention-bytes {self.retention_bytes}"
            )
            log.info(
                "retention deleted {segment} ({bytes} bytes): {why}",
                segment=deletion.name,
                bytes=deletion.size,
                reason=deletion.reason,
                why=why,
            )
        self._report("; ".join(errors) or None)

    def _failed(self, failure: Failure) -> None:
        self._report(failure.getErrorMessage())

    def _report(self, error: str | None) -> None:
        """Log an error once while it repeats, and its end."""
        if error is not None and error != self._error:
            log.error("retention could not delete: {error}", error=error)
        elif error is None and self._error is not None:
            log.info("retention deletes again")
        self._error = error

    def _done(self, result: object) -> None:
        self._checking = None
        if isinstance(result, Failure):  # a bug in the bookkeeping: logged, and the timer goes on
            log.failure("retention's bookkeeping failed", result)
        if self._again:
            self._again = False
            self.check()
