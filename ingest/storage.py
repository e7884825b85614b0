"""Segment files on local disk.  Blocking: runs in the storage thread.

A segment is an append-only file of NDJSON samples (see `ingest.sample`)
named ``segment-<start ns, 19 digits>.ndjson``, so that names sort in time
order.  The active segment takes each batch with one ``write`` call (looped
only if the kernel writes short); past `segment_bytes`, or once it is
`segment_age` seconds old, it is fsynced and closed, and never changes
again; the next batch opens a new one.  A quiet writer's segment reaches its
age between writes: the flusher asks `expired` when it has nothing to write
and then runs `close_expired`, so closed files appear steadily.

Crash safety: a batch is whole lines, so after a crash the only damage is a
torn last line in the newest segment; `open` cuts it off.  A write that
fails part-way is cut back to where the batch began, so a retry never
duplicates or interleaves lines; if even that fails, the segment is
abandoned (closed as it is) and the retry goes to a new segment.

Raises `OSError` (disk full, read-only, EIO) to the caller, who keeps the
batch and retries.

`SegmentStore` takes the ``write`` system call as a constructor argument
(``os.write`` by default) so that tests can make a write fail part-way.

An operator may gzip closed segments (``segment-<ns>.ndjson.gz``).
`parse_segment_name` is the one place that reads a file name, and knows both
forms; the writer (`segment_start`, `list_segments`, `SegmentStore.open`)
sees only plain segments, so it never repairs or appends to a gzipped file.
Readers list both with `list_readable_segments`.

Writers.  With ``--workers N`` (N > 1) each worker process K (1 to N) has a
store of its own whose names carry its id: ``segment-<ns>-w<K>.ndjson``.
A store sees only its own writer's plain segments (the single process's
store only the names without a worker id), so a worker never repairs a
segment another worker is writing; readers list every writer's segments
together, in the order of their start times.  `repair_tails` cuts the torn
tails of writers no running store owns (say after ``--workers`` changed).

Two processes on one directory (a zero-downtime restart: the new ingest
starts on the old one's port and data directory while the old one drains,
docs/OPERATIONS.md "Upgrading") are two writers with the same names' form.
Each segment name is new (a start time later than every segment the store
saw at `open`, created with ``O_EXCL``), so neither appends to the other's
files; and a store holds an exclusive ``flock`` on its active segment for
as long as it has it open, which `repair_tail` respects: the new process
never cuts the old one's active segment, whose last line may be a write in
progress.  The kernel drops the lock when its process dies, so a crashed
writer's segment is repaired at the next start as before.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Collection
from typing import NamedTuple

PREFIX = "segment-"
SUFFIX = ".ndjson"
GZIP_SUFFIX = SUFFIX + ".gz"
WORKER_MARK = "-w"
"""Between the start time and the suffix in the names of a worker's segments: ``-w<K>``."""


class SegmentName(NamedTuple):
    """What a segment file name says."""

    start_ns: int
    compressed: bool
    """True for ``.ndjson.gz``: a closed segment an operator gzipped; only readers open it."""
    worker: int | None = None
    """The worker (``--workers`` > 1) that wrote it, 1 or more; None for the single process."""


def segment_name(start_ns: int, worker: int | None = None) -> str:
    """``segment-<start_ns, 19 digits>.ndjson``, or ``segment-<start_ns>-w<worker>.ndjson`` for a worker."""
    mark = "" if worker is None else f"{WORKER_MARK}{worker}"
    return f"{PREFIX}{start_ns:019d}{mark}{SUFFIX}"


def parse_segment_name(name: str) -> SegmentName | None:
    """Read a segment file name, plain or gzipped; None for a file that is not a segment.

    Only names `segment_name` makes count (exactly 19 ASCII digits, then a
    worker id written as `segment_name` writes it, 1 or more without leading
    zeros, or none), with ``.gz`` optionally appended: any other file would
    sort wrongly and could be taken for the newest segment and cut by
    `repair_tail`.  The one parser of names: a new part of the name is added
    here.
    """
    if name.endswith(GZIP_SUFFIX):
        stem, compressed = name[: -len(GZIP_SUFFIX)], True
    elif name.endswith(SUFFIX):
        stem, compressed = name[: -len(SUFFIX)], False
    else:
        return None
    if not stem.startswith(PREFIX):
        return None
    digits, mark = stem[len(PREFIX) : len(PREFIX) + 19], stem[len(PREFIX) + 19 :]
    if len(digits) != 19 or not _is_digits(digits):
        return None
    worker = None
    if mark:
        number = mark[len(WORKER_MARK) :]
        if not (mark.startswith(WORKER_MARK) and _is_digits(number)) or number[0] == "0":
            return None
        worker = int(number)
    return SegmentName(int(digits), compressed, worker)


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def segment_start(name: str, worker: int | None = None) -> int | None:
    """The start time of a plain segment of `worker`, or None for a file that writer must not touch.

    A gzipped segment gives None: the writer neither repairs nor appends to
    it; so does a segment of another writer (`worker` None is the single
    process, whose names carry no worker id).
    """
    parsed = parse_segment_name(name)
    if parsed is None or parsed.compressed or parsed.worker != worker:
        return None
    return parsed.start_ns


