"""Tests for `ingest.bodies`: ``POST /metrics`` bodies to storage-ready samples.

The property tests hold the module's contract: `decode_metrics` returns a
`Decoded` or raises `IngestError` for any bytes in any format, and
`decode_jobs` never raises, and meets no bug on any input (no `InternalError`).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import ujson
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ingest.bodies import (
    JSON,
    JSON_PARSERS,
    LINE,
    MAX_ERRORS,
    MSGSPEC,
    NDJSON,
    SNIFF,
    UJSON,
    Decoded,
    Job,
    decode_job,
    decode_jobs,
    decode_metrics,
    gunzip,
    is_gzip,
    line_format,
    metrics_format,
)
from ingest.errors import IngestError, InternalError
from ingest.messages import error_response

NOW = 1_700_000_000_500_000_000
FORMATS = (JSON, NDJSON, SNIFF)

GOOD = {"name": "cpu.load", "value": 0.42, "timestamp": 1700000000.25, "tags": {"host": "a"}}
BAD = {"name": "", "value": 1}


class ExplodingBody(bytes):
    """A body whose decoding meets a bug: `strip`, the first thing `decode_metrics` calls, raises.

    The injection point is the job itself, so no module global is patched.
    """

    SECRET = "a bug's own words, which no client may see"

    def strip(self, chars: bytes | None = None) -> bytes:
        raise RuntimeError(self.SECRET)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def ndjson(*values: Any) -> bytes:
    return b"\n".join(dumps(value) for value in values) + b"\n"


def stored(decoded: Decoded) -> list[dict[str, Any]]:
    """The stored lines of a `Decoded`, parsed."""
    return [json.loads(line) for line in decoded.data.splitlines()]


class MetricsFormatTests(SynchronousTestCase):
    """`metrics_format` reads the media type of Content-Type."""

    def test_json(self) -> None:
        """``application/json`` is JSON, with parameters, whitespace and any case."""
        for value in [
            b"application/json",
            b"application/json; charset=utf-8",
            b"application/json;charset=UTF-8",
            b"Application/JSON",
            b"  application/json  ; charset=utf-8",
        ]:
            self.assertEqual(metrics_format(value), JSON, value)

    def test_ndjson(self) -> None:
        """The NDJSON media types, with parameters and any case, are NDJSON."""
        for value in [
            b"application/x-ndjson",
            b"application/ndjson",
            b"application/jsonl",
            b"application/x-jsonlines",
            b"application/x-ndjson; charset=utf-8",
            b"APPLICATION/X-NDJSON",
        ]:
            self.assertEqual(metrics_format(value), NDJSON, value)

    def test_sniff(self) -> None:
        """No Content-Type, text/plain and form-urlencoded (curl -d) are sniffed."""
        for value in [
            None,
            b"text/plain",
            b"text/plain; charset=utf-8",
            b"Text/Plain",
            b"application/x-www-form-urlencoded",
        ]:
            self.assertEqual(metrics_format(value), SNIFF, value)

    def test_unsupported(self) -> None:
        """Any other media type is a 415 that keeps the connection."""
        for value in [
            b"application/xml",
            b"text/csv",
            b"multipart/form-data; boundary=x",
            b"application/json-seq",
            b"application/jsonx",
            b"json",
            b"",
        ]:
            error = self.assertRaises(IngestError, metrics_format, value)
            self.assertEqual((error.status, error.error), (415, "unsupported media type"), value)
            self.assertFalse(error.close)


class DecodeMetricsTests(SynchronousTestCase):
    """`decode_metrics`: one body in one format to samples and rejections (the ujson path; the
    msgspec path runs the same tests, `DecodeMetricsMsgspecTests`)."""

    parser = UJSON

    def assert_refused(self, kind: str, body: bytes, error: str) -> IngestError:
        raised = self.assertRaises(IngestError, decode_metrics, kind, body, NOW, self.parser)
        self.assertEqual((raised.status, raised.error), (400, error), (kind, body))
        return raised

    def test_single_object(self) -> None:
        """A single object is one accepted sample in storage form."""
        for kind in (JSON, SNIFF):
            decoded = decode_metrics(kind, dumps(GOOD), NOW, self.parser)
            self.assertEqual((decoded.accepted, decoded.rejected, decoded.errors), (1, 0, []))
            self.assertEqual(
                stored(decoded),
                [
                    {
                        "name": "cpu.load",
                        "value": 0.42,
                        "timestamp": 1_700_000_000_250_000_000,
                        "tags": {"host": "a"},
                    }
                ],
            )

    def test_receipt_time(self) -> None:
        """A sample without a timestamp is stored at the receipt time given."""
        decoded = decode_metrics(JSON, b'{"name": "a", "value": 1}', NOW, self.parser)
        self.assertEqual(stored(decoded), [{"name": "a", "value": 1, "timestamp": NOW, "tags": {}}])

    def test_array(self) -> None:
        """An array of objects is accepted in order."""
        body = dumps([{"name": "a", "value": 1}, {"name": "b", "value": 2.5, "timestamp": 1}])
        for kind in (JSON, SNIFF):
            decoded = decode_metrics(kind, body, NOW, self.parser)
            self.assertEqual((decoded.accepted, decoded.rejected, decoded.errors), (2, 0, []))
            self.assertEqual(
                [(line["name"], line["value"], line["timestamp"]) for line in stored(decoded)],
                [("a", 1, NOW), ("b", 2.5, 1_000_000_000)],
            )

    def test_ndjson(self) -> None:
        """NDJSON takes one object per line, skipping blank lines and accepting CRLF line ends."""
        body = (
            b'\r\n{"name": "a", "value": 1}\r\n\r\n   \n\t\r\n'
            b'{"name": "b", "value": 2}\r\n{"name": "c", "value": 3}'
        )
        for kind in (NDJSON, SNIFF):
            decoded = decode_metrics(kind, body, NOW, self.parser)
            self.assertEqual((decoded.accepted, decoded.rejected, decoded.errors), (3, 0, []), kind)
            self.assertEqual([line["name"] for line in stored(decoded)], ["a", "b", "c"])

    def test_ndjson_single_line(self) -> None:
        """A one-line NDJSON body, with or without its newline, is one sample."""
        for body in [b'{"name": "a", "value": 1}', b'{"name": "a", "value": 1}\n']:
            self.assertEqual(decode_metrics(NDJSON, body, NOW, self.parser).accepted, 1)

    def test_sniff_falls_back_to_ndjson(self) -> None:
        """Sniffing reads a multi-line body that is not one JSON document as NDJSON."""
        decoded = decode_metrics(SNIFF, ndjson(GOOD, GOOD, BAD), NOW, self.parser)
        self.assertEqual((decoded.accepted, decoded.rejected), (2, 1))
        self.assertEqual([index for index, _ in decoded.errors], [2])

    def test_json_does_not_fall_back(self) -> None:
        """Declared JSON that is really NDJSON is malformed JSON."""
        self.assert_refused(JSON, ndjson(GOOD, GOOD), "malformed JSON")

    def test_empty_body(self) -> None:
        """An empty or blank body is a 400 in every format."""
        for kind in FORMATS:
            for body in [b"", b" ", b"\n", b"\r\n\r\n", b" \t\n"]:
                self.assert_refused(kind, body, "empty body")

    def test_malformed_json(self) -> None:
        """A body that is not JSON (and for sniffing, not multi-line) is a 400 ``malformed JSON``."""
        for kind in (JSON, SNIFF):
            for body in [
                b"{",
                b"{name: 1}",
                b"cpu.load 0.42",
                b'{"name": "a", "value": 1} x',
                b"\xff\xfe",
                b"[1,]",
            ]:
                error = self.assert_refused(kind, body, "malformed JSON")
                self.assertFalse(error.close)

    def test_top_level_not_a_sample(self) -> None:
        """A top-level number, string, boolean or null is a 400 ``invalid sample``."""
        for kind in (JSON, SNIFF):
            for body in [b"42", b"4.2", b'"cpu"', b"true", b"null"]:
                self.assert_refused(kind, body, "invalid sample")

    def test_invalid_single_object(self) -> None:
        """A single invalid object rejects the request: 400 ``invalid sample`` with the reason."""
        for kind in (JSON, SNIFF):
            error = self.assert_refused(kind, dumps(BAD), "invalid sample")
            self.assertIn("name", error.detail)
            self.assert_refused(kind, dumps({"name": "a", "value": 1, "typo": 2}), "invalid sample")

    def test_partial_array(self) -> None:
        """In an array, valid samples are kept and invalid ones reported by their index."""
        body = dumps([GOOD, BAD, {"name": "b", "value": 2}, 7, {"name": "c"}])
        decoded = decode_metrics(JSON, body, NOW, self.parser)
        self.assertEqual((decoded.accepted, decoded.rejected), (2, 3))
        self.assertEqual([index for index, _ in decoded.errors], [1, 3, 4])
        self.assertIn("name", decoded.errors[0][1])
        self.assertIn("object", decoded.errors[1][1])
        self.assertIn("value", decoded.errors[2][1])
        self.assertEqual([line["name"] for line in stored(decoded)], ["cpu.load", "b"])

    def test_all_invalid_array(self) -> None:
        """An array with no valid sample stores nothing and reports every one."""
        decoded = decode_metrics(JSON, dumps([BAD, BAD]), NOW, self.parser)
        self.assertEqual((decoded.data, decoded.accepted, decoded.rejected), (b"", 0, 2))
        self.assertEqual([index for index, _ in decoded.errors], [0, 1])

    def test_partial_ndjson(self) -> None:
        """In NDJSON, bad lines (invalid or malformed) are indexed among the non-blank lines."""
        body = (
            b'{"name": "a", "value": 1}\n\n{"name": "", "value": 1}\r\n'
            b'not json\n\n{"name": "c", "value": 3}\n'
        )
        decoded = decode_metrics(NDJSON, body, NOW, self.parser)
        self.assertEqual((decoded.accepted, decoded.rejected), (2, 2))
        self.assertEqual([index for index, _ in decoded.errors], [1, 2])
        self.assertTrue(decoded.errors[1][1].startswith("malformed JSON"), decoded.errors[1][1])
        self.assertEqual([line["name"] for line in stored(decoded)], ["a", "c"])

    def test_error_list_limit(self) -> None:
        """All of `MAX_ERRORS` rejections are listed; past that, the first `MAX_ERRORS` are, all counted."""
        for count in (MAX_ERRORS, MAX_ERRORS + 1, 3 * MAX_ERRORS):
            values = [GOOD] + [BAD] * count
            for kind, body in [(JSON, dumps(values)), (NDJSON, ndjson(*values))]:
                decoded = decode_metrics(kind, body, NOW, self.parser)
                self.assertEqual((decoded.accepted, decoded.rejected), (1, count), (kind, count))
                self.assertEqual(
                    [index for index, _ in decoded.errors], list(range(1, min(count, MAX_ERRORS) + 1))
                )


class DecodeJobsTests(SynchronousTestCase):
    """`decode_jobs`: the pool's entry point."""

    parser = UJSON

    def test_outcomes_in_order(self) -> None:
        """Each job gives its `Decoded` or `IngestError`, in job order, without raising."""
        outcomes = decode_jobs(
            [
                Job(JSON, dumps(GOOD), NOW, parser=self.parser),
                Job(NDJSON, b"", NOW, parser=self.parser),
                Job(SNIFF, ndjson(GOOD, GOOD), NOW + 1, parser=self.parser),
                Job(JSON, b"{", NOW, parser=self.parser),
                Job(JSON, dumps(BAD), NOW, parser=self.parser),
                Job(NDJSON, ndjson(GOOD, BAD), NOW, parser=self.parser),
            ]
        )
        self.assertEqual(len(outcomes), 6)
        first, empty, sniffed, malformed, invalid, partial = outcomes
        self.assertIsInstance(first, Decoded)
        self.assertEqual(first.accepted, 1)
        self.assertIsInstance(empty, IngestError)
        self.assertEqual(empty.error, "empty body")
        self.assertIsInstance(sniffed, Decoded)
        self.assertEqual(sniffed.accepted, 2)
        self.assertIsInstance(malformed, IngestError)
        self.assertEqual(malformed.error, "malformed JSON")
        self.assertIsInstance(invalid, IngestError)
        self.assertEqual(invalid.error, "invalid sample")
        self.assertIsInstance(partial, Decoded)
        self.assertEqual((partial.accepted, partial.rejected), (1, 1))

    def test_no_jobs(self) -> None:
        """No jobs give no outcomes."""
        self.assertEqual(decode_jobs([]), [])

    def test_a_bug_in_one_body_fails_that_body_only(self) -> None:
        """An exception other than `IngestError` in one job is that job's `InternalError`: a generic
        500 for the client, the traceback for the log; the jobs around it decode as usual."""
        outcomes = decode_jobs(
            [
                Job(JSON, dumps(GOOD), NOW, parser=self.parser),
                Job(JSON, ExplodingBody(dumps(GOOD)), NOW, parser=self.parser),
                Job(NDJSON, ndjson(GOOD, GOOD), NOW, parser=self.parser),
            ]
        )
        before, failed, after = outcomes
        assert isinstance(before, Decoded) and isinstance(after, Decoded)
        self.assertEqual((before.accepted, after.accepted), (1, 2))
        assert isinstance(failed, InternalError)
        self.assertEqual(
            (failed.status, failed.error, failed.detail), (500, "internal error", "see the service log")
        )
        answer = error_response(failed)
        self.assertEqual(
            json.loads(answer.body), {"error": "internal error", "detail": "see the service log"}
        )
        self.assertNotIn(ExplodingBody.SECRET.encode(), answer.body)
        self.assertIn("Traceback (most recent call last)", failed.trace)
        self.assertIn(f"RuntimeError: {ExplodingBody.SECRET}", failed.trace)
        self.assertIn("decode_metrics", failed.trace)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
