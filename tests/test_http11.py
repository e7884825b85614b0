"""Tests for `ingest.http11`: the pure HTTP/1.1 framing.

Every reader is checked fed whole, fed byte by byte and split at every
offset, and every limit at N (accepted) and N+1 (refused).  The property
tests hold the fuzz invariant of the module: any bytes either parse or raise
`IngestError` (with ``close=True`` and a framing status), nothing else.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ingest.errors import IngestError
from ingest.http11 import (
    CONTINUE,
    HTTP_10,
    HTTP_11,
    ChunkedDecoder,
    Framing,
    HeadParser,
    LengthDecoder,
    Limits,
    RequestLine,
    format_response,
    parse_request_line,
)
from tests.http_answers import parse_answers

# The statuses a framing error may carry.
FRAMING_STATUSES = {400, 411, 413, 417, 431, 505}

DATE = b"Tue, 14 Nov 2023 22:13:20 GMT"

# Every token character (RFC 9110 section 5.6.2).
TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def framing(
    *lines: bytes,
    version: bytes = HTTP_11,
    method: bytes = b"POST",
    limits: Limits | None = None,
    host: bool = True,
) -> Framing:
    """Run one head through a fresh `HeadParser`: `lines`, after a ``Host: t`` line if `host`."""
    parser = HeadParser(limits or Limits())
    for line in ((b"Host: t",) if host else ()) + lines:
        parser.add(line)
    return parser.finish(version, method)


def decode(
    pieces: Iterable[bytes],
    limits: Limits | None = None,
    decoder: LengthDecoder | ChunkedDecoder | None = None,
) -> tuple[bytes, bytes | None]:
    """Feed a body in pieces (chunked unless `decoder` says); the decoded body and what followed it.

    Once the decoder reports the end of the body, the pieces not yet fed are
    appended to the rest, as the protocol would hand them to the next request.
    """
    decoder = decoder or ChunkedDecoder(limits or Limits())
    pieces = list(pieces)
    body: list[bytes] = []
    for index, piece in enumerate(pieces):
        out, rest = decoder.feed(piece)
        body += out
        if rest is not None:
            return b"".join(body), rest + b"".join(pieces[index + 1 :])
    return b"".join(body), None


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    """`data` cut at the given offsets (in any order, repeats allowed)."""
    cuts = [0, *sorted(offsets), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(cuts)]


def every_feeding(data: bytes) -> Iterable[tuple[str, list[bytes]]]:
    """`data` whole, byte by byte, and split in two at every offset."""
    yield "whole", [data]
    yield "byte by byte", byte_by_byte(data)
    for offset in range(len(data) + 1):
        yield f"split at {offset}", [data[:offset], data[offset:]]


def outcome(function: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)`` of `function`, or ``("error", status)`` of the `IngestError` it raises."""
    try:
        return ("ok", function())
    except IngestError as error:
        return ("error", error.status)