def list_segments(directory: str, worker: int | None = None) -> list[str]:
    """The plain segment file names of `worker` in `directory`, oldest first: that writer's view."""
    return sorted(name for name in os.listdir(directory) if segment_start(name, worker) is not None)


def list_readable_segments(directory: str) -> list[str]:
    """Segment file names in `directory`, plain and gzipped, oldest first: a reader's view.

    Every writer's segments (the single process's and each worker's),
    ordered by the start time in the name, then by worker.  When a segment
    is there both plain and gzipped, only the plain file is listed: ``gzip``
    removes the original only once the ``.gz`` is complete, so the pair
    means the ``.gz`` is still being written.  Raises `OSError` when
    `directory` cannot be listed.
    """
    found: dict[str, tuple[int, int, str]] = {}
    for name in os.listdir(directory):
        parsed = parse_segment_name(name)
        if parsed is None:
            continue
        plain = name[: -len(".gz")] if parsed.compressed else name
        if not parsed.compressed or plain not in found:
            found[plain] = (parsed.start_ns, parsed.worker or 0, name)
    ordered = sorted(found.items(), key=lambda item: (item[1][0], item[1][1], item[0]))
    return [name for _plain, (_start, _worker, name) in ordered]


class DiskUsage(NamedTuple):
    """The data directory's segments and the room left on its file system, at one moment."""

    segment_bytes: int
    """Bytes of every segment file (plain and gzipped, every writer's)."""
    segments: int
    free_bytes: int
    """Bytes an unprivileged writer may still use on the file system (``f_bavail``)."""
    total_bytes: int
    oldest_ns: int | None
    """Start time of the oldest segment (from its name); None with no segment."""
    newest_ns: int | None
    """Start time of the newest segment."""