SAMPLE_LIKE = st.fixed_dictionaries(
    {
        "name": st.one_of(st.text(max_size=6), JSON_VALUES),
        "value": st.one_of(st.floats(), st.integers(), JSON_VALUES),
    },
    optional={
        "timestamp": st.one_of(st.floats(), st.integers(-5, 2**64), JSON_VALUES),
        "tags": st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3), JSON_VALUES),
        "extra": JSON_VALUES,
    },
)


def json_bytes(value: Any) -> bytes:
    """`value` as JSON; NaN and the infinities come out as the non-standard tokens a client could send."""
    return json.dumps(value).encode("utf-8")


BODIES = st.one_of(
    st.binary(max_size=200),
    st.lists(SAMPLE_LIKE, max_size=5).map(json_bytes),
    SAMPLE_LIKE.map(json_bytes),
    JSON_VALUES.map(json_bytes),
    st.lists(st.one_of(SAMPLE_LIKE.map(json_bytes), st.binary(max_size=20)), max_size=5).map(b"\n".join),
    st.lists(
        st.sampled_from([b"{", b"}", b"[", b"]", b'"name"', b'"value"', b":", b",", b"1", b"\n", b"\r\n",
                         b'"\\ud800"', b"1e400", b"NaN", b" ", b'"a"', b"\xff"]),
        max_size=20,
    ).map(b"".join),
)  # fmt: skip


