"""Tests for `tests.http_answers`, the tests' one reader of HTTP answers: fed whole and byte by byte."""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.http_answers import (
    Answer,
    AnswerReader,
    AnswerStream,
    IncompleteAnswer,
    MalformedAnswer,
    parse_answers,
)

ACCEPTED = (
    b'HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"accepted":1}'
)
PONG = b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLOSING = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
# Pieces of answers, so that random streams reach deep states.
NEAR_ANSWERS = st.lists(
    st.sampled_from(
        [b"HTTP/1.1 ", b"HTTP/1.0 ", b"100", b"200", b"204", b"304", b" OK", b"\r\n", b"\r\n\r\n",
         b"Content-Length: ", b"0", b"5", b"x", b"Connection: ", b"close", b"keep-alive",
         b"Transfer-Encoding: chunked", b":", b" ", b"\t", b"\xff"]
    ),
    max_size=30,
).map(b"".join)  # fmt: skip


def byte_by_byte(data: bytes, head_request: bool = False) -> list[Answer]:
    """What `AnswerReader` makes of `data` fed one byte at a time, then closed."""
    reader = AnswerReader()
    answers = []
    for index in range(len(data)):
        reader.feed(data[index : index + 1])
        while (answer := reader.next_answer(head_request)) is not None:
            answers.append(answer)
    reader.close()
    while (answer := reader.next_answer(head_request)) is not None:
        answers.append(answer)
    return answers


class ParseTests(SynchronousTestCase):
    def assert_both_ways(self, data: bytes, head_request: bool = False) -> list[Answer]:
        """`data` read whole and byte by byte gives the same answers, which are returned."""
        whole = parse_answers(data, head_request)
        self.assertEqual(byte_by_byte(data, head_request), whole)
        return whole

    def test_pipelined_answers(self) -> None:
        """Several answers in one stream come out in order, each with its status, fields and body."""
        answers = self.assert_both_ways(ACCEPTED + PONG + ACCEPTED)
        self.assertEqual([a.status for a in answers], [202, 204, 202])
        self.assertEqual(answers[0].reason, b"Accepted")
        self.assertEqual(answers[0].headers[b"content-type"], b"application/json")
        self.assertEqual(answers[0].lines, (b"Content-Type: application/json", b"Content-Length: 14"))
        self.assertEqual(answers[0].json(), {"accepted": 1})
        self.assertEqual((answers[1].body, answers[1].headers), (b"", {b"date": b"x"}))

    def test_raw_is_what_was_read(self) -> None:
        """An answer's `raw` is its bytes as sent, so a stream is the join of its answers."""
        data = CONTINUE + ACCEPTED + PONG + CLOSING
        self.assertEqual(b"".join(a.raw for a in parse_answers(data)), data)

    def test_no_body_without_content_length_when_none_is_allowed(self) -> None:
        """1xx, 204 and 304 answers have no body, even with a Content-Length."""
        data = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" + PONG
        self.assertEqual([a.status for a in self.assert_both_ways(data)], [304, 204])

    def test_head_answers_have_no_body(self) -> None:
        """An answer to HEAD keeps its Content-Length and sends no body; flags may differ per answer."""
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        [answer] = self.assert_both_ways(head, head_request=True)
        self.assertEqual((answer.body, answer.headers[b"content-length"]), (b"", b"5"))
        answers = parse_answers(head + head + b"12345" + head, [True, False, True])
        self.assertEqual([a.body for a in answers], [b"", b"12345", b""])
        self.assertRaises(IncompleteAnswer, parse_answers, head)

    def test_interim_answers(self) -> None:
        """A 100 Continue comes out as an interim answer before the final one."""
        answers = self.assert_both_ways(CONTINUE + ACCEPTED + CONTINUE)
        self.assertEqual([(a.status, a.interim) for a in answers], [(100, True), (202, False), (100, True)])
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"
        answers = parse_answers(CONTINUE + head + head + b"x", [True, False])  # an interim takes no flag
        self.assertEqual([(a.status, a.body) for a in answers], [(100, b""), (200, b""), (200, b"x")])

    def test_connection_close_is_the_last_answer(self) -> None:
        """``Connection: close`` (or HTTP/1.0 without keep-alive) ends the stream: more bytes are an error."""
        [answer] = self.assert_both_ways(CLOSING)
        self.assertTrue(answer.closes)
        self.assertRaises(MalformedAnswer, parse_answers, CLOSING + PONG)
        http10 = b"HTTP/1.0 204 No Content\r\n\r\n"
        self.assertTrue(parse_answers(http10)[0].closes)
        self.assertRaises(MalformedAnswer, parse_answers, http10 + PONG)
        kept = b"HTTP/1.0 204 No Content\r\nConnection: Keep-Alive\r\n\r\n"
        self.assertEqual(len(parse_answers(kept + PONG)), 2)
        self.assertFalse(parse_answers(ACCEPTED)[0].closes)

    def test_body_to_the_close(self) -> None:
        """Without Content-Length a body runs to the end of the stream; it is complete only then."""
        data = b"HTTP/1.1 200 OK\r\n\r\nall of it"
        [answer] = self.assert_both_ways(data)
        self.assertEqual(answer.body, b"all of it")
        reader = AnswerReader()
        reader.feed(data)
        self.assertIsNone(reader.next_answer())
        reader.close()
        self.assertEqual(reader.next_answer(), answer)

    def test_incomplete_stream(self) -> None:
        """An answer not yet whole is None (not complete yet); once the stream ends it is an error."""
        for cut in (5, len(ACCEPTED) - 20, len(ACCEPTED) - 1):
            reader = AnswerReader()
            reader.feed(ACCEPTED[:cut])
            self.assertIsNone(reader.next_answer())
            self.assertEqual(reader.rest, ACCEPTED[:cut])
            reader.close()
            self.assertRaises(IncompleteAnswer, reader.next_answer)
            self.assertRaises(IncompleteAnswer, parse_answers, ACCEPTED[:cut])
        reader = AnswerReader()
        reader.feed(ACCEPTED[:30])
        self.assertIsNone(reader.next_answer())
        reader.feed(ACCEPTED[30:] + PONG[:4])
        self.assertEqual(reader.next_answer(), parse_answers(ACCEPTED)[0])
        self.assertIsNone(reader.next_answer())

    def test_refused(self) -> None:
        """What the service must not send raises `MalformedAnswer`."""
        for data in (
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200\r\n\r\n",
            b"http/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nName : value\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
            b"\r\n\r\n",
        ):
            self.assertRaises(MalformedAnswer, parse_answers, data)
        reader = AnswerReader()
        reader.feed(b"SSH-2.0 hello\r\n")
        self.assertRaises(MalformedAnswer, reader.next_answer)

    def test_repeated_fields_are_joined(self) -> None:
        """A repeated field's values are joined with a comma, in order; the lines keep each one."""
        [answer] = parse_answers(b"HTTP/1.1 204 No Content\r\nVary: a\r\nvary:  b \r\n\r\n")
        self.assertEqual(answer.headers[b"vary"], b"a, b")
        self.assertEqual(answer.lines, (b"Vary: a", b"vary:  b "))

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.binary(max_size=200), NEAR_ANSWERS), st.booleans())
    def test_any_bytes_parse_or_raise(self, data: bytes, head_request: bool) -> None:
        """Any bytes either parse into answers or raise `MalformedAnswer`, nothing else; those that parse
        are given back by the answers' `raw`."""
        try:
            answers = parse_answers(data, head_request)
        except MalformedAnswer:
            return
        self.assertEqual(b"".join(answer.raw for answer in answers), data)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.sampled_from([ACCEPTED, PONG, CONTINUE, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n"
                                  b"Connection: keep-alive\r\n\r\n"]), max_size=6),
        st.binary(max_size=8),
    )  # fmt: skip
    def test_whole_and_byte_by_byte_agree(self, parts: list[bytes], tail: bytes) -> None:
        """Fed whole or byte by byte, a stream gives the same answers or the same kind of error."""
        data = b"".join(parts) + tail
        try:
            whole = parse_answers(data)
        except MalformedAnswer as error:
            self.assertRaises(type(error), byte_by_byte, data)
        else:
            self.assertEqual(byte_by_byte(data), whole)


class StreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server, self.client = socket.socketpair()
        self.client.settimeout(5)
        self.stream = AnswerStream(self.client)
        self.addCleanup(self.server.close)
        self.addCleanup(self.client.close)

    def test_reads_until_the_finals_arrived(self) -> None:
        """`receive(n)` returns once n final answers arrived, interim ones included, and reads no further."""
        self.server.sendall(CONTINUE + ACCEPTED + PONG[:10])
        self.assertEqual([a.status for a in self.stream.receive(1)], [100, 202])
        self.server.sendall(PONG[10:] + PONG)
        self.assertEqual([a.status for a in self.stream.receive(2)], [204, 204])
        self.assertEqual(len(self.stream.answers), 4)

    def test_reads_until_the_close(self) -> None:
        """`receive_all` reads every answer until the server closes."""
        self.server.sendall(ACCEPTED + CLOSING)
        self.server.close()
        self.assertEqual([a.status for a in self.stream.receive_all()], [202, 400])

    def test_close_mid_answer(self) -> None:
        """The server closing in the middle of an answer raises `IncompleteAnswer`."""
        self.server.sendall(ACCEPTED[:-1])
        self.server.close()
        self.assertRaises(IncompleteAnswer, self.stream.next_answer)

    def test_timeout_keeps_what_arrived(self) -> None:
        """A read past the socket's timeout raises `TimeoutError`; the answers before it are kept."""
        self.client.settimeout(0.01)  # nothing more is ever sent: any timeout expires
        self.server.sendall(ACCEPTED)
        self.assertRaises(TimeoutError, self.stream.receive_all)
        self.assertEqual([a.status for a in self.stream.answers], [202])
