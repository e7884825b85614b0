"""`ingest.forwarding`: the message cut, ids, subjects and the cursor file (pure, property-tested)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ingest.forwarding import (
    HEADER_ROOM,
    Cursor,
    cursor_path,
    cut,
    decode_cursor,
    encode_cursor,
    message_length,
    message_limit,
    msg_id,
    parse_msg_id,
    read_cursor,
    subject_covers,
    write_cursor,
)

SEGMENT = "segment-0000000000000000001.ndjson"

line_bodies = st.binary(min_size=0, max_size=40).map(lambda body: body.replace(b"\n", b"x"))
ranges = st.lists(line_bodies, min_size=1, max_size=40).map(
    lambda bodies: b"".join(b + b"\n" for b in bodies)
)

limits = st.integers(1, 200)


def by_windows(offset: int, data: bytes, limit: int, stops: tuple[int, ...] = ()) -> list[tuple[int, bytes]]:
    """The cut as the sink makes it: one message at a time from a window of at most ``limit + 1`` bytes."""
    messages = []
    start = offset
    end = offset + len(data)
    while start < end:
        bound = min([stop for stop in stops if start < stop < end] + [end])
        window = data[start - offset : min(bound, start + limit + 1) - offset]
        length = message_length(window, limit, at_end=start + len(window) == bound)
        if length == 0:
            window = data[start - offset : bound - offset]
            length = message_length(window, limit, at_end=True)
        messages.append((start, window[:length]))
        start += length
    return messages


class CutTests(SynchronousTestCase):
    @given(ranges, limits, st.integers(0, 10_000))
    def test_messages_are_whole_lines_in_order_within_the_limit(
        self, data: bytes, limit: int, offset: int
    ) -> None:
        """The messages cover the range in order, end at line ends, and exceed the limit only as one line."""
        messages = cut(SEGMENT, offset, data, limit)
        self.assertEqual(b"".join(message.payload for message in messages), data)
        position = offset
        for message in messages:
            self.assertEqual(message.offset, position)
            self.assertTrue(message.payload.endswith(b"\n"))
            if len(message.payload) > limit:
                self.assertEqual(message.payload.count(b"\n"), 1)
            position = message.end

    @given(ranges, limits)
    def test_each_message_is_as_long_as_it_may_be(self, data: bytes, limit: int) -> None:
        """A message stops where its next line would pass the limit, or at the range's end."""
        messages = cut(SEGMENT, 0, data, limit)
        for message in messages[:-1]:
            rest = data[message.end :]
            next_line = rest[: rest.index(b"\n") + 1]
            self.assertGreater(len(message.payload) + len(next_line), limit)

    @given(ranges, limits, st.data())
    def test_stops_are_boundaries(self, data: bytes, limit: int, draw: st.DataObject) -> None:
        """A stop (the start of a message the stream holds) is always a message boundary."""
        ends = [index + 1 for index, byte in enumerate(data) if byte == 10]
        stops = tuple(draw.draw(st.lists(st.sampled_from(ends), max_size=4)))
        starts = {message.offset for message in cut(SEGMENT, 0, data, limit, stops)}
        self.assertLessEqual({stop for stop in stops if stop < len(data)}, starts)

    @given(ranges, limits, st.integers(0, 10_000), st.data())
    def test_the_sinks_windows_cut_the_same(
        self, data: bytes, limit: int, offset: int, draw: st.DataObject
    ) -> None:
        """Cutting message by message from bounded windows (from memory or a file) gives `cut`'s messages."""
        ends = [offset + index + 1 for index, byte in enumerate(data) if byte == 10]
        stops = tuple(draw.draw(st.lists(st.sampled_from(ends), max_size=3)))
        reference = [
            (message.offset, message.payload) for message in cut(SEGMENT, offset, data, limit, stops)
        ]
        self.assertEqual(by_windows(offset, data, limit, stops), reference)

    @given(ranges, limits, st.data())
    def test_a_replay_from_any_boundary_cuts_the_same_rest(
        self, data: bytes, limit: int, draw: st.DataObject
    ) -> None:
        """Replaying the range from one of its message boundaries gives the same messages from there on."""
        messages = cut(SEGMENT, 0, data, limit)
        index = draw.draw(st.integers(0, len(messages) - 1))
        start = messages[index].offset
        self.assertEqual(cut(SEGMENT, start, data[start:], limit), messages[index:])

    def test_limit_keeps_room_for_headers(self) -> None:
        """The lines of a message leave `HEADER_ROOM` bytes of the server's max payload to its headers."""
        self.assertEqual(message_limit(1_048_576), 1_048_576 - HEADER_ROOM)
        self.assertEqual(message_limit(10), 1)

    def test_an_empty_window_is_an_error(self) -> None:
        with self.assertRaises(ValueError):
            message_length(b"", 10, at_end=True)