class PropertyTests(SynchronousTestCase):
    """Any body decodes or raises `IngestError`, by either JSON parser; the pool entry point never raises."""

    def assert_consistent(self, decoded: Decoded) -> None:
        """A `Decoded` counts what it stores and lists at most `MAX_ERRORS` errors."""
        self.assertIsInstance(decoded, Decoded)
        lines = stored(decoded)
        self.assertEqual(len(lines), decoded.accepted)
        for line in lines:
            self.assertEqual(set(line), {"name", "value", "timestamp", "tags"})
        self.assertEqual(len(decoded.errors), min(decoded.rejected, MAX_ERRORS))
        indexes = [index for index, _ in decoded.errors]
        self.assertEqual(indexes, sorted(set(indexes)))

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(FORMATS), BODIES, st.sampled_from(JSON_PARSERS))
    def test_decode_any_bytes(self, kind: str, body: bytes, parser: str) -> None:
        """Any bytes in any of the three formats give a `Decoded` or raise `IngestError` 400, nothing else."""
        try:
            decoded = decode_metrics(kind, body, NOW, parser)
        except IngestError as error:
            self.assertEqual(error.status, 400)
            self.assertEqual(json.loads(error_response(error).body)["error"], error.error)
        else:
            self.assert_consistent(decoded)
            ujson.dumps([{"index": index, "error": reason} for index, reason in decoded.errors])

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(
            st.builds(
                Job,
                st.sampled_from((*FORMATS, LINE)),
                BODIES,
                st.integers(0, 2**63 - 1),
                st.booleans(),
                st.integers(0, 4096),
                st.sampled_from([1, 1000, 10**9]),
                st.sampled_from(JSON_PARSERS),
            ),
            max_size=5,
        )
    )
    def test_decode_jobs_never_raises(self, jobs: list[Job]) -> None:
        """`decode_jobs` on random jobs (gzip or not, any format) never raises; outcomes in job order."""
        outcomes = decode_jobs(jobs)
        self.assertEqual(len(outcomes), len(jobs))
        for job, result in zip(jobs, outcomes, strict=True):
            if isinstance(result, InternalError):
                self.fail(f"a bug decoding {job!r}:\n{result.trace}")
            if isinstance(result, IngestError):
                self.assertRaises(IngestError, decode_job, job)
            else:
                self.assertEqual(result, decode_job(job))


