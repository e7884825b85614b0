"""The tests' one reader of HTTP/1.x answers (responses): bytes in, `Answer` records out.

Every test that looks at what the service sent reads it here, framed as a
client frames it (RFC 9112 section 6.3):

- an interim answer (1xx, such as ``100 Continue``), a 204, a 304 and any
  answer to a HEAD request have no body;
- otherwise ``Content-Length`` gives the body's length; without it the body
  runs to the end of the stream (the server's close);
- an answer that ends the connection (``Connection: close``, or HTTP/1.0
  without ``Connection: keep-alive``) is the last one: bytes after it are an
  error, as are bytes after the end of the stream.

``Transfer-Encoding`` in an answer is refused: the service sends whole
answers with ``Content-Length``, so a chunked one is a bug to see, not a
case to read.

`AnswerReader` is incremental, in h11's manner: `AnswerReader.feed` takes
bytes as they arrive, `AnswerReader.next_answer` returns the next answer or
None while it is not complete yet, and `AnswerReader.close` says the stream
ended.  `parse_answers` reads a whole stream at once (a `StringTransport`'s
value, what curl printed).  `AnswerStream` reads a blocking socket until a
number of answers, or the close, has arrived.  Bytes that are not answers
raise `MalformedAnswer`; a stream that ends in the middle of an answer
raises `IncompleteAnswer`.  Both are `AssertionError`: in a test they are
failures, not errors of the test.

Imports nothing of ``ingest``, so tests that run the service as a
subprocess read its answers with the same code.  Cost: an answer is
searched for and cut from the front of the buffer once it is complete; an
incomplete one is parsed again at each `AnswerReader.next_answer` call,
which is fine at test sizes.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([1-9][0-9]{2}) ([\t\x20-\x7e\x80-\xff]*)")
_FIELD_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*")
_DIGITS = re.compile(rb"[0-9]+")
_NO_BODY = frozenset((204, 304))


class MalformedAnswer(AssertionError):
    """The bytes are not HTTP/1.x answers as the service must send them."""


class IncompleteAnswer(MalformedAnswer):
    """The stream ended in the middle of an answer."""


@dataclass(frozen=True)
class Answer:
    """One answer as it was sent.

    `lines` are its header field lines, byte for byte and in order;
    `headers` maps each lower-cased field name to its value (the values of a
    repeated field joined with ``, ``).  `raw` gives the answer's bytes back.
    """

    version: bytes
    status: int
    reason: bytes
    lines: tuple[bytes, ...]
    body: bytes
    headers: dict[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers: dict[bytes, bytes] = {}
        for line in self.lines:
            match = _FIELD_LINE.fullmatch(line)
            if match is None:
                raise MalformedAnswer(f"not a header field line: {line!r}")
            name, value = match.group(1).lower(), match.group(2)
            headers[name] = headers[name] + b", " + value if name in headers else value
        object.__setattr__(self, "headers", headers)

    @property
    def status_line(self) -> bytes:
        return b"%s %d %s" % (self.version, self.status, self.reason)

    @property
    def raw(self) -> bytes:
        """The answer's bytes, exactly as they were read."""
        return b"".join(line + b"\r\n" for line in (self.status_line, *self.lines)) + b"\r\n" + self.body

    @property
    def interim(self) -> bool:
        """A 1xx answer: the final answer to the same request follows."""
        return self.status < 200

    @property
    def closes(self) -> bool:
        """Whether the server ends the connection after this answer."""
        if self.interim:
            return False
        tokens = {token.strip().lower() for token in self.headers.get(b"connection", b"").split(b",")}
        if self.version == b"HTTP/1.0":
            return b"keep-alive" not in tokens
        return b"close" in tokens

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:80]!r})"


def _head(head: bytes) -> tuple[bytes, int, bytes, tuple[bytes, ...]]:
    status_line, *lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise MalformedAnswer(f"not a status line: {status_line!r}")
    return match.group(1), int(match.group(2)), match.group(3), tuple(lines)


def _body_length(answer: Answer, head_request: bool) -> int | None:
    """The length of `answer`'s body, or None for a body that runs to the end of the stream."""
    if b"transfer-encoding" in answer.headers:
        raise MalformedAnswer(f"the service sends no Transfer-Encoding: {answer.status_line!r}")
    if answer.interim or answer.status in _NO_BODY or head_request:
        return 0
    length = answer.headers.get(b"content-length")
    if length is None:
        return None
    if _DIGITS.fullmatch(length) is None:
        raise MalformedAnswer(f"Content-Length {length!r} in {answer.status_line!r}")
    return int(length)