class IdTests(SynchronousTestCase):
    @given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), st.integers(0, 2**63))
    def test_ids_read_back(self, node: str, offset: int) -> None:
        """``node:segment:offset`` reads back as what made it."""
        self.assertEqual(parse_msg_id(msg_id(node, SEGMENT, offset)), (node, SEGMENT, offset))

    def test_other_ids_are_none(self) -> None:
        for text in ("", "a:b", "a:b:c", "a:b:-1", "a:b:1:2"):
            self.assertIsNone(parse_msg_id(text), text)

    def test_cut_ids(self) -> None:
        """A message's id names the node, its segment and its first byte's offset."""
        first, second = cut(SEGMENT, 100, b"aaaa\nbb\n", 5)
        self.assertEqual(first.msg_id("n1"), f"n1:{SEGMENT}:100")
        self.assertEqual(second.msg_id("n1"), f"n1:{SEGMENT}:105")


class SubjectTests(SynchronousTestCase):
    def test_covers(self) -> None:
        """NATS wildcards: ``*`` is one token, ``>`` one or more."""
        self.assertTrue(subject_covers("ingest.>", "ingest.n1"))
        self.assertTrue(subject_covers("ingest.*", "ingest.n1"))
        self.assertTrue(subject_covers("ingest.n1", "ingest.n1"))
        self.assertTrue(subject_covers(">", "ingest.n1"))
        self.assertFalse(subject_covers("ingest.>", "ingest"))
        self.assertFalse(subject_covers("other.>", "ingest.n1"))
        self.assertFalse(subject_covers("ingest.n2", "ingest.n1"))
        self.assertFalse(subject_covers("ingest.*.x", "ingest.n1"))
        self.assertFalse(subject_covers("ingest", "ingest.n1"))


class CursorTests(SynchronousTestCase):
    @given(st.text(min_size=1, max_size=60), st.integers(0, 2**63), st.integers(0, 2**63))
    def test_round_trip(self, segment: str, offset: int, seq: int) -> None:
        cursor = Cursor(segment, offset, seq)
        self.assertEqual(decode_cursor(encode_cursor(cursor)), cursor)

    def test_garbage_is_no_cursor(self) -> None:
        """A cursor file that cannot be read is no cursor (the sink then reconciles from the stream)."""
        for text in (b"", b"{", b"[]", b'{"segment": "s"}', b'{"segment":"s","offset":-1,"stream_seq":0}'):
            self.assertIsNone(decode_cursor(text), text)

    def test_written_atomically(self) -> None:
        """`write_cursor` replaces the file whole and leaves no temporary file."""
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.remove(os.path.join(directory, n)) for n in os.listdir(directory)])
        path = cursor_path(directory, "n1")
        self.assertIsNone(read_cursor(path))
        write_cursor(path, Cursor(SEGMENT, 10, 1))
        write_cursor(path, Cursor(SEGMENT, 20, 2))
        self.assertEqual(read_cursor(path), Cursor(SEGMENT, 20, 2))
        self.assertEqual(os.listdir(directory), ["sink-n1.cursor"])