class DecodeMetricsMsgspecTests(DecodeMetricsTests):
    """`DecodeMetricsTests` on the msgspec path."""

    parser = MSGSPEC


class DecodeJobsMsgspecTests(DecodeJobsTests):
    """`DecodeJobsTests` on the msgspec path."""

    parser = MSGSPEC


NAMES = st.one_of(
    st.text(max_size=8),
    st.text(st.characters(codec="utf-8"), max_size=4).map(lambda text: "cpu/" + text),
    st.sampled_from(
        ["cpu.load", "", "a\x00", "a\x7f", "a\x85", "\ud800", "é" * 256, "n" * 257, "\U0001f600"]
    ),
    JSON_VALUES,
)
NUMBERS = st.one_of(
    st.floats(),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: x * 1e-300),
    st.integers(),
    st.integers(-(2**65), 2**65),
    st.sampled_from(
        [0, -0.0, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 5e-324, 1e308, 0.1]
    ),
)
SECONDS = st.one_of(
    NUMBERS,
    st.integers(-9_300_000_000, 9_300_000_000),
    st.floats(-9_300_000_000, 9_300_000_000),
    st.decimals(-10_000_000_000, 10_000_000_000, places=9).map(float),
    st.sampled_from([-9223372036.854775806, 9223372036.854775806, -9223372037, 9223372036, 1700000000.25]),
)
TAGS = st.one_of(
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=4),
    st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=3), JSON_VALUES, max_size=3),
    st.just({"host": "bench", "dc": "eu", "rack": "r1"}),
    st.just({str(index): "v" for index in range(257)}),
    st.just({"k": "v" * 1025}),
    JSON_VALUES,
)
AGREEMENT_SAMPLES = st.fixed_dictionaries(
    {},
    optional={
        "name": NAMES,
        "value": st.one_of(NUMBERS, JSON_VALUES),
        "timestamp": st.one_of(SECONDS, st.none(), JSON_VALUES),
        "tags": TAGS,
        "extra": JSON_VALUES,
        "Name": st.text(max_size=3),
    },
)

