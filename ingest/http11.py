"""HTTP/1.1 framing, pure: request line, header fields, body framing, keep-alive.

This module owns every framing decision (RFC 9112) and nothing else: it
never touches a socket, a clock or a setting of its own.  The Twisted shell
(`ingest.protocol`) feeds it lines and raw bytes and acts on what it returns.

Strictness is a security property here: a lenient parser in front of a proxy
is a request-smuggling hole.  So: one space between the parts of the request
line, no whitespace before a field's colon, no obsolete line folding, no
control characters in values, exactly one ``Host`` in an HTTP/1.1 request
and at most one in HTTP/1.0 (its value may be empty), one ``Content-Length``
of plain digits, no ``Content-Length`` beside ``Transfer-Encoding``, no
transfer coding but ``chunked``, strict chunk sizes, chunk extensions exactly
as RFC 9112 section 7.1.1 writes them (then ignored), and chunk CRLFs.  Every
violation raises `IngestError` with ``close=True`` and the status the client
gets.  ``tests/test_smuggling_corpus.py`` holds these rules against a corpus
of published request-smuggling probes.

Costs: a head that arrived whole is checked by one regex pass over its
field block and split by a second (`HeadParser.add_block`); one that
trickles in costs a regex match per field line.  A chunked body is decoded
by slicing the bytes it was fed, O(bytes) overall; each chunk-size line is
matched once, in time linear in its length whatever it holds (the extension
grammar's quantifiers are possessive and its alternatives disjoint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from ingest.errors import framing_error
from ingest.messages import Headers


@dataclass(frozen=True)
class Limits:
    """The framing limits; each one is checked at N (accepted) and N+1 (refused).

    `max_request_line` bytes of request line (414 beyond), `max_header_line`
    bytes of one field line, `max_headers` field lines and `max_header_bytes`
    bytes of field lines in all (431 beyond), `max_body` bytes of body after
    transfer decoding (413 beyond), `max_chunk_line` bytes of one chunk-size
    line with its extensions (400 beyond).
    """

    max_request_line: int = 8192
    max_header_line: int = 8192
    max_headers: int = 100
    max_header_bytes: int = 65536
    max_body: int = 33554432
    max_chunk_line: int = 4096


_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN = _TCHAR + rb"+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_FIELD_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*"
_FIELD_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":" + _FIELD_VALUE + rb"\r\n)*")
_FIELD_PAIRS = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb"?)[ \t]*\r\n")
_DIGITS = re.compile(rb"[0-9]+")
# RFC 9112 section 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ),
# a name is a token, a value a token or a quoted-string (RFC 9110 section 5.6.4: qdtext and
# quoted-pair, obs-text allowed).  Every quantifier is possessive and the alternatives are disjoint,
# so a match never goes back over what it took: linear in the line, whatever the line holds.
_BWS = rb"[ \t]*+"
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*+"'
_CHUNK_EXT_VALUE = rb"(?:" + _TCHAR + rb"++|" + _QUOTED_STRING + rb")"
_CHUNK_EXT = (
    rb"(?:" + _BWS + rb";" + _BWS + _TCHAR + rb"++(?:" + _BWS + rb"=" + _BWS + _CHUNK_EXT_VALUE + rb")?+)*+"
)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})" + _CHUNK_EXT)
_CHUNK_SIZE_THEN_EXT = re.compile(rb"[0-9A-Fa-f]{1,15}[ \t]*;")
_ABSOLUTE_FORM = re.compile(rb"[hH][tT][tT][pP][sS]?://[^/?#]*([/?].*)?")

HTTP_10 = b"HTTP/1.0"
HTTP_11 = b"HTTP/1.1"

# Methods whose requests carry a body and so must say how long it is (411).
_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))


class RequestLine(NamedTuple):
    method: bytes
    path: bytes
    query: bytes
    version: bytes


def parse_request_line(line: bytes) -> RequestLine:
    """Split ``METHOD SP request-target SP HTTP-version``.

    Raises 400 for anything but exactly that shape, 505 for a well-formed
    version other than 1.0 and 1.1.  The target may be in origin form
    (``/path?query``) or absolute form (``http://host/path``); the path is
    kept as sent (no percent-decoding: our routes are plain ASCII).
    """
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise framing_error(400, "malformed request line", repr(line[:100])[2:-1])
    method, target, version = match.groups()
    if version != HTTP_11 and version != HTTP_10:
        raise framing_error(505, "HTTP version not supported", version.decode("ascii"))
    if target[0] != 0x2F:  # "/"
        absolute = _ABSOLUTE_FORM.fullmatch(target)
        if absolute is None:
            raise framing_error(400, "malformed request target", "expected /path")
        target = absolute.group(1) or b"/"
        if target[0] != 0x2F:
            target = b"/" + target
    path, _, query = target.partition(b"?")
    return RequestLine(method, path, query, version)


class Framing(NamedTuple):
    """What the head says about the body and the connection.

    `length` is the body length for Content-Length framing, ``None`` for
    chunked.  `keep_alive` is the connection's fate after this exchange if
    nothing goes wrong.  `expect_continue` asks for a ``100 Continue``.
    """

    length: int | None
    keep_alive: bool
    expect_continue: bool


class HeadParser:
    """Accumulates the field lines of one request head and checks its limits.

    Use: `add(line)` for each field line, then `finish(version, method)` on
    the empty line.  `reset()` readies it for the next request of the
    connection.  Raises `IngestError` (431, 400) as soon as a line breaks a
    rule, so a hostile head costs at most one line of work past its limit.
    """

    __slots__ = ("_bytes", "_codings", "_count", "_hosts", "_lengths", "_limits", "headers")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.headers: dict[bytes, bytes] = {}
        self._count = 0
        self._bytes = 0
        self._lengths: list[bytes] = []
        self._codings: list[bytes] = []
        self._hosts = 0

    def reset(self) -> None:
        self.headers = {}
        self._count = 0
        self._bytes = 0
        self._lengths = []
        self._codings = []
        self._hosts = 0

    def add(self, line: bytes) -> None:
        """Take one field line (without its CRLF)."""
        limits = self._limits
        self._count += 1
        self._bytes += len(line) + 2
        if self._count > limits.max_headers:
            raise framing_error(431, "too many headers", f"more than {limits.max_headers}")
        if self._bytes > limits.max_header_bytes or len(line) > limits.max_header_line:
            raise framing_error(431, "headers too large", f"over {limits.max_header_bytes} bytes")
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            if line[:1] in (b" ", b"\t"):
                raise framing_error(400, "malformed header", "obsolete line folding")
            raise framing_error(400, "malformed header", repr(line[:100])[2:-1])
        self._field(match.group(1).lower(), match.group(2))

    def add_block(self, block: bytes) -> bool:
        """Take a whole field section at once, if it is well formed: every field line with its CRLF.

        The same rules as `add`, in two regex passes instead of one match per
        line.  Returns False, having taken nothing, when the block breaks a
        rule or comes near a limit: feed its lines to `add` then, which
        names the rule broken (and the two must agree: a property test says so).
        """
        limits = self._limits
        count = block.count(b"\n")
        if (
            len(block) > limits.max_header_line
            or self._count + count > limits.max_headers
            or self._bytes + len(block) > limits.max_header_bytes
            or _FIELD_BLOCK.fullmatch(block) is None
        ):
            return False
        self._count += count
        self._bytes += len(block)
        for name, value in _FIELD_PAIRS.findall(block):
            self._field(name.lower(), value)
        return True

    def _field(self, name: bytes, value: bytes) -> None:
        """Record one checked field: the framing ones are kept apart, repeats joined with ", "."""
        if name == b"content-length":
            self._lengths.append(value)
        elif name == b"transfer-encoding":
            self._codings.append(value)
        elif name == b"host":
            self._hosts += 1
        previous = self.headers.get(name)
        self.headers[name] = value if previous is None else previous + b", " + value

    def finish(self, version: bytes, method: bytes) -> Framing:
        """Decide the body framing and keep-alive (RFC 9112 section 6.3).

        Raises `IngestError`: 400 for a Host missing from an HTTP/1.1 request
        or repeated in any (RFC 9112 section 3.2) and for contradictory
        framing, 411 for a body method without a length, 413 for a length
        over the limit, 417 for an expectation other than ``100-continue``.
        """
        headers = self.headers
        if self._hosts != 1:
            if self._hosts > 1:
                raise framing_error(400, "malformed header", "more than one Host")
            if version == HTTP_11:  # RFC 9112 section 3.2: MUST 400; HTTP/1.0 had no Host
                raise framing_error(400, "malformed header", "missing Host")
        length: int | None
        if self._codings:
            if self._lengths:
                raise framing_error(400, "malformed framing", "Content-Length with Transfer-Encoding")
            if version == HTTP_10:
                raise framing_error(400, "malformed framing", "Transfer-Encoding in HTTP/1.0")
            if len(self._codings) > 1 or self._codings[0].lower() != b"chunked":
                raise framing_error(400, "unsupported transfer coding", "only chunked is accepted")
            length = None
        elif self._lengths:
            if len(self._lengths) > 1:
                raise framing_error(400, "malformed framing", "more than one Content-Length")
            if _DIGITS.fullmatch(self._lengths[0]) is None:
                raise framing_error(400, "malformed framing", "Content-Length must be digits")
            digits = self._lengths[0]
            length = int(digits) if len(digits) <= 18 else self._limits.max_body + 1
            if length > self._limits.max_body:
                raise framing_error(413, "body too large", f"limit is {self._limits.max_body} bytes")
        elif method in _BODY_METHODS:
            raise framing_error(411, "length required", "send Content-Length or chunked")
        else:
            length = 0
        connection = headers.get(b"connection", b"").lower()
        if version == HTTP_11:
            keep_alive = b"close" not in _tokens(connection)
        else:
            keep_alive = b"keep-alive" in _tokens(connection)
        expect_continue = False
        expect = headers.get(b"expect")
        if expect is not None and version == HTTP_11:
            if expect.lower() != b"100-continue":
                raise framing_error(417, "expectation failed", "only 100-continue is supported")
            expect_continue = True
        return Framing(length, keep_alive, expect_continue)


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.split(b",")] if value else []


class LengthDecoder:
    """Counts down a ``Content-Length`` body (RFC 9112 section 6.2) fed in arbitrary pieces.

    The same shape as `ChunkedDecoder`: `feed(data)` returns ``(pieces, rest)``,
    the body bytes in `data` and ``None`` while the body goes on, or the bytes
    after the body (the next pipelined request) once it is complete.  `end()`
    is called when the peer stops sending: it raises 400 when the body is not
    complete.  No copy of a piece that ends inside the body.
    """

    __slots__ = ("_length", "_remaining")

    def __init__(self, length: int) -> None:
        self._length = length
        self._remaining = length

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            return [data], None
        self._remaining = 0
        if len(data) == remaining:
            return [data], b""
        return [data[:remaining]], data[remaining:]

    def end(self) -> None:
        """The input ended: raise 400 unless the whole body arrived."""
        if self._remaining:
            received = self._length - self._remaining
            raise framing_error(
                400, "incomplete request", f"the body ended after {received} of {self._length} bytes"
            )


# Chunked decoder states.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Decodes a chunked body (RFC 9112 section 7.1) fed in arbitrary pieces.

    `feed(data)` returns ``(pieces, rest)``: the body bytes decoded from
    `data`, and ``None`` while the body goes on or, once the last chunk and
    trailer section are through, the bytes that follow the body (the next
    pipelined request).  Extensions are checked against RFC 9112 section
    7.1.1's grammar (``;`` and a token name, ``=`` and a token or
    quoted-string value, whitespace around either) and ignored; trailer
    fields are checked and dropped.  Raises `IngestError`: 400 for a
    malformed size, extension, chunk end or trailer, or a size line longer
    than `limits.max_chunk_line`, 413 once the decoded body passes
    `limits.max_body`, 431 for an oversized trailer.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._state = _SIZE
        self._remaining = 0
        self._size = 0
        self._line = b""
        self._trailers = HeadParser(limits)

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        pieces: list[bytes] = []
        if self._line:  # a line cut short by the last feed (at most a limit long)
            data = self._line + data
            self._line = b""
        pos = 0
        end = len(data)
        while pos < end or self._state == _DONE:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                pieces.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_END
            elif state == _DONE:
                return pieces, data[pos:]
            else:
                line, pos = self._take_line(data, pos)
                if line is None:
                    break
                if state == _SIZE:
                    self._size_line(line)
                elif state == _DATA_END:
                    if line:
                        raise framing_error(400, "malformed chunk", "chunk data not followed by CRLF")
                    self._state = _SIZE
                elif line:
                    self._trailers.add(line)
                else:
                    self._state = _DONE
        return pieces, None

    def end(self) -> None:
        """The input ended: raise 400 unless the last chunk and the trailer section arrived."""
        if self._state != _DONE:
            raise framing_error(400, "incomplete request", "the chunked body ended before its last chunk")

    def _take_line(self, data: bytes, pos: int) -> tuple[bytes | None, int]:
        """The next CRLF-terminated line in `data[pos:]`, or None (the part is kept for the next feed)."""
        limit = self._limits.max_header_line if self._state == _TRAILER else self._limits.max_chunk_line
        if self._state == _DATA_END:
            limit = 0
        index = data.find(b"\r\n", pos)
        if index < 0:
            self._line = data[pos:]
            # A lone CR may still be half of the CRLF: allow for it.
            if len(self._line) > limit + 1:
                self._line_too_long()
            return None, len(data)
        line = data[pos:index]
        if len(line) > limit:
            self._line_too_long()
        return line, index + 2

    def _line_too_long(self) -> None:
        if self._state == _TRAILER:
            raise framing_error(431, "headers too large", "trailer line too long")
        if self._state == _DATA_END:
            raise framing_error(400, "malformed chunk", "chunk data not followed by CRLF")
        raise framing_error(400, "malformed chunk", "chunk size line too long")

    def _size_line(self, line: bytes) -> None:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            bad = "chunk extension" if _CHUNK_SIZE_THEN_EXT.match(line) else "chunk size"
            raise framing_error(400, "malformed chunk", f"bad {bad}")
        size = int(match.group(1), 16)
        self._size += size
        if self._size > self._limits.max_body:
            raise framing_error(413, "body too large", f"limit is {self._limits.max_body} bytes")
        if size == 0:
            self._state = _TRAILER
        else:
            self._remaining = size
            self._state = _DATA


_REASONS = {
    100: b"Continue",
    200: b"OK",
    202: b"Accepted",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    411: b"Length Required",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    417: b"Expectation Failed",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}
_STATUS_LINES = {
    (version, status): b"%s %d %s\r\n" % (version, status, reason)
    for status, reason in _REASONS.items()
    for version in (HTTP_10, HTTP_11)
}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def format_response(
    version: bytes,
    status: int,
    headers: Headers,
    body: bytes,
    keep_alive: bool,
    date: bytes,
    head_only: bool = False,
) -> bytes:
    """Serialize one response.

    The status line uses the request's version (1.0 clients get 1.0).  The
    ``Connection`` field says ``close`` when this answer ends an HTTP/1.1
    connection and ``keep-alive`` when an HTTP/1.0 one stays open.  204
    answers carry no ``Content-Length``; a HEAD answer keeps the length of
    the body it does not send.
    """
    status_line = _STATUS_LINES.get((version, status))
    if status_line is None:
        status_line = b"%s %d Unknown\r\n" % (version, status)
    parts = [status_line, b"Date: ", date, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if status != 204:
        parts += (b"Content-Length: ", b"%d" % len(body), b"\r\n")
    if version == HTTP_11:
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
    elif keep_alive:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)
