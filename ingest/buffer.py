"""The bounded in-memory buffer between the API and the flusher.  Pure.

It holds accepted samples already in storage form, as chunks (one per
request), and counts them in samples.  The flusher `take`s everything
pending as one batch; the batch stays counted (and so keeps its room
reserved) until the flusher `commit`s it after a good write or `restore`s
it to the front after a failed one, so a failing disk never loses data and
memory stays bounded by `capacity` whatever the disk does.

Each chunk gets a sequence number (1, 2, ...) from `add`; a batch carries
the number of its last chunk, so the flusher can tell durable-mode requests
when the batch holding their samples is on disk.

Pressure, with hysteresis as carbon does it: once the depth reaches the
high mark (`high` of capacity) the buffer is *saturated* until it falls to
the low mark (`low` of capacity); each change is reported to
`on_pressure(saturated)`, which pauses and resumes reading from clients.

Invariant: ``depth == pending samples + in-flight samples <= capacity``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Batch(NamedTuple):
    data: bytes
    samples: int
    last_seq: int


class Buffer:
    def __init__(
        self,
        capacity: int,
        high: float = 0.8,
        low: float = 0.5,
        on_pressure: Callable[[bool], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.high_water = max(1, int(capacity * high))
        self.low_water = int(capacity * low)
        self.on_pressure = on_pressure
        self.saturated = False
        self._chunks: list[bytes] = []
        self._pending = 0
        self._in_flight: Batch | None = None
        self._seq = 0
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

    def fits(self, count: int) -> bool:
        """Whether `count` more samples fit now (what `add` checks)."""
        return self.depth + count <= self.capacity

    def add(self, data: bytes, count: int) -> int | None:
        """Append `count` samples encoded as `data`.

        Returns the chunk's sequence number, or None (nothing added) if the
        samples do not fit.
        """
        depth = self.depth + count
        if depth > self.capacity:
            return None
        self._chunks.append(data)
        self._pending += count
        self._seq += 1
        if depth > self.high_mark:
            self.high_mark = depth
        if not self.saturated and depth >= self.high_water:
            self._set_saturated(True)
        return self._seq

    def take(self) -> Batch | None:
        """Everything pending as one batch, now in flight; None if nothing pends or a batch is in flight."""
        if self._in_flight is not None or not self._chunks:
            return None
        batch = Batch(b"".join(self._chunks), self._pending, self._seq)
        self._chunks = []
        self._pending = 0
        self._in_flight = batch
        return batch

    def commit(self) -> None:
        """The batch in flight is on disk: forget it."""
        self._in_flight = None
        if self.saturated and self.depth <= self.low_water:
            self._set_saturated(False)

    def restore(self) -> None:
        """The batch in flight failed to write: it goes back in front of what is pending."""
        batch = self._in_flight
        if batch is not None:
            self._in_flight = None
            self._chunks.insert(0, batch.data)
            self._pending += batch.samples

    def _set_saturated(self, saturated: bool) -> None:
        self.saturated = saturated
        if self.on_pressure is not None:
            self.on_pressure(saturated)