def disk_usage(directory: str, statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> DiskUsage:
    """Measure `directory`: one ``listdir``, one ``stat`` a segment, one ``statvfs``.  Blocking.

    Cost: O(segments); about a microsecond or two a segment.  A segment
    deleted between the listing and its ``stat`` is skipped.  Raises
    `OSError` when the directory cannot be listed or its file system read.
    """
    size = count = 0
    starts = []
    for name in os.listdir(directory):
        parsed = parse_segment_name(name)
        if parsed is None:
            continue
        try:
            size += os.stat(os.path.join(directory, name)).st_size
        except FileNotFoundError:
            continue
        count += 1
        starts.append(parsed.start_ns)
    fs = statvfs(directory)
    return DiskUsage(
        size,
        count,
        fs.f_bavail * fs.f_frsize,
        fs.f_blocks * fs.f_frsize,
        min(starts, default=None),
        max(starts, default=None),
    )


def repair_tails(directory: str, skip: Collection[int | None]) -> list[tuple[str, int]]:
    """Cut a torn last line off the newest plain segment of every writer not in `skip`.

    `skip` holds the writers that repair their own segments as they open
    (None is the single process, K worker K); the others are no longer
    running, say after a crash and a change of ``--workers``.  Returns
    ``(path, bytes cut)`` for each cut.  Call it only while no writer
    outside `skip` runs.  Raises `OSError` from listing or cutting.
    """
    newest: dict[int | None, str] = {}
    for name in os.listdir(directory):
        parsed = parse_segment_name(name)
        if parsed is not None and not parsed.compressed and parsed.worker not in skip:
            newest[parsed.worker] = max(newest.get(parsed.worker, name), name)
    cuts = []
    for name in newest.values():
        path = os.path.join(directory, name)
        cut = repair_tail(path)
        if cut:
            cuts.append((path, cut))
    return cuts


def repair_tail(path: str) -> int:
    """Cut a torn last line off `path`; returns the number of bytes cut (0 if none).

    A segment another running store holds (its active one, locked) is left
    alone: its last line may be a write in progress, not a torn one.
    """
    with open(path, "r+b") as segment:
        try:
            fcntl.flock(segment.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        size = segment.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        segment.seek(size - 1)
        if segment.read(1) == b"\n":
            return 0
        end = size
        block = 65536
        keep = 0
        while end > 0:
            start = max(0, end - block)
            segment.seek(start)
            chunk = segment.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        segment.truncate(keep)
        segment.flush()
        os.fsync(segment.fileno())
        return size - keep


class SegmentStore:
    """The data directory's segments; owns the active one."""

    def __init__(
        self,
        directory: str,
        segment_bytes: int,
        clock_ns: Callable[[], int] = time.time_ns,
        write: Callable[[int, memoryview], int] = os.write,
        worker: int | None = None,
        segment_age: float = 0.0,
    ) -> None:
        """`clock_ns` names new segments and ages them; `write` is ``os.write`` or a test's stand-in.

        `segment_age`, in seconds (0: none), closes the active segment once
        that old, however small.

        `worker` is the id of the worker process this store writes for (its
        names carry it, and it sees only its own segments), or None for the
        single process.
        """
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.segment_age_ns = int(segment_age * 1e9)
        self.worker = worker
        self._clock_ns = clock_ns
        self._write = write
        self._fd: int | None = None
        self._size = 0
        self._last_start = -1
        self.active_path: str | None = None
        self.rotation_error: OSError | None = None
        """The failed fsync of the last rotation, for the caller to report; it clears it."""
        self.last_batch: tuple[str, int] = ("", 0)
        """The segment file name the last good `write` went to and the offset where its batch began."""
        self.last_closed: tuple[str, int] | None = None
        """The segment the last rotation closed and its size in bytes, for the caller's log line."""

    def open(self) -> tuple[str, int] | None:
        """Create the directory and repair this writer's newest segment.

        Returns ``(path, bytes cut)`` when a torn tail was cut off.
        """
        os.makedirs(self.directory, exist_ok=True)
        readable = list_readable_segments(self.directory)
        if readable:
            # New segments sort after every segment, gzipped ones and other writers' included.
            named = parse_segment_name(readable[-1])
            self._last_start = named.start_ns if named else 0
        segments = list_segments(self.directory, self.worker)
        if not segments:
            return None
        path = os.path.join(self.directory, segments[-1])
        cut = repair_tail(path)
        return (path, cut) if cut else None

    def write(self, data: bytes, sync: bool = False) -> bool:
        """Append one batch; returns True when this write closed the segment (rotation).

        With `sync`, the batch is fsynced before this returns (durable acks).
        Raises `OSError` when the batch is not (wholly, with `sync`: durably)
        in the file; the file is then cut back to where the batch began, so a
        retry stores it exactly once.  A failed fsync at rotation does not
        raise: it is left in `rotation_error`.
        """
        if self._fd is None:
            self._open_segment()
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += self._write(fd, view[written:])
            if sync:
                os.fsync(fd)
        except OSError:
            self._undo(self._size)
            raise
        assert self.active_path is not None
        self.last_batch = (os.path.basename(self.active_path), self._size)
        self._size += written
        if self._size >= self.segment_bytes or self.expired():
            # The batch is in the file: a failed fsync here must not make the
            # caller write it again.  The segment is closed either way.
            self._rotate()
            return True
        return False

    def expired(self) -> bool:
        """Whether the active segment is `segment_age` old (by `clock_ns` and the start in its name).

        False with no active segment or no age limit.  Reads what only the
        storage thread changes: ask it while no write runs.
        """
        return (
            self.segment_age_ns > 0
            and self._fd is not None
            and self._clock_ns() - self._last_start >= self.segment_age_ns
        )

    def close_expired(self) -> bool:
        """Close the active segment if it is `segment_age` old; True when it did (see `last_closed`).

        As a rotation by size: a failed fsync does not raise, it is left in
        `rotation_error`.
        """
        if not self.expired():
            return False
        self._rotate()
        return True

    def _rotate(self) -> None:
        """Close the active segment as a rotation: remembered in `last_closed`, and a failed fsync
        left in `rotation_error` rather than raised."""
        assert self.active_path is not None
        self.last_closed = (self.active_path, self._size)
        try:
            self.close()
        except OSError as error:
            self.rotation_error = error

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Fsync and close the active segment; it never changes again."""
        fd, self._fd = self._fd, None
        self.active_path = None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _open_segment(self) -> None:
        start = max(self._clock_ns(), self._last_start + 1)
        path = os.path.join(self.directory, segment_name(start, self.worker))
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            # Held until the segment is closed: another process's `repair_tail` then leaves it alone.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._size = 0
        self._last_start = start
        self.active_path = path
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _undo(self, size: int) -> None:
        """Cut the active segment back to `size` after a failed write, or abandon it."""
        fd = self._fd
        assert fd is not None
        try:
            os.ftruncate(fd, size)
        except OSError:
            self._fd = None
            self.active_path = None
            try:
                os.close(fd)
            except OSError:
                pass