class ParseRequestLineTests(SynchronousTestCase):
    """`parse_request_line`: exactly ``METHOD SP target SP HTTP/x.y``."""

    def assert_refused(self, line: bytes, status: int) -> IngestError:
        error = self.assertRaises(IngestError, parse_request_line, line)
        self.assertEqual(error.status, status, line)
        self.assertTrue(error.close, line)
        return error

    def test_origin_form(self) -> None:
        """An origin-form target gives its path, an empty query and the version as sent."""
        self.assertEqual(
            parse_request_line(b"GET /ping HTTP/1.1"),
            RequestLine(b"GET", b"/ping", b"", b"HTTP/1.1"),
        )
        self.assertEqual(
            parse_request_line(b"POST /metrics HTTP/1.0"),
            RequestLine(b"POST", b"/metrics", b"", b"HTTP/1.0"),
        )

    def test_query_split(self) -> None:
        """The query is what follows the first ``?``, kept as sent (no percent-decoding)."""
        self.assertEqual(
            parse_request_line(b"POST /write?db=x&precision=s HTTP/1.1"),
            RequestLine(b"POST", b"/write", b"db=x&precision=s", b"HTTP/1.1"),
        )
        self.assertEqual(
            parse_request_line(b"GET /a%20b?x=%3F?y HTTP/1.1"),
            RequestLine(b"GET", b"/a%20b", b"x=%3F?y", b"HTTP/1.1"),
        )
        self.assertEqual(parse_request_line(b"GET /ping? HTTP/1.1").query, b"")

    def test_absolute_form(self) -> None:
        """An absolute-form target is reduced to its path and query; no path means ``/``."""
        self.assertEqual(
            parse_request_line(b"POST http://example.com:8080/write?precision=ms HTTP/1.1"),
            RequestLine(b"POST", b"/write", b"precision=ms", b"HTTP/1.1"),
        )
        self.assertEqual(
            parse_request_line(b"GET HTTPS://example.com HTTP/1.1"),
            RequestLine(b"GET", b"/", b"", b"HTTP/1.1"),
        )
        self.assertEqual(
            parse_request_line(b"GET http://example.com?x=1 HTTP/1.1"),
            RequestLine(b"GET", b"/", b"x=1", b"HTTP/1.1"),
        )

    def test_method_is_any_token(self) -> None:
        """The method is any token, kept as sent; routing, not framing, judges it."""
        self.assertEqual(parse_request_line(b"PURGE / HTTP/1.1").method, b"PURGE")
        self.assertEqual(parse_request_line(b"get / HTTP/1.1").method, b"get")

    def test_malformed_shapes(self) -> None:
        """Anything but one space between three well-formed parts is a 400 that closes."""
        for line in [
            b"",
            b"GET",
            b"GET /",
            b"GET /ping",
            b"GET HTTP/1.1",
            b"/ping HTTP/1.1",
            b"GET  /ping HTTP/1.1",
            b"GET /ping  HTTP/1.1",
            b" GET /ping HTTP/1.1",
            b"GET /ping HTTP/1.1 ",
            b"GET\t/ping HTTP/1.1",
            b"GET /ping\tHTTP/1.1",
            b"GET /ping HTTP/1.1\r",
            b"GET /ping HTTP/1.1 extra",
            b"GET /ping http/1.1",
            b"GET /ping Http/1.1",
            b"GET /ping HTTP/1",
            b"GET /ping HTTP/11",
            b"GET /ping HTTP/1.10",
            b"GET /ping HTTP/1.x",
            b"G@T /ping HTTP/1.1",
            b"GET /pi\x00ng HTTP/1.1",
            b"GET /ping\x7f HTTP/1.1",
            b"GET /pi\x1bng HTTP/1.1",
            b"GET /caf\xc3\xa9 HTTP/1.1",
            b"GET\x00 /ping HTTP/1.1",
        ]:
            self.assert_refused(line, 400)

    def test_target_must_be_origin_or_absolute(self) -> None:
        """A target that is neither ``/path`` nor ``http(s)://host...`` is a 400."""
        for line in [
            b"GET ping HTTP/1.1",
            b"GET ftp://example.com/ HTTP/1.1",
            b"GET http:/example.com/ HTTP/1.1",
            b"CONNECT example.com:443 HTTP/1.1",
        ]:
            self.assert_refused(line, 400)

    def test_unsupported_versions(self) -> None:
        """A well-formed version other than 1.0 and 1.1 is a 505 that closes."""
        for version in [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0", b"HTTP/9.9"]:
            error = self.assert_refused(b"GET /ping " + version, 505)
            self.assertEqual(error.detail, version.decode("ascii"))


class HeadParserTests(SynchronousTestCase):
    """`HeadParser`: field lines, their limits, and the framing decision."""

    def assert_refused(self, status: int, *lines: bytes, **options: Any) -> IngestError:
        error = self.assertRaises(IngestError, framing, *lines, **options)
        self.assertEqual(error.status, status, lines)
        self.assertTrue(error.close, lines)
        return error

    def test_fields(self) -> None:
        """Names are lower-cased, OWS around values dropped, repeated fields joined with ", "."""
        parser = HeadParser(Limits())
        for line in [b"Host: example.com", b"X-Thing:\t a b \t", b"x-thing: c", b"Empty:"]:
            parser.add(line)
        self.assertEqual(
            parser.headers,
            {b"host": b"example.com", b"x-thing": b"a b, c", b"empty": b""},
        )

    def test_value_characters(self) -> None:
        """Inner tabs and obs-text bytes (0x80-0xFF) are allowed in values."""
        parser = HeadParser(Limits())
        parser.add(b"X-A: a\tb")
        parser.add(b"X-B: caf\xc3\xa9")
        self.assertEqual(parser.headers, {b"x-a": b"a\tb", b"x-b": b"caf\xc3\xa9"})

    def test_whitespace_before_colon(self) -> None:
        """Whitespace between the field name and its colon is a 400 (RFC 9112 section 5.1)."""
        for line in [b"Host : example.com", b"Host\t: example.com", b"Content-Length : 5"]:
            error = self.assertRaises(IngestError, HeadParser(Limits()).add, line)
            self.assertEqual(error.status, 400)
            self.assertTrue(error.close)

    def test_obsolete_line_folding(self) -> None:
        """A line starting with whitespace (obs-fold) is a 400."""
        parser = HeadParser(Limits())
        parser.add(b"X-Long: first")
        for line in [b" continued", b"\tcontinued"]:
            error = self.assertRaises(IngestError, parser.add, line)
            self.assertEqual((error.status, error.detail), (400, "obsolete line folding"))

    def test_malformed_lines(self) -> None:
        """A line without a colon or with an empty or non-token name is a 400."""
        for line in [b"Host", b": value", b"Ho st: x", b"Host\x00: x", b"H\xc3\xa9: x", b"\x00"]:
            error = self.assertRaises(IngestError, HeadParser(Limits()).add, line)
            self.assertEqual(error.status, 400, line)

    def test_control_characters_in_values(self) -> None:
        """Control characters other than tab (NUL, CR, LF, ESC, DEL) in a value are a 400."""
        for char in [b"\x00", b"\x01", b"\x08", b"\n", b"\r", b"\x0b", b"\x1b", b"\x1f", b"\x7f"]:
            error = self.assertRaises(IngestError, HeadParser(Limits()).add, b"X-Thing: a" + char + b"b")
            self.assertEqual(error.status, 400, char)
            self.assertTrue(error.close)

    def test_max_headers(self) -> None:
        """`max_headers` field lines are accepted; one more is a 431."""
        parser = HeadParser(Limits(max_headers=3))
        for index in range(3):
            parser.add(b"X-%d: v" % index)
        error = self.assertRaises(IngestError, parser.add, b"X-3: v")
        self.assertEqual(error.status, 431)
        self.assertTrue(error.close)

    def test_max_header_bytes(self) -> None:
        """Field lines of `max_header_bytes` in all (each with its CRLF) pass; one byte more is a 431."""
        line = b"X-Thing: " + b"v" * 21  # 30 bytes, 32 with CRLF
        parser = HeadParser(Limits(max_header_bytes=64))
        parser.add(line)
        parser.add(line)
        self.assertEqual(parser.headers[b"x-thing"], b"v" * 21 + b", " + b"v" * 21)
        parser = HeadParser(Limits(max_header_bytes=64))
        parser.add(line)
        error = self.assertRaises(IngestError, parser.add, line + b"v")
        self.assertEqual(error.status, 431)

    def test_max_header_line(self) -> None:
        """A field line of `max_header_line` bytes passes; one byte longer is a 431."""
        limits = Limits(max_header_line=16)
        parser = HeadParser(limits)
        parser.add(b"X-Thing: 1234567")
        error = self.assertRaises(IngestError, HeadParser(limits).add, b"X-Thing: 12345678")
        self.assertEqual(error.status, 431)
        self.assertTrue(error.close)

    def test_reset(self) -> None:
        """`reset` clears the fields and the counts, so the next head gets the full limits."""
        parser = HeadParser(Limits(max_headers=2))
        parser.add(b"Content-Length: 1")
        parser.add(b"Host: a")
        parser.reset()
        self.assertEqual(parser.headers, {})
        parser.add(b"Content-Length: 2")
        parser.add(b"Host: b")
        self.assertEqual(parser.finish(HTTP_11, b"POST"), Framing(2, True, False))

    def test_content_length(self) -> None:
        """One Content-Length of plain digits gives the body length (leading zeros allowed)."""
        self.assertEqual(framing(b"Content-Length: 5"), Framing(5, True, False))
        self.assertEqual(framing(b"content-length: 0"), Framing(0, True, False))
        self.assertEqual(framing(b"Content-Length: 007").length, 7)

    def test_content_length_surrounding_whitespace(self) -> None:
        """Whitespace around the Content-Length value is OWS, not part of the value (RFC 9112 section 5).

        ``Content-Length: 5 `` therefore frames 5 bytes, as h11 and llhttp read it;
        whitespace inside the value ("5 5") is refused.
        """
        self.assertEqual(framing(b"Content-Length: 5 ").length, 5)
        self.assertEqual(framing(b"Content-Length:\t5\t").length, 5)
        self.assertEqual(framing(b"Content-Length:5").length, 5)

    def test_duplicate_content_length(self) -> None:
        """Two Content-Length fields are a 400, even with equal values, in one field or two."""
        self.assert_refused(400, b"Content-Length: 5", b"Content-Length: 5")
        self.assert_refused(400, b"Content-Length: 5", b"Content-Length: 6")
        self.assert_refused(400, b"Content-Length: 5, 5")

    def test_malformed_content_length(self) -> None:
        """A signed, hexadecimal, listed, spaced, empty or non-ASCII-digit Content-Length is a 400."""
        for value in [
            b"+5",
            b"-1",
            b"5 5",
            b"5\t5",
            b"0x5",
            b"5,5",
            b"5, 5",
            b"5.0",
            b"1e3",
            b"",
            b"five",
            "\u0665".encode(),  # ARABIC-INDIC DIGIT FIVE
        ]:
            error = self.assert_refused(400, b"Content-Length: " + value)
            self.assertEqual(error.error, "malformed framing", value)

    def test_absurd_content_length(self) -> None:
        """A Content-Length of more digits than any body limit allows is refused and closes."""
        error = self.assertRaises(IngestError, framing, b"Content-Length: 12345678901234567890")
        self.assertIn(error.status, (400, 413))
        self.assertTrue(error.close)

    def test_content_length_limit(self) -> None:
        """A Content-Length of `max_body` passes; one more is a 413 that closes."""
        limits = Limits(max_body=10)
        self.assertEqual(framing(b"Content-Length: 10", limits=limits).length, 10)
        self.assert_refused(413, b"Content-Length: 11", limits=limits)

    def test_content_length_with_transfer_encoding(self) -> None:
        """Content-Length beside Transfer-Encoding is a 400, in either order."""
        self.assert_refused(400, b"Content-Length: 5", b"Transfer-Encoding: chunked")
        self.assert_refused(400, b"Transfer-Encoding: chunked", b"Content-Length: 5")

    def test_chunked(self) -> None:
        """``Transfer-Encoding: chunked`` (any case) on HTTP/1.1 frames a chunked body: length None."""
        self.assertEqual(framing(b"Transfer-Encoding: chunked"), Framing(None, True, False))
        self.assertEqual(framing(b"transfer-encoding: Chunked").length, None)

    def test_transfer_codings_but_chunked(self) -> None:
        """Any Transfer-Encoding but exactly one ``chunked`` is a 400."""
        for lines in [
            (b"Transfer-Encoding: gzip",),
            (b"Transfer-Encoding: identity",),
            (b"Transfer-Encoding: chunked, gzip",),
            (b"Transfer-Encoding: gzip, chunked",),
            (b"Transfer-Encoding: chunked, chunked",),
            (b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
            (b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"),
            (b"Transfer-Encoding:",),
        ]:
            self.assert_refused(400, *lines)

    def test_transfer_encoding_in_http_10(self) -> None:
        """Transfer-Encoding in an HTTP/1.0 request is a 400 (RFC 9112 section 6.1)."""
        self.assert_refused(400, b"Transfer-Encoding: chunked", version=HTTP_10)

    def test_body_methods_need_a_length(self) -> None:
        """POST, PUT or PATCH without Content-Length or chunked is a 411."""
        for method in [b"POST", b"PUT", b"PATCH"]:
            self.assert_refused(411, method=method)
            self.assert_refused(411, method=method, version=HTTP_10, host=False)

    def test_bodiless_methods(self) -> None:
        """GET, HEAD or DELETE without Content-Length has a body of length 0."""
        for method in [b"GET", b"HEAD", b"DELETE"]:
            self.assertEqual(framing(method=method), Framing(0, True, False))

    def test_duplicate_host(self) -> None:
        """Two Host fields are a 400, in HTTP/1.0 too; one is fine."""
        for version in [HTTP_11, HTTP_10]:
            error = self.assert_refused(
                400, b"Host: a", b"Host: b", method=b"GET", version=version, host=False
            )
            self.assertEqual((error.error, error.detail), ("malformed header", "more than one Host"))
            self.assert_refused(400, b"Host: a", b"host: a", method=b"GET", version=version, host=False)
            self.assertEqual(framing(b"Host: a", method=b"GET", version=version, host=False).length, 0)

    def test_missing_host(self) -> None:
        """An HTTP/1.1 request without Host is a 400 that closes (RFC 9112 section 3.2), whatever its
        method or target; an HTTP/1.0 one is fine, and so is an empty Host value (RFC 9110 section 7.2:
        a target without an authority)."""
        for method in [b"GET", b"HEAD", b"POST"]:
            error = self.assert_refused(400, b"Content-Length: 0", method=method, host=False)
            self.assertEqual((error.error, error.detail), ("malformed header", "missing Host"))
        self.assert_refused(400, method=b"GET", host=False)
        self.assertEqual(framing(method=b"GET", version=HTTP_10, host=False), Framing(0, False, False))
        self.assertEqual(framing(b"Host:", method=b"GET", host=False), Framing(0, True, False))
        self.assertEqual(framing(b"hOST: \t", method=b"GET", host=False), Framing(0, True, False))

    def test_missing_host_in_a_block(self) -> None:
        """A field section taken whole by `add_block` is held to the Host rule as well."""
        parser = HeadParser(Limits())
        self.assertTrue(parser.add_block(b"Content-Length: 0\r\n"))
        error = self.assertRaises(IngestError, parser.finish, HTTP_11, b"POST")
        self.assertEqual((error.status, error.detail, error.close), (400, "missing Host", True))
        parser.reset()
        self.assertTrue(parser.add_block(b"Host: t\r\nContent-Length: 0\r\n"))
        self.assertEqual(parser.finish(HTTP_11, b"POST"), Framing(0, True, False))

    def test_keep_alive_http_11(self) -> None:
        """HTTP/1.1 keeps the connection unless a Connection token says ``close`` (any case)."""
        self.assertTrue(framing(method=b"GET").keep_alive)
        self.assertTrue(framing(b"Connection: keep-alive", method=b"GET").keep_alive)
        self.assertTrue(framing(b"Connection: upgrade", method=b"GET").keep_alive)
        for lines in [
            (b"Connection: close",),
            (b"Connection: Close",),
            (b"Connection: keep-alive, close",),
            (b"Connection: keep-alive", b"Connection: close"),
        ]:
            self.assertFalse(framing(*lines, method=b"GET").keep_alive, lines)

    def test_keep_alive_http_10(self) -> None:
        """HTTP/1.0 closes unless a Connection token says ``keep-alive`` (any case)."""
        self.assertFalse(framing(method=b"GET", version=HTTP_10).keep_alive)
        self.assertFalse(framing(b"Connection: close", method=b"GET", version=HTTP_10).keep_alive)
        for line in [b"Connection: keep-alive", b"Connection: Keep-Alive", b"Connection: te, keep-alive"]:
            self.assertTrue(framing(line, method=b"GET", version=HTTP_10).keep_alive, line)

    def test_expect_continue(self) -> None:
        """``Expect: 100-continue`` (any case) on HTTP/1.1 asks for a 100 Continue."""
        self.assertTrue(framing(b"Content-Length: 5", b"Expect: 100-continue").expect_continue)
        self.assertTrue(framing(b"Content-Length: 5", b"Expect: 100-Continue").expect_continue)
        self.assertFalse(framing(b"Content-Length: 5").expect_continue)
        self.assertEqual(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n")

    def test_expect_ignored_in_http_10(self) -> None:
        """Expect is ignored on HTTP/1.0, whatever its value (RFC 9110 section 10.1.1)."""
        for value in [b"100-continue", b"something-else"]:
            result = framing(b"Content-Length: 5", b"Expect: " + value, version=HTTP_10)
            self.assertFalse(result.expect_continue, value)

    def test_other_expectations(self) -> None:
        """Any other expectation on HTTP/1.1 is a 417."""
        for lines in [
            (b"Expect: something-else",),
            (b"Expect: 100-continue, 100-continue",),
            (b"Expect: 100-continue", b"Expect: x"),
            (b"Expect:",),
        ]:
            self.assert_refused(417, b"Content-Length: 5", *lines)


class LengthDecoderTests(SynchronousTestCase):
    """`LengthDecoder`: the same shape as `ChunkedDecoder`, one outcome however the body is cut."""

    def test_body_and_rest(self) -> None:
        """Exactly `length` bytes are the body; what follows is the rest, fed whole or in any pieces."""
        data = b"helloGET /ping HTTP/1.1\r\n\r\n"
        for how, pieces in every_feeding(data):
            got = decode(pieces, decoder=LengthDecoder(5))
            self.assertEqual(got, (b"hello", b"GET /ping HTTP/1.1\r\n\r\n"), how)

    def test_exact_and_empty(self) -> None:
        """A piece that ends the body exactly leaves an empty rest; a zero length ends at once."""
        self.assertEqual(LengthDecoder(3).feed(b"abc"), ([b"abc"], b""))
        self.assertEqual(LengthDecoder(0).feed(b"next"), ([b""], b"next"))

    def test_incomplete(self) -> None:
        """Until `length` bytes have come, the body goes on: rest is None."""
        for how, pieces in every_feeding(b"hell"):
            self.assertEqual(decode(pieces, decoder=LengthDecoder(5)), (b"hell", None), how)

    @given(st.binary(max_size=64), st.integers(0, 64), st.data())
    def test_any_split(self, data: bytes, length: int, draw: st.DataObject) -> None:
        """Any bytes, any length, any cuts: the first `length` bytes are the body, once all are here."""
        cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=5)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        body, rest = decode(pieces, decoder=LengthDecoder(length))
        if len(data) >= length:
            self.assertEqual((body, rest), (data[:length], data[length:]))
        else:
            self.assertEqual((body, rest), (data, None))


class EndOfInputTests(SynchronousTestCase):
    """`end()`: the peer stopped sending; an unfinished body is a 400 that closes, a finished one nothing."""

    def test_length_body_cut_short(self) -> None:
        """A Content-Length body that stops short names how much came."""
        decoder = LengthDecoder(10)
        decoder.feed(b"abc")
        error = self.assertRaises(IngestError, decoder.end)
        self.assertEqual((error.status, error.error, error.close), (400, "incomplete request", True))
        self.assertIn("3 of 10", error.detail)

    def test_chunked_body_cut_short(self) -> None:
        """A chunked body without its last chunk is incomplete, wherever it stopped."""
        for data in (b"", b"5\r\nhel", b"5\r\nhello\r\n", b"0\r\n", b"0\r\nTrailer: x\r\n"):
            decoder = ChunkedDecoder(Limits())
            decoder.feed(data)
            error = self.assertRaises(IngestError, decoder.end)
            self.assertEqual((error.status, error.close), (400, True), data)

    def test_complete_bodies_end_quietly(self) -> None:
        """After a whole body, `end` raises nothing."""
        length = LengthDecoder(2)
        length.feed(b"ab")
        length.end()
        chunked = ChunkedDecoder(Limits())
        chunked.feed(b"0\r\n\r\n")
        chunked.end()


class ChunkedDecoderTests(SynchronousTestCase):
    """`ChunkedDecoder`: one outcome however the body is cut into pieces."""

    def assert_decodes(
        self, data: bytes, body: bytes, rest: bytes | None, limits: Limits | None = None
    ) -> None:
        for how, pieces in every_feeding(data):
            self.assertEqual(decode(pieces, limits), (body, rest), f"{data!r} fed {how}")

    def assert_refused(self, data: bytes, status: int, limits: Limits | None = None) -> None:
        for how, pieces in every_feeding(data):
            error = self.assertRaises(IngestError, decode, pieces, limits)
            self.assertEqual(error.status, status, f"{data!r} fed {how}")
            self.assertTrue(error.close)

    def test_simple(self) -> None:
        """Chunks are joined; the bytes after the last chunk's CRLF are the rest."""
        self.assert_decodes(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", b"")

    def test_rest(self) -> None:
        """The bytes after the body (the next pipelined request) come back untouched."""
        data = b"3\r\nabc\r\n0\r\n\r\nGET /ping HTTP/1.1\r\n\r\n"
        self.assert_decodes(data, b"abc", b"GET /ping HTTP/1.1\r\n\r\n")

    def test_empty_body(self) -> None:
        """A last chunk alone is an empty body."""
        self.assert_decodes(b"0\r\n\r\n", b"", b"")

    def test_incomplete(self) -> None:
        """Until the empty line after the last chunk, the body goes on: rest is None."""
        for data, body in [
            (b"", b""),
            (b"5", b""),
            (b"5\r", b""),
            (b"5\r\nhel", b"hel"),
            (b"5\r\nhello\r", b"hello"),
            (b"5\r\nhello\r\n", b"hello"),
            (b"5\r\nhello\r\n0\r\n", b"hello"),
            (b"0\r\nX: y\r\n", b""),
            (b"0\r\n\r", b""),
        ]:
            self.assert_decodes(data, body, None)

    def test_sizes(self) -> None:
        """Sizes are hexadecimal in either case, leading zeros allowed up to 15 digits."""
        self.assert_decodes(b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789", b"")
        self.assert_decodes(b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", b"")
        self.assert_decodes(b"00000000000000a\r\n0123456789\r\n000\r\n\r\n", b"0123456789", b"")
        self.assert_decodes(b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", b"x" * 16, b"")

    def test_body_with_crlf(self) -> None:
        """Chunk data is counted, not scanned: CRLFs inside it are data."""
        self.assert_decodes(b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n", b"")

    def test_extensions_ignored(self) -> None:
        """Chunk extensions of RFC 9112 section 7.1.1's grammar are ignored: each a token name, with an
        optional token or quoted-string value (quoted-pairs and obs-text allowed in it), whitespace
        around ``;`` and ``=``, any number of them."""
        data = b'5;name=value\r\nhello\r\n1 ; a="q s";b\r\n!\r\n0;last\r\n\r\n'
        self.assert_decodes(data, b"hello!", b"")
        for extension in [
            b";a",
            b";a=b",
            b" \t; \ta \t= \tb",
            b";a;b=c ; d",
            b';a=""',
            b';a="\\"q\\\\"',
            b';a="\\\t\\ \\\x80"',
            b';a="b;c=d\t \x80\xff"',
            b";" + TCHARS + b"=" + TCHARS,
        ]:
            self.assert_decodes(b"5" + extension + b"\r\nhello\r\n0\r\n\r\n", b"hello", b"")

    def test_malformed_extensions(self) -> None:
        """An extension outside the grammar is a 400: no name or one that is not a token, ``=`` without
        a value, a quoted value unterminated or holding a control character, anything after a value
        but ``;``, whitespace at the end of the line."""
        for extension in [
            b";",
            b";;",
            b"; ",
            b";=b",
            b";a=",
            b";a= ",
            b";a;",
            b";a b",
            b";a=b c",
            b";a=b=c",
            b";a,b",
            b";a=b,c",
            b";a@",
            b";a=\x80",
            b";\xff",
            b";a\x00",
            b";a\x7f",
            b';a="',
            b';a="b',
            b';a="b\\"',
            b';a="b"c',
            b';a="b" ',
            b';a="\x00"',
            b';a="\x7f"',
            b';a="\\\x00"',
            b';a="\x0b"',
            b';a=b"c"',
            b";a ",
        ]:
            self.assert_refused(b"5" + extension + b"\r\nhello\r\n0\r\n\r\n", 400)
        self.assert_decodes(b"5 ;a\r\nhello\r\n0\r\n\r\n", b"hello", b"")  # BWS before ";"

    def test_refusal_names_the_part(self) -> None:
        """The 400's detail says whether the size or an extension broke the grammar."""
        for line, detail in [
            (b"5;", "bad chunk extension"),
            (b'5 ;a="b', "bad chunk extension"),
            (b"x;a", "bad chunk size"),
            (b"5a b", "bad chunk size"),
            (b"", "bad chunk size"),
        ]:
            error = self.assertRaises(IngestError, decode, [line + b"\r\nhello\r\n0\r\n\r\n"], None)
            self.assertEqual(error.detail, detail, line)

    def test_extensions_at_the_line_limit(self) -> None:
        """Extensions count toward `max_chunk_line`: a size line of N bytes with a quoted value passes,
        N+1 is a 400; lines of the default limit built to make a backtracking regex stall are refused
        (the grammar is matched possessively, in one pass)."""
        limits = Limits(max_chunk_line=16)
        line = b'5;a="' + b"q" * 10 + b'"'
        self.assertEqual(len(line), 16)
        self.assert_decodes(line + b"\r\nhello\r\n0\r\n\r\n", b"hello", b"", limits)
        self.assert_refused(b'5;a="' + b"q" * 11 + b'"\r\nhello\r\n0\r\n\r\n', 400, limits)
        limit = Limits().max_chunk_line
        for line in [
            b"5" + b";a" * ((limit - 2) // 2) + b"\x00",
            b'5;a="' + b'\\"' * ((limit - 5) // 2),
            b"5" + b" " * (limit - 2) + b"x",
            b"5" + b";a = b" * ((limit - 2) // 6) + b";",
            b"5;a=" + b"b" * (limit - 5) + b'"',
        ]:
            self.assertLessEqual(len(line), limit)
            error = self.assertRaises(IngestError, ChunkedDecoder(Limits()).feed, line + b"\r\nhello\r\n")
            self.assertEqual(error.status, 400, line[:20])
        accepted = b"5" + b';a="b"' * ((limit - 1) // 6)
        self.assertEqual(decode([accepted + b"\r\nhello\r\n0\r\n\r\n"]), (b"hello", b""))

    def test_trailers_dropped(self) -> None:
        """Trailer fields are checked and dropped; the body ends at the empty line after them."""
        data = b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\n\r\nNEXT"
        self.assert_decodes(data, b"hello", b"NEXT")

    def test_malformed_trailer(self) -> None:
        """A trailer line that is not a valid field line is a 400."""
        self.assert_refused(b"0\r\nBad Trailer\r\n\r\n", 400)
        self.assert_refused(b"0\r\n folded\r\n\r\n", 400)
        self.assert_refused(b"0\r\n\n\r\n", 400)

    def test_trailer_line_limit(self) -> None:
        """A trailer line of `max_header_line` bytes passes; one byte longer is a 431."""
        limits = Limits(max_header_line=16)
        self.assert_decodes(b"0\r\nX-Thing: 1234567\r\n\r\n", b"", b"", limits)
        self.assert_refused(b"0\r\nX-Thing: 12345678\r\n\r\n", 431, limits)

    def test_trailer_count_limit(self) -> None:
        """`max_headers` trailer fields pass; one more is a 431."""
        limits = Limits(max_headers=2)
        self.assert_decodes(b"0\r\nA: 1\r\nB: 2\r\n\r\n", b"", b"", limits)
        self.assert_refused(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431, limits)

    def test_malformed_sizes(self) -> None:
        """An empty, prefixed, spaced, signed, non-hex or 16-digit chunk size is a 400."""
        for size in [
            b"",
            b"0x5",
            b" 5",
            b"\t5",
            b"-5",
            b"+5",
            b"5 ",
            b"5 x",
            b"5x",
            b"g",
            b"5.0",
            b"0000000000000005",
            b"fffffffffffffffff",
            b"5;a\x00b",
            b"5;a\x7f",
            b"5\r",
        ]:
            self.assert_refused(size + b"\r\nhello\r\n0\r\n\r\n", 400)

    def test_bare_lf(self) -> None:
        """A bare LF where CRLF belongs (after a size, after data, ending the trailers) is a 400."""
        self.assert_refused(b"5\nhello\r\n0\r\n\r\n", 400)
        self.assert_refused(b"5\r\nhello\n0\r\n\r\n", 400)
        self.assert_refused(b"5\r\nhello\r\n0\n\r\n", 400)
        self.assert_refused(b"5\r\nhello\r\n0\r\n\n\r\n", 400)

    def test_data_not_followed_by_crlf(self) -> None:
        """Chunk data longer than its size, or not ending in CRLF, is a 400."""
        self.assert_refused(b"5\r\nhelloX\r\n0\r\n\r\n", 400)
        self.assert_refused(b"5\r\nhello0\r\n\r\n", 400)
        self.assert_refused(b"5\r\nhello\rX0\r\n\r\n", 400)
        self.assert_refused(b"5\r\nhello \r\n0\r\n\r\n", 400)

    def test_chunk_line_limit(self) -> None:
        """A size line of `max_chunk_line` bytes with its extensions passes; one byte longer is a 400."""
        limits = Limits(max_chunk_line=16)
        line = b"5;" + b"e" * 14
        self.assert_decodes(line + b"\r\nhello\r\n0\r\n\r\n", b"hello", b"", limits)
        self.assert_refused(line + b"e\r\nhello\r\n0\r\n\r\n", 400, limits)

    def test_max_body(self) -> None:
        """A decoded body of exactly `max_body` bytes passes; one byte more is a 413."""
        limits = Limits(max_body=10)
        self.assert_decodes(b"6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n", b"0123456789", b"", limits)
        self.assert_refused(b"6\r\n012345\r\n5\r\n6789a\r\n0\r\n\r\n", 413, limits)
        self.assert_refused(b"b\r\n0123456789a\r\n0\r\n\r\n", 413, limits)

    def test_max_body_before_data(self) -> None:
        """A size over `max_body` is refused from its size line, before its data arrives."""
        decoder = ChunkedDecoder(Limits(max_body=10))
        error = self.assertRaises(IngestError, decoder.feed, b"fffffffffffffff\r\n")
        self.assertEqual(error.status, 413)

    def test_unterminated_size_line(self) -> None:
        """A size line that never ends is refused once it passes the limit, without waiting for CRLF."""
        decoder = ChunkedDecoder(Limits(max_chunk_line=16))
        decoder.feed(b"5;" + b"e" * 15)  # 17 bytes: may still be followed by the CR of CRLF
        error = self.assertRaises(IngestError, decoder.feed, b"e")
        self.assertEqual(error.status, 400)


class FormatResponseTests(SynchronousTestCase):
    """`format_response`: the status line, the framing headers and the body."""

    def parse(self, data: bytes, head_request: bool = False) -> tuple[bytes, list[bytes], bytes]:
        [answer] = parse_answers(data, head_request)
        return answer.status_line, list(answer.lines), answer.body

    def test_status_line_version(self) -> None:
        """The status line uses the request's version."""
        for version in [HTTP_10, HTTP_11]:
            data = format_response(version, 202, (), b"{}", True, DATE)
            self.assertTrue(data.startswith(version + b" 202 Accepted\r\n"), data)

    def test_unknown_status(self) -> None:
        """A status without a known reason still gets a well-formed status line."""
        data = format_response(HTTP_11, 299, (), b"", True, DATE)
        self.assertTrue(data.startswith(b"HTTP/1.1 299 Unknown\r\n"), data)

    def test_fields_and_body(self) -> None:
        """Date, the given headers in order and Content-Length precede the body."""
        headers = ((b"Content-Type", b"application/json"), (b"Retry-After", b"1"))
        data = format_response(HTTP_11, 503, headers, b'{"error":"x"}', True, DATE)
        self.assertEqual(
            self.parse(data),
            (
                b"HTTP/1.1 503 Service Unavailable",
                [
                    b"Date: " + DATE,
                    b"Content-Type: application/json",
                    b"Retry-After: 1",
                    b"Content-Length: 13",
                ],
                b'{"error":"x"}',
            ),
        )

    def test_empty_body_has_length(self) -> None:
        """An empty body other than a 204's is announced as ``Content-Length: 0``."""
        _, fields, body = self.parse(format_response(HTTP_11, 200, (), b"", True, DATE))
        self.assertIn(b"Content-Length: 0", fields)
        self.assertEqual(body, b"")

    def test_no_content(self) -> None:
        """A 204 carries no Content-Length and no body."""
        data = format_response(HTTP_11, 204, (), b"", True, DATE)
        self.assertEqual(data, b"HTTP/1.1 204 No Content\r\nDate: " + DATE + b"\r\n\r\n")

    def test_connection_http_11(self) -> None:
        """HTTP/1.1: ``Connection: close`` when the answer ends the connection, nothing when it stays."""
        _, fields, _ = self.parse(format_response(HTTP_11, 200, (), b"ok", False, DATE))
        self.assertIn(b"Connection: close", fields)
        _, fields, _ = self.parse(format_response(HTTP_11, 200, (), b"ok", True, DATE))
        self.assertFalse([field for field in fields if field.lower().startswith(b"connection:")])

    def test_connection_http_10(self) -> None:
        """HTTP/1.0: ``Connection: keep-alive`` when the connection stays, nothing when it closes."""
        _, fields, _ = self.parse(format_response(HTTP_10, 200, (), b"ok", True, DATE))
        self.assertIn(b"Connection: keep-alive", fields)
        _, fields, _ = self.parse(format_response(HTTP_10, 200, (), b"ok", False, DATE))
        self.assertFalse([field for field in fields if field.lower().startswith(b"connection:")])

    def test_head(self) -> None:
        """A HEAD answer omits the body but keeps the Content-Length of the body it does not send."""
        full = format_response(HTTP_11, 200, (), b"12345", True, DATE)
        head = format_response(HTTP_11, 200, (), b"12345", True, DATE, head_only=True)
        self.assertEqual(head + b"12345", full)
        _, fields, body = self.parse(head, head_request=True)
        self.assertIn(b"Content-Length: 5", fields)
        self.assertEqual(body, b"")


# Pieces that make near-valid inputs, so that random inputs reach deep states.
REQUEST_PIECES = st.sampled_from(
    [b"GET", b"POST", b" ", b"  ", b"\t", b"/", b"/metrics", b"?", b"x=1", b"http://", b"h:1",
     b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"\x00", b"\x7f", b"\xff", b"\r", b"\n"]
)  # fmt: skip
HEADER_LINES = st.one_of(
    st.binary(max_size=40),
    st.tuples(
        st.sampled_from(
            [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"X", b"", b" X"]
        ),
        st.sampled_from([b":", b": ", b" :", b":\t"]),
        st.one_of(
            st.sampled_from(
                [b"5", b"0", b"+5", b"99999999999999999999", b"chunked", b"gzip", b"close",
                 b"keep-alive", b"100-continue", b"", b" ", b"\x00", b"\x80"]
            ),
            st.binary(max_size=12),
        ),
    ).map(b"".join),
)  # fmt: skip
WELL_FORMED_LINES = st.tuples(
    st.sampled_from([b"Host", b"content-length", b"Transfer-Encoding", b"Connection", b"X-A", b"x-a"]),
    st.sampled_from([b":", b": ", b":\t", b":  "]),
    st.sampled_from([b"5", b"0", b"chunked", b"close", b"keep-alive", b"a b", b"", b"caf\xc3\xa9"]),
    st.sampled_from([b"", b" ", b"\t "]),
).map(b"".join)
CHUNK_PIECES = st.sampled_from(
    [b"0", b"5", b"a", b"F", b"fffffffffffffff", b"\r\n", b"\r", b"\n", b";", b" ", b"ext=1",
     b"hello", b"x", b"X: y", b"\x00", b"-", b'"', b"\\", b"=", b"\t"]
)  # fmt: skip
# No hexadecimal digit alone: the first piece would lengthen the chunk size instead.
EXTENSION_PIECES = st.sampled_from(
    [b";", b"=", b" ", b"\t", b'"', b"\\", b"k", b"Z9", b"!~", b",", b"@", b"\x80", b"\x00", b"\x7f", b"\r"]
)  # fmt: skip
_BWS = st.sampled_from([b"", b" ", b"\t ", b"  "])
_EXT_TOKEN = st.sampled_from([b"k", b"name", b"Z9", TCHARS])
_QUOTED_TEXT = st.lists(
    st.sampled_from([b"q", b" ", b"\t", b";", b"=", b"\x80", b'\\"', b"\\\\", b"\\q"]), max_size=4
)
_EXT_VALUE = st.one_of(_EXT_TOKEN, _QUOTED_TEXT.map(lambda parts: b'"' + b"".join(parts) + b'"'))
GOOD_EXTENSIONS = st.lists(
    st.tuples(
        _BWS, st.just(b";"), _BWS, _EXT_TOKEN, st.none() | st.tuples(_BWS, st.just(b"="), _BWS, _EXT_VALUE)
    ).map(lambda t: b"".join(t[:4]) + (b"".join(t[4]) if t[4] else b"")),
    max_size=4,
).map(b"".join)
EXTENSIONS = st.one_of(
    st.lists(EXTENSION_PIECES, max_size=12).map(b"".join),
    GOOD_EXTENSIONS,
    st.tuples(GOOD_EXTENSIONS, st.integers(0, 60), EXTENSION_PIECES).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]  # one piece slipped in anywhere
    ),
)


def grammatical_extensions(text: bytes) -> bool:
    """Whether `text` is a ``chunk-ext`` of RFC 9112 section 7.1.1, read by hand: the regex's model.

    ``*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )``.
    """
    end = len(text)

    def spaces(at: int) -> int:
        while at < end and text[at] in b" \t":
            at += 1
        return at

    def token(at: int) -> int | None:
        start = at
        while at < end and text[at] in TCHARS:
            at += 1
        return at if at > start else None

    def text_char(char: int) -> bool:  # HTAB, SP, VCHAR, obs-text
        return char in b"\t " or 0x21 <= char <= 0x7E or char >= 0x80

    def quoted(at: int) -> int | None:  # `at` is just past the opening quote
        while at < end:
            char = text[at]
            if char == 0x22:  # '"'
                return at + 1
            if char == 0x5C:  # '\\': a quoted-pair
                if at + 1 == end or not text_char(text[at + 1]):
                    return None
                at += 2
            elif text_char(char):
                at += 1
            else:
                return None
        return None

    at: int | None = 0
    while at is not None and at < end:
        at = spaces(at)
        if at == end or text[at] != 0x3B:  # ";"
            return False
        at = token(spaces(at + 1))
        if at is None:
            return False
        value = spaces(at)
        if value < end and text[value] == 0x3D:  # "="
            value = spaces(value + 1)
            at = quoted(value + 1) if value < end and text[value] == 0x22 else token(value)
    return at is not None


PROPERTY_LIMITS = Limits(
    max_headers=4, max_header_bytes=120, max_header_line=40, max_body=64, max_chunk_line=24
)


def random_splits(draw: Callable[..., Any], data: bytes) -> list[bytes]:
    """`data` cut at a few random offsets."""
    return split_at(data, draw(st.lists(st.integers(0, len(data)), max_size=8)))


def chunk_encode(body: bytes, sizes: list[int], extensions: list[bytes], trailers: list[bytes]) -> bytes:
    """`body` in chunks of the given sizes (the last chunk takes what is left)."""
    parts = []
    position = 0
    for index, size in enumerate(sizes):
        chunk = body[position : position + size]
        position += len(chunk)
        if chunk:
            extension = extensions[index % len(extensions)] if extensions else b""
            parts.append(b"%x%s\r\n%s\r\n" % (len(chunk), extension, chunk))
    if position < len(body):
        parts.append(b"%x\r\n%s\r\n" % (len(body) - position, body[position:]))
    parts.append(b"0\r\n")
    parts += [trailer + b"\r\n" for trailer in trailers]
    parts.append(b"\r\n")
    return b"".join(parts)


class PropertyTests(SynchronousTestCase):
    """Any input parses or raises `IngestError`, nothing else; chunked decoding ignores cuts."""

    def assert_framing_error(self, error: IngestError) -> None:
        self.assertIn(error.status, FRAMING_STATUSES)
        self.assertTrue(error.close)

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(st.binary(max_size=60), st.lists(REQUEST_PIECES, max_size=8).map(b"".join)))
    def test_request_line_any_bytes(self, line: bytes) -> None:
        """Any bytes given to `parse_request_line` parse into a request line or raise `IngestError`."""
        try:
            result = parse_request_line(line)
        except IngestError as error:
            self.assert_framing_error(error)
        else:
            self.assertIn(result.version, (HTTP_10, HTTP_11))
            self.assertTrue(result.path.startswith(b"/"))

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(HEADER_LINES, max_size=6),
        st.sampled_from([HTTP_10, HTTP_11]),
        st.sampled_from([b"GET", b"POST", b"HEAD"]),
    )
    def test_head_any_lines(self, lines: list[bytes], version: bytes, method: bytes) -> None:
        """Any field lines given to `HeadParser.add`, then `finish`, succeed or raise `IngestError`."""
        parser = HeadParser(PROPERTY_LIMITS)
        try:
            for line in lines:
                parser.add(line)
            result = parser.finish(version, method)
        except IngestError as error:
            self.assert_framing_error(error)
        else:
            self.assertTrue(result.length is None or 0 <= result.length <= PROPERTY_LIMITS.max_body)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.one_of(HEADER_LINES.filter(lambda line: line and b"\r\n" not in line), WELL_FORMED_LINES),
            max_size=6,
        ),
        st.sampled_from([PROPERTY_LIMITS, Limits()]),
        st.sampled_from([HTTP_10, HTTP_11]),
    )
    def test_head_block_agrees_with_lines(self, lines: list[bytes], limits: Limits, version: bytes) -> None:
        """`add_block` takes a field section exactly as `add` takes its lines, or declines it untouched.

        It declines a block that breaks a rule or comes near a limit; the
        channel then feeds the lines to `add`.
        """
        by_lines = HeadParser(limits)
        try:
            for line in lines:
                by_lines.add(line)
            expected: object = by_lines.finish(version, b"POST")
        except IngestError as error:
            expected = error.status
        block = HeadParser(limits)
        if not block.add_block(b"".join(line + b"\r\n" for line in lines)):
            self.assertEqual(block.headers, {}, "a declined block leaves the parser untouched")
            return
        self.assertEqual(block.headers, by_lines.headers)
        try:
            self.assertEqual(block.finish(version, b"POST"), expected)
        except IngestError as error:
            self.assertEqual(error.status, expected)

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(st.binary(max_size=80), st.lists(CHUNK_PIECES, max_size=16).map(b"".join)), st.data())
    def test_chunked_any_bytes(self, data: bytes, draw: st.DataObject) -> None:
        """Any bytes fed to `ChunkedDecoder.feed`, whole or in any pieces, decode or raise `IngestError`.

        The outcome (body and rest, or the error's status) does not depend on how the bytes are cut.
        """
        whole = outcome(lambda: decode([data], PROPERTY_LIMITS))
        for pieces in [random_splits(draw.draw, data), byte_by_byte(data)]:
            self.assertEqual(outcome(lambda p=pieces: decode(p, PROPERTY_LIMITS)), whole, pieces)
        kind, value = whole
        if kind == "error":
            self.assertIn(value, FRAMING_STATUSES)
        else:
            self.assertLessEqual(len(value[0]), PROPERTY_LIMITS.max_body)

    @settings(max_examples=500, deadline=None)
    @given(EXTENSIONS)
    def test_extensions_follow_the_grammar(self, extensions: bytes) -> None:
        """A chunk's extensions are accepted exactly when RFC 9112's grammar reads them
        (`grammatical_extensions`), and refused with a 400 otherwise."""
        data = b"5" + extensions + b"\r\nhello\r\n0\r\n\r\n"
        expected = ("ok", (b"hello", b"")) if grammatical_extensions(extensions) else ("error", 400)
        self.assertEqual(outcome(lambda: decode([data])), expected)

    @settings(max_examples=200, deadline=None)
    @given(
        st.binary(max_size=300),
        st.lists(st.integers(0, 70), max_size=10),
        st.lists(st.sampled_from([b"", b";a", b";a=b", b' ; x="y z"']), max_size=3),
        st.lists(st.sampled_from([b"X-Sum: 1", b"Y: two words"]), max_size=2),
        st.binary(max_size=20),
        st.data(),
    )
    def test_chunked_round_trip(
        self,
        body: bytes,
        sizes: list[int],
        extensions: list[bytes],
        trailers: list[bytes],
        rest: bytes,
        draw: st.DataObject,
    ) -> None:
        """A body chunk-encoded with random chunk sizes decodes back to itself, and the rest, however cut."""
        data = chunk_encode(body, sizes, extensions, trailers) + rest
        self.assertEqual(decode([data]), (body, rest))
        self.assertEqual(decode(random_splits(draw.draw, data)), (body, rest))
        self.assertEqual(decode(byte_by_byte(data)), (body, rest))
