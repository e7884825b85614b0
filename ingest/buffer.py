"""The bounded in-memory buffer between the API and the flusher.  Pure.

It holds accepted samples already in storage form, as chunks (one per
request), and counts them in samples.  The flusher `take`s everything
pending as one batch; the batch stays counted (and so keeps its room
reserved) until the flusher `commit`s it after a good write or `restore`s
it to the front after a failed one, so a failing disk never loses data and
memory stays bounded by `capacity` whatever the disk does.

Invariant: ``depth == pending samples + in-flight samples <= capacity``.
"""

from __future__ import annotations

from typing import NamedTuple


class Batch(NamedTuple):
    data: bytes
    samples: int


class Buffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: list[bytes] = []
        self._pending = 0
        self._in_flight: Batch | None = None
        self.high_mark = 0
        """The most samples held at once since start."""

    @property
    def depth(self) -> int:
        """Samples held: pending plus the batch being written."""
        in_flight = self._in_flight.samples if self._in_flight else 0
        return self._pending + in_flight

    @property
    def full(self) -> bool:
        return self.depth >= self.capacity

    def add(self, data: bytes, count: int) -> bool:
        """Append `count` samples encoded as `data`; False, and nothing added, if they do not fit."""
        if self.depth + count > self.capacity:
            return False
        self._chunks.append(data)
        self._pending += count
        depth = self.depth
        if depth > self.high_mark:
            self.high_mark = depth
        return True

    def take(self) -> Batch | None:
        """Everything pending as one batch, now in flight; None if nothing pends or a batch is in flight."""
        if self._in_flight is not None or not self._chunks:
            return None
        batch = Batch(b"".join(self._chunks), self._pending)
        self._chunks = []
        self._pending = 0
        self._in_flight = batch
        return batch

    def commit(self) -> None:
        """The batch in flight is on disk: forget it."""
        self._in_flight = None

    def restore(self) -> None:
        """The batch in flight failed to write: it goes back in front of what is pending."""
        batch = self._in_flight
        if batch is not None:
            self._in_flight = None
            self._chunks.insert(0, batch.data)
            self._pending += batch.samples