VALID_LIKE = st.fixed_dictionaries(
    {
        "name": st.one_of(st.text(min_size=1, max_size=6), st.sampled_from(["cpu.load", "disk/sda1"])),
        "value": NUMBERS,
    },
    optional={
        "timestamp": st.one_of(
            st.integers(-9_223_372_036, 9_223_372_036),
            st.floats(-9_223_372_036.9, 9_223_372_036.9),
            st.decimals(-2_000_000_000, 2_000_000_000, places=9).map(float),
            st.none(),
        ),
        "tags": st.one_of(
            st.dictionaries(st.text(min_size=1, max_size=4), st.text(max_size=4), max_size=3),
            st.just({"host": "bench", "dc": "eu", "rack": "r1"}),
        ),
    },
)
"""Samples that are mostly valid, so that the msgspec path often stores rather than falls back."""


@st.composite
def agreement_bodies(draw: st.DrawFn) -> bytes:
    """A JSON body of samples (an array, one object or NDJSON lines) that repeats samples, names
    and tags as batches do, written ASCII or UTF-8, with raw control characters and junk at times."""
    mostly_valid = draw(st.booleans())
    samples = draw(
        st.lists(VALID_LIKE, max_size=8)
        if mostly_valid
        else st.lists(st.one_of(AGREEMENT_SAMPLES, VALID_LIKE, JSON_VALUES), max_size=8)
    )
    samples += [draw(st.sampled_from(samples)) for _ in range(draw(st.integers(0, 3)))] if samples else []
    ascii_only = draw(st.booleans())
    shape = draw(st.sampled_from(["array", "object", "lines"]))
    if shape == "lines" or (shape == "object" and not samples):
        texts = [json.dumps(sample, ensure_ascii=ascii_only) for sample in samples]
        body = "\n".join(texts).encode("utf-8", "surrogatepass")
    elif shape == "object":
        body = json.dumps(samples[0], ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    else:
        body = json.dumps(samples, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # a raw control character, a byte that is not UTF-8, or junk
        at = draw(st.integers(0, len(body)))
        body = (
            body[:at]
            + draw(st.sampled_from([b"\x01", b"\t", b"\xff", b"\n", b",", b"x", b"\r\n"]))
            + body[at:]
        )
    return body


PLAIN_TEXT = st.text(st.sampled_from('abc.-_ :0123456789"{},[]=/\\\x7f\x01é'), min_size=1, max_size=6)
PLAIN_SAMPLES = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["cpu.load", "mem"]), PLAIN_TEXT),
        "value": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.floats(-1e-3, 1e-3),
            st.floats(1e15, 1e17),
            st.integers(-(2**64), 2**64),
        ),
    },
    optional={
        "timestamp": st.one_of(
            st.none(),
            st.integers(-9_223_372_036, 9_223_372_036),
            st.floats(-9_223_372_036.9, 9_223_372_036.9),
            st.decimals(1_600_000_000, 1_800_000_000, places=6).map(float),
        ),
        "tags": st.one_of(
            st.dictionaries(PLAIN_TEXT, PLAIN_TEXT, max_size=3),
            st.just({"host": "bench", "dc": "eu"}),
            st.just({"dc": "eu", "host": "bench"}),
        ),
    },
)