class AnswerReader:
    """Answers out of a stream of bytes fed in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._ended = False
        self._last_taken = False

    def feed(self, data: bytes) -> None:
        if self._ended and data:
            raise MalformedAnswer(f"bytes after the end of the stream: {data[:80]!r}")
        self._buffer += data

    def close(self) -> None:
        """The stream ended (the server closed): a body without length is complete, a partial answer not."""
        self._ended = True

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def rest(self) -> bytes:
        """What has been fed and not taken as an answer yet."""
        return bytes(self._buffer)

    def next_answer(self, head_request: bool = False) -> Answer | None:
        """The next answer, interim or final, or None if it is not complete yet (or the stream ended).

        `head_request`: the answer is to a HEAD request, so it has no body.
        Raises `MalformedAnswer`, or `IncompleteAnswer` after `close` when an
        answer was begun and not finished.
        """
        buffer = self._buffer
        if self._last_taken:
            if buffer:
                raise MalformedAnswer(f"bytes after an answer that closed the connection: {self.rest[:80]!r}")
            return None
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            line_end = buffer.find(b"\r\n")
            if line_end >= 0:
                _head(bytes(buffer[:line_end]))  # a wrong status line fails as soon as it is whole
            if self._ended and buffer:
                raise IncompleteAnswer(f"the stream ended in an answer's head: {self.rest[:200]!r}")
            return None
        version, status, reason, lines = _head(bytes(buffer[:end]))
        head = Answer(version, status, reason, lines, b"")
        start = end + 4
        length = _body_length(head, head_request)
        if length is None:
            if not self._ended:
                return None
            length = len(buffer) - start
            self._last_taken = True
        elif len(buffer) - start < length:
            if self._ended:
                raise IncompleteAnswer(
                    f"the stream ended {length - (len(buffer) - start)} bytes short of the body of "
                    f"{head.status_line!r}"
                )
            return None
        answer = Answer(version, status, reason, lines, bytes(buffer[start : start + length]))
        del buffer[: start + length]
        if answer.closes:
            self._last_taken = True
        return answer


def parse_answers(data: bytes, head_request: bool | Sequence[bool] = False) -> list[Answer]:
    """Every answer in `data`, a whole stream: interim answers included, in order.

    `head_request` says which answers are to HEAD requests: one flag for all,
    or one per final answer in order (an interim answer shares its request's).
    Raises `MalformedAnswer`, and `IncompleteAnswer` when `data` ends in the
    middle of an answer.
    """
    flags = [head_request] if isinstance(head_request, bool) else list(head_request)
    reader = AnswerReader()
    reader.feed(data)
    reader.close()
    answers: list[Answer] = []
    finals = 0
    while True:
        if isinstance(head_request, bool):
            flag = head_request
        elif finals < len(flags):
            flag = flags[finals]
        elif reader.rest:
            raise MalformedAnswer(f"more answers than the {len(flags)} requests: {reader.rest[:80]!r}")
        else:
            return answers
        answer = reader.next_answer(flag)
        if answer is None:
            return answers
        answers.append(answer)
        if not answer.interim:
            finals += 1


class AnswerStream:
    """The answers arriving on a blocking client socket.

    Every ``recv`` is bounded by the socket's timeout (`TimeoutError` past
    it); `answers` holds every answer read so far, including those of a read
    that then timed out.
    """

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._reader = AnswerReader()
        self.answers: list[Answer] = []

    def _receive(self) -> None:
        chunk = self._connection.recv(65536)
        if chunk:
            self._reader.feed(chunk)
        else:
            self._reader.close()

    def next_answer(self, head_request: bool = False) -> Answer:
        """The next answer, interim or final.  Raises `IncompleteAnswer` if the server closes first."""
        while True:
            answer = self._reader.next_answer(head_request)
            if answer is not None:
                self.answers.append(answer)
                return answer
            if self._reader.ended:
                raise IncompleteAnswer("the server closed the connection before the next answer")
            self._receive()

    def receive(self, finals: int, head_request: bool = False) -> list[Answer]:
        """The next answers up to the `finals`-th final one, interim answers included."""
        answers: list[Answer] = []
        while finals:
            answer = self.next_answer(head_request)
            answers.append(answer)
            if not answer.interim:
                finals -= 1
        return answers

    def receive_all(self, head_request: bool = False) -> list[Answer]:
        """Every answer until the server closes the connection."""
        answers: list[Answer] = []
        while True:
            answer = self._reader.next_answer(head_request)
            if answer is not None:
                self.answers.append(answer)
                answers.append(answer)
            elif self._reader.ended:
                return answers
            else:
                self._receive()
