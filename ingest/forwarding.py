"""Pure rules of forwarding segments to NATS JetStream: the message cut, the ids, the cursor.

The local segments are the write-ahead log; `ingest.sink` publishes them.
This module decides, without touching a socket, a clock or a thread:

The cut.  A *range* is a run of whole lines of one segment: a flushed batch
(``[offset where the batch began, its end)``), or after a restart the rest
of a segment past the cursor.  A range is cut into messages from its start:
each message is the longest run of whole lines that fits in `limit` bytes
and does not pass the range's end or a *stop* (the start of a message
JetStream is known to hold already).  A single line longer than `limit` is
a message on its own (the server will refuse it; a sample line is far
shorter than any payload limit).  So a message is a pure function of the
segment's bytes, the range and the limit: a replay of the same range cuts
the same messages, with the same ids, whether the bytes come from memory or
are read back from the file.

Why ranges and stops, not the file content alone: a batch is published as
soon as it is on disk, so its last message ends at the batch's end, which
the file does not record.  During a run the sink keeps every range it has
not had acknowledged (a few numbers per batch); after a restart it does not
know them, so it asks the stream which messages of its subject follow the
cursor (`ingest.sink` reconciles) and takes their boundaries as stops: what
JetStream holds is skipped exactly, and only what it lacks is cut anew.
JetStream's duplicate window is the second guard, not the only one.

Ids: ``Nats-Msg-Id: <node>:<segment file name>:<byte offset>``.  Segment
names sort in time order and a restarted process never appends to an old
segment, so an id never names two different payloads.

The cursor: ``sink-<node>.cursor`` in the data directory, a one-line JSON
object ``{"segment", "offset", "stream_seq"}``: everything of this node
before ``(segment, offset)`` is in the stream, the last of it at
``stream_seq``.  Written whole to a temporary file, fsynced and renamed, so a
crash leaves the old cursor or the new one; a stale cursor only means a
longer reconciliation.
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

ID_HEADER = "Nats-Msg-Id"
HEADER_ROOM = 512
"""Bytes of a message's limit kept for its headers: the server counts them in its max payload."""

NODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A node name is one subject token: no dots, wildcards or spaces."""


class Position(NamedTuple):
    """A place in this node's log: segment file name, byte offset.  Tuples order them in time."""

    segment: str
    offset: int


class Message(NamedTuple):
    segment: str
    offset: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.payload)

    def msg_id(self, node: str) -> str:
        return msg_id(node, self.segment, self.offset)


class Cursor(NamedTuple):
    segment: str
    offset: int
    stream_seq: int

    @property
    def position(self) -> Position:
        return Position(self.segment, self.offset)


def msg_id(node: str, segment: str, offset: int) -> str:
    return f"{node}:{segment}:{offset}"


def parse_msg_id(text: str) -> tuple[str, str, int] | None:
    """``(node, segment, offset)`` of an id `msg_id` made; None for any other text."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


def message_limit(max_payload: int) -> int:
    """The bytes of lines one message may carry under the server's `max_payload`."""
    return max(1, max_payload - HEADER_ROOM)


def message_length(window: bytes, limit: int, at_end: bool) -> int:
    """The length of the message that starts at ``window[0]``.

    `window` holds the bytes from the message's start to its range's end or
    stop, or at least ``limit + 1`` of them (`at_end` says which).  Returns
    the longest run of whole lines within `limit`; a first line longer than
    `limit` alone (its whole length when it is in `window`, else 0: read
    further).  Raises `ValueError` for an empty window.
    """
    if not window:
        raise ValueError("a message needs at least one byte")
    if at_end and len(window) <= limit:
        return len(window)
    last = window.rfind(b"\n", 0, limit)
    if last >= 0:
        return last + 1
    first = window.find(b"\n")
    if first >= 0:
        return first + 1
    return len(window) if at_end else 0


def cut(segment: str, offset: int, data: bytes, limit: int, stops: tuple[int, ...] = ()) -> list[Message]:
    """The messages of the range ``[offset, offset + len(data))`` of `segment` (whole lines).

    `stops` are offsets inside the range where a message must end (starts of
    messages the stream already holds).  The reference form of the cut: the
    sink cuts message by message with `message_length`, to the same result.
    """
    messages = []
    start = 0
    bounds = sorted(stop - offset for stop in stops if offset < stop < offset + len(data))
    bounds.append(len(data))
    for bound in bounds:
        while start < bound:
            length = message_length(data[start:bound], limit, at_end=True)
            messages.append(Message(segment, offset + start, data[start : start + length]))
            start += length
    return messages


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether the NATS subject `pattern` (``*`` one token, ``>`` the rest) matches `subject`."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(wanted) == len(tokens)


def cursor_path(directory: str, node: str) -> str:
    return os.path.join(directory, f"sink-{node}.cursor")


def encode_cursor(cursor: Cursor) -> bytes:
    return json.dumps(cursor._asdict(), separators=(",", ":")).encode() + b"\n"


def decode_cursor(text: bytes) -> Cursor | None:
    """The cursor `encode_cursor` wrote; None for anything else (then the sink starts from the oldest)."""
    try:
        fields = json.loads(text)
        cursor = Cursor(str(fields["segment"]), int(fields["offset"]), int(fields["stream_seq"]))
    except (ValueError, TypeError, KeyError):
        return None
    return cursor if cursor.offset >= 0 and cursor.stream_seq >= 0 else None


def read_cursor(path: str) -> Cursor | None:
    """The cursor at `path`; None when there is none.  Blocking."""
    try:
        with open(path, "rb") as cursor_file:
            return decode_cursor(cursor_file.read())
    except FileNotFoundError:
        return None


def write_cursor(path: str, cursor: Cursor) -> None:
    """Replace the cursor at `path` atomically (temporary file, fsync, rename).  Raises `OSError`."""
    temporary = path + ".tmp"
    with open(temporary, "wb") as cursor_file:
        cursor_file.write(encode_cursor(cursor))
        cursor_file.flush()
        os.fsync(cursor_file.fileno())
    os.replace(temporary, path)