@st.composite
def plain_bodies(draw: st.DrawFn) -> bytes:
    """JSON bodies of samples with ASCII strings, mostly `sample.plain`: an array, one object or
    NDJSON lines."""
    samples = draw(st.lists(PLAIN_SAMPLES, min_size=1, max_size=6))
    shape = draw(st.sampled_from(["array", "object", "lines"]))
    if shape == "lines":
        return "\n".join(json.dumps(sample) for sample in samples).encode()
    return json.dumps(samples[0] if shape == "object" else samples).encode()


class ParserAgreementTests(SynchronousTestCase):
    """The ujson and the msgspec paths give the same `Decoded` (stored bytes, counts, errors) or the
    same `IngestError` for any JSON body, in every format."""

    @staticmethod
    def outcome(kind: str, body: bytes, parser: str) -> object:
        """The outcome, with each stored line's tags as sorted pairs: for a tags object equal to the
        last one seen, `sample.LineEncoder` reuses its encoding, key order included, where msgspec's
        `sample.plain_lines` writes each in its own order.  The rest of each line is compared as
        bytes."""
        try:
            decoded = decode_metrics(kind, body, NOW, parser)
        except IngestError as error:
            return (error.status, error.error, error.detail, error.close)
        lines = [
            (line[: line.index(b',"tags":')], sorted(json.loads(line)["tags"].items()))
            for line in decoded.data.splitlines()
        ]
        return decoded._replace(data=lines)

    @settings(max_examples=1000, deadline=None)
    @given(st.sampled_from(FORMATS), agreement_bodies())
    def test_same_outcome(self, kind: str, body: bytes) -> None:
        """Byte for byte the same outcome from both parsers."""
        self.assertEqual(self.outcome(kind, body, MSGSPEC), self.outcome(kind, body, UJSON), body)

    @settings(max_examples=1000, deadline=None)
    @given(st.sampled_from(FORMATS), plain_bodies())
    def test_same_outcome_plain(self, kind: str, body: bytes) -> None:
        """Bodies mostly `sample.plain`, which msgspec encodes in one call: values over every range,
        timestamps or none."""
        self.assertEqual(self.outcome(kind, body, MSGSPEC), self.outcome(kind, body, UJSON), body)

    def test_plain_values_written_as_ujson_does(self) -> None:
        """Floats that msgspec writes otherwise than ujson (from 1e-5 to 1e-4, from 1e16 on) leave
        `sample.plain_lines` for the per-sample path; the others are written as ujson does."""
        values = [1e-5, -1.5e-5, 9.99e-5, 1e-4, 1e-6, 1e15, 9999999999999998.0, 1e16, -1e16, 1e300, 0.0, -0.0]
        for value in values:
            body = ujson.dumps([{"name": "a", "value": value}, {"name": "b", "value": 1}]).encode()
            self.assertEqual(self.outcome(JSON, body, MSGSPEC), self.outcome(JSON, body, UJSON), body)
            stored = decode_metrics(JSON, body, NOW, MSGSPEC).data.split(b"\n")[0]
            self.assertEqual(
                stored,
                b'{"name":"a","value":%s,"timestamp":%d,"tags":{}}' % (ujson.dumps(value).encode(), NOW),
            )

    def test_same_outcome_cases(self) -> None:
        """Cases that each take a branch of the msgspec path: its fallback to ujson's message, or its
        own result."""
        samples: list[Any] = [
            GOOD,
            {"name": "a/b", "value": 0.1, "tags": {"path": "/var", "温度": "\U0001f600"}},
            {"name": "a", "value": True},
            {"name": "a", "value": 2**63},
            {"name": "a", "value": 2**64 - 1},
            {"name": "a", "value": 2**64},
            {"name": "a", "value": -(2**63) - 1},
            {"name": "a", "value": 1, "timestamp": -1.5},
            {"name": "a", "value": 1, "timestamp": 9223372036.854775807},
            {"name": "a", "value": 1, "timestamp": -9223372036.854775807},
            {"name": "a", "value": 1, "timestamp": 1e-7},
            {"name": "a", "value": 1, "timestamp": None},
            {"name": "a", "value": 1, "tags": None},
            {"name": "a\u0085", "value": 1},
            {"name": "a", "value": 1, "tags": {"k": "v\x1b"}},
            {"name": "a", "value": 1, "nested": {"deep": [[[]]]}},
        ]
        for kind in FORMATS:
            for body in [dumps(samples), ndjson(*samples), *[dumps(sample) for sample in samples]]:
                self.assertEqual(self.outcome(kind, body, MSGSPEC), self.outcome(kind, body, UJSON), body)
        for body in [
            b'{"name": "a", "value": NaN}',
            b'{"name": "a", "value": 1e400}',
            b'[{"name":"\\ud800","value":1}]',
            b'{"name": "a", "name": 1, "value": 1}',
            b'{"name": 1, "name": "a", "value": 1}',
            # Numbers as clients write them, past a double's digits: both parsers round them alike.
            b'{"name": "a", "value": 0.30000000000000000001}',
            b'{"name": "a", "value": 1.00000000000000011102230246251565404236316680908203125}',
            b'{"name": "a", "value": 9007199254740993.0}',
            b'{"name": "a", "value": 1e-400}',
            b'{"name": "a", "value": -0.0, "timestamp": 123456789012345678901234567890.5}',
            b'{"name": "a", "value": 1E2, "timestamp": 1700000000.1234567891234}',
            b'{"name": "a", "value": -0, "timestamp": -1.0000000001e9}',
        ]:
            for kind in FORMATS:
                self.assertEqual(self.outcome(kind, body, MSGSPEC), self.outcome(kind, body, UJSON), body)


class GzipTests(SynchronousTestCase):
    """Content-Encoding: gzip, inflated under the body limit."""

    def test_gzip_body(self) -> None:
        """A gzip body is inflated and decoded like the plain one."""
        body = dumps([GOOD, GOOD])
        decoded = decode_job(Job(JSON, gzip.compress(body), NOW, True, len(body)))
        self.assertEqual(decoded.accepted, 2)

    def test_limit_at_n_and_n_plus_1(self) -> None:
        """Inflating to exactly the limit is fine; one byte more is 413 and closes the connection."""
        data = b"x" * 1000
        self.assertEqual(gunzip(gzip.compress(data), 1000), data)
        error = self.assertRaises(IngestError, gunzip, gzip.compress(data), 999)
        self.assertEqual((error.status, error.close), (413, True))

    def test_bomb_is_not_inflated_whole(self) -> None:
        """A gzip bomb (10 MB of zeros in about 10 KB) gets 413 after at most limit + 1 bytes."""
        bomb = gzip.compress(bytes(10_000_000))
        self.assertLess(len(bomb), 20_000)
        error = self.assertRaises(IngestError, gunzip, bomb, 65536)
        self.assertEqual(error.status, 413)

    def test_multiple_members(self) -> None:
        """Concatenated gzip members inflate to their concatenation, as gzip(1) does."""
        self.assertEqual(gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 100), b"abcd")

    def test_malformed_gzip(self) -> None:
        """Data that is not gzip, or is cut short, is 400 malformed gzip."""
        whole = gzip.compress(b"hello")
        for data in (b"not gzip", whole[:-5], b""):
            error = self.assertRaises(IngestError, gunzip, data, 100)
            self.assertEqual((error.status, error.error), (400, "malformed gzip"))

    def test_encodings(self) -> None:
        """gzip, x-gzip and identity are read; anything else is 415."""
        self.assertTrue(is_gzip(b"gzip"))
        self.assertTrue(is_gzip(b" GZIP "))
        self.assertTrue(is_gzip(b"x-gzip"))
        self.assertFalse(is_gzip(b"identity"))
        self.assertFalse(is_gzip(None))
        for encoding in (b"br", b"deflate", b"gzip, gzip", b""):
            self.assertEqual(self.assertRaises(IngestError, is_gzip, encoding).status, 415)

    def test_line_format(self) -> None:
        """The write paths read line protocol under any type but JSON's."""
        for content_type in (None, b"text/plain; charset=utf-8", b"application/octet-stream"):
            self.assertEqual(line_format(content_type), LINE)
        for content_type in (b"application/json", b"application/x-ndjson"):
            self.assertEqual(self.assertRaises(IngestError, line_format, content_type).status, 415)
